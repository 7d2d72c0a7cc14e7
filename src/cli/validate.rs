//! `strata validate DEF...`: checks each definition completely (nothing is downloaded or
//! booted), says "ok" for each that passes, and stops with exit code 2 at the first that fails.

use std::path::PathBuf;

use super::Error;
use super::GlobalArgs;
use crate::{definition, report};

pub fn run(definitions: &[PathBuf], global: &GlobalArgs) -> Result<(), Error> {
    for path in definitions {
        let definition = definition::load(path)?;
        if !global.quiet {
            report::diagnostic::validated(path, definition.stages.len());
        }
    }
    Ok(())
}
