//! `strata fetch DEF [--offline]`

use std::path::Path;

use super::GlobalArgs;
use crate::error::Error;

pub async fn run(_definition: &Path, _offline: bool, _global: &GlobalArgs) -> Result<(), Error> {
    Err(Error::NotBuiltYet("fetch"))
}
