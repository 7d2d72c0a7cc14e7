//! What can be wrong with a definition, and where: `Problem` says what (message, label,
//! help), `Invalid` adds the file, the span and the line:column, and carries any further
//! problems found in the same file. Owns wording and miette plumbing; must not check anything.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode, SourceSpan};

use super::types::{Machine, SEED_TEMPLATE_VARIABLES};

/// One thing wrong with a definition, without its location.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The file is not TOML.
    Syntax {
        message: String,
    },
    UnknownKey {
        key: String,
        table: &'static str,
        expected: Vec<String>,
        suggestion: Option<String>,
    },
    MissingKey {
        key: String,
        table: &'static str,
    },
    /// A value of the wrong type, in serde's words ("invalid type: integer `2`, expected a string").
    WrongType {
        message: String,
    },
    /// Any other complaint of the deserializer.
    Malformed {
        message: String,
    },
    BadSize {
        key: &'static str,
        text: String,
    },
    BadDuration {
        key: &'static str,
        text: String,
    },
    ZeroDuration {
        key: &'static str,
    },
    BadChecksum {
        text: String,
        reason: String,
    },
    ChecksumAndChecksumUrl,
    NoChecksum,
    NoSource,
    NoUrl,
    BadLocation {
        key: &'static str,
        text: String,
        reason: String,
    },
    BadChoice {
        key: &'static str,
        value: String,
        choices: Vec<String>,
        suggestion: Option<String>,
    },
    EmptyList {
        key: &'static str,
    },
    BadImageName {
        name: String,
    },
    BadStageName {
        name: String,
    },
    NoStages,
    DuplicateStage {
        name: String,
        first_line: usize,
    },
    UnknownParent {
        parent: String,
        suggestion: Option<String>,
    },
    ParentCycle {
        cycle: Vec<String>,
    },
    StepWithoutAction,
    StepWithManyActions {
        actions: Vec<&'static str>,
    },
    UploadWithoutTo,
    ToWithoutUpload {
        action: &'static str,
    },
    RelativeTo {
        to: String,
    },
    RebootFalse,
    EmptyValue {
        key: &'static str,
    },
    MissingFile {
        what: &'static str,
        path: PathBuf,
    },
    NotAFile {
        what: &'static str,
        path: PathBuf,
    },
    UnreadableFile {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    TemplateSyntax {
        what: String,
        line: Option<usize>,
        detail: String,
    },
    UnknownVar {
        name: String,
        suggestion: Option<String>,
    },
    UnknownTemplateVariable {
        name: String,
        suggestion: Option<String>,
    },
    BadEnvName {
        name: String,
    },
    /// `[drift] roots` or `ignore`, in drift's words.
    BadDrift {
        message: String,
    },
    NetworkNeedsGuestAgent,
    BadCpus {
        value: i64,
    },
    MemoryTooSmall {
        text: String,
    },
    /// A size or duration beyond what QEMU or the clock can take.
    TooLarge {
        key: &'static str,
        text: String,
        max: String,
    },
    BadUser {
        user: String,
    },
    RootUser,
    AnsibleNeedsSsh,
    AnsibleKeyWithoutAnsible {
        key: &'static str,
    },
    BadTag {
        tag: String,
    },
    /// A `[[test]]` whose values do not make a check (the reason says which).
    BadCheck {
        name: String,
        reason: String,
    },
    DuplicateCheck {
        name: String,
    },
}

fn backticked(items: &[impl AsRef<str>]) -> String {
    items.iter().map(|item| format!("`{}`", item.as_ref())).collect::<Vec<_>>().join(", ")
}

