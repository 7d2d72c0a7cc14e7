//! Licenses as a system states them (Debian `copyright` short names such as `GPL-2+` or
//! `Expat`, rpm `LICENSE` tags) to SPDX license expressions. A name SPDX does not know becomes
//! a `LicenseRef-` of its own, which the SPDX document declares; nothing stated: `None`
//! (`NOASSERTION`).

use std::collections::BTreeMap;

/// One package's licenses as SPDX sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// A valid SPDX license expression.
    pub expression: String,
    /// The `LicenseRef-` identifiers it uses, each with the name the system gave.
    pub refs: BTreeMap<String, String>,
}

/// Debian's short names (DEP-5 §7) that are not SPDX identifiers, lowercased.
const DEBIAN_NAMES: &[(&str, &str)] = &[
    ("expat", "MIT"),
    ("artistic", "Artistic-1.0-Perl"),
    ("artistic-1.0", "Artistic-1.0"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsd-4-clause", "BSD-4-Clause"),
    ("psf-2", "PSF-2.0"),
    ("zlib", "Zlib"),
    ("cc0", "CC0-1.0"),
    ("mpl-1.1", "MPL-1.1"),
    ("mpl-2.0", "MPL-2.0"),
    ("apache-2", "Apache-2.0"),
];

/// The GNU licenses, whose SPDX identifiers say `-only` or `-or-later`.
const GNU_FAMILIES: &[&str] = &["GPL", "LGPL", "AGPL", "GFDL"];

/// The SPDX expression for everything `stated` (already sorted and deduplicated): each one
/// converted, joined with `AND` (a package holds code under all the licenses its copyright
/// file names). `None` when nothing is stated.
#[must_use]
pub fn declared(stated: &[String]) -> Option<Declared> {
    let mut refs = BTreeMap::new();
    let mut parts: Vec<String> = Vec::new();
    for value in stated {
        let part = expression(value.trim(), &mut refs);
        if !part.is_empty() && !parts.contains(&part) {
            parts.push(part);
        }
    }
    let expression = match parts.len() {
        0 => return None,
        1 => parts.remove(0),
        _ => parts
            .iter()
            .map(|part| if part.contains(' ') { format!("({part})") } else { part.clone() })
            .collect::<Vec<_>>()
            .join(" AND "),
    };
    Some(Declared { expression, refs })
}

/// One stated value as an SPDX expression: `A or B`, `A and B`, parentheses and `A with
/// EXCEPTION` when every name converts; otherwise the whole value as one `LicenseRef-`.
fn expression(value: &str, refs: &mut BTreeMap<String, String>) -> String {
    if value.is_empty() {
        return String::new();
    }
    let mut local = BTreeMap::new();
    if let Some(converted) = convert(value, &mut local)
        && spdx::Expression::parse(&converted).is_ok()
    {
        refs.extend(local);
        return converted;
    }
    license_ref(value, refs)
}

/// Token by token; `None` when a token cannot be placed (a comma, whose precedence in DEP-5
/// differs from SPDX's, or an unknown exception).
fn convert(value: &str, refs: &mut BTreeMap<String, String>) -> Option<String> {
    if value.contains(',') {
        return None;
    }
    let spaced = value.replace('(', " ( ").replace(')', " ) ");
    let mut out: Vec<String> = Vec::new();
    let mut tokens = spaced.split_whitespace().peekable();
    while let Some(token) = tokens.next() {
        match token.to_ascii_lowercase().as_str() {
            "(" | ")" => out.push(token.to_owned()),
            "or" | "|" => out.push("OR".to_owned()),
            "and" | "&" => out.push("AND".to_owned()),
            "with" => {
                let exception = tokens.next()?;
                spdx::exception_id(exception)?;
                out.push(format!("WITH {exception}"));
            }
            _ => out.push(atom(token, refs)),
        }
    }
    Some(out.join(" ").replace("( ", "(").replace(" )", ")"))
}

/// One license name to an SPDX identifier, or a `LicenseRef-` declared in `refs`.
fn atom(name: &str, refs: &mut BTreeMap<String, String>) -> String {
    if let Some(id) = known(name) {
        return id.to_owned();
    }
    let (base, plus) = match name.strip_suffix('+') {
        Some(base) => (base, true),
        None => (name, false),
    };
    if let Some(id) = gnu(base, plus) {
        return id;
    }
    if let Some(id) = known(base) {
        // `+` ("or any later version") is SPDX syntax after an identifier.
        return if plus { format!("{id}+") } else { id.to_owned() };
    }
    license_ref(name, refs)
}

/// An SPDX identifier in use (not deprecated), matched without regard to case, or Debian's
/// name for one.
fn known(name: &str) -> Option<&'static str> {
    if name.ends_with('+') {
        // `spdx::license_id` would drop it.
        return None;
    }
    let lower = name.to_ascii_lowercase();
    if let Some((_, id)) = DEBIAN_NAMES.iter().find(|(debian, _)| *debian == lower) {
        return Some(id);
    }
    let id = spdx::license_id(name).or_else(|| {
        spdx::identifiers::LICENSES
            .iter()
            .find(|license| license.name.eq_ignore_ascii_case(name))
            .and_then(|license| spdx::license_id(license.name))
    })?;
    (!id.is_deprecated()).then_some(id.name)
}

