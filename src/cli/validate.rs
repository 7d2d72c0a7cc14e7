//! `strata validate DEF...`

use std::path::PathBuf;

use super::GlobalArgs;
use crate::error::Error;

pub fn run(_definitions: &[PathBuf], _global: &GlobalArgs) -> Result<(), Error> {
    Err(Error::NotBuiltYet("validate"))
}
