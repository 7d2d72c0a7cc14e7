//! `strata validate DEF...`: checks each definition completely (nothing is downloaded or
//! booted), says "ok" for each that passes (one JSON object per definition with
//! `--log-format json`), and stops with exit code 2 at the first that fails.

use std::path::PathBuf;

use super::Error;
use super::GlobalArgs;
use crate::definition::DefinitionError;
use crate::report::LogFormat;
use crate::{definition, report};

pub fn run(definitions: &[PathBuf], global: &GlobalArgs) -> Result<(), Error> {
    for path in definitions {
        let loaded = definition::load(path);
        if global.log_format == LogFormat::Json {
            report::json_line(&validated_json(path, &loaded));
        }
        let definition = loaded?;
        if !global.quiet && global.log_format == LogFormat::Human {
            report::diagnostic::validated(path, definition.stages.len());
        }
    }
    Ok(())
}

/// `{"event": "validated", "definition", "ok", "stages" | "problems": [{line, column, message}]}`.
fn validated_json(
    path: &std::path::Path,
    loaded: &Result<definition::ImageDefinition, DefinitionError>,
) -> serde_json::Value {
    let shown = path.display().to_string();
    match loaded {
        Ok(definition) => serde_json::json!({
            "event": "validated", "definition": shown, "ok": true,
            "stages": definition.stages.len(),
        }),
        Err(DefinitionError::Invalid(invalid)) => {
            let problems: Vec<serde_json::Value> = invalid
                .all()
                .map(|problem| {
                    serde_json::json!({
                        "line": problem.line(),
                        "column": problem.column(),
                        "message": problem.problem().to_string(),
                    })
                })
                .collect();
            serde_json::json!({
                "event": "validated", "definition": shown, "ok": false, "problems": problems,
            })
        }
        Err(error) => serde_json::json!({
            "event": "validated", "definition": shown, "ok": false,
            "problems": [{ "message": report::error_chain(error) }],
        }),
    }
}
