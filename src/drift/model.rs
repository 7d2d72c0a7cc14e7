//! What a system holds, as layer.json records it and a live server reports it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Everything one collection reads: the OS release, the installed packages and the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub os: Option<OsRelease>,
    /// Sorted by name, then architecture.
    pub packages: Vec<Package>,
    pub files: Manifest,
}

/// `ID` and `VERSION_ID` from /etc/os-release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsRelease {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

impl fmt::Display for OsRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version_id {
            Some(version) => write!(f, "{} {version}", self.id),
            None => f.write_str(&self.id),
        }
    }
}

/// An installed package, as dpkg or rpm names it. Drift compares name, arch and version only:
/// the source package and the licenses describe it (for an SBOM) and never make drift.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    /// `all`, `amd64`, `noarch`, `x86_64`…; empty when the package manager did not say.
    pub arch: String,
    /// With its epoch when it has one (`1:2.3-4`), as the package manager writes it.
    pub version: String,
    /// The source package it was built from (dpkg's `source:Package`/`source:Version`, rpm's
    /// `SOURCERPM`); `None` in records older than it, and where the system did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourcePackage>,
    /// The licenses the system states for it, as written there, sorted, once each: the
    /// `License:` fields of a machine-readable Debian `copyright` file, or rpm's `LICENSE` tag.
    /// Empty when it states none (or in older records): an SBOM says `NOASSERTION`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub licenses: Vec<String>,
}

/// A source package: name and version (rpm: `VERSION-RELEASE`, with the epoch when it has one).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourcePackage {
    pub name: String,
    pub version: String,
}

/// The files under some roots. Old layer records have none: `Manifest::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Manifest {
    /// The roots the collection was asked to walk (missing ones included): a comparison only
    /// looks at paths under roots both sides walked.
    pub roots: Vec<String>,
    /// Sorted by path, one per path.
    pub entries: Vec<FileEntry>,
}

impl Manifest {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty() && self.entries.is_empty()
    }
}

/// One file, directory, symlink or other node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Absolute. Bytes that are not UTF-8 are replaced (U+FFFD), the same way on both sides.
    pub path: String,
    #[serde(rename = "type")]
    pub file_type: FileType,
    pub mode: Mode,
    /// `user:group` as the system names them; numbers where it has no name.
    pub owner: String,
    pub size: u64,
    /// Regular files; `None` when the file could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Symlinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    File,
    Dir,
    Symlink,
    /// A fifo, socket or device node.
    Other,
}

impl FileType {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            FileType::File => "file",
            FileType::Dir => "dir",
            FileType::Symlink => "symlink",
            FileType::Other => "other",
        }
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Permission bits with setuid, setgid and sticky (`0o7777` at most); written in octal, as
/// `ls` and `chmod` do ("4755").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(u32);

impl Mode {
    pub const MASK: u32 = 0o7777;

    /// `None` for bits outside [`Mode::MASK`].
    #[must_use]
    pub fn new(bits: u32) -> Option<Mode> {
        (bits & !Self::MASK == 0).then_some(Mode(bits))
    }

    #[must_use]
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Parses octal digits ("644", "4755").
    #[must_use]
    pub fn from_octal(text: &str) -> Option<Mode> {
        if text.is_empty() || text.len() > 5 {
            return None;
        }
        u32::from_str_radix(text, 8).ok().and_then(Mode::new)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Mode, D::Error> {
        let text = String::deserialize(deserializer)?;
        Mode::from_octal(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("`{text}` is not an octal file mode up to 7777"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal_with_the_special_bits() {
        assert_eq!(Mode::from_octal("4755").map(Mode::bits), Some(0o4755));
        assert_eq!(Mode::from_octal("644").map(|m| m.to_string()), Some("0644".to_owned()));
        assert_eq!(Mode::from_octal("17777"), None);
        assert_eq!(Mode::from_octal("8"), None);
        assert_eq!(Mode::from_octal(""), None);
        assert_eq!(Mode::from_octal("-1"), None);
    }

    #[test]
    fn an_entry_round_trips_through_json_and_old_records_load() -> Result<(), serde_json::Error> {
        let entry = FileEntry {
            path: "/etc/a b".to_owned(),
            file_type: FileType::File,
            mode: Mode(0o4755),
            owner: "root:root".to_owned(),
            size: 3,
            sha256: Some("ab".repeat(32)),
            target: None,
        };
        let json = serde_json::to_string(&entry)?;
        assert!(json.contains(r#""type":"file""#) && json.contains(r#""mode":"4755""#), "{json}");
        assert!(!json.contains("target"), "{json}");
        assert_eq!(serde_json::from_str::<FileEntry>(&json)?, entry);
        let empty: Manifest = serde_json::from_str("{}")?;
        assert!(empty.is_empty());
        Ok(())
    }
}
