//! The sources index, `sources/index/*.json`: how a cached source is found without the network.
//! Owns the index's file names and format; must not download or hash.
//!
//! Two kinds of entry, both the same record:
//! - `digest-<sha256 of "ALGO:HEX">.json`, keyed by the expected digest: any definition that
//!   expects that digest finds the file, whatever URL it names;
//! - `url-<sha256 of URL, newline, CHECKSUM_URL>.json`, for sources checked by a checksum file:
//!   it remembers which digest the checksum file gave last time, so `--offline` (or a checksum
//!   server that cannot be reached) still finds the last verified file for that URL.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::url::SourceUrl;
use crate::definition::{Digest, HashAlgo};
use crate::store::{Store, write_atomic};

/// What the index records about one verified file in `sources/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The URL (or path) the file was fetched from, redacted.
    pub(crate) url: String,
    /// The checksum file that gave `expected`, if any, redacted.
    pub(crate) checksum_url: Option<String>,
    /// The digest the definition (or its checksum file) expects, as `ALGO:HEX`.
    pub(crate) expected: String,
    /// The content's sha256: the store's name for it.
    pub(crate) sha256: String,
    /// The file's name in `sources/`.
    pub(crate) file: String,
    pub(crate) size: u64,
    /// The file's modification time when last verified, since the Unix epoch.
    pub(crate) mtime_secs: u64,
    pub(crate) mtime_nanos: u32,
    /// When it was last verified (seconds since the Unix epoch).
    pub(crate) verified_at: u64,
}

impl Entry {
    pub(crate) fn expected_digest(&self) -> Option<Digest> {
        parse_digest(&self.expected)
    }

    /// Whether `metadata` still shows the size and time recorded at verification.
    pub(crate) fn unchanged(&self, metadata: &fs::Metadata) -> bool {
        metadata.len() == self.size
            && metadata.modified().ok().map(split_time) == Some((self.mtime_secs, self.mtime_nanos))
    }

    /// Records `metadata`'s size and time as verified now.
    pub(crate) fn stamp(&mut self, metadata: &fs::Metadata) {
        self.size = metadata.len();
        (self.mtime_secs, self.mtime_nanos) =
            metadata.modified().map(split_time).unwrap_or_default();
        self.verified_at = split_time(SystemTime::now()).0;
    }
}

/// `ALGO:HEX` back into a digest.
pub(crate) fn parse_digest(text: &str) -> Option<Digest> {
    let (algo, hex) = text.split_once(':')?;
    let algo = match algo {
        "sha256" => HashAlgo::Sha256,
        "sha512" => HashAlgo::Sha512,
        _ => return None,
    };
    Digest::new(algo, hex)
}

fn split_time(time: SystemTime) -> (u64, u32) {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| (since.as_secs(), since.subsec_nanos()))
        .unwrap_or_default()
}

pub(crate) fn dir(store: &Store) -> PathBuf {
    store.sources_dir().join("index")
}

pub(crate) fn by_digest_path(store: &Store, expected: &Digest) -> PathBuf {
    dir(store).join(format!("digest-{}.json", sha256_hex(&expected.to_string())))
}

/// Keyed by the real URLs (hashed); the entry itself holds only their redacted forms.
pub(crate) fn by_url_path(store: &Store, url: &SourceUrl, checksum_url: &SourceUrl) -> PathBuf {
    let key = format!("{}\n{}", url.for_request(), checksum_url.for_request());
    dir(store).join(format!("url-{}.json", sha256_hex(&key)))
}

pub(crate) fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Reads an entry; a missing or unreadable one is `None` (the index is only a cache).
pub(crate) fn read(path: &Path) -> Option<Entry> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub(crate) fn write(path: &Path, entry: &Entry) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let json = serde_json::to_vec_pretty(entry).map_err(io::Error::other)?;
    write_atomic(path, &json)
}

pub(crate) fn remove(path: &Path) {
    let _ = fs::remove_file(path);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_notice_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let file = store.sources_dir().join("sha256-x.img");
        fs::write(&file, b"abc").unwrap();
        let expected = Digest::new(HashAlgo::Sha256, &"a".repeat(64)).unwrap();
        let mut entry = Entry {
            url: "http://h/x.img".into(),
            checksum_url: None,
            expected: expected.to_string(),
            sha256: "a".repeat(64),
            file: "sha256-x.img".into(),
            size: 0,
            mtime_secs: 0,
            mtime_nanos: 0,
            verified_at: 0,
        };
        entry.stamp(&fs::metadata(&file).unwrap());
        let path = by_digest_path(&store, &expected);
        write(&path, &entry).unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back, entry);
        assert_eq!(back.expected_digest(), Some(expected));
        assert!(back.unchanged(&fs::metadata(&file).unwrap()));
        fs::write(&file, b"abcd").unwrap();
        assert!(!back.unchanged(&fs::metadata(&file).unwrap()));
    }

    #[test]
    fn keys_differ_by_checksum_url() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (u, a, b) = (SourceUrl::new("u"), SourceUrl::new("a"), SourceUrl::new("b"));
        assert_ne!(by_url_path(&store, &u, &a), by_url_path(&store, &u, &b));
        assert!(read(&by_url_path(&store, &u, &a)).is_none());
        assert!(parse_digest("md5:00").is_none());
    }
}
