//! How two inventories differ: packages added, removed or at another version; files added,
//! removed or changed (content, mode, owner, type, link target). Or, when the two are plainly
//! not the same system, one finding that says so instead of thousands.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::IgnoreRules;
use super::ignore::is_under;
use super::model::{FileEntry, FileType, Inventory, Mode, OsRelease};

/// How to compare.
#[derive(Debug, Clone, Copy)]
pub struct Compare<'a> {
    /// Paths left out on both sides (also those recorded before a pattern was added).
    pub ignore: &'a IgnoreRules,
    /// Whether two plainly different systems give one [`Finding::DifferentSystem`] (drift: a
    /// server against its image) rather than every difference (diff: a stage against its
    /// parent, which may upgrade its release on purpose).
    pub detect_different_system: bool,
}

/// One difference, serialized as one JSON object whose `kind` names it (stable names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    PackageAdded {
        name: String,
        arch: String,
        version: String,
    },
    PackageRemoved {
        name: String,
        arch: String,
        version: String,
    },
    PackageChanged {
        name: String,
        arch: String,
        from: String,
        to: String,
    },
    FileAdded {
        path: String,
        #[serde(rename = "type")]
        file_type: FileType,
    },
    FileRemoved {
        path: String,
        #[serde(rename = "type")]
        file_type: FileType,
    },
    FileChanged {
        path: String,
        changes: Vec<Change>,
    },
    /// The two sides are not the same system (another OS release, or most packages removed
    /// or at other versions): the only finding then.
    DifferentSystem {
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        from_os: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        to_os: Option<String>,
    },
}

/// What changed about a file that is on both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "aspect", rename_all = "snake_case")]
pub enum Change {
    Content {
        #[serde(skip_serializing_if = "Option::is_none")]
        from_sha256: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        to_sha256: Option<String>,
        from_size: u64,
        to_size: u64,
    },
    Mode {
        from: Mode,
        to: Mode,
    },
    Owner {
        from: String,
        to: String,
    },
    Type {
        from: FileType,
        to: FileType,
    },
    Target {
        from: String,
        to: String,
    },
}

impl Finding {
    /// The stable name of its kind, as in its JSON `kind`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::PackageAdded { .. } => "package_added",
            Finding::PackageRemoved { .. } => "package_removed",
            Finding::PackageChanged { .. } => "package_changed",
            Finding::FileAdded { .. } => "file_added",
            Finding::FileRemoved { .. } => "file_removed",
            Finding::FileChanged { .. } => "file_changed",
            Finding::DifferentSystem { .. } => "different_system",
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::PackageAdded { name, arch, version } => {
                write!(f, "package added: {name}:{arch} {version}")
            }
            Finding::PackageRemoved { name, arch, version } => {
                write!(f, "package removed: {name}:{arch} {version}")
            }
            Finding::PackageChanged { name, arch, from, to } => {
                write!(f, "package version: {name}:{arch} {from} -> {to}")
            }
            Finding::FileAdded { path, file_type } => {
                write!(f, "{file_type} added: {}", path.escape_debug())
            }
            Finding::FileRemoved { path, file_type } => {
                write!(f, "{file_type} removed: {}", path.escape_debug())
            }
            Finding::FileChanged { path, changes } => {
                write!(f, "changed: {} (", path.escape_debug())?;
                for (index, change) in changes.iter().enumerate() {
                    let separator = if index == 0 { "" } else { ", " };
                    write!(f, "{separator}{change}")?;
                }
                f.write_str(")")
            }
            Finding::DifferentSystem { reason, .. } => write!(f, "not the same system: {reason}"),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Content { from_size, to_size, .. } => {
                write!(f, "content, {from_size} -> {to_size} bytes")
            }
            Change::Mode { from, to } => write!(f, "mode {from} -> {to}"),
            Change::Owner { from, to } => write!(f, "owner {from} -> {to}"),
            Change::Type { from, to } => write!(f, "type {from} -> {to}"),
            Change::Target { from, to } => {
                write!(f, "target {} -> {}", from.escape_debug(), to.escape_debug())
            }
        }
    }
}

/// What changed from `before` (a layer) to `after` (its child, or a server built from it).
/// Packages first, by name; then files, by path.
#[must_use]
pub fn compare(before: &Inventory, after: &Inventory, how: &Compare<'_>) -> Vec<Finding> {
    if how.detect_different_system
        && let Some(reason) = different_system(before, after)
    {
        return vec![Finding::DifferentSystem {
            reason,
            from_os: before.os.as_ref().map(ToString::to_string),
            to_os: after.os.as_ref().map(ToString::to_string),
        }];
    }
    let mut findings = compare_packages(before, after);
    findings.extend(compare_files(before, after, how.ignore));
    findings
}

type PackageVersions<'a> = BTreeMap<(&'a str, &'a str), &'a str>;

fn package_versions(inventory: &Inventory) -> PackageVersions<'_> {
    let packages = inventory.packages.iter();
    packages.map(|p| ((p.name.as_str(), p.arch.as_str()), p.version.as_str())).collect()
}

