//! `name` and `[source]`: the image's name, where the base image comes from and how it is
//! verified. Must not fetch anything.

use std::path::{Path, PathBuf};

use serde_spanned::Spanned;

use super::{Checker, header_span};
use crate::definition::error::Problem;
use crate::definition::raw::{RawSource, Text};
use crate::definition::types::{Checksum, Digest, HashAlgo, Location, Source, StageName};

impl Checker {
    pub(super) fn image_name(&mut self, path: &Path, name: Option<&Text>) -> Option<String> {
        match name {
            Some(name) => {
                if StageName::new(name.get_ref()).is_none() {
                    self.report(
                        Problem::BadImageName { name: name.get_ref().clone() },
                        name.span(),
                    );
                    return None;
                }
                Some(name.get_ref().clone())
            }
            None => {
                let stem = path.file_stem().map(|stem| stem.to_string_lossy().into_owned());
                match stem.filter(|stem| StageName::new(stem).is_some()) {
                    Some(stem) => Some(stem),
                    None => {
                        self.report(
                            Problem::MissingKey { key: "name".into(), table: "the top level" },
                            0..0,
                        );
                        None
                    }
                }
            }
        }
    }

    pub(super) fn source(&mut self, source: Option<&Spanned<RawSource>>) -> Option<Source> {
        let Some(spanned) = source else {
            self.report(Problem::NoSource, 0..0);
            return None;
        };
        let source = spanned.get_ref();
        let table = header_span(self.lines.text(), spanned.span());
        let location = match &source.url {
            Some(url) => self.location("url", url),
            None => {
                self.report(Problem::NoUrl, table.clone());
                None
            }
        };
        let checksum = match (&source.checksum, &source.checksum_url) {
            (Some(inline), Some(url)) => {
                let invalid = self
                    .invalid(Problem::ChecksumAndChecksumUrl, url.span())
                    .with_secondary(&self.lines, inline.span(), "and this one".into());
                self.problems.push(invalid);
                None
            }
            (None, None) => {
                self.report(Problem::NoChecksum, table);
                None
            }
            (Some(inline), None) => self.checksum(inline).map(Checksum::Inline),
            (None, Some(url)) => self.location("checksum_url", url).map(Checksum::File),
        };
        Some(Source { location: location?, checksum: checksum? })
    }

    pub(super) fn checksum(&mut self, text: &Text) -> Option<Digest> {
        let value = text.get_ref();
        let bad = |reason: String| Problem::BadChecksum { text: value.clone(), reason };
        let problem = match value.split_once(':') {
            None => bad("expected ALGO:HEX".into()),
            Some((algo, hex)) => {
                let algo = match algo.to_ascii_lowercase().as_str() {
                    "sha256" => HashAlgo::Sha256,
                    "sha512" => HashAlgo::Sha512,
                    _ => {
                        let problem = bad(format!("unknown algorithm `{algo}`"));
                        self.report(problem, text.span());
                        return None;
                    }
                };
                if let Some(digest) = Digest::new(algo, hex) {
                    return Some(digest);
                }
                if let Some(odd) = hex.chars().find(|c| !c.is_ascii_hexdigit()) {
                    bad(format!("`{odd}` is not a hex digit"))
                } else {
                    bad(format!(
                        "a {} digest has {} hex digits, this one has {}",
                        algo.name(),
                        algo.hex_len(),
                        hex.len()
                    ))
                }
            }
        };
        self.report(problem, text.span());
        None
    }

    /// An http(s) URL, a file:// URL, or a path relative to the definition's folder.
    pub(super) fn location(&mut self, key: &'static str, text: &Text) -> Option<Location> {
        let value = text.get_ref().trim();
        let bad = |reason: &str| Problem::BadLocation {
            key,
            text: text.get_ref().clone(),
            reason: reason.to_owned(),
        };
        if value.is_empty() {
            self.report(Problem::EmptyValue { key }, text.span());
            return None;
        }
        let lower = value.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let rest = value.split_once("://").map_or("", |(_, rest)| rest);
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            if host.is_empty() {
                self.report(bad("the URL has no host"), text.span());
                return None;
            }
            if value.chars().any(char::is_whitespace) {
                self.report(bad("URLs cannot contain spaces: write them as %20"), text.span());
                return None;
            }
            return Some(Location::Http(value.to_owned()));
        }
        if lower.starts_with("file://") {
            let rest = &value["file://".len()..];
            let rest = rest.strip_prefix("localhost").unwrap_or(rest);
            if !rest.starts_with('/') {
                self.report(
                    bad("a file:// URL needs an absolute path, like file:///var/images/x.qcow2"),
                    text.span(),
                );
                return None;
            }
            return Some(Location::File(PathBuf::from(rest)));
        }
        if let Some((scheme, _)) = value.split_once("://")
            && !scheme.is_empty()
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            let reason = format!("strata fetches http, https and file URLs, not `{scheme}`");
            self.report(bad(&reason), text.span());
            return None;
        }
        Some(Location::File(self.resolve(value)))
    }
}
