//! `strata test DEF [--stage S] [--junit FILE]`: the definition's `[[test]]` checks on a fresh
//! boot of a built stage (`instance::test`). Exit 0 when all pass, 1 when any fails.

use std::path::Path;

use super::{Error, GlobalArgs};
use crate::instance::TestRequest;

pub async fn run(
    definition_path: &Path,
    stage: Option<&str>,
    junit: Option<&Path>,
    global: &GlobalArgs,
) -> Result<(), Error> {
    let opened = super::run::open(definition_path, global)?;
    let request = TestRequest { instance: opened.request(definition_path, stage), junit };
    super::interruptible(async { Ok(crate::instance::test(&request).await.map(drop)?) }).await
}