fn compare_packages(before: &Inventory, after: &Inventory) -> Vec<Finding> {
    let (old, new) = (package_versions(before), package_versions(after));
    let mut findings = Vec::new();
    for (&(name, arch), &version) in &old {
        let (name, arch) = (name.to_owned(), arch.to_owned());
        match new.get(&(name.as_str(), arch.as_str())) {
            None => findings.push(Finding::PackageRemoved { name, arch, version: version.into() }),
            Some(&to) if to != version => {
                findings.push(Finding::PackageChanged {
                    name,
                    arch,
                    from: version.into(),
                    to: to.into(),
                });
            }
            Some(_) => {}
        }
    }
    for (&(name, arch), &version) in &new {
        if !old.contains_key(&(name, arch)) {
            let (name, arch, version) = (name.to_owned(), arch.to_owned(), version.to_owned());
            findings.push(Finding::PackageAdded { name, arch, version });
        }
    }
    findings.sort_by(|a, b| package_name(a).cmp(&package_name(b)));
    findings
}

fn package_name(finding: &Finding) -> (&str, &str) {
    match finding {
        Finding::PackageAdded { name, arch, .. }
        | Finding::PackageRemoved { name, arch, .. }
        | Finding::PackageChanged { name, arch, .. } => (name, arch),
        _ => ("", ""),
    }
}

/// Why `before` and `after` are plainly not the same system, if they are not: another OS, or
/// another major release, or more than half of `before`'s packages removed or changed. (A
/// minor release, as Rocky's 9.3 to 9.4, is what updates do.)
fn different_system(before: &Inventory, after: &Inventory) -> Option<String> {
    if let (Some(from), Some(to)) = (&before.os, &after.os) {
        let major = |os: &OsRelease| {
            os.version_id.as_deref().and_then(|v| v.split('.').next()).map(str::to_owned)
        };
        if from.id != to.id || major(from) != major(to) {
            return Some(format!("{from} became {to}"));
        }
    }
    let (old, new) = (package_versions(before), package_versions(after));
    let differing = old.iter().filter(|&(key, version)| new.get(key) != Some(version)).count();
    if old.len() >= 2 && differing > old.len() / 2 {
        return Some(format!(
            "{differing} of the {} packages are removed or at another version",
            old.len()
        ));
    }
    None
}

/// The entries under roots both sides walked that `ignore` keeps, by path.
fn watched<'a>(
    inventory: &'a Inventory,
    roots: &[&str],
    ignore: &IgnoreRules,
) -> BTreeMap<&'a str, &'a FileEntry> {
    let entries = inventory.files.entries.iter();
    entries
        .filter(|e| roots.iter().any(|root| is_under(&e.path, root)) && !ignore.is_ignored(&e.path))
        .map(|entry| (entry.path.as_str(), entry))
        .collect()
}

fn compare_files(before: &Inventory, after: &Inventory, ignore: &IgnoreRules) -> Vec<Finding> {
    let after_roots = &after.files.roots;
    let roots: Vec<&str> = before
        .files
        .roots
        .iter()
        .filter(|root| after_roots.contains(root))
        .map(String::as_str)
        .collect();
    let (old, new) = (watched(before, &roots, ignore), watched(after, &roots, ignore));
    let mut findings = Vec::new();
    for (&path, &from) in &old {
        match new.get(path) {
            None => findings
                .push(Finding::FileRemoved { path: path.to_owned(), file_type: from.file_type }),
            Some(&to) => {
                let changes = changes(from, to);
                if !changes.is_empty() {
                    findings.push(Finding::FileChanged { path: path.to_owned(), changes });
                }
            }
        }
    }
    for (&path, &to) in &new {
        if !old.contains_key(path) {
            findings.push(Finding::FileAdded { path: path.to_owned(), file_type: to.file_type });
        }
    }
    findings.sort_by(|a, b| file_path(a).cmp(file_path(b)));
    findings
}

fn file_path(finding: &Finding) -> &str {
    match finding {
        Finding::FileAdded { path, .. }
        | Finding::FileRemoved { path, .. }
        | Finding::FileChanged { path, .. } => path,
        _ => "",
    }
}

/// How one path differs. A node of another type differs in that alone. A directory's size is
/// left out: it grows and shrinks with its entries, which are compared themselves.
fn changes(from: &FileEntry, to: &FileEntry) -> Vec<Change> {
    if from.file_type != to.file_type {
        return vec![Change::Type { from: from.file_type, to: to.file_type }];
    }
    let mut changes = Vec::new();
    let content_differs = match (&from.sha256, &to.sha256) {
        (Some(a), Some(b)) => a != b,
        (None, None) => from.size != to.size,
        _ => true,
    };
    if from.file_type == FileType::File && content_differs {
        changes.push(Change::Content {
            from_sha256: from.sha256.clone(),
            to_sha256: to.sha256.clone(),
            from_size: from.size,
            to_size: to.size,
        });
    }
    if from.file_type == FileType::Symlink && from.target != to.target {
        let target = |entry: &FileEntry| entry.target.clone().unwrap_or_default();
        changes.push(Change::Target { from: target(from), to: target(to) });
    }
    if from.mode != to.mode {
        changes.push(Change::Mode { from: from.mode, to: to.mode });
    }
    if from.owner != to.owner {
        changes.push(Change::Owner { from: from.owner.clone(), to: to.owner.clone() });
    }
    changes
}

#[cfg(test)]
mod tests;
