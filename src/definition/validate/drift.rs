//! `[drift]`: the roots a layer's file manifest walks and the paths it leaves out, checked by
//! drift's own rules (DESIGN §7). Not a layer-key input: the manifest is a record of the disk,
//! not something that shapes it.

use serde_spanned::Spanned;

use super::Checker;
use crate::definition::error::Problem;
use crate::definition::raw::{RawDrift, Text};
use crate::definition::types::Drift;
use crate::drift::{DriftError, IgnoreRules, Roots};

impl Checker {
    pub(super) fn drift(&mut self, drift: Option<&RawDrift>) -> Option<Drift> {
        let roots = drift.and_then(|drift| drift.roots.as_ref());
        let ignore = drift.and_then(|drift| drift.ignore.as_ref());
        let roots = self.drift_list(roots, |texts| {
            if texts.is_empty() { Ok(Roots::default()) } else { Roots::new(texts) }
        });
        let ignore = self.drift_list(ignore, |texts| IgnoreRules::new(texts));
        Some(Drift { roots: roots?, ignore: ignore? })
    }

    /// Checks a list (none: an empty one) with `check`; an error points at the entry it names,
    /// else at the whole list.
    fn drift_list<T>(
        &mut self,
        list: Option<&Spanned<Vec<Text>>>,
        check: impl Fn(&[&str]) -> Result<T, DriftError>,
    ) -> Option<T> {
        let entries: &[Text] = list.map_or(&[], |list| list.get_ref().as_slice());
        let texts: Vec<&str> = entries.iter().map(|text| text.get_ref().as_str()).collect();
        match check(&texts) {
            Ok(checked) => Some(checked),
            Err(error) => {
                let message = error.to_string();
                let span = entries
                    .iter()
                    .find(|text| message.contains(&format!("`{}`", text.get_ref())))
                    .map(Spanned::span)
                    .or_else(|| list.map(Spanned::span))
                    .unwrap_or(0..0);
                self.report(Problem::BadDrift { message }, span);
                None
            }
        }
    }
}
