//! `strata diff DEF [--from STAGE|KEY] [--to STAGE|KEY]`: the packages and files that changed
//! between two layers, from their records in the store alone (`layer::diff`), as a table or
//! JSON objects; also the finding cells and objects `strata drift` shows.

use std::path::Path;

use super::{Error, GlobalArgs};
use crate::drift::Finding;
use crate::layer::LayerStore;

pub fn run(
    definition_path: &Path,
    from: Option<&str>,
    to: Option<&str>,
    global: &GlobalArgs,
) -> Result<(), Error> {
    let definition = crate::definition::load(definition_path)?;
    let layers = LayerStore::new(global.open_store()?);
    let diffs = crate::layer::diff::diff(&definition, definition_path, &layers, from, to)?;
    let mut rows = vec![["from", "to", "change", "what"].map(String::from)];
    let mut objects = Vec::new();
    for diff in &diffs {
        for finding in &diff.findings {
            rows.push(row(&diff.from, &diff.to, finding));
            objects.push(object(&diff.from, &diff.to, finding));
        }
    }
    crate::report::findings(global.log_format, &rows, &objects);
    Ok(())
}

fn row(from: &str, to: &str, finding: &Finding) -> [String; 4] {
    let [change, what] = change_and_what(finding);
    [from.to_owned(), to.to_owned(), change, what]
}

/// A finding's two table cells: what kind of change, and what changed.
pub(super) fn change_and_what(finding: &Finding) -> [String; 2] {
    let line = finding.to_string();
    let what = line.split_once(": ").map_or(line.as_str(), |(_, what)| what).to_owned();
    [finding.kind().replace('_', " "), what]
}

/// One finding as one JSON object, with the two layers it is between.
fn object(from: &str, to: &str, finding: &Finding) -> serde_json::Value {
    finding_object(finding, &[("from", from), ("to", to)])
}

/// A finding as a JSON object, with `fields` added (what it is between).
pub(super) fn finding_object(finding: &Finding, fields: &[(&str, &str)]) -> serde_json::Value {
    let mut object = serde_json::to_value(finding).unwrap_or_default();
    if let Some(map) = object.as_object_mut() {
        for (key, value) in fields {
            map.insert((*key).to_owned(), (*value).into());
        }
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finding_becomes_a_row_and_an_object_naming_both_layers() {
        let finding = Finding::FileAdded {
            path: "/etc/app.conf".into(),
            file_type: crate::drift::FileType::File,
        };
        let row = row("base", "final", &finding);
        assert_eq!(row[2], "file added");
        assert_eq!(row[3], "/etc/app.conf");
        let object = object("base", "final", &finding);
        assert_eq!(object["kind"], "file_added");
        assert_eq!(object["from"], "base");
        assert_eq!(object["path"], "/etc/app.conf");
    }
}
