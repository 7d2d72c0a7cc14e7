//! `strata build DEF`

use super::{BuildArgs, GlobalArgs};
use crate::error::Error;

pub async fn run(_args: &BuildArgs, _global: &GlobalArgs) -> Result<(), Error> {
    Err(Error::NotBuiltYet("build"))
}
