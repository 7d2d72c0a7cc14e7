//! The validated form of an image definition. Only these types leave `definition/`:
//! every path is absolute, every size and duration parsed and bounded, every stage's parent
//! resolved. The enums of choices derive clap's `ValueEnum`: their kebab-case words are the
//! ones definitions and the command line both take, written once.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use crate::units::ByteSize;

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

/// A validated `images/NAME.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDefinition {
    /// The definition file, absolute.
    pub path: PathBuf,
    pub name: String,
    pub description: Option<String>,
    pub source: Source,
    pub machine: Machine,
    pub communicator: Communicator,
    /// Free variables for seed templates and step environments.
    pub vars: BTreeMap<String, String>,
    /// Every stage, parents before children (the order of the file when it already is).
    pub stages: Vec<Stage>,
    pub export: Export,
    /// The `[[test]]` checks, in file order, names unique. Not layer inputs.
    pub tests: Vec<CheckSpec>,
    /// `[drift]`: what a layer's file manifest covers. Not a layer-key input.
    pub drift: Drift,
}

impl ImageDefinition {
    #[must_use]
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|stage| stage.name.as_str() == name)
    }

    /// The stages from the first layer up to and including `name`, in build order.
    #[must_use]
    pub fn chain_to(&self, name: &str) -> Vec<&Stage> {
        let mut chain = Vec::new();
        let mut current = self.stage(name);
        while let Some(stage) = current {
            chain.push(stage);
            current = stage.parent.as_ref().and_then(|parent| self.stage(parent.as_str()));
        }
        chain.reverse();
        chain
    }
}

/// Where the base image comes from and how it is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub location: Location,
    pub checksum: Checksum,
}

/// A URL to fetch, or a local file (file:// URLs and plain paths, made absolute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Http(String),
    File(PathBuf),
}

impl Location {
    /// The last path segment: what checksum files list and what the cache names after.
    #[must_use]
    pub fn file_name(&self) -> String {
        match self {
            Location::Http(url) => {
                let path = url.split(['?', '#']).next().unwrap_or(url);
                path.rsplit('/').next().unwrap_or(path).to_owned()
            }
            Location::File(path) => {
                path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default()
            }
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Http(url) => f.write_str(url),
            Location::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    Inline(Digest),
    /// A checksum file (GNU or BSD lines, maybe clear-signed) at this URL or local path.
    File(Location),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlgo {
    Sha256,
    Sha512,
}

impl HashAlgo {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha512 => "sha512",
        }
    }

    /// Length of the digest in hex characters.
    #[must_use]
    pub fn hex_len(self) -> usize {
        match self {
            HashAlgo::Sha256 => 64,
            HashAlgo::Sha512 => 128,
        }
    }
}

/// An algorithm and a lowercase hex digest of the right length.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algo: HashAlgo,
    hex: String,
}

impl Digest {
    /// Returns `None` when `hex` is not hex of the algorithm's length.
    #[must_use]
    pub fn new(algo: HashAlgo, hex: &str) -> Option<Self> {
        let valid = hex.len() == algo.hex_len() && hex.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| Digest { algo, hex: hex.to_ascii_lowercase() })
    }

    #[must_use]
    pub fn algo(&self) -> HashAlgo {
        self.algo
    }

    #[must_use]
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo.name(), self.hex)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub cpus: u32,
    pub memory: ByteSize,
    /// Virtual size of the first layer; `None` keeps the source's size.
    pub disk_size: Option<ByteSize>,
    pub firmware: Firmware,
    pub accel: AccelChoice,
    pub extra_args: Vec<String>,
}

