//! `strata push DEF [--stage NAME] [--cache-restore]` and `strata pull DEF [--stage NAME]
//! [--cache-restore]`: moving a definition's layers (and its source) to or from the shared
//! cache by hand. Unlike a build, a cache that cannot be used is an error here.

use super::{CacheSyncArgs, Error, GlobalArgs};
use crate::cache::{Cache, CacheUrl, Credentials};
use crate::events::Events;
use crate::layer::LayerStore;
use crate::trust::Policy;
use crate::units::ByteSize;

/// The client for `--cache`, which these commands require, signing and verifying as `policy`
/// says.
pub(super) async fn connect(
    global: &GlobalArgs,
    policy: Policy,
    events: &Events,
) -> Result<Cache, Error> {
    let url = cache_url(global)?;
    let (credentials, from) = Credentials::discover(url);
    Ok(Cache::connect(url, &credentials, &from, events).await?.with_policy(policy))
}

/// `--sign-key`, `--trust` and `--cache-unsigned` for a command that pulls and/or pushes:
/// keys that cannot be used, a pull without a trusted key or a push without a signing key
/// (without `--cache-unsigned`) stop it before any work (exit 2).
pub(super) fn policy(global: &GlobalArgs, pulls: bool, pushes: bool) -> Result<Policy, Error> {
    let policy = Policy::load(global.sign_key.as_deref(), &global.trust, global.cache_unsigned)?;
    if pulls {
        policy.check_can_pull()?;
    }
    if pushes {
        policy.check_can_push()?;
    }
    Ok(policy)
}

fn cache_url(global: &GlobalArgs) -> Result<&CacheUrl, Error> {
    global.cache.as_ref().ok_or_else(|| {
        Error::Usage("no shared cache given: use --cache URL or set STRATA_CACHE".to_owned())
    })
}

pub async fn push(args: &CacheSyncArgs, global: &GlobalArgs) -> Result<(), Error> {
    let definition = crate::definition::load(&args.definition)?;
    cache_url(global)?;
    let policy = policy(global, false, true)?;
    let layers = LayerStore::new(global.open_store()?);
    let events = global.events();
    let cache = connect(global, policy, &events).await?;
    let stage = args.stage.as_deref();
    let work =
        crate::cache::push_definition(&cache, &definition, &layers, stage, args.cache_restore);
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
    let policy = policy(global, true, false)?;
    let layers = LayerStore::new(global.open_store()?);
    let events = global.events();
    let cache = connect(global, policy, &events).await?;
    let stage = args.stage.as_deref();
    let work = crate::cache::pull_definition(
        &cache,
        &definition,
        &layers,
        stage,
        args.cache_restore,
        &events,
    );
    let stages = super::interruptible(async { Ok(work.await?) }).await?;
    crate::report::note(
        global.log_format,
        global.quiet,
        &format!("{stages} stage(s) of {} are in the store", args.definition.display()),
    );
    Ok(())
}
