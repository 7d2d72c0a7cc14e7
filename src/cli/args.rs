//! The command line as clap types. Parsing only: no I/O here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::definition::{ExportFormat, ExportTarget};
pub use crate::report::LogFormat;

/// Every subcommand with its flags and an example, under `strata --help`.
const SYNOPSIS: &str = "\
Synopsis:
  strata validate DEF...                check definitions; nothing is downloaded or booted
      e.g. strata validate images/*.toml
  strata fetch DEF [--offline]          download and verify the source into the store
      e.g. strata fetch images/demo.toml
  strata build DEF [--stage NAME] [--rebuild NAME] [--offline] [--keep-failed]
                   [--verify] [--no-warm]
      e.g. strata build images/demo.toml --rebuild final
  strata layers DEF                     each stage: cache key, cached or not, size, age, parent
      e.g. strata layers images/demo.toml
  strata export DEF [--stage NAME] [--format F] [--target T] [-o DIR] [--force]
      e.g. strata export images/demo.toml --target openstack -o out/
  strata run DEF [--stage NAME]         a throwaway VM on a layer; prints how to ssh in
      e.g. strata run images/demo.toml --stage final
  strata gc [--dry-run] [DEF...]        delete layers and sources no given definition needs
      e.g. strata gc --dry-run images/*.toml
  strata diff DEF [--from STAGE|KEY] [--to STAGE|KEY]   packages and files changed between layers
      e.g. strata diff images/demo.toml --from base --to final

Exit codes: 0 success, 1 the work failed, 2 the input is invalid, 130 interrupted.";

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
    /// Delete layers and sources that no given definition, nor any layer, needs.
    ///
    /// Example: strata gc --dry-run images/*.toml
    Gc {
        /// Definitions whose layers and sources to keep
        #[arg(value_name = "DEF")]
        definitions: Vec<PathBuf>,
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
