//! From text to `ImageDefinition`: TOML syntax, then the raw serde shape, then every check on
//! values, files and stage order, collecting all problems with their spans. Owns the rules
//! for definitions; must not download, boot, or write anything. One file per table:
//! `source`, `machine` (and the communicator), `stages`, `steps`, `templates`, `export`,
//! `checks` (the `[[test]]` tables);
//! this one holds the checker and the checks they share (sizes, durations, choices).

mod checks;
mod drift;
mod export;
mod machine;
mod source;
mod stages;
mod steps;
mod templates;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use serde_spanned::Spanned;

use super::error::{Invalid, Lines, Problem, suggest};
use super::raw::{self, RawDefinition, Text};
use super::types::ImageDefinition;
use crate::units::{ByteSize, format_duration, parse_duration};

const DEFAULT_USER: &str = "strata";
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Parses and checks `text`, the content of the definition at `path` (`shown` is how the
/// path is written in messages; `path` is absolute). All problems or the definition.
pub(super) fn definition(
    shown: &Path,
    path: &Path,
    text: Arc<String>,
) -> Result<ImageDefinition, Box<Invalid>> {
    let mut checker = Checker {
        shown: shown.to_owned(),
        dir: path.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
        lines: Lines::new(text),
        problems: Vec::new(),
    };
    let raw = checker.parse()?;
    let definition = checker.check(path, raw);
    let mut problems = checker.problems;
    match definition {
        Some(definition) if problems.is_empty() => Ok(definition),
        _ => {
            problems.sort_by_key(|problem| problem.span().start);
            let mut problems = problems.into_iter();
            let Some(first) = problems.next() else {
                return Err(Box::new(Invalid::new(
                    shown,
                    &checker.lines,
                    Problem::Malformed { message: "invalid definition".into() },
                    0..0,
                )));
            };
            Err(Box::new(first.with_others(problems.collect())))
        }
    }
}

struct Checker {
    shown: PathBuf,
    /// The definition's folder, absolute: relative paths start here.
    dir: PathBuf,
    lines: Lines,
    problems: Vec<Invalid>,
}

impl Checker {
    fn invalid(&self, problem: Problem, span: Range<usize>) -> Invalid {
        Invalid::new(&self.shown, &self.lines, problem, span)
    }

    fn report(&mut self, problem: Problem, span: Range<usize>) {
        let invalid = self.invalid(problem, span);
        self.problems.push(invalid);
    }

    /// TOML syntax first (so that its errors are called what they are), then the shape.
    fn parse(&self) -> Result<RawDefinition, Box<Invalid>> {
        if let Err(error) = toml::from_str::<toml::Table>(self.lines.text()) {
            let span = error.span().unwrap_or(0..0);
            return Err(Box::new(
                self.invalid(Problem::Syntax { message: error.message().trim().to_owned() }, span),
            ));
        }
        toml::from_str::<RawDefinition>(self.lines.text()).map_err(|error| {
            let span = error.span().unwrap_or(0..0);
            Box::new(self.invalid(shape_problem(error.message().trim()), span))
        })
    }

    fn check(&mut self, path: &Path, raw: RawDefinition) -> Option<ImageDefinition> {
        let name = self.image_name(path, raw.name.as_ref());
        let description = raw.description.map(Spanned::into_inner);
        let source = self.source(raw.source.as_ref());
        let machine = self.machine(raw.machine.as_ref());
        let communicator = self.communicator(raw.communicator.as_ref());
        let vars: BTreeMap<String, String> = raw
            .vars
            .iter()
            .map(|(key, value)| (key.get_ref().clone(), value.get_ref().clone()))
            .collect();
        let stages = self.stages(raw.stages.as_ref(), communicator.as_ref(), &vars);
        let export = self.export(raw.export.as_ref());
        let tests = self.tests(&raw.tests);
        let drift = self.drift(raw.drift.as_ref());
        Some(ImageDefinition {
            path: path.to_owned(),
            name: name?,
            description,
            source: source?,
            machine: machine?,
            communicator: communicator?,
            vars,
            stages: stages?,
            export: export?,
            tests: tests?,
            drift: drift?,
        })
    }

    fn resolve(&self, relative: &str) -> PathBuf {
        let joined = self.dir.join(relative);
        normalize(&std::path::absolute(&joined).unwrap_or(joined))
    }

    /// A size above zero and at most `max` (written `max_text` in the message).
    fn size(
        &mut self,
        key: &'static str,
        text: &Text,
        max: ByteSize,
        max_text: &str,
    ) -> Option<ByteSize> {
        match text.get_ref().parse::<ByteSize>() {
            Ok(size) if size > max => {
                let problem =
                    Problem::TooLarge { key, text: text.get_ref().clone(), max: max_text.into() };
                self.report(problem, text.span());
                None
            }
            Ok(size) if size.bytes() > 0 => Some(size),
            _ => {
                self.report(Problem::BadSize { key, text: text.get_ref().clone() }, text.span());
                None
            }
        }
    }

    /// A duration above zero and at most `max`; `default` when the key is absent.
    fn duration(
        &mut self,
        key: &'static str,
        text: Option<&Text>,
        default: Duration,
        max: Duration,
    ) -> Option<Duration> {
        let Some(text) = text else {
            return Some(default);
        };
        match parse_duration(text.get_ref()) {
            Ok(duration) if duration.is_zero() => {
                self.report(Problem::ZeroDuration { key }, text.span());
                None
            }
            Ok(duration) if duration <= max => Some(duration),
            // Past u64 seconds is still "too large", not "not a duration".
            Err(_) if looks_like_a_duration(text.get_ref()) => {
                self.report(too_long(key, text, max), text.span());
                None
            }
            Ok(_) => {
                self.report(too_long(key, text, max), text.span());
                None
            }
            Err(_) => {
                self.report(
                    Problem::BadDuration { key, text: text.get_ref().clone() },
                    text.span(),
                );
                None
            }
        }
    }

    /// One of `T`'s words (clap's `ValueEnum` names them); `default` when the key is absent.
    fn choice<T: ValueEnum + Copy>(
        &mut self,
        key: &'static str,
        text: Option<&Text>,
        default: T,
    ) -> Option<T> {
        let Some(text) = text else {
            return Some(default);
        };
        let value = text.get_ref();
        if let Ok(found) = T::from_str(value, false) {
            return Some(found);
        }
        let choices = words::<T>();
        let suggestion = suggest(&value.to_ascii_lowercase(), choices.iter().map(String::as_str))
            .or_else(|| choices.iter().find(|choice| choice.eq_ignore_ascii_case(value)).cloned());
        self.report(
            Problem::BadChoice { key, value: value.clone(), choices, suggestion },
            text.span(),
        );
        None
    }

    /// A list of choices; duplicates are dropped, the order kept.
    fn choices<T: ValueEnum + Copy + PartialEq>(
        &mut self,
        key: &'static str,
        what: &'static str,
        list: Option<&Spanned<Vec<Text>>>,
        default: T,
    ) -> Option<Vec<T>> {
        let Some(list) = list else {
            return Some(vec![default]);
        };
        if list.get_ref().is_empty() {
            self.report(Problem::EmptyList { key }, list.span());
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for item in list.get_ref() {
            match self.choice(what, Some(item), default) {
                Some(value) if !out.contains(&value) => out.push(value),
                Some(_) => {}
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// The words a definition may write for `T`, in declaration order.
fn words<T: ValueEnum>() -> Vec<String> {
    T::value_variants()
        .iter()
        .filter_map(ValueEnum::to_possible_value)
        .map(|value| value.get_name().to_owned())
        .collect()
}

/// Digits and unit letters only, ending in a unit: a duration too large to count rather than
/// a typo.
fn looks_like_a_duration(text: &str) -> bool {
    let text = text.trim();
    text.starts_with(|c: char| c.is_ascii_digit())
        && text.ends_with(|c: char| "mshdw".contains(c))
        && text.chars().all(|c| c.is_ascii_digit() || "mshdw".contains(c))
}

fn too_long(key: &'static str, text: &Text, max: Duration) -> Problem {
    Problem::TooLarge { key, text: text.get_ref().clone(), max: format_duration_words(max) }
}

/// "7d", "3650d": the bounds as a user would write them.
fn format_duration_words(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else {
        format_duration(duration)
    }
}

/// What serde said about the file's shape, as a problem.
fn shape_problem(message: &str) -> Problem {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (key, expected_text) = rest.split_once('`').unwrap_or((rest, ""));
        let expected: Vec<String> =
            expected_text.split('`').skip(1).step_by(2).map(str::to_owned).collect();
        let table = raw::table_of_keys(&expected);
        let suggestion = suggest(key, expected.iter().map(String::as_str));
        return Problem::UnknownKey { key: key.to_owned(), table, expected, suggestion };
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let key = rest.split('`').next().unwrap_or(rest).to_owned();
        return Problem::MissingKey { key, table: "this table" };
    }
    if message.starts_with("invalid type") || message.starts_with("invalid value") {
        return Problem::WrongType { message: message.to_owned() };
    }
    Problem::Malformed { message: message.to_owned() }
}

/// The `[table]` / `[[table]]` header line of a table's span, or the span itself for inline
/// tables: what to underline when a key is missing from it.
fn header_span(text: &str, span: Range<usize>) -> Range<usize> {
    let start = span.start.min(text.len());
    let rest = text.get(start..span.end.min(text.len())).unwrap_or("");
    let line_end = rest.find('\n').map_or(span.end, |at| start + at);
    start..line_end.max(start)
}

/// Removes `.` and `..` components lexically, as a user reads `images/../scripts/x.sh`:
/// the paths in messages, manifests and logs then say `scripts/x.sh`.
#[must_use]
pub fn normalize(path: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(component);
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::types::{CommunicatorKind, ExportTarget};

    #[test]
    fn shape_problems_from_serde_messages() {
        let problem = shape_problem(
            "unknown field `nmae`, expected one of `name`, `parent`, `user_data`, `refresh`, `network`, `keep_package_caches`, `steps`",
        );
        assert_eq!(
            problem,
            Problem::UnknownKey {
                key: "nmae".into(),
                table: "[[stage]]",
                expected: raw::STAGE_KEYS.iter().map(|&k| k.to_owned()).collect(),
                suggestion: Some("name".into()),
            }
        );
        assert!(matches!(
            shape_problem("invalid type: integer `2`, expected a string"),
            Problem::WrongType { .. }
        ));
    }

    #[test]
    fn header_span_is_the_first_line() {
        let text = "[source]\nurl = \"x\"\n";
        assert_eq!(header_span(text, 0..text.len()), 0..8);
    }

    #[test]
    fn choice_words_come_from_the_enums() {
        assert_eq!(words::<CommunicatorKind>(), ["ssh", "guest-agent"]);
        assert_eq!(words::<ExportTarget>(), ["generic", "openstack", "proxmox"]);
    }

    #[test]
    fn huge_durations_are_too_large_not_malformed() {
        assert!(looks_like_a_duration("18446744073709551615s"));
        assert!(!looks_like_a_duration("10 minutes"));
        assert!(!looks_like_a_duration("15"));
        assert_eq!(format_duration_words(crate::units::MAX_TIMEOUT), "7d");
    }
}
