//! From text to `ImageDefinition`: TOML syntax, then the raw serde shape, then every check on
//! values, files and stage order, collecting all problems with their spans. Owns the rules
//! of DESIGN §1; must not download, boot, or write anything.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_spanned::Spanned;

use super::error::{
    ACCELS, COMPRESSIONS, FIRMWARES, FORMATS, Invalid, KINDS, Problem, TARGETS, line_column,
    suggest,
};
use super::raw::{self, RawDefinition, RawStage, RawStep, Text};
use super::types::{
    AccelChoice, Checksum, Communicator, CommunicatorKind, Compression, Digest, Export,
    ExportFormat, ExportTarget, Firmware, HashAlgo, ImageDefinition, Location, Machine, Source,
    Stage, StageName, Step, StepAction,
};
use crate::units::{ByteSize, parse_duration};

/// What seed (user-data) templates are rendered with (DESIGN §1).
pub const SEED_TEMPLATE_VARIABLES: &[&str] = &[
    "user",
    "ssh_authorized_key",
    "host_key_private",
    "host_key_public",
    "hostname",
    "image",
    "stage",
    "vars",
];

/// minijinja's own globals and loop names, which its static analysis reports as undeclared.
const TEMPLATE_BUILTINS: &[&str] = &[
    "range",
    "dict",
    "namespace",
    "debug",
    "cycler",
    "joiner",
    "lipsum",
    "loop",
    "self",
    "caller",
];

