//! `strata push DEF [--stage NAME] [--cache-restore]` and `strata pull DEF [--stage NAME]
//! [--cache-restore]`: moving a definition's layers (and its source) to or from the shared
//! cache by hand. Unlike a build, a cache that cannot be used is an error here.

use std::time::SystemTime;

use super::{CacheSyncArgs, Error, GlobalArgs};
use crate::cache::{Cache, CacheUrl, Credentials};
use crate::events::Events;
use crate::layer::{LayerKey, LayerStore, PlanOptions, Status};
use crate::units::ByteSize;

/// The client for `--cache`, which these commands require.
pub(super) async fn connect(global: &GlobalArgs, events: &Events) -> Result<Cache, Error> {
    let url = cache_url(global)?;
    let (credentials, from) = Credentials::discover(url);
    Ok(Cache::connect(url, &credentials, &from, events).await?)
}

fn cache_url(global: &GlobalArgs) -> Result<&CacheUrl, Error> {
    global.cache.as_ref().ok_or_else(|| {
        Error::Usage("no shared cache given: use --cache URL or set STRATA_CACHE".to_owned())
    })
}

pub async fn push(args: &CacheSyncArgs, global: &GlobalArgs) -> Result<(), Error> {
    let definition = crate::definition::load(&args.definition)?;
    cache_url(global)?;
    let layers = LayerStore::new(global.open_store()?);
    let built = crate::layer::built_stage(&definition, &layers, args.stage.as_deref())?;
    let events = global.events();
    let cache = connect(global, &events).await?;
    let keys: Vec<LayerKey> =
        built.chain.iter().filter_map(|(_, layer)| LayerKey::parse(&layer.metadata.key)).collect();
    let work = crate::build::push_all(&cache, &built.source, &keys, &layers, args.cache_restore);
    let bytes = super::interruptible(async { Ok(work.await?) }).await?;
    crate::report::note(
        global.log_format,
        global.quiet,
        &format!("pushed {} to {}", ByteSize(bytes), cache.url()),
    );
    Ok(())
}

pub async fn pull(args: &CacheSyncArgs, global: &GlobalArgs) -> Result<(), Error> {
    let definition = crate::definition::load(&args.definition)?;
    cache_url(global)?;
    let layers = LayerStore::new(global.open_store()?);
    let events = global.events();
    let cache = connect(global, &events).await?;
    let work = async {
        let store = layers.store();
        crate::build::pull_source(&cache, store, &definition.source).await?;
        let options = crate::source::FetchOptions::default();
        let source = crate::source::fetch(store, &definition.source, options, &events).await?;
        let options = PlanOptions { stop_at: args.stage.clone(), ..PlanOptions::default() };
        let plan = crate::layer::plan(&definition, &layers, source.clone(), &options, now())?;
        crate::build::pull_chains(&cache, &plan.stages, &layers).await?;
        let plan = crate::layer::plan(&definition, &layers, source, &options, now())?;
        let missing: Vec<String> = plan
            .stages
            .iter()
            .filter(|planned| !matches!(planned.status, Status::Cached(_)))
            .map(|planned| format!("`{}`", planned.stage.name))
            .collect();
        if !missing.is_empty() {
            return Err(Error::Runtime(format!(
                "{} has no layer for stage {} of {}: build it (`strata build {} --push`)",
                cache.url(),
                missing.join(", "),
                args.definition.display(),
                args.definition.display()
            )));
        }
        if args.cache_restore {
            for planned in &plan.stages {
                cache.pull_restore(&layers, &planned.key).await?;
            }
        }
        Ok(plan.stages.len())
    };
    let stages = super::interruptible(work).await?;
    crate::report::note(
        global.log_format,
        global.quiet,
        &format!("{stages} stage(s) of {} are in the store", args.definition.display()),
    );
    Ok(())
}

fn now() -> SystemTime {
    SystemTime::now()
}