fn did_you_mean(suggestion: Option<&String>) -> String {
    suggestion.map(|s| format!(": did you mean `{s}`?")).unwrap_or_default()
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Syntax { message } => write!(f, "invalid TOML: {message}"),
            Problem::UnknownKey { key, table, suggestion, .. } => {
                write!(f, "unknown key `{key}` in {table}{}", did_you_mean(suggestion.as_ref()))
            }
            Problem::MissingKey { key, table } => write!(f, "missing key `{key}` in {table}"),
            Problem::WrongType { message } => write!(f, "wrong type: {message}"),
            Problem::Malformed { message } | Problem::BadDrift { message } => f.write_str(message),
            Problem::BadSize { key, text } => write!(f, "`{key}` is not a size: \"{text}\""),
            Problem::BadDuration { key, text } => {
                write!(f, "`{key}` is not a duration: \"{text}\"")
            }
            Problem::ZeroDuration { key } => write!(f, "`{key}` must be longer than zero"),
            Problem::BadChecksum { text, reason } => {
                write!(f, "bad checksum \"{text}\": {reason}")
            }
            Problem::ChecksumAndChecksumUrl => {
                f.write_str("[source] has both `checksum` and `checksum_url`")
            }
            Problem::NoChecksum => {
                f.write_str("[source] has neither `checksum` nor `checksum_url`")
            }
            Problem::NoSource => f.write_str("missing [source] table"),
            Problem::NoUrl => f.write_str("missing key `url` in [source]"),
            Problem::BadLocation { key, text, reason } => {
                write!(f, "bad `{key}` \"{text}\": {reason}")
            }
            Problem::BadChoice { key, value, suggestion, .. } => {
                write!(f, "unknown {key} \"{value}\"{}", did_you_mean(suggestion.as_ref()))
            }
            Problem::EmptyList { key } => write!(f, "`{key}` is an empty list"),
            Problem::BadImageName { name } => write!(f, "bad image name \"{name}\""),
            Problem::BadStageName { name } => write!(f, "bad stage name \"{name}\""),
            Problem::NoStages => f.write_str("the definition has no [[stage]]"),
            Problem::DuplicateStage { name, first_line } => {
                write!(f, "duplicate stage name \"{name}\" (first defined on line {first_line})")
            }
            Problem::UnknownParent { parent, suggestion } => {
                write!(f, "unknown parent stage \"{parent}\"{}", did_you_mean(suggestion.as_ref()))
            }
            Problem::ParentCycle { cycle } => {
                write!(f, "stage parents form a cycle: {}", cycle.join(" -> "))
            }
            Problem::StepWithoutAction => f.write_str("step has no action"),
            Problem::StepWithManyActions { actions } => {
                write!(f, "step has {} actions: {}", actions.len(), backticked(actions))
            }
            Problem::UploadWithoutTo => f.write_str("upload step without `to`"),
            Problem::ToWithoutUpload { action } => write!(f, "`to` on a `{action}` step"),
            Problem::RelativeTo { to } => write!(f, "upload destination \"{to}\" is not absolute"),
            Problem::RebootFalse => f.write_str("`reboot = false` is not a step"),
            Problem::EmptyValue { key } => write!(f, "`{key}` is empty"),
            Problem::MissingFile { what, path } => {
                write!(f, "{what} {} does not exist", path.display())
            }
            Problem::NotAFile { what, path } => {
                write!(f, "{what} {} is not a file", path.display())
            }
            Problem::UnreadableFile { what, path, reason } => {
                write!(f, "failed to read {what} {}: {reason}", path.display())
            }
            Problem::TemplateSyntax { what, line: Some(line), detail } => {
                write!(f, "syntax error in {what} at template line {line}: {detail}")
            }
            Problem::TemplateSyntax { what, line: None, detail } => {
                write!(f, "syntax error in {what}: {detail}")
            }
            Problem::UnknownVar { name, suggestion } => {
                write!(f, "unknown variable `vars.{name}`{}", did_you_mean(suggestion.as_ref()))
            }
            Problem::UnknownTemplateVariable { name, suggestion } => {
                write!(f, "unknown template variable `{name}`{}", did_you_mean(suggestion.as_ref()))
            }
            Problem::BadEnvName { name } => write!(f, "bad environment variable name \"{name}\""),
            Problem::NetworkNeedsGuestAgent => {
                f.write_str("`network = false` needs the guest-agent communicator")
            }
            Problem::BadCpus { value } => {
                write!(f, "`cpus` must be from 1 to {}, not {value}", Machine::MAX_CPUS)
            }
            Problem::MemoryTooSmall { text } => {
                write!(f, "`memory` \"{text}\" is below the minimum of 256M")
            }
            Problem::TooLarge { key, text, max } => {
                write!(f, "`{key}` \"{text}\" is above the maximum of {max}")
            }
            Problem::BadUser { user } => write!(f, "bad user name \"{user}\""),
            Problem::RootUser => f.write_str("the communicator user must not be root"),
            Problem::AnsibleNeedsSsh => f.write_str("an `ansible` step needs the ssh communicator"),
            Problem::AnsibleKeyWithoutAnsible { key } => {
                write!(f, "`{key}` on a step that is not an `ansible` step")
            }
            Problem::BadTag { tag } => write!(f, "bad Ansible tag \"{tag}\""),
            Problem::BadCheck { name, reason } => write!(f, "test \"{name}\": {reason}"),
            Problem::DuplicateCheck { name } => write!(f, "two tests are named \"{name}\""),
        }
    }
}

