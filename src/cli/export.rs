//! `strata export DEF`

use super::{ExportArgs, GlobalArgs};
use crate::error::Error;

pub async fn run(_args: &ExportArgs, _global: &GlobalArgs) -> Result<(), Error> {
    Err(Error::NotBuiltYet("export"))
}