impl Machine {
    /// QEMU's q35 machine takes up to 255 vCPUs without x2APIC interrupt remapping.
    pub const MAX_CPUS: u32 = 255;
    /// 1 TiB: what QEMU's default 40 physical address bits can map on any host.
    pub const MAX_MEMORY: ByteSize = ByteSize(ByteSize::TIB);
    /// 64 TiB: the largest virtual size qcow2 images are made for.
    pub const MAX_DISK_SIZE: ByteSize = ByteSize(64 * ByteSize::TIB);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Firmware {
    Bios,
    Uefi,
}

impl Firmware {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum AccelChoice {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Communicator {
    pub kind: CommunicatorKind,
    pub user: String,
    pub ready_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum CommunicatorKind {
    Ssh,
    GuestAgent,
}

/// A stage's name: unique within a definition, `[a-z0-9][a-z0-9_-]*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StageName(String);

impl StageName {
    /// Returns `None` for names that would not make safe file names.
    #[must_use]
    pub fn new(name: &str) -> Option<Self> {
        let mut chars = name.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok =
            chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        (first_ok && rest_ok && name.len() <= 64).then(|| StageName(name.to_owned()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub name: StageName,
    /// `None` for a stage built straight on the source.
    pub parent: Option<StageName>,
    /// The seed template, absolute; `None` uses strata's built-in one.
    pub user_data: Option<PathBuf>,
    /// The layer expires after this long, so updates get baked in.
    pub refresh: Option<Duration>,
    /// `false`: the guest gets no NIC.
    pub network: bool,
    /// `true`: sysprep leaves apt's and dnf/yum's indexes and downloads in the layer. By
    /// default they go: every stage that installs packages runs its own `apt-get update`
    /// (or dnf's metadata refresh) first, so they would only make every layer and export
    /// bigger (about 90% of a package-installing stage's layer). A layer-key input.
    pub keep_package_caches: bool,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub action: StepAction,
    /// Values are minijinja templates over `vars`, checked to parse; rendered at run time.
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepAction {
    /// A local script, uploaded and run as root.
    Run { script: PathBuf },
    /// A shell command run as root.
    Shell { command: String },
    /// A local file or directory tree copied into the guest, modes kept.
    Upload { from: PathBuf, to: String },
    /// Reboot the guest and wait for the communicator again.
    Reboot,
    /// The host's `ansible-playbook` run against the guest over the build's SSH.
    Ansible {
        /// Absolute; its whole folder is a layer input.
        playbook: PathBuf,
        extra_vars: BTreeMap<String, serde_json::Value>,
        tags: Vec<String>,
    },
}

impl StepAction {
    /// The step kind as a user writes it.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            StepAction::Run { .. } => "run",
            StepAction::Shell { .. } => "shell",
            StepAction::Upload { .. } => "upload",
            StepAction::Reboot => "reboot",
            StepAction::Ansible { .. } => "ansible",
        }
    }
}

impl fmt::Display for StepAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepAction::Run { script } => write!(f, "run: {}", script.display()),
            StepAction::Shell { command } => write!(f, "shell: {command}"),
            StepAction::Upload { from, to } => write!(f, "upload: {} -> {to}", from.display()),
            StepAction::Reboot => f.write_str("reboot"),
            StepAction::Ansible { playbook, .. } => write!(f, "ansible: {}", playbook.display()),
        }
    }
}

/// `[drift]`, checked by drift's rules: the roots a layer's manifest walks and the ignore rules
/// (drift's defaults plus the definition's patterns).
#[derive(Debug, Clone)]
pub struct Drift {
    pub roots: crate::drift::Roots,
    pub ignore: crate::drift::IgnoreRules,
}

impl PartialEq for Drift {
    fn eq(&self, other: &Drift) -> bool {
        self.roots == other.roots && self.ignore.patterns() == other.ignore.patterns()
    }
}

impl Drift {
    /// The collection script that records this manifest (and the packages).
    #[must_use]
    pub fn collect_script(&self) -> String {
        crate::drift::collect_script(&self.roots, &self.ignore)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub formats: Vec<ExportFormat>,
    pub compression: Compression,
    pub targets: Vec<ExportTarget>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum ExportFormat {
    Qcow2,
    Raw,
    Vmdk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Compression {
    None,
    Zlib,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum ExportTarget {
    Generic,
    Openstack,
    Proxmox,
}

/// The longest timeout a check may ask for.
pub const MAX_CHECK_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a check may take unless it says otherwise.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// One validated `[[test]]` (DESIGN §8): run on a fresh boot of a built stage by `strata test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    pub name: String,
    pub kind: CheckKind,
    pub timeout: Duration,
}

/// What a check looks at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// Fetched inside the guest: passes on `status` (and `contains` in the body, if given).
    Http { url: String, status: u16, contains: Option<String> },
    /// Passes when the command exits 0; run once, as root.
    Shell { command: String },
    /// Passes when the systemd unit is active.
    Service { unit: String },
    /// Passes when something listens on this TCP port.
    Port { port: u16 },
}

impl CheckKind {
    /// The retried kinds wait for a service that may still be starting after boot.
    #[must_use]
    pub fn retried(&self) -> bool {
        !matches!(self, CheckKind::Shell { .. })
    }

    /// A word for displays: `http`, `shell`, `service`, `port`.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            CheckKind::Http { .. } => "http",
            CheckKind::Shell { .. } => "shell",
            CheckKind::Service { .. } => "service",
            CheckKind::Port { .. } => "port",
        }
    }

    /// What is wrong with this check's values, if anything (the one place these rules live:
    /// definitions and `check::Check::new` both ask it).
    #[must_use]
    pub fn problem(&self) -> Option<String> {
        match self {
            CheckKind::Http { url, status, contains } => {
                let parsed = match url::Url::parse(url) {
                    Ok(parsed) => parsed,
                    Err(error) => return Some(format!("`{url}` is not a URL: {error}")),
                };
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Some(format!("`{url}` is not an http:// or https:// URL"));
                }
                if !(100..=599).contains(status) {
                    return Some(format!("status {status} is not an HTTP status (100 to 599)"));
                }
                if contains.as_deref().is_some_and(|text| text.is_empty() || text.contains('\0')) {
                    return Some("`contains` must be non-empty text without NUL bytes".to_owned());
                }
            }
            CheckKind::Shell { command } => {
                if command.trim().is_empty() || command.contains('\0') {
                    return Some(
                        "the shell command must be non-empty, without NUL bytes".to_owned(),
                    );
                }
            }
            CheckKind::Service { unit } => {
                // systemd's own alphabet for unit names (see systemd.unit(5)).
                let allowed = |c: char| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c);
                if unit.is_empty() || unit.len() > 255 || !unit.chars().all(allowed) {
                    return Some(format!(
                        "`{unit}` is not a systemd unit name (letters, digits and `:-_.\\@`)"
                    ));
                }
            }
            CheckKind::Port { port } => {
                if *port == 0 {
                    return Some("port 0 is not a port: use 1 to 65535".to_owned());
                }
            }
        }
        None
    }
}