impl Problem {
    /// The short text under the underlined span.
    #[must_use]
    pub fn label(&self) -> String {
        match self {
            Problem::Syntax { .. } => "invalid TOML here".into(),
            Problem::UnknownKey { suggestion: Some(s), .. } => format!("did you mean `{s}`?"),
            Problem::UnknownKey { .. } => "unknown key".into(),
            Problem::MissingKey { key, .. } => format!("this table needs `{key}`"),
            Problem::WrongType { message } => message.split_once(", expected ").map_or_else(
                || "wrong type".into(),
                |(_, expected)| format!("expected {expected}"),
            ),
            Problem::Malformed { .. } | Problem::BadDrift { .. } => "here".into(),
            Problem::BadSize { .. } => "not a size".into(),
            Problem::BadDuration { .. } => "not a duration".into(),
            Problem::ZeroDuration { .. } => "zero".into(),
            Problem::BadChecksum { reason, .. }
            | Problem::BadLocation { reason, .. }
            | Problem::UnreadableFile { reason, .. } => reason.clone(),
            Problem::ChecksumAndChecksumUrl => "only one of these".into(),
            Problem::NoChecksum => "this table needs `checksum` or `checksum_url`".into(),
            Problem::NoSource => "no [source] in this file".into(),
            Problem::NoUrl => "this table needs `url`".into(),
            Problem::BadChoice { suggestion: Some(s), .. }
            | Problem::UnknownParent { suggestion: Some(s), .. } => {
                format!("did you mean \"{s}\"?")
            }
            Problem::BadChoice { choices, .. } => format!("one of {}", quoted(choices)),
            Problem::EmptyList { .. } | Problem::EmptyValue { .. } => "empty".into(),
            Problem::BadImageName { .. } | Problem::BadStageName { .. } => "bad name".into(),
            Problem::NoStages => "no [[stage]] in this file".into(),
            Problem::DuplicateStage { .. } => "second stage with this name".into(),
            Problem::UnknownParent { .. } => "no stage has this name".into(),
            Problem::ParentCycle { .. } => "this parent closes the cycle".into(),
            Problem::StepWithoutAction => "no action".into(),
            Problem::StepWithManyActions { .. } => "more than one action".into(),
            Problem::UploadWithoutTo => "needs `to`".into(),
            Problem::ToWithoutUpload { .. } => "only upload steps take `to`".into(),
            Problem::RelativeTo { .. } => "relative path".into(),
            Problem::RebootFalse => "false".into(),
            Problem::MissingFile { path, .. } => format!("{} not found", path.display()),
            Problem::NotAFile { .. } => "not a file".into(),
            Problem::TemplateSyntax { line: Some(line), detail, .. } => {
                format!("line {line}: {detail}")
            }
            Problem::TemplateSyntax { detail, .. } => detail.clone(),
            Problem::UnknownVar { .. } | Problem::UnknownTemplateVariable { .. } => {
                "not defined".into()
            }
            Problem::BadEnvName { .. } => "not a variable name".into(),
            Problem::NetworkNeedsGuestAgent => "no network for an ssh communicator".into(),
            Problem::BadCpus { .. } => format!("must be 1 to {}", Machine::MAX_CPUS),
            Problem::MemoryTooSmall { .. } => "too small".into(),
            Problem::TooLarge { max, .. } => format!("more than {max}"),
            Problem::BadUser { .. } | Problem::RootUser => "bad user".into(),
            Problem::AnsibleNeedsSsh => "ansible-playbook logs in over SSH".into(),
            Problem::AnsibleKeyWithoutAnsible { .. } => "only ansible steps take this".into(),
            Problem::BadTag { .. } => "not a tag".into(),
            Problem::BadCheck { .. } => "not a check".into(),
            Problem::DuplicateCheck { .. } => "second test with this name".into(),
        }
    }