/// `GPL-2` → `GPL-2.0-only`, `LGPL-2.1` with `+` → `LGPL-2.1-or-later`, and the like.
fn gnu(base: &str, plus: bool) -> Option<String> {
    let (family, version) = base.split_once('-')?;
    let family = GNU_FAMILIES.iter().find(|known| known.eq_ignore_ascii_case(family))?;
    let version = if version.contains('.') { version.to_owned() } else { format!("{version}.0") };
    let suffix = if plus { "or-later" } else { "only" };
    let id = format!("{family}-{version}-{suffix}");
    let known = spdx::license_id(&id)?;
    (!known.is_deprecated()).then(|| known.name.to_owned())
}

/// `LicenseRef-` and the name with what SPDX does not allow in an identifier replaced.
fn license_ref(name: &str, refs: &mut BTreeMap<String, String>) -> String {
    let mut id = String::from("LicenseRef-");
    for c in name.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => id.push(c),
            '+' => id.push_str("-plus"),
            _ => {
                if !id.ends_with('-') {
                    id.push('-');
                }
            }
        }
    }
    let id = id.trim_end_matches('-').to_owned();
    refs.entry(id.clone()).or_insert_with(|| name.to_owned());
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(stated: &[&str]) -> Option<Declared> {
        declared(&stated.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    fn expr(stated: &[&str]) -> String {
        of(stated).map(|d| d.expression).unwrap_or_default()
    }

    #[test]
    fn debian_short_names_become_spdx_identifiers() {
        assert_eq!(expr(&["GPL-2+"]), "GPL-2.0-or-later");
        assert_eq!(expr(&["GPL-2"]), "GPL-2.0-only");
        assert_eq!(expr(&["LGPL-2.1+"]), "LGPL-2.1-or-later");
        assert_eq!(expr(&["Expat"]), "MIT");
        assert_eq!(expr(&["BSD-3-clause"]), "BSD-3-Clause");
        assert_eq!(expr(&["Apache-2.0"]), "Apache-2.0");
        assert_eq!(expr(&["mit"]), "MIT");
        assert_eq!(expr(&["MPL-1.1+"]), "MPL-1.1+");
        assert_eq!(expr(&["GPL-2+ or Artistic"]), "GPL-2.0-or-later OR Artistic-1.0-Perl");
        assert_eq!(expr(&["(MIT or Apache-2.0) and Zlib"]), "(MIT OR Apache-2.0) AND Zlib");
        assert_eq!(
            expr(&["GPL-2 with Classpath-exception-2.0"]),
            "GPL-2.0-only WITH Classpath-exception-2.0"
        );
        assert_eq!(of(&[]), None);
    }

    #[test]
    fn what_spdx_does_not_know_is_a_declared_license_ref() {
        let declared = of(&["Expat", "GPL-2+ with OpenSSL exception", "public-domain"]);
        let declared = declared.unwrap_or_else(|| unreachable!());
        assert_eq!(
            declared.expression,
            "MIT AND LicenseRef-GPL-2-plus-with-OpenSSL-exception AND LicenseRef-public-domain"
        );
        assert_eq!(declared.refs.len(), 2);
        assert_eq!(
            declared.refs.get("LicenseRef-GPL-2-plus-with-OpenSSL-exception").map(String::as_str),
            Some("GPL-2+ with OpenSSL exception")
        );
        assert!(spdx::Expression::parse(&declared.expression).is_ok());
        assert_eq!(
            expr(&["GPLv2+ and LGPLv2+"]),
            "LicenseRef-GPLv2-plus AND LicenseRef-LGPLv2-plus"
        );
        assert_eq!(expr(&["GPL-2+, LGPL-2+"]), "LicenseRef-GPL-2-plus-LGPL-2-plus");
        assert_eq!(expr(&["MIT", "MIT"]), "MIT");
        assert_eq!(expr(&["GPL-2+ or MIT", "Zlib"]), "(GPL-2.0-or-later OR MIT) AND Zlib");
    }
}
