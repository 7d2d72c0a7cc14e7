//! `strata fetch DEF [--offline]`: loads the definition and makes sure its source is in the
//! store. Prints nothing itself: progress goes through events, errors through `cli::main`.

use std::path::Path;

use super::Error;
use super::GlobalArgs;
use crate::source::{self, FetchOptions};

pub async fn run(definition: &Path, offline: bool, global: &GlobalArgs) -> Result<(), Error> {
    let definition = crate::definition::load(definition)?;
    let store = global.open_store()?;
    // gc takes this lock exclusively: it never removes a source while it is being fetched.
    let _gc_guard = super::lock_gc_shared(&store).await?;
    let events = global.events();
    let options = FetchOptions { offline, verify: false };
    source::fetch(&store, &definition.source, options, &events).await?;
    Ok(())
}