const DEFAULT_CPUS: u32 = 2;
const DEFAULT_MEMORY: ByteSize = ByteSize(2 * ByteSize::GIB);
const MIN_MEMORY: ByteSize = ByteSize(256 * ByteSize::MIB);
const DEFAULT_USER: &str = "strata";
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Parses and checks `text`, the content of the definition at `path` (`shown` is how the
/// path is written in messages; `path` is absolute). All problems or the definition.
pub(super) fn definition(
    shown: &Path,
    path: &Path,
    text: Arc<String>,
) -> Result<ImageDefinition, Box<Invalid>> {
    let mut checker = Checker {
        shown: shown.to_owned(),
        dir: path.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
        text,
        problems: Vec::new(),
    };
    let raw = checker.parse()?;
    let definition = checker.check(path, raw);
    let mut problems = checker.problems;
    match definition {
        Some(definition) if problems.is_empty() => Ok(definition),
        _ => {
            problems.sort_by_key(|problem| problem.span().start);
            let mut problems = problems.into_iter();
            let Some(first) = problems.next() else {
                return Err(Box::new(Invalid::new(
                    shown,
                    &checker.text,
                    Problem::Malformed { message: "invalid definition".into() },
                    0..0,
                )));
            };
            Err(Box::new(first.with_others(problems.collect())))
        }
    }
}

struct Checker {
    shown: PathBuf,
    /// The definition's folder, absolute: relative paths start here.
    dir: PathBuf,
    text: Arc<String>,
    problems: Vec<Invalid>,
}

impl Checker {
    fn invalid(&self, problem: Problem, span: Range<usize>) -> Invalid {
        Invalid::new(&self.shown, &self.text, problem, span)
    }

    fn report(&mut self, problem: Problem, span: Range<usize>) {
        let invalid = self.invalid(problem, span);
        self.problems.push(invalid);
    }

    /// TOML syntax first (so that its errors are called what they are), then the shape.
    fn parse(&self) -> Result<RawDefinition, Box<Invalid>> {
        if let Err(error) = toml::from_str::<toml::Table>(&self.text) {
            let span = error.span().unwrap_or(0..0);
            return Err(Box::new(
                self.invalid(Problem::Syntax { message: error.message().trim().to_owned() }, span),
            ));
        }
        toml::from_str::<RawDefinition>(&self.text).map_err(|error| {
            let span = error.span().unwrap_or(0..0);
            Box::new(self.invalid(shape_problem(error.message().trim()), span))
        })
    }

    fn check(&mut self, path: &Path, raw: RawDefinition) -> Option<ImageDefinition> {
        let name = self.image_name(path, raw.name.as_ref());
        let description = raw.description.map(Spanned::into_inner);
        let source = self.source(raw.source.as_ref());
        let machine = self.machine(raw.machine.as_ref());
        let communicator = self.communicator(raw.communicator.as_ref());
        let vars: BTreeMap<String, String> = raw
            .vars
            .iter()
            .map(|(key, value)| (key.get_ref().clone(), value.get_ref().clone()))
            .collect();
        let stages = self.stages(raw.stages.as_ref(), communicator.as_ref(), &vars);
        let export = self.export(raw.export.as_ref());
        Some(ImageDefinition {
            path: path.to_owned(),
            name: name?,
            description,
            source: source?,
            machine: machine?,
            communicator: communicator?,
            vars,
            stages: stages?,
            export: export?,
        })
    }

    fn image_name(&mut self, path: &Path, name: Option<&Text>) -> Option<String> {
        match name {
            Some(name) => {
                if StageName::new(name.get_ref()).is_none() {
                    self.report(
                        Problem::BadImageName { name: name.get_ref().clone() },
                        name.span(),
                    );
                    return None;
                }
                Some(name.get_ref().clone())
            }
            None => {
                let stem = path.file_stem().map(|stem| stem.to_string_lossy().into_owned());
                match stem.filter(|stem| StageName::new(stem).is_some()) {
                    Some(stem) => Some(stem),
                    None => {
                        self.report(
                            Problem::MissingKey { key: "name".into(), table: "the top level" },
                            0..0,
                        );
                        None
                    }
                }
            }
        }
    }

    fn source(&mut self, source: Option<&Spanned<raw::RawSource>>) -> Option<Source> {
        let Some(spanned) = source else {
            self.report(Problem::NoSource, 0..0);
            return None;
        };
        let source = spanned.get_ref();
        let table = header_span(&self.text, spanned.span());
        let location = match &source.url {
            Some(url) => self.location("url", url),
            None => {
                self.report(Problem::NoUrl, table.clone());
                None
            }
        };
        let checksum = match (&source.checksum, &source.checksum_url) {
            (Some(inline), Some(url)) => {
                let invalid = self
                    .invalid(Problem::ChecksumAndChecksumUrl, url.span())
                    .with_secondary(inline.span(), "and this one".into());
                self.problems.push(invalid);
                None
            }
            (None, None) => {
                self.report(Problem::NoChecksum, table);
                None
            }
            (Some(inline), None) => self.checksum(inline).map(Checksum::Inline),
            (None, Some(url)) => self.location("checksum_url", url).map(Checksum::File),
        };
        Some(Source { location: location?, checksum: checksum? })
    }

    fn checksum(&mut self, text: &Text) -> Option<Digest> {
        let value = text.get_ref();
        let bad = |reason: String| Problem::BadChecksum { text: value.clone(), reason };
        let problem = match value.split_once(':') {
            None => bad("expected ALGO:HEX".into()),
            Some((algo, hex)) => {
                let algo = match algo.to_ascii_lowercase().as_str() {
                    "sha256" => HashAlgo::Sha256,
                    "sha512" => HashAlgo::Sha512,
                    _ => {
                        let problem = bad(format!("unknown algorithm `{algo}`"));
                        self.report(problem, text.span());
                        return None;
                    }
                };
                if let Some(digest) = Digest::new(algo, hex) {
                    return Some(digest);
                }
                if let Some(odd) = hex.chars().find(|c| !c.is_ascii_hexdigit()) {
                    bad(format!("`{odd}` is not a hex digit"))
                } else {
                    bad(format!(
                        "a {} digest has {} hex digits, this one has {}",
                        algo.name(),
                        algo.hex_len(),
                        hex.len()
                    ))
                }
            }
        };
        self.report(problem, text.span());
        None
    }

    /// An http(s) URL, a file:// URL, or a path relative to the definition's folder.
    fn location(&mut self, key: &'static str, text: &Text) -> Option<Location> {
        let value = text.get_ref().trim();
        let bad = |reason: &str| Problem::BadLocation {
            key,
            text: text.get_ref().clone(),
            reason: reason.to_owned(),
        };
        if value.is_empty() {
            self.report(Problem::EmptyValue { key }, text.span());
            return None;
        }
        let lower = value.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let rest = value.split_once("://").map_or("", |(_, rest)| rest);
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            if host.is_empty() {
                self.report(bad("the URL has no host"), text.span());
                return None;
            }
            if value.chars().any(char::is_whitespace) {
                self.report(bad("URLs cannot contain spaces: write them as %20"), text.span());
                return None;
            }
            return Some(Location::Http(value.to_owned()));
        }
        if lower.starts_with("file://") {
            let rest = &value["file://".len()..];
            let rest = rest.strip_prefix("localhost").unwrap_or(rest);
            if !rest.starts_with('/') {
                self.report(
                    bad("a file:// URL needs an absolute path, like file:///var/images/x.qcow2"),
                    text.span(),
                );
                return None;
            }
            return Some(Location::File(PathBuf::from(rest)));
        }
        if let Some((scheme, _)) = value.split_once("://")
            && !scheme.is_empty()
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            let reason = format!("strata fetches http, https and file URLs, not `{scheme}`");
            self.report(bad(&reason), text.span());
            return None;
        }
        Some(Location::File(self.resolve(value)))
    }

    fn resolve(&self, relative: &str) -> PathBuf {
        let joined = self.dir.join(relative);
        normalize(&std::path::absolute(&joined).unwrap_or(joined))
    }

    fn size(&mut self, key: &'static str, text: &Text) -> Option<ByteSize> {
        match text.get_ref().parse::<ByteSize>() {
            Ok(size) if size.bytes() > 0 => Some(size),
            _ => {
                self.report(Problem::BadSize { key, text: text.get_ref().clone() }, text.span());
                None
            }
        }
    }

    fn duration(
        &mut self,
        key: &'static str,
        text: Option<&Text>,
        default: Duration,
    ) -> Option<Duration> {
        let Some(text) = text else {
            return Some(default);
        };
        match parse_duration(text.get_ref()) {
            Ok(duration) if duration.is_zero() => {
                self.report(Problem::ZeroDuration { key }, text.span());
                None
            }
            Ok(duration) => Some(duration),
            Err(_) => {
                self.report(
                    Problem::BadDuration { key, text: text.get_ref().clone() },
                    text.span(),
                );
                None
            }
        }
    }

    fn choice<T: Copy>(
        &mut self,
        key: &'static str,
        text: Option<&Text>,
        choices: &'static [&'static str],
        values: &[T],
        default: T,
    ) -> Option<T> {
        let Some(text) = text else {
            return Some(default);
        };
        let value = text.get_ref();
        if let Some(index) = choices.iter().position(|choice| choice == value) {
            return values.get(index).copied();
        }
        let suggestion =
            suggest(&value.to_ascii_lowercase(), choices.iter().copied()).or_else(|| {
                choices
                    .iter()
                    .find(|choice| choice.eq_ignore_ascii_case(value))
                    .map(|choice| (*choice).to_owned())
            });
        self.report(
            Problem::BadChoice { key, value: value.clone(), choices, suggestion },
            text.span(),
        );
        None
    }

    fn machine(&mut self, machine: Option<&raw::RawMachine>) -> Option<Machine> {
        let Some(machine) = machine else {
            return Some(Machine {
                cpus: DEFAULT_CPUS,
                memory: DEFAULT_MEMORY,
                disk_size: None,
                firmware: Firmware::Bios,
                accel: AccelChoice::Auto,
                extra_args: Vec::new(),
            });
        };
        let cpus = match &machine.cpus {
            None => Some(DEFAULT_CPUS),
            Some(cpus) => match u32::try_from(*cpus.get_ref()) {
                Ok(count) if count > 0 => Some(count),
                _ => {
                    self.report(Problem::BadCpus { value: *cpus.get_ref() }, cpus.span());
                    None
                }
            },
        };
        let memory = match &machine.memory {
            None => Some(DEFAULT_MEMORY),
            Some(text) => match self.size("memory", text) {
                Some(size) if size < MIN_MEMORY => {
                    self.report(
                        Problem::MemoryTooSmall { text: text.get_ref().clone() },
                        text.span(),
                    );
                    None
                }
                other => other,
            },
        };
        let disk_size = match &machine.disk_size {
            None => Some(None),
            Some(text) => self.size("disk_size", text).map(Some),
        };
        let firmware = self.choice(
            "firmware",
            machine.firmware.as_ref(),
            FIRMWARES,
            &[Firmware::Bios, Firmware::Uefi],
            Firmware::Bios,
        );
        let accel = self.choice(
            "accel",
            machine.accel.as_ref(),
            ACCELS,
            &[AccelChoice::Auto, AccelChoice::Kvm, AccelChoice::Tcg],
            AccelChoice::Auto,
        );
        Some(Machine {
            cpus: cpus?,
            memory: memory?,
            disk_size: disk_size?,
            firmware: firmware?,
            accel: accel?,
            extra_args: machine.extra_args.clone(),
        })
    }

    fn communicator(
        &mut self,
        communicator: Option<&raw::RawCommunicator>,
    ) -> Option<Communicator> {
        let Some(communicator) = communicator else {
            return Some(Communicator {
                kind: CommunicatorKind::Ssh,
                user: DEFAULT_USER.to_owned(),
                ready_timeout: DEFAULT_READY_TIMEOUT,
            });
        };
        let kind = self.choice(
            "communicator kind",
            communicator.kind.as_ref(),
            KINDS,
            &[CommunicatorKind::Ssh, CommunicatorKind::GuestAgent],
            CommunicatorKind::Ssh,
        );
        let user = match &communicator.user {
            None => Some(DEFAULT_USER.to_owned()),
            Some(user) if user.get_ref() == "root" => {
                self.report(Problem::RootUser, user.span());
                None
            }
            Some(user) if !is_user_name(user.get_ref()) => {
                self.report(Problem::BadUser { user: user.get_ref().clone() }, user.span());
                None
            }
            Some(user) => Some(user.get_ref().clone()),
        };
        let ready_timeout = self.duration(
            "ready_timeout",
            communicator.ready_timeout.as_ref(),
            DEFAULT_READY_TIMEOUT,
        );
        Some(Communicator { kind: kind?, user: user?, ready_timeout: ready_timeout? })
    }

    fn export(&mut self, export: Option<&raw::RawExport>) -> Option<Export> {
        let Some(export) = export else {
            return Some(Export {
                formats: vec![ExportFormat::Qcow2],
                compression: Compression::Zstd,
                targets: vec![ExportTarget::Generic],
            });
        };
        let formats = self.choices(
            "formats",
            "export format",
            export.formats.as_ref(),
            FORMATS,
            &[ExportFormat::Qcow2, ExportFormat::Raw, ExportFormat::Vmdk],
            ExportFormat::Qcow2,
        );
        let compression = self.choice(
            "compression",
            export.compression.as_ref(),
            COMPRESSIONS,
            &[Compression::None, Compression::Zlib, Compression::Zstd],
            Compression::Zstd,
        );
        let targets = self.choices(
            "targets",
            "export target",
            export.targets.as_ref(),
            TARGETS,
            &[ExportTarget::Generic, ExportTarget::Openstack, ExportTarget::Proxmox],
            ExportTarget::Generic,
        );
        Some(Export { formats: formats?, compression: compression?, targets: targets? })
    }

    /// A list of choices; duplicates are dropped, the order kept.
    fn choices<T: Copy + PartialEq>(
        &mut self,
        key: &'static str,
        what: &'static str,
        list: Option<&Spanned<Vec<Text>>>,
        choices: &'static [&'static str],
        values: &[T],
        default: T,
    ) -> Option<Vec<T>> {
        let Some(list) = list else {
            return Some(vec![default]);
        };
        if list.get_ref().is_empty() {
            self.report(Problem::EmptyList { key }, list.span());
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for item in list.get_ref() {
            match self.choice(what, Some(item), choices, values, default) {
                Some(value) if !out.contains(&value) => out.push(value),
                Some(_) => {}
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn stages(
        &mut self,
        stages: Option<&Spanned<Vec<Spanned<RawStage>>>>,
        communicator: Option<&Communicator>,
        vars: &BTreeMap<String, String>,
    ) -> Option<Vec<Stage>> {
        let raw_stages = match stages {
            Some(stages) if !stages.get_ref().is_empty() => stages.get_ref(),
            Some(stages) => {
                self.report(Problem::NoStages, stages.span());
                return None;
            }
            None => {
                self.report(Problem::NoStages, 0..0);
                return None;
            }
        };
        let problems_before = self.problems.len();

        // Names: present, well formed, unique.
        let mut names: Vec<Option<StageName>> = Vec::new();
        let mut first_seen: HashMap<String, Range<usize>> = HashMap::new();
        for stage in raw_stages {
            let name = match &stage.get_ref().name {
                None => {
                    let span = header_span(&self.text, stage.span());
                    self.report(
                        Problem::MissingKey { key: "name".into(), table: "[[stage]]" },
                        span,
                    );
                    None
                }
                Some(name) => match StageName::new(name.get_ref()) {
                    None => {
                        self.report(
                            Problem::BadStageName { name: name.get_ref().clone() },
                            name.span(),
                        );
                        None
                    }
                    Some(valid) => {
                        if let Some(first) = first_seen.get(name.get_ref()) {
                            let first_line = line_column(&self.text, first.start).0;
                            let invalid = self
                                .invalid(
                                    Problem::DuplicateStage {
                                        name: name.get_ref().clone(),
                                        first_line,
                                    },
                                    name.span(),
                                )
                                .with_secondary(first.clone(), "first defined here".into());
                            self.problems.push(invalid);
                        } else {
                            first_seen.insert(name.get_ref().clone(), name.span());
                        }
                        Some(valid)
                    }
                },
            };
            names.push(name);
        }

        // Parents: explicit ones must exist; the default is the stage above.
        let mut parents: Vec<Option<usize>> = Vec::new();
        for (index, stage) in raw_stages.iter().enumerate() {
            let parent = match &stage.get_ref().parent {
                Some(parent) => {
                    let found = names.iter().position(|name| {
                        name.as_ref().is_some_and(|n| n.as_str() == parent.get_ref())
                    });
                    if found.is_none() {
                        let known = names.iter().flatten().map(StageName::as_str);
                        let suggestion = suggest(parent.get_ref(), known);
                        self.report(
                            Problem::UnknownParent { parent: parent.get_ref().clone(), suggestion },
                            parent.span(),
                        );
                    }
                    found
                }
                None => index.checked_sub(1),
            };
            parents.push(parent);
        }
        let names_ok = self.problems.len() == problems_before;
        if names_ok {
            self.cycles(raw_stages, &names, &parents);
        }

        let kind = communicator.map(|communicator| communicator.kind);
        let mut built = Vec::new();
        for (index, stage) in raw_stages.iter().enumerate() {
            let parent = parents[index].and_then(|parent| names[parent].clone());
            let checked = self.stage(stage.get_ref(), kind, vars);
            if let (Some(name), Some((user_data, refresh, network, steps))) =
                (&names[index], checked)
            {
                built.push(Stage {
                    name: name.clone(),
                    parent,
                    user_data,
                    refresh,
                    network,
                    steps,
                });
            }
        }
        if self.problems.len() != problems_before || built.len() != raw_stages.len() {
            return None;
        }
        Some(parents_first(built, &parents))
    }

    /// Reports each cycle among parents once, at the explicit `parent` that closes it.
    fn cycles(
        &mut self,
        raw_stages: &[Spanned<RawStage>],
        names: &[Option<StageName>],
        parents: &[Option<usize>],
    ) {
        let mut reported: HashSet<usize> = HashSet::new();
        for start in 0..raw_stages.len() {
            let mut walk = vec![start];
            let mut current = parents[start];
            while let Some(at) = current {
                if let Some(position) = walk.iter().position(|&seen| seen == at) {
                    let cycle = &walk[position..];
                    if cycle.iter().any(|member| reported.contains(member)) {
                        break;
                    }
                    reported.extend(cycle.iter().copied());
                    // The member whose explicit parent points at itself or below it closes it.
                    let closer = cycle
                        .iter()
                        .copied()
                        .find(|&member| parents[member].is_some_and(|parent| parent >= member))
                        .unwrap_or(cycle[0]);
                    let mut order = vec![closer];
                    let mut next = parents[closer];
                    while let Some(member) = next {
                        order.push(member);
                        if member == closer {
                            break;
                        }
                        next = parents[member];
                    }
                    let cycle_names = order
                        .iter()
                        .map(|&member| {
                            names[member].as_ref().map_or_else(String::new, ToString::to_string)
                        })
                        .collect();
                    let span = raw_stages[closer]
                        .get_ref()
                        .parent
                        .as_ref()
                        .map_or_else(|| raw_stages[closer].span(), Spanned::span);
                    self.report(Problem::ParentCycle { cycle: cycle_names }, span);
                    break;
                }
                walk.push(at);
                current = parents[at];
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn stage(
        &mut self,
        stage: &RawStage,
        kind: Option<CommunicatorKind>,
        vars: &BTreeMap<String, String>,
    ) -> Option<(Option<PathBuf>, Option<Duration>, bool, Vec<Step>)> {
        let before = self.problems.len();
        let user_data = stage.user_data.as_ref().and_then(|text| self.user_data(text, vars));
        let refresh = match &stage.refresh {
            None => None,
            Some(text) => self.duration("refresh", Some(text), Duration::ZERO),
        };
        let network = stage.network.as_ref().is_none_or(|network| *network.get_ref());
        if let Some(network) = &stage.network
            && !*network.get_ref()
            && kind == Some(CommunicatorKind::Ssh)
        {
            self.report(Problem::NetworkNeedsGuestAgent, network.span());
        }
        let mut steps = Vec::new();
        if let Some(raw_steps) = &stage.steps {
            for step in raw_steps.get_ref() {
                if let Some(step) = self.step(step, vars) {
                    steps.push(step);
                }
            }
        }
        (self.problems.len() == before).then_some((user_data, refresh, network, steps))
    }

    fn user_data(&mut self, text: &Text, vars: &BTreeMap<String, String>) -> Option<PathBuf> {
        let path = self.existing_file("user_data", "user_data template", text)?;
        let template = match std::fs::read_to_string(&path) {
            Ok(template) => template,
            Err(error) => {
                self.report(
                    Problem::UnreadableFile {
                        what: "user_data template",
                        path,
                        reason: error.to_string(),
                    },
                    text.span(),
                );
                return None;
            }
        };
        let what = format!("user_data template {}", path.display());
        self.template(&what, &template, text.span(), vars, Some(SEED_TEMPLATE_VARIABLES))
            .then_some(path)
    }

    /// A local file a step or stage names: resolved, and it must exist (and be a file).
    fn existing_file(
        &mut self,
        key: &'static str,
        what: &'static str,
        text: &Text,
    ) -> Option<PathBuf> {
        if text.get_ref().trim().is_empty() {
            self.report(Problem::EmptyValue { key }, text.span());
            return None;
        }
        let path = self.resolve(text.get_ref());
        match std::fs::metadata(&path) {
            Err(_) => {
                self.report(Problem::MissingFile { what, path }, text.span());
                None
            }
            Ok(metadata) if !metadata.is_file() => {
                self.report(Problem::NotAFile { what, path }, text.span());
                None
            }
            Ok(_) => Some(path),
        }
    }

    /// Parses a template; checks `vars.NAME` references, and top-level names when `allowed`.
    fn template(
        &mut self,
        what: &str,
        source: &str,
        span: Range<usize>,
        vars: &BTreeMap<String, String>,
        allowed: Option<&[&str]>,
    ) -> bool {
        let environment = minijinja::Environment::new();
        let template = match environment.template_from_str(source) {
            Ok(template) => template,
            Err(error) => {
                let detail = error.detail().map_or_else(|| error.kind().to_string(), str::to_owned);
                self.report(
                    Problem::TemplateSyntax { what: what.to_owned(), line: error.line(), detail },
                    span,
                );
                return false;
            }
        };
        let mut used: Vec<String> = template.undeclared_variables(true).into_iter().collect();
        used.sort();
        let mut ok = true;
        for name in used {
            let mut parts = name.splitn(3, '.');
            let top = parts.next().unwrap_or_default();
            if top == "vars" {
                if let Some(var) = parts.next()
                    && !vars.contains_key(var)
                {
                    let suggestion = suggest(var, vars.keys().map(String::as_str));
                    self.report(
                        Problem::UnknownVar { name: var.to_owned(), suggestion },
                        span.clone(),
                    );
                    ok = false;
                }
                continue;
            }
            if let Some(allowed) = allowed
                && !allowed.contains(&top)
                && !TEMPLATE_BUILTINS.contains(&top)
            {
                let suggestion = suggest(top, allowed.iter().copied());
                self.report(
                    Problem::UnknownTemplateVariable { name: top.to_owned(), suggestion },
                    span.clone(),
                );
                ok = false;
            }
        }
        ok
    }

    fn step(
        &mut self,
        spanned: &Spanned<RawStep>,
        vars: &BTreeMap<String, String>,
    ) -> Option<Step> {
        let step = spanned.get_ref();
        let before = self.problems.len();
        let mut actions: Vec<&'static str> = Vec::new();
        for (name, present) in [
            ("run", step.run.is_some()),
            ("shell", step.shell.is_some()),
            ("upload", step.upload.is_some()),
            ("reboot", step.reboot.is_some()),
        ] {
            if present {
                actions.push(name);
            }
        }
        match actions.as_slice() {
            [] => {
                self.report(Problem::StepWithoutAction, spanned.span());
                return None;
            }
            [_] => {}
            _ => {
                self.report(Problem::StepWithManyActions { actions }, spanned.span());
                return None;
            }
        }
        if let (Some(to), Some(action)) = (&step.to, actions.first())
            && *action != "upload"
        {
            self.report(Problem::ToWithoutUpload { action }, to.span());
        }
        let action = if let Some(script) = &step.run {
            self.existing_file("run", "script", script).map(|script| StepAction::Run { script })
        } else if let Some(command) = &step.shell {
            if command.get_ref().trim().is_empty() {
                self.report(Problem::EmptyValue { key: "shell" }, command.span());
                None
            } else {
                Some(StepAction::Shell { command: command.get_ref().clone() })
            }
        } else if let Some(from) = &step.upload {
            self.upload(spanned, from)
        } else if let Some(reboot) = &step.reboot {
            if *reboot.get_ref() {
                Some(StepAction::Reboot)
            } else {
                self.report(Problem::RebootFalse, reboot.span());
                None
            }
        } else {
            None
        };
        let mut env = BTreeMap::new();
        for (name, value) in &step.env {
            if !is_env_name(name.get_ref()) {
                self.report(Problem::BadEnvName { name: name.get_ref().clone() }, name.span());
                continue;
            }
            let what = format!("env value `{}`", name.get_ref());
            if self.template(&what, value.get_ref(), value.span(), vars, None) {
                env.insert(name.get_ref().clone(), value.get_ref().clone());
            }
        }
        let timeout = self.duration("timeout", step.timeout.as_ref(), DEFAULT_STEP_TIMEOUT);
        if self.problems.len() != before {
            return None;
        }
        Some(Step { action: action?, env, timeout: timeout? })
    }

    fn upload(&mut self, spanned: &Spanned<RawStep>, from: &Text) -> Option<StepAction> {
        let step = spanned.get_ref();
        let to = match &step.to {
            None => {
                self.report(Problem::UploadWithoutTo, spanned.span());
                None
            }
            Some(to) if !to.get_ref().starts_with('/') => {
                self.report(Problem::RelativeTo { to: to.get_ref().clone() }, to.span());
                None
            }
            Some(to) => Some(to.get_ref().clone()),
        };
        if from.get_ref().trim().is_empty() {
            self.report(Problem::EmptyValue { key: "upload" }, from.span());
            return None;
        }
        let path = self.resolve(from.get_ref());
        if std::fs::symlink_metadata(&path).is_err() {
            self.report(Problem::MissingFile { what: "upload source", path }, from.span());
            return None;
        }
        Some(StepAction::Upload { from: path, to: to? })
    }
}

/// What serde said about the file's shape, as a problem.
fn shape_problem(message: &str) -> Problem {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (key, expected_text) = rest.split_once('`').unwrap_or((rest, ""));
        let expected: Vec<String> =
            expected_text.split('`').skip(1).step_by(2).map(str::to_owned).collect();
        let table = raw::table_of_keys(&expected);
        let suggestion = suggest(key, expected.iter().map(String::as_str));
        return Problem::UnknownKey { key: key.to_owned(), table, expected, suggestion };
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let key = rest.split('`').next().unwrap_or(rest).to_owned();
        return Problem::MissingKey { key, table: "this table" };
    }
    if message.starts_with("invalid type") || message.starts_with("invalid value") {
        return Problem::WrongType { message: message.to_owned() };
    }
    Problem::Malformed { message: message.to_owned() }
}

/// The `[table]` / `[[table]]` header line of a table's span, or the span itself for inline
/// tables: what to underline when a key is missing from it.
fn header_span(text: &str, span: Range<usize>) -> Range<usize> {
    let start = span.start.min(text.len());
    let rest = text.get(start..span.end.min(text.len())).unwrap_or("");
    let line_end = rest.find('\n').map_or(span.end, |at| start + at);
    start..line_end.max(start)
}

/// Parents before children; among stages whose order is free, the file's order.
fn parents_first(stages: Vec<Stage>, parents: &[Option<usize>]) -> Vec<Stage> {
    let mut order = Vec::with_capacity(stages.len());
    let mut placed = vec![false; stages.len()];
    for index in 0..stages.len() {
        let mut chain = vec![index];
        let mut current = parents[index];
        while let Some(parent) = current {
            if placed[parent] || chain.contains(&parent) {
                break;
            }
            chain.push(parent);
            current = parents[parent];
        }
        for &member in chain.iter().rev() {
            if !placed[member] {
                placed[member] = true;
                order.push(member);
            }
        }
    }
    let mut slots: Vec<Option<Stage>> = stages.into_iter().map(Some).collect();
    order.into_iter().filter_map(|index| slots.get_mut(index).and_then(Option::take)).collect()
}

/// A Linux user name as useradd takes it by default.
fn is_user_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let body = name.strip_suffix('$').unwrap_or(name);
    first_ok
        && name.len() <= 32
        && body
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Removes `.` and `..` components lexically, as a user reads `images/../scripts/x.sh`:
/// the paths in messages, manifests and logs then say `scripts/x.sh`.
#[must_use]
pub fn normalize(path: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(component);
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        assert!(is_user_name("debian"));
        assert!(is_user_name("_svc-1"));
        assert!(!is_user_name("Debian"));
        assert!(!is_user_name("1abc"));
        assert!(!is_user_name(""));
        assert!(!is_user_name("a b"));
        assert!(!is_user_name(&"a".repeat(33)));
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("APP_PORT"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name(""));
    }

    #[test]
    fn shape_problems_from_serde_messages() {
        let problem = shape_problem(
            "unknown field `nmae`, expected one of `name`, `parent`, `user_data`, `refresh`, `network`, `steps`",
        );
        assert_eq!(
            problem,
            Problem::UnknownKey {
                key: "nmae".into(),
                table: "[[stage]]",
                expected: raw::STAGE_KEYS.iter().map(|&k| k.to_owned()).collect(),
                suggestion: Some("name".into()),
            }
        );
        assert!(matches!(
            shape_problem("invalid type: integer `2`, expected a string"),
            Problem::WrongType { .. }
        ));
    }

    #[test]
    fn header_span_is_the_first_line() {
        let text = "[source]\nurl = \"x\"\n";
        assert_eq!(header_span(text, 0..text.len()), 0..8);
    }
}
