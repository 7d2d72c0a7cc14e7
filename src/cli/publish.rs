//! `strata publish DEF [--stage NAME] --to openstack [--cloud NAME] [--name NAME]
//! [--visibility V] [--property K=V]… [--format qcow2|raw] [--keep N] [-o DIR]`: the stage,
//! exported, into the cloud's image service. Parses, calls `publish::publish`, hands the result
//! to `report/`. A stop signal cancels the work, which deletes what it created first.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::{Error, GlobalArgs, PublishArgs, PublishTarget, StopSignal};
use crate::layer::Layers;
use crate::publish::{Environment, PublishError, PublishRequest};

pub async fn run(args: &PublishArgs, global: &GlobalArgs) -> Result<(), Error> {
    let PublishTarget::Openstack = args.to;
    let definition = crate::definition::load(&args.definition)?;
    let store = global.open_store()?;
    let layers = Layers::new(store.clone());
    // The provenance of a new export is signed with --sign-key (STRATA_SIGN_KEY) when given.
    let signer =
        match &global.sign_key {
            Some(path) => Some(Arc::new(crate::trust::SigningKey::load(path)?)
                as Arc<dyn crate::sbom::dsse::Signer>),
            None => None,
        };
    let request = PublishRequest {
        shown: args.definition.clone(),
        stage: args.stage.clone(),
        cloud: args.cloud.clone(),
        name: args.name.clone(),
        visibility: args.visibility,
        properties: args.properties.clone(),
        format: args.format,
        keep: args.keep,
        output_dir: args.output.clone(),
        signer,
    };
    let events = global.events();
    // gc takes this lock exclusively: it never removes the layers an export reads.
    let gc_guard = super::lock_gc_shared(&store).await?;
    let cancel = CancellationToken::new();
    let caught: Arc<Mutex<Option<StopSignal>>> = Arc::default();
    let stop = super::stop_signal()?;
    let watcher = {
        let (cancel, caught) = (cancel.clone(), Arc::clone(&caught));
        tokio::spawn(async move {
            let signal = stop.await;
            if let Ok(mut caught) = caught.lock() {
                *caught = Some(signal);
            }
            cancel.cancel();
        })
    };
    let env = Environment::from_process();
    let outcome =
        crate::publish::publish(&definition, &layers, &request, &env, &events, &cancel).await;
    watcher.abort();
    drop(gc_guard);
    match outcome {
        Ok(published) => {
            crate::report::publish::published(global.log_format, global.quiet, &published);
            Ok(())
        }
        Err(PublishError::Interrupted) => {
            let signal = caught.lock().ok().and_then(|caught| *caught);
            Err(Error::Interrupted(signal.unwrap_or(StopSignal::Interrupt)))
        }
        Err(error) => Err(error.into()),
    }
}
