//! `strata run DEF [--stage NAME]`: boots a throwaway VM on a built layer (nothing is written
//! to it), prints how to ssh in, and stops the VM on Ctrl-C. The instance is `instance/`'s.

use std::path::Path;
use std::sync::Arc;

use super::Error;
use super::GlobalArgs;
use crate::instance::{Purpose, Request};
use crate::layer::{LayerError, LayerStore};
use crate::report::buildlog::BuildLog;

/// What `run` and `test` hand the engine: the definition, its layers, events shown to the user
/// and written to a new log folder.
pub(super) struct Opened {
    pub definition: crate::definition::ImageDefinition,
    pub layers: LayerStore,
    pub events: crate::events::Events,
    pub log: Arc<BuildLog>,
}

pub(super) fn open(definition_path: &Path, global: &GlobalArgs) -> Result<Opened, Error> {
    let definition = crate::definition::load(definition_path)?;
    let store = global.open_store()?;
    let log = Arc::new(
        BuildLog::create(&store.logs_dir())
            .map_err(|source| LayerError::Write { path: store.logs_dir(), source })?,
    );
    let events = global.events().with(log.clone());
    Ok(Opened { definition, layers: LayerStore::new(store), events, log })
}

impl Opened {
    pub(super) fn request<'a>(&'a self, path: &'a Path, stage: Option<&'a str>) -> Request<'a> {
        Request {
            definition: &self.definition,
            definition_path: path,
            layers: &self.layers,
            stage,
            events: &self.events,
            log_dir: self.log.dir(),
        }
    }
}

pub async fn run(
    definition_path: &Path,
    stage: Option<&str>,
    global: &GlobalArgs,
) -> Result<(), Error> {
    let opened = open(definition_path, global)?;
    let request = opened.request(definition_path, stage);
    let instance =
        super::interruptible(async { Ok(crate::instance::boot(&request, Purpose::Login).await?) })
            .await?;
    let login = instance.login(&opened.events)?;
    crate::report::note(
        global.log_format,
        global.quiet,
        &format!(
            "{} is running (changes are discarded):\n  {}\nCtrl-C stops it.",
            instance.stage, login.ssh_command
        ),
    );
    match instance.run_until(super::stop_signal()?).await {
        // Ctrl-C is how a person ends a run: success.
        None | Some(super::StopSignal::Interrupt) => Ok(()),
        Some(signal) => Err(Error::Interrupted(signal)),
    }
}