    /// What to do about it.
    #[must_use]
    pub fn help(&self) -> String {
        match self {
            Problem::Syntax { .. } => {
                "fix the TOML syntax here; strings need double quotes, tables [name], arrays of \
                 tables [[name]]"
                    .into()
            }
            Problem::UnknownKey { suggestion: Some(s), .. } => format!("rename it to `{s}`"),
            Problem::UnknownKey { expected, .. } if expected.is_empty() => {
                "remove it: this table takes no keys".into()
            }
            Problem::UnknownKey { table, expected, .. } => {
                format!("remove it; {table} takes {}", backticked(expected))
            }
            Problem::MissingKey { key, .. } => format!("add `{key} = ...` to this table"),
            Problem::WrongType { message } if message.contains("expected a string") => {
                "write this value as a string, in double quotes (sizes and durations too: \
                 \"2G\", \"10m\")"
                    .into()
            }
            Problem::WrongType { .. } => "change the value to the expected type".into(),
            Problem::Malformed { .. } => "fix the value here".into(),
            Problem::BadSize { .. } => {
                "write a number with an optional unit, like \"512M\", \"2G\" or \"20G\"".into()
            }
            Problem::BadDuration { .. } => {
                "write a number with a unit, like \"90s\", \"10m\", \"1h30m\" or \"7d\"".into()
            }
            Problem::ZeroDuration { key } => {
                format!("give `{key}` a positive duration, like \"10m\"")
            }
            Problem::BadChecksum { .. } => {
                "write \"sha256:\" followed by 64 hex digits, or \"sha512:\" followed by 128".into()
            }
            Problem::ChecksumAndChecksumUrl => {
                "keep one: an inline `checksum`, or a `checksum_url` that lists the file".into()
            }
            Problem::NoChecksum => {
                "add `checksum = \"sha256:HEX\"` or `checksum_url = \"URL or path of a SHA256SUMS \
                 file\"`"
                    .into()
            }
            Problem::NoSource => {
                "add a [source] table with `url` and `checksum` (or `checksum_url`)".into()
            }
            Problem::NoUrl => {
                "add `url = \"https://...\"` (or a file:// URL, or a path relative to this file)"
                    .into()
            }
            Problem::BadLocation { .. } => {
                "write an http(s):// URL, a file:///absolute/path URL, or a path relative to \
                 this file"
                    .into()
            }
            Problem::BadChoice { key, choices, .. } => {
                format!("set {key} to one of {}", quoted(choices))
            }
            Problem::EmptyList { key } => {
                format!("list at least one value in `{key}`, or remove it")
            }
            Problem::EmptyValue { key } => format!("give `{key}` a value"),
            Problem::BadImageName { .. } => {
                "use lowercase letters, digits, `-` and `_`, starting with a letter or digit (it \
                 names exported files)"
                    .into()
            }
            Problem::BadStageName { .. } => {
                "use lowercase letters, digits, `-` and `_`, starting with a letter or digit, at \
                 most 64 characters"
                    .into()
            }
            Problem::NoStages => {
                "add at least one stage: [[stage]] with `name` and `steps = [...]`".into()
            }
            Problem::DuplicateStage { .. } => "give each stage its own name".into(),
            Problem::UnknownParent { suggestion: Some(s), .. } => {
                format!("set `parent` to \"{s}\", or remove it to build on the stage above")
            }
            Problem::UnknownParent { .. } => {
                "name a stage of this file, or remove `parent` to build on the stage above".into()
            }
            Problem::ParentCycle { .. } => {
                "a stage cannot be built on itself or its own descendants: change one `parent` \
                 (without `parent`, a stage builds on the one above it)"
                    .into()
            }
            Problem::StepWithoutAction | Problem::StepWithManyActions { .. } => {
                "give each step exactly one of `run = \"script\"`, `shell = \"command\"`, `upload \
                 = \"path\", to = \"/guest/path\"`, `reboot = true` or `ansible = \"site.yml\"`"
                    .into()
            }
            Problem::UploadWithoutTo => {
                "add `to = \"/absolute/path/in/the/guest\"` to this step".into()
            }
            Problem::ToWithoutUpload { .. } => {
                "remove `to`, or make the step `upload = \"path\", to = \"/guest/path\"`".into()
            }
            Problem::RelativeTo { to } => format!("write the guest path absolute, like \"/{to}\""),
            Problem::RebootFalse => "remove the step, or write `reboot = true`".into(),
            Problem::MissingFile { .. } => {
                "paths are relative to the definition file's folder: fix the path or create the \
                 file"
                    .into()
            }
            Problem::NotAFile { .. } | Problem::UnreadableFile { .. } => {
                "point this at a readable file".into()
            }
            Problem::TemplateSyntax { .. } => "fix the minijinja template syntax".into(),
            Problem::UnknownVar { name, suggestion: Some(s) } => {
                format!("use `vars.{s}`, or add `{name} = \"...\"` to [vars]")
            }
            Problem::UnknownVar { name, .. } => format!("add `{name} = \"...\"` to [vars]"),
            Problem::UnknownTemplateVariable { .. } => {
                format!("seed templates get {}", backticked(SEED_TEMPLATE_VARIABLES))
            }
            Problem::BadEnvName { .. } => {
                "use letters, digits and `_`, not starting with a digit".into()
            }
            Problem::BadDrift { .. } => {
                "write absolute paths (\"/etc\") for roots and absolute glob patterns \
                 (\"/etc/ssh/ssh_host_*\") for ignore"
                    .into()
            }
            Problem::NetworkNeedsGuestAgent => {
                "set [communicator] kind = \"guest-agent\", or remove `network = false`".into()
            }
            Problem::BadCpus { .. } => {
                format!(
                    "set `cpus` from 1 to {} (what QEMU's q35 machine takes)",
                    Machine::MAX_CPUS
                )
            }
            Problem::TooLarge { key, max, .. } => {
                format!(
                    "set `{key}` to at most {max}: more is beyond what QEMU or the clock can do"
                )
            }
            Problem::MemoryTooSmall { .. } => {
                "give the guest at least \"256M\"; cloud images want \"1G\" or more".into()
            }
            Problem::BadUser { .. } => {
                "use a Linux user name: lowercase letters, digits, `_` and `-`, starting with a \
                 letter or `_`, at most 32 characters"
                    .into()
            }
            Problem::RootUser => {
                "use an unprivileged account (steps run as root through sudo), like \"strata\""
                    .into()
            }
            Problem::AnsibleNeedsSsh => {
                "set [communicator] kind = \"ssh\", or replace the ansible step with `run` or \
                 `shell` steps"
                    .into()
            }
            Problem::AnsibleKeyWithoutAnsible { .. } => {
                "remove it, or make the step `ansible = \"path/site.yml\"`".into()
            }
            Problem::BadTag { .. } => "write each tag as its own non-empty string".into(),
            Problem::BadCheck { .. } => {
                "give each [[test]] a `name` and exactly one of `http = \"URL\"` (with optional \
                 `status` and `contains`), `shell = \"command\"`, `service = \"unit\"` or \
                 `port = N`, and an optional `timeout` from \"1s\" to \"1h\""
                    .into()
            }
            Problem::DuplicateCheck { .. } => "give each [[test]] its own name".into(),
        }
    }
}

