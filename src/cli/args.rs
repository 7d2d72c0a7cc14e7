//! The command line as clap types. Parsing only: no I/O here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::cache::CacheUrl;
use crate::definition::{ExportFormat, ExportTarget};
pub use crate::report::LogFormat;
use crate::units::ByteSize;

/// Every subcommand with its flags and an example, under `strata --help`.
const SYNOPSIS: &str = "\
Synopsis:
  strata validate DEF...                check definitions; nothing is downloaded or booted
      e.g. strata validate images/*.toml
  strata fetch DEF [--offline]          download and verify the source into the store
      e.g. strata fetch images/demo.toml
  strata build DEF [--stage NAME] [--rebuild NAME] [--offline] [--keep-failed] [--verify]
                   [--no-warm] [--max-restore-size SIZE] [--test] [--junit FILE] [--push]
                   [--cache-required] [--cache-restore]
      e.g. strata build images/demo.toml --push --cache oci://registry.example/strata
  strata layers DEF                     each stage: cache key, cached or not, size, age, parent
      e.g. strata layers images/demo.toml
  strata push DEF [--stage NAME] [--cache-restore]   built layers and the source to --cache
      e.g. strata push images/demo.toml --cache oci://registry.example/strata
  strata pull DEF [--stage NAME] [--cache-restore]   layers and the source from --cache
      e.g. strata pull images/demo.toml --cache oci://registry.example/strata
  strata export DEF [--stage NAME] [--format F] [--target T] [-o DIR] [--force]
      e.g. strata export images/demo.toml --target openstack -o out/
  strata run DEF [--stage NAME]         a throwaway VM on a layer; prints how to ssh in
      e.g. strata run images/demo.toml --stage final
  strata test DEF [--stage NAME] [--junit FILE]
                                        the [[test]] checks on a fresh boot of a built stage
      e.g. strata test images/demo.toml --junit checks.xml
  strata gc [--dry-run] (DEF... | --all) delete layers and sources no given definition needs
      e.g. strata gc --dry-run images/*.toml
  strata diff DEF [--from STAGE|KEY] [--to STAGE|KEY]   packages and files changed between layers
      e.g. strata diff images/demo.toml --from base --to final
  strata key generate PATH [--algorithm ecdsa-p256|ed25519]   a signing key pair: PATH, PATH.pub
      e.g. strata key generate ~/.config/strata/cache.key
  strata drift DEF (--host [USER@]HOST[:PORT] | --hosts FILE) [--stage NAME] [--identity FILE]
                   [--known-hosts FILE]      a live server (or a fleet) against the layer it was built from
      e.g. strata drift images/demo.toml --hosts fleet.txt
  strata sbom DEF [--stage NAME] [--format spdx-json|cyclonedx-json] [-o FILE]
                                        what a built stage contains (SPDX or CycloneDX)
      e.g. strata sbom images/demo.toml --format cyclonedx-json -o demo.cdx.json
  strata sbom --package NAME DEF...     which built stages hold a package, at which version
      e.g. strata sbom --package openssl images/*.toml
  strata publish DEF [--stage NAME] --to openstack [--cloud NAME] [--name NAME] [--visibility V]
                   [--property K=V]... [--format qcow2|raw] [--keep N] [-o DIR]
                                        the exported stage into the cloud's image service
      e.g. strata publish images/demo.toml --to openstack --cloud prod --keep 3

Exit codes: 0 success, 1 the work failed, 2 the input is invalid, 3 `drift` found drift,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM), 129 hung up (SIGHUP).";

#[derive(Debug, Parser)]
#[command(
    name = "strata",
    version,
    about = "Build layered VM images with QEMU: one cached qcow2 layer per stage",
    long_about = "Build layered VM images with QEMU: one cached qcow2 layer per stage.\n\n\
        strata boots a cloud image with a cloud-init seed, runs each stage's steps over SSH or the \
        guest agent, cleans the guest, and keeps each stage as a qcow2 layer on the one below. \
        A stage whose inputs did not change is never built again.",
    after_help = SYNOPSIS
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The store: downloaded sources, layers, logs [default: $XDG_CACHE_HOME/strata or ~/.cache/strata]
    #[arg(long, global = true, env = "STRATA_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// How progress is shown: for people, or one JSON object per line
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Show more: step output as it comes (-v), debug logs (-vv)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Show only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// A shared layer cache: oci://HOST[:PORT]/REPOSITORY (HTTPS) or oci+http://… (plain HTTP).
    /// Credentials: STRATA_CACHE_USER and STRATA_CACHE_PASSWORD, else docker/podman logins
    #[arg(long, global = true, env = "STRATA_CACHE", value_name = "URL", value_parser = parse_cache_url)]
    pub cache: Option<CacheUrl>,
    /// Sign everything pushed to the shared cache with this private key (PKCS#8 PEM, mode 0600;
    /// `strata key generate PATH` makes one); its public half is trusted too
    #[arg(long, global = true, env = "STRATA_SIGN_KEY", value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
    /// Accept what the shared cache serves when signed by this public key (repeatable;
    /// STRATA_CACHE_TRUST=FILE[:FILE…])
    #[arg(
        long = "trust",
        global = true,
        env = "STRATA_CACHE_TRUST",
        value_name = "FILE",
        value_delimiter = ':'
    )]
    pub trust: Vec<PathBuf>,
    /// Use what the shared cache serves without checking signatures: only for a registry whose
    /// push rights are the trust (warned once per run)
    #[arg(long, global = true, env = "STRATA_CACHE_UNSIGNED",
          value_parser = clap::builder::FalseyValueParser::new())]
    pub cache_unsigned: bool,
}

/// `--max-restore-size`: a size ("512M", "20G"), more than 0 (to keep none, `--no-warm` saves
/// none) and at most [`MAX_RESTORE_CAP`]. Checked while parsing: a bad one is exit 2.
fn parse_restore_cap(value: &str) -> Result<ByteSize, String> {
    let size: ByteSize =
        value.parse().map_err(|error: crate::units::UnitError| error.to_string())?;
    if size.bytes() == 0 {
        return Err("a cap of 0 keeps no restore point: use --no-warm, which saves none".to_owned());
    }
    if size > MAX_RESTORE_CAP {
        return Err(format!("{value} is more than the largest cap, 64T"));
    }
    Ok(size)
}

/// The largest `--max-restore-size`: far beyond any store, and sums of sizes stay in a u64.
pub const MAX_RESTORE_CAP: ByteSize = ByteSize(64 * ByteSize::TIB);

/// Checked while parsing, so that a malformed cache URL is an argument error (exit 2).
fn parse_cache_url(value: &str) -> Result<CacheUrl, String> {
    CacheUrl::parse(value).map_err(|error| error.to_string())
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check definitions; nothing is downloaded or booted.
    ///
    /// Example: strata validate images/*.toml
    Validate {
        /// Definition files
        #[arg(required = true, value_name = "DEF")]
        definitions: Vec<PathBuf>,
    },
    /// Download and verify the source image into the store.
    ///
    /// Example: strata fetch images/demo.toml
    Fetch {
        #[arg(value_name = "DEF")]
        definition: PathBuf,
        /// Never touch the network; fail when the source is not in the store
        #[arg(long)]
        offline: bool,
    },
    /// Build every stage that is not cached, each as a layer on the one below.
    ///
    /// Example: strata build images/demo.toml --rebuild final
    Build(BuildArgs),
    /// Each stage's cache key, whether it is cached, its size, age and parent.
    ///
    /// Example: strata layers images/demo.toml
    Layers {
        #[arg(value_name = "DEF")]
        definition: PathBuf,
    },
    /// Push built layers (and the source) that the shared cache (--cache) lacks.
    ///
    /// Example: strata --cache oci://registry.example/strata push images/demo.toml
    Push(CacheSyncArgs),
    /// Pull a definition's layers (and the source) from the shared cache (--cache).
    ///
    /// Example: strata --cache oci://registry.example/strata pull images/demo.toml
    Pull(CacheSyncArgs),
    /// Signing keys for the shared cache.
    ///
    /// Example: strata key generate ~/.config/strata/cache.key
    #[command(subcommand)]
    Key(KeyCommand),
    /// Flatten a stage's layers into a standalone image for a platform.
    ///
    /// Example: strata export images/demo.toml --format qcow2 --target openstack -o out/
    Export(ExportArgs),
    /// Boot a throwaway VM on a layer (changes are discarded) and print how to ssh in.
    ///
    /// Example: strata run images/demo.toml --stage final
    Run {
        #[arg(value_name = "DEF")]
        definition: PathBuf,
        /// The stage whose layer to boot [default: the last]
        #[arg(long, value_name = "NAME")]
        stage: Option<String>,
    },
    /// Run the definition's [[test]] checks on a fresh boot of a built stage.
    ///
    /// A new overlay (discarded), instance-id, seed, host key and user key: nothing left from
    /// the build can make a check pass. Exit 0 when all pass, 1 when any fails.
    ///
    /// Example: strata test images/demo.toml --junit checks.xml
    Test {
        #[arg(value_name = "DEF")]
        definition: PathBuf,
        /// The stage whose layer to boot [default: the last]
        #[arg(long, value_name = "NAME")]
        stage: Option<String>,
        /// Also write the results as JUnit XML (GitLab, Jenkins and GitHub read it)
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Delete layers and sources that no given definition, nor any layer, needs.
    ///
    /// Example: strata gc --dry-run images/*.toml
    Gc {
        /// Definitions whose layers and sources to keep
        #[arg(value_name = "DEF")]
        definitions: Vec<PathBuf>,
        /// Keep nothing: delete every layer and source in the store
        #[arg(long, conflicts_with = "definitions")]
        all: bool,
        /// Only list what would be deleted
        #[arg(long)]
        dry_run: bool,
    },
    /// Packages and files that changed between two built layers [default: each stage against
    /// its parent, the first against an empty system].
    ///
    /// Example: strata diff images/demo.toml --from base --to final
    Diff {
        #[arg(value_name = "DEF")]
        definition: PathBuf,
        /// The older side: a stage or a layer key [default: the parent of --to]
        #[arg(long, value_name = "STAGE|KEY")]
        from: Option<String>,
        /// The newer side: a stage or a layer key [default: the last stage]
        #[arg(long, value_name = "STAGE|KEY")]
        to: Option<String>,
    },
    /// Whether live servers still match the layer they were built from (configuration drift).
    ///
    /// Logs in the way `ssh` does: the user is USER@ or the local user; the key is --identity,
    /// else the ssh-agent's, else ~/.ssh/id_ed25519, id_ecdsa; the host key must be in
    /// known_hosts (never trusted on first use: add it with ssh-keyscan or one `ssh` login).
    /// Runs one command as root (through `sudo -n` for another user) that lists the packages and
    /// the files under `[drift] roots`, and compares them with the layer's record.
    ///
    /// Exit codes: 0 every server matches; 3 drift found on some server (and every server was
    /// checked); 1 some server could not be checked (unreachable, key refused, sudo wants a
    /// password…), whatever the others showed: the findings are still printed, and the summary
    /// says which; 2 invalid arguments or hosts file.
    ///
    /// Example (cron): strata -q drift images/web.toml --hosts /etc/strata/web-fleet.txt
    Drift(DriftArgs),
    /// What a built stage contains: an SBOM (SPDX 2.3 or CycloneDX 1.6 JSON) of every package
    /// its system held when its layer was sealed, on the source image (URL, sha256). No boot:
    /// it reads the layer's record. Hand it to a scanner: `trivy sbom FILE`, `grype sbom:FILE`.
    ///
    /// With --package NAME and any number of definitions: which built stages hold the package
    /// NAME (or packages built from the source package NAME), at which version.
    ///
    /// Example: strata sbom images/demo.toml --stage base -o demo-base.spdx.json
    Sbom(SbomArgs),
    /// Publish a built stage into a cloud's image service (OpenStack Glance).
    ///
    /// Exports the stage for OpenStack into -o DIR (an export of the same layer already there is
    /// reused), logs in as every OpenStack tool does (clouds.yaml: --cloud or OS_CLOUD, in
    /// OS_CLIENT_CONFIG_FILE, ./, ~/.config/openstack/, /etc/openstack/, with secure.yaml; or the
    /// OS_* variables; Keystone v3 password or application credential), finds the image service
    /// in the catalog (the cloud's interface and region), deletes what an interrupted upload
    /// left, and uploads the image with its properties unless an active image of the same layer
    /// key and sha256 is there. Waits for `active` and compares Glance's sha512 with the file's.
    /// An image this run created is deleted again when anything fails or on Ctrl-C/SIGTERM.
    /// Prints the image's ID on stdout.
    ///
    /// Example (CI, default branch): strata publish images/web.toml --to openstack --cloud prod --keep 3
    Publish(PublishArgs),
}

/// Where `strata publish` sends the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PublishTarget {
    /// OpenStack's image service (Glance v2), found through Keystone v3
    Openstack,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[arg(value_name = "DEF")]
    pub definition: PathBuf,
    /// The stage to publish [default: the last]
    #[arg(long, value_name = "NAME")]
    pub stage: Option<String>,
    /// The platform (Proxmox VE: `strata export --target proxmox` and its qm lines)
    #[arg(long, value_enum, value_name = "PLATFORM")]
    pub to: PublishTarget,
    /// The cloud in clouds.yaml [default: OS_CLOUD, else the OS_* variables]
    #[arg(long, value_name = "NAME")]
    pub cloud: Option<String>,
    /// The image's name [default: IMAGE-STAGE]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Who may see the image [default: the cloud's, `shared` in Glance]
    #[arg(long, value_enum, value_name = "V")]
    pub visibility: Option<crate::publish::Visibility>,
    /// An image property to add or override (repeatable), e.g. hw_disk_bus=scsi
    #[arg(long = "property", value_name = "K=V", value_parser = parse_property)]
    pub properties: Vec<crate::publish::PropertyOverride>,
    /// The disk format: qcow2, or raw for Ceph-backed clouds (copy-on-write clones need raw)
    #[arg(long, value_enum, value_name = "F", default_value = "qcow2")]
    pub format: crate::publish::DiskFormat,
    /// Keep the N newest images of this definition and stage (this one counts), delete older
    /// ones; protected images are never deleted
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
    /// Where the export is, or is written
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    pub output: PathBuf,
}

/// Checked while parsing, so that a bad `--property` is an argument error (exit 2).
fn parse_property(value: &str) -> Result<crate::publish::PropertyOverride, String> {
    crate::publish::PropertyOverride::parse(value)
}

#[derive(Debug, Args)]
pub struct SbomArgs {
    /// The definition (with --package: one or more)
    #[arg(value_name = "DEF", required = true)]
    pub definitions: Vec<PathBuf>,
    /// The stage [default: the last]
    #[arg(long, value_name = "NAME", conflicts_with = "package")]
    pub stage: Option<String>,
    /// The document's format
    #[arg(long, value_enum, value_name = "F", default_value_t = crate::sbom::Format::SpdxJson, conflicts_with = "package")]
    pub format: crate::sbom::Format,
    /// Write it to FILE (atomically) instead of stdout
    #[arg(short, long, value_name = "FILE", conflicts_with = "package")]
    pub output: Option<PathBuf>,
    /// Instead of an SBOM: every stage of every DEF that holds this package (by its name or its
    /// source package's), with the version
    #[arg(long, value_name = "NAME")]
    pub package: Option<String>,
}

#[derive(Debug, Args)]
pub struct DriftArgs {
    #[arg(value_name = "DEF")]
    pub definition: PathBuf,
    /// The server: [USER@]HOST[:PORT]; an IPv6 address with a port in brackets ([::1]:2222)
    #[arg(
        long,
        value_name = "[USER@]HOST[:PORT]",
        required_unless_present = "hosts",
        conflicts_with = "hosts"
    )]
    pub host: Option<String>,
    /// Many servers: one [USER@]HOST[:PORT] a line, `#` comments; checked 8 at a time, then a
    /// summary
    #[arg(long, value_name = "FILE")]
    pub hosts: Option<PathBuf>,
    /// The stage the servers were built from [default: the last]
    #[arg(long, value_name = "NAME")]
    pub stage: Option<String>,
    /// The private key to log in with (OpenSSH format, ed25519 or ECDSA, no passphrase)
    /// [default: the ssh-agent's keys (RSA too), then ~/.ssh/id_ed25519, id_ecdsa]
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// The known_hosts file host keys are checked against [default: ~/.ssh/known_hosts and
    /// /etc/ssh/ssh_known_hosts]
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[arg(value_name = "DEF")]
    pub definition: PathBuf,
    /// Stop after this stage
    #[arg(long, value_name = "NAME")]
    pub stage: Option<String>,
    /// Rebuild this stage and all above it even if cached
    #[arg(long, value_name = "NAME")]
    pub rebuild: Option<String>,
    /// Never touch the network; fail when something is not in the store
    #[arg(long)]
    pub offline: bool,
    /// Keep a failed stage's disk and logs, and print how to boot it
    #[arg(long)]
    pub keep_failed: bool,
    /// Rehash cached layers and sources instead of trusting their recorded size and time
    #[arg(long)]
    pub verify: bool,
    /// Do not save or resume restore points (saved running guests): every stage boots
    #[arg(long)]
    pub no_warm: bool,
    /// Cap what restore points in the store take on disk (e.g. 2G): after one is saved, the
    /// oldest are removed (never a layer) until the rest fit [default: no cap]
    #[arg(long, env = "STRATA_MAX_RESTORE_SIZE", value_name = "SIZE", value_parser = parse_restore_cap)]
    pub max_restore_size: Option<ByteSize>,
    /// After the build, run the [[test]] checks on a fresh boot of the last built stage
    #[arg(long)]
    pub test: bool,
    /// With --test: also write the results as JUnit XML
    #[arg(long, value_name = "FILE", requires = "test")]
    pub junit: Option<PathBuf>,
    /// Push what the build made or used that the shared cache lacks (needs --cache)
    #[arg(long, env = "STRATA_CACHE_PUSH", value_parser = clap::builder::FalseyValueParser::new())]
    pub push: bool,
    /// Fail when the shared cache cannot be used, instead of building locally
    #[arg(long)]
    pub cache_required: bool,
    /// Push and pull restore points too (they hold guest memory and the build's keys: private
    /// registries only)
    #[arg(long)]
    pub cache_restore: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// A new key pair: PATH (the private key, mode 0600) and PATH.pub (the public key to
    /// --trust). Neither may exist.
    ///
    /// Example: strata key generate ~/.config/strata/cache.key
    Generate {
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// The kind of key (ecdsa-p256 is cosign's default)
        #[arg(long, value_enum, default_value_t = crate::trust::Algorithm::EcdsaP256)]
        algorithm: crate::trust::Algorithm,
    },
}

#[derive(Debug, Args)]
pub struct CacheSyncArgs {
    #[arg(value_name = "DEF")]
    pub definition: PathBuf,
    /// Up to this stage [default: the last]
    #[arg(long, value_name = "NAME")]
    pub stage: Option<String>,
    /// Restore points too (they hold guest memory and the build's keys: private registries only)
    #[arg(long)]
    pub cache_restore: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(value_name = "DEF")]
    pub definition: PathBuf,
    /// The stage to export [default: the last]
    #[arg(long, value_name = "NAME")]
    pub stage: Option<String>,
    /// Image format [default: from the definition's [export] table]
    #[arg(long, value_enum, value_name = "F")]
    pub format: Option<ExportFormat>,
    /// Platform to prepare for [default: from the definition's [export] table]
    #[arg(long, value_enum, value_name = "T")]
    pub target: Option<ExportTarget>,
    /// Output folder
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    pub output: PathBuf,
    /// Overwrite existing outputs
    #[arg(long)]
    pub force: bool,
}
