//! `[[test]]` tables: a name, exactly one kind (`http`, `shell`, `service`, `port`), the
//! http-only `status` and `contains`, a bounded `timeout`; names unique. The rules on each
//! kind's values are `CheckKind::problem`'s.

use std::collections::HashSet;

use serde_spanned::Spanned;

use super::{Checker, header_span};
use crate::definition::error::Problem;
use crate::definition::raw::RawTest;
use crate::definition::types::{CheckKind, CheckSpec, DEFAULT_CHECK_TIMEOUT, MAX_CHECK_TIMEOUT};

impl Checker {
    pub(super) fn tests(&mut self, tests: &[Spanned<RawTest>]) -> Option<Vec<CheckSpec>> {
        let before = self.problems.len();
        let mut names = HashSet::new();
        let mut checks = Vec::new();
        for spanned in tests {
            let Some(check) = self.test(spanned) else {
                continue;
            };
            if !names.insert(check.name.clone()) {
                let span = spanned.get_ref().name.as_ref().map_or(spanned.span(), Spanned::span);
                self.report(Problem::DuplicateCheck { name: check.name.clone() }, span);
                continue;
            }
            checks.push(check);
        }
        (self.problems.len() == before).then_some(checks)
    }

    fn test(&mut self, spanned: &Spanned<RawTest>) -> Option<CheckSpec> {
        let test = spanned.get_ref();
        let header = header_span(self.lines.text(), spanned.span());
        let Some(name) = &test.name else {
            self.report(Problem::MissingKey { key: "name".into(), table: "[[test]]" }, header);
            return None;
        };
        let shown = name.get_ref().clone();
        let bad = |reason: &str| Problem::BadCheck { name: shown.clone(), reason: reason.into() };
        if shown.trim().is_empty() || shown.chars().any(char::is_control) {
            self.report(bad("the name must be non-empty text on one line"), name.span());
            return None;
        }
        let kinds: Vec<&str> = [
            ("http", test.http.is_some()),
            ("shell", test.shell.is_some()),
            ("service", test.service.is_some()),
            ("port", test.port.is_some()),
        ]
        .into_iter()
        .filter_map(|(kind, present)| present.then_some(kind))
        .collect();
        if kinds.len() != 1 {
            let reason = if kinds.is_empty() {
                "it has no kind".to_owned()
            } else {
                format!("it has {} kinds: {}", kinds.len(), kinds.join(", "))
            };
            self.report(bad(&reason), header);
            return None;
        }
        if test.http.is_none() {
            for (key, span) in [
                test.status.as_ref().map(|status| ("status", status.span())),
                test.contains.as_ref().map(|contains| ("contains", contains.span())),
            ]
            .into_iter()
            .flatten()
            {
                self.report(bad(&format!("`{key}` is only for http checks")), span);
            }
        }
        let timeout = self.duration(
            "timeout",
            test.timeout.as_ref(),
            DEFAULT_CHECK_TIMEOUT,
            MAX_CHECK_TIMEOUT,
        );
        let (kind, span) = self.test_kind(test, &bad)?;
        if let Some(reason) = kind.problem() {
            self.report(bad(&reason), span);
            return None;
        }
        Some(CheckSpec { name: shown, kind, timeout: timeout? })
    }

    /// The one kind a test has, with the span of its value.
    fn test_kind(
        &mut self,
        test: &RawTest,
        bad: &dyn Fn(&str) -> Problem,
    ) -> Option<(CheckKind, std::ops::Range<usize>)> {
        if let Some(url) = &test.http {
            let status = match &test.status {
                None => 200,
                Some(status) => match u16::try_from(*status.get_ref()) {
                    Ok(status) => status,
                    Err(_) => {
                        self.report(
                            bad("`status` is not an HTTP status (100 to 599)"),
                            status.span(),
                        );
                        return None;
                    }
                },
            };
            let contains = test.contains.as_ref().map(|text| text.get_ref().clone());
            let kind = CheckKind::Http { url: url.get_ref().clone(), status, contains };
            return Some((kind, url.span()));
        }
        if let Some(command) = &test.shell {
            return Some((CheckKind::Shell { command: command.get_ref().clone() }, command.span()));
        }
        if let Some(unit) = &test.service {
            return Some((CheckKind::Service { unit: unit.get_ref().clone() }, unit.span()));
        }
        let port = test.port.as_ref()?;
        match u16::try_from(*port.get_ref()) {
            Ok(number) => Some((CheckKind::Port { port: number }, port.span())),
            Err(_) => {
                self.report(bad("`port` must be from 1 to 65535"), port.span());
                None
            }
        }
    }
}