fn quoted(items: &[impl AsRef<str>]) -> String {
    items.iter().map(|item| format!("\"{}\"", item.as_ref())).collect::<Vec<_>>().join(", ")
}

/// The definition's text with where each line starts, computed once: every problem finds
/// its line by binary search, so thousands of problems cost no more than the file's length.
#[derive(Debug, Clone)]
pub(super) struct Lines {
    text: Arc<String>,
    /// Byte offset of each line's start, and whether the line is ASCII (column = byte offset).
    starts: Arc<Vec<(usize, bool)>>,
}

/// Lines longer than this (in bytes) are not shown as a snippet: miette cannot underline past
/// column 65,535 (it panics), and a screen of one line helps nobody. The message and
/// FILE:LINE:COL still say where.
const MAX_SNIPPET_LINE: usize = 4096;

impl Lines {
    pub(super) fn new(text: Arc<String>) -> Self {
        let mut starts = Vec::new();
        let mut start = 0;
        for line in text.split_inclusive('\n') {
            starts.push((start, line.is_ascii()));
            start += line.len();
        }
        if starts.is_empty() || text.ends_with('\n') {
            starts.push((start, true));
        }
        Lines { text, starts: Arc::new(starts) }
    }

    pub(super) fn text(&self) -> &Arc<String> {
        &self.text
    }

