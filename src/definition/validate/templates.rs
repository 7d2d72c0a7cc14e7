//! minijinja templates (seed user-data and step env values): parsed, never rendered here, and
//! their variables checked against `[vars]` and what seeds are rendered with.

use std::collections::BTreeMap;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::Checker;
use crate::definition::error::{Problem, suggest};
use crate::definition::raw::Text;
use crate::definition::types::SEED_TEMPLATE_VARIABLES;

/// Seed templates are small text files; a path to something huge (or endless, like a file
/// under /proc) must not be read whole.
const MAX_SEED_TEMPLATE: u64 = 1024 * 1024;

/// minijinja's own globals and loop names, which its static analysis reports as undeclared.
const TEMPLATE_BUILTINS: &[&str] = &[
    "range",
    "dict",
    "namespace",
    "debug",
    "cycler",
    "joiner",
    "lipsum",
    "loop",
    "self",
    "caller",
];

impl Checker {
    pub(super) fn user_data(
        &mut self,
        text: &Text,
        vars: &BTreeMap<String, String>,
    ) -> Option<PathBuf> {
        let path = self.existing_file("user_data", "user_data template", text)?;
        let template = match read_bounded(&path, MAX_SEED_TEMPLATE) {
            Ok(template) => template,
            Err(error) => {
                self.report(
                    Problem::UnreadableFile {
                        what: "user_data template",
                        path,
                        reason: error.to_string(),
                    },
                    text.span(),
                );
                return None;
            }
        };
        let what = format!("user_data template {}", path.display());
        self.template(&what, &template, text.span(), vars, Some(SEED_TEMPLATE_VARIABLES))
            .then_some(path)
    }

    /// Parses a template; checks `vars.NAME` references, and top-level names when `allowed`.
    pub(super) fn template(
        &mut self,
        what: &str,
        source: &str,
        span: Range<usize>,
        vars: &BTreeMap<String, String>,
        allowed: Option<&[&str]>,
    ) -> bool {
        let environment = minijinja::Environment::new();
        let template = match environment.template_from_str(source) {
            Ok(template) => template,
            Err(error) => {
                let detail = error.detail().map_or_else(|| error.kind().to_string(), str::to_owned);
                self.report(
                    Problem::TemplateSyntax { what: what.to_owned(), line: error.line(), detail },
                    span,
                );
                return false;
            }
        };
        let mut used: Vec<String> = template.undeclared_variables(true).into_iter().collect();
        used.sort();
        let mut ok = true;
        for name in used {
            let mut parts = name.splitn(3, '.');
            let top = parts.next().unwrap_or_default();
            if top == "vars" {
                if let Some(var) = parts.next()
                    && !vars.contains_key(var)
                {
                    let suggestion = suggest(var, vars.keys().map(String::as_str));
                    self.report(
                        Problem::UnknownVar { name: var.to_owned(), suggestion },
                        span.clone(),
                    );
                    ok = false;
                }
                continue;
            }
            if let Some(allowed) = allowed
                && !allowed.contains(&top)
                && !TEMPLATE_BUILTINS.contains(&top)
            {
                let suggestion = suggest(top, allowed.iter().copied());
                self.report(
                    Problem::UnknownTemplateVariable { name: top.to_owned(), suggestion },
                    span.clone(),
                );
                ok = false;
            }
        }
        ok
    }
}

/// The file's text, refused when it holds more than `limit` bytes.
fn read_bounded(path: &Path, limit: u64) -> std::io::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)?.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB: a seed template is a small text file",
            limit / 1024
        )));
    }
    Ok(text)
}