    /// 0-based index of the line holding byte `offset`.
    fn line_index(&self, offset: usize) -> usize {
        self.starts.partition_point(|&(start, _)| start <= offset).saturating_sub(1)
    }

    /// 1-based line and character column of a byte offset (on a character boundary).
    pub(super) fn line_column(&self, offset: usize) -> (usize, usize) {
        let index = self.line_index(offset);
        let (start, ascii) = self.starts.get(index).copied().unwrap_or((0, true));
        let offset = offset.clamp(start, self.text.len());
        let column = if ascii {
            offset - start
        } else {
            self.text.get(start..offset).map_or(0, |before| before.chars().count())
        };
        (index + 1, column + 1)
    }

    /// Whether every line `span` touches, and the line either side (miette's context), is
    /// short enough to show.
    fn fits_a_snippet(&self, span: &Range<usize>) -> bool {
        let first = self.line_index(span.start).saturating_sub(1);
        let last = (self.line_index(span.end) + 1).min(self.starts.len().saturating_sub(1));
        (first..=last).all(|index| {
            let start = self.starts.get(index).map_or(0, |&(start, _)| start);
            let end = self.starts.get(index + 1).map_or(self.text.len(), |&(end, _)| end);
            end.saturating_sub(start) <= MAX_SNIPPET_LINE
        })
    }
}

/// A problem with its place in the file: 1-based line and column (in characters).
#[derive(Debug, Clone)]
pub struct Invalid {
    path: PathBuf,
    problem: Problem,
    span: Range<usize>,
    line: usize,
    column: usize,
    /// A second place worth showing, like the first stage of a duplicated name.
    secondary: Option<(Range<usize>, String)>,
    source: NamedSource<Arc<String>>,
    /// The lines around the spans are short enough for miette to underline.
    snippet: bool,
    /// Further problems in the same file, after this one.
    others: Vec<Invalid>,
}

impl Invalid {
    pub(super) fn new(path: &Path, lines: &Lines, problem: Problem, span: Range<usize>) -> Self {
        let span = clamp(lines.text(), span);
        let (line, column) = lines.line_column(span.start);
        Invalid {
            path: path.to_owned(),
            problem,
            line,
            column,
            secondary: None,
            source: NamedSource::new(path.display().to_string(), Arc::clone(lines.text()))
                .with_language("toml"),
            snippet: lines.fits_a_snippet(&span),
            span,
            others: Vec::new(),
        }
    }

    pub(super) fn with_secondary(
        mut self,
        lines: &Lines,
        span: Range<usize>,
        label: String,
    ) -> Self {
        let span = clamp(self.source.inner(), span);
        self.snippet &= lines.fits_a_snippet(&span);
        self.secondary = Some((span, label));
        self
    }

    pub(super) fn with_others(mut self, others: Vec<Invalid>) -> Self {
        self.others = others;
        self
    }

    /// This problem with only the first `count` problems of the file (itself included), and
    /// how many were left out: what a person can read.
    #[must_use]
    pub fn first(&self, count: usize) -> (Invalid, usize) {
        let keep = count.saturating_sub(1).min(self.others.len());
        let shown = Invalid {
            path: self.path.clone(),
            problem: self.problem.clone(),
            span: self.span.clone(),
            line: self.line,
            column: self.column,
            secondary: self.secondary.clone(),
            source: self.source.clone(),
            snippet: self.snippet,
            others: self.others.get(..keep).unwrap_or_default().to_vec(),
        };
        (shown, self.others.len() - keep)
    }

    /// The definition file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    #[must_use]
    pub fn problem(&self) -> &Problem {
        &self.problem
    }

    /// 1-based line of the span's start.
    #[must_use]
    pub fn line(&self) -> usize {
        self.line
    }

    /// 1-based column, in characters, of the span's start.
    #[must_use]
    pub fn column(&self) -> usize {
        self.column
    }

    /// Byte range of the offending text.
    #[must_use]
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// The offending text itself.
    #[must_use]
    pub fn snippet(&self) -> &str {
        self.source.inner().get(self.span.clone()).unwrap_or("")
    }

    /// "FILE:LINE:COL", as editors and compilers write it.
    #[must_use]
    pub fn location(&self) -> String {
        format!("{}:{}:{}", self.path.display(), self.line, self.column)
    }

    /// Every further problem found in the same file.
    #[must_use]
    pub fn others(&self) -> &[Invalid] {
        &self.others
    }

    /// This problem and the others, in file order.
    pub fn all(&self) -> impl Iterator<Item = &Invalid> {
        std::iter::once(self).chain(self.others.iter())
    }
}

impl fmt::Display for Invalid {
    /// The problem; with its location in front when no snippet will show where it is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.snippet {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.location(), self.problem)
        }
    }
}

impl std::error::Error for Invalid {}

impl Diagnostic for Invalid {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.problem.help()))
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.snippet.then_some(&self.source as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if !self.snippet {
            return None;
        }
        let primary = LabeledSpan::new_primary_with_span(
            Some(self.problem.label()),
            SourceSpan::from(self.span.clone()),
        );
        let secondary = self.secondary.as_ref().map(|(span, label)| {
            LabeledSpan::new_with_span(Some(label.clone()), SourceSpan::from(span.clone()))
        });
        Some(Box::new(std::iter::once(primary).chain(secondary)))
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        if self.others.is_empty() {
            return None;
        }
        Some(Box::new(self.others.iter().map(|other| other as &dyn Diagnostic)))
    }
}

/// Keeps a span inside the text and on character boundaries.
fn clamp(text: &str, span: Range<usize>) -> Range<usize> {
    let mut start = span.start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    if span.end <= span.start {
        return start..start;
    }
    let mut end = span.end.clamp(start, text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    start..end
}

/// Words longer than this get no suggestion: nobody mistypes a 65-character key, and the
/// distance table grows with the product of the lengths.
const MAX_SUGGESTED_LEN: usize = 64;
/// At most this many candidates are compared (a [vars] table may hold thousands).
const MAX_CANDIDATES: usize = 1000;

/// The closest candidate by edit distance (a swap of neighbours counts as one edit), when it
/// is close enough to be a likely typo.
pub(super) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let length = word.chars().count();
    if length > MAX_SUGGESTED_LEN {
        return None;
    }
    let limit = (length / 3).max(1) + usize::from(word.len() > 6);
    candidates
        .into_iter()
        .take(MAX_CANDIDATES)
        .filter(|candidate| candidate.len().abs_diff(word.len()) <= limit * 4)
        .filter(|candidate| candidate.chars().count().abs_diff(length) <= limit)
        .map(|candidate| (strsim::osa_distance(word, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= limit && *candidate != word)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        let lines = Lines::new(Arc::new(text.to_owned()));
        assert_eq!(lines.line_column(0), (1, 1));
        assert_eq!(lines.line_column(4), (1, 5));
        assert_eq!(lines.line_column(6), (2, 1));
        assert_eq!(lines.line_column(text.rfind('=').unwrap_or(0)), (2, 4));
        assert_eq!(lines.line_column(text.len()), (3, 1));
    }

    #[test]
    fn long_names_get_no_suggestion_and_cost_nothing() {
        let long = "v".repeat(20_000);
        let near = format!("{long}w");
        let started = std::time::Instant::now();
        assert_eq!(suggest(&long, [near.as_str()]), None);
        let many: Vec<String> = (0..100_000).map(|i| format!("name{i}")).collect();
        assert_eq!(suggest("nmae0", many.iter().map(String::as_str)), Some("name0".into()));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn lines_too_long_for_a_snippet() {
        let text = format!("a = 1\nb = 2\nc = [{}]\n", " ".repeat(70_000));
        let lines = Lines::new(Arc::new(text));
        assert!(lines.fits_a_snippet(&(0..1)));
        assert!(!lines.fits_a_snippet(&(12..13)), "on the long line");
        assert!(!lines.fits_a_snippet(&(6..7)), "the long line is context");
    }

    #[test]
    fn suggestions_catch_typos_only() {
        let keys = ["name", "parent", "user_data", "refresh", "network", "steps"];
        assert_eq!(suggest("nmae", keys), Some("name".into()));
        assert_eq!(suggest("step", keys), Some("steps".into()));
        assert_eq!(suggest("userdata", keys), Some("user_data".into()));
        assert_eq!(suggest("zzz", keys), None);
        assert_eq!(suggest("memory", keys), None);
    }

    #[test]
    fn clamp_keeps_char_boundaries() {
        let text = "é";
        assert_eq!(clamp(text, 1..1), 0..0);
        assert_eq!(clamp(text, 0..1), 0..2);
        assert_eq!(clamp(text, 5..9), 2..2);
    }
}
