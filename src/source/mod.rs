//! Base images: download (resumable, verified while streaming), checksums, and the
//! content-addressed `sources/` cache. Must not know about stages, layers or QEMU.
//!
//! A verified source lives at `sources/sha256-HEX.EXT`, named by the sha256 of its content
//! whatever algorithm the definition's checksum uses (sha512 is computed alongside while
//! streaming). `sources/index/` (see [`index`]) finds it again with no network access; a
//! download in progress is `sources/KEY-NAME.partial` with a `.partial.json` sidecar and is
//! resumed by the next fetch. A per-URL lock (`locks/source-KEY.lock`) makes a second process
//! wait for the first one's download and then use its result.
//!
//! With `checksum_url`, an online fetch reads the checksum file every time (so a moved
//! "latest" image is noticed) and then looks the digest up; offline, or when the checksum file
//! cannot be reached, the index's record of the digest that file gave last time is used.
//!
//! URLs may carry credentials: they are handled as [`SourceUrl`]s, and only their redacted form
//! reaches errors, events and files (see [`url`]). Every fetch first sweeps what earlier
//! downloads left and nothing can resume ([`clean_stale`]).

mod checksum;
mod hashing;
mod http;
mod index;
mod url;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use checksum::find_entry as find_checksum_entry;
pub use hashing::SourceDigest;
pub use url::{SourceUrl, redact};

use crate::definition::{Checksum, Digest, HashAlgo, Location, Source};
use crate::events::{Event, Events};
use crate::store::{Store, StoreError, sync_dir};
use hashing::{Computed, Sink};
use index::Entry;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("failed to lock the store for {url}")]
    Lock {
        url: String,
        #[source]
        source: StoreError,
    },
    #[error("failed to set up the HTTP client: check HTTP_PROXY, HTTPS_PROXY and NO_PROXY")]
    Client {
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} is not a URL strata can fetch: check the definition's [source]")]
    BadUrl {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "failed to resolve the host of {url}: check the URL and the network, or use --offline \
         with a source fetched before"
    )]
    Dns {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "TLS with {url} failed: check the system's CA certificates, the clock, and any HTTPS proxy"
    )]
    Tls {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("timed out talking to {url}")]
    Timeout {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("failed to connect to {url}: check the network and HTTP_PROXY, HTTPS_PROXY, NO_PROXY")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("too many redirects from {url}")]
    Redirect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the request to {url} failed")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the server answered {status} {reason} for {url}: check the URL in the definition")]
    Status { url: String, status: u16, reason: String },
    #[error("the connection broke while downloading {url}")]
    Body {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the download of {url} ended after {got} of {total} bytes")]
    Truncated { url: String, got: u64, total: u64 },
    #[error("{url} answered a byte range that does not continue the partial download")]
    BadRange { url: String },
    #[error(
        "failed to download {url} after {tries} tries; {kept} bytes are kept in {} and the next \
         `strata fetch` resumes from there", partial.display()
    )]
    Interrupted {
        url: String,
        tries: u32,
        kept: u64,
        partial: PathBuf,
        #[source]
        cause: Box<SourceError>,
    },
    #[error("failed to download {url} after {tries} tries")]
    GaveUp {
        url: String,
        tries: u32,
        #[source]
        cause: Box<SourceError>,
    },
    #[error(
        "disk full while writing {} (from {url}): free space in the store or pass --store DIR",
        path.display()
    )]
    DiskFull {
        url: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write {} (from {url})", path.display())]
    Write {
        url: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read source file {}: check the path in the definition's [source]", path.display())]
    ReadLocal {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read checksum file {}: check checksum_url in the definition", path.display())]
    ReadChecksum {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "checksum file {url} is larger than {limit} bytes: check checksum_url in the definition"
    )]
    ChecksumFileTooBig { url: String, limit: usize },
    #[error(
        "checksum file {checksum_url} has no sha256 or sha512 entry for {file_name}: check that \
         checksum_url lists the source URL's file name"
    )]
    NoChecksumEntry { checksum_url: String, file_name: String },
    #[error(
        "checksum mismatch for {url}: expected {expected}, got {actual}; the bytes were deleted \
         (check the checksum in the definition, or try another mirror)"
    )]
    Mismatch { url: String, expected: String, actual: String },
    #[error(
        "{url} is not in the store and --offline forbids downloading it: run `strata fetch DEF` \
         without --offline first"
    )]
    NotCached { url: String },
    #[error(
        "the cached copy of {url} ({}) no longer matches {expected} (got {actual}) and was \
         deleted; --offline forbids downloading it again: run `strata fetch DEF`",
        path.display()
    )]
    CachedCorrupt { url: String, path: PathBuf, expected: String, actual: String },
    #[error("failed to read {} in the store", path.display())]
    StoreRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("a background task of the download failed")]
    Task {
        #[source]
        source: tokio::task::JoinError,
    },
}

impl SourceError {
    /// Whether another try may succeed: network trouble and server-side errors, not 4xx.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Timeout { .. }
            | SourceError::Connect { .. }
            | SourceError::Request { .. }
            | SourceError::Body { .. }
            | SourceError::Truncated { .. }
            | SourceError::BadRange { .. } => true,
            SourceError::Status { status, .. } => *status >= 500 || matches!(status, 408 | 429),
            _ => false,
        }
    }

    /// Whether the network (not the server's answer, nor the disk) was the trouble.
    fn is_unreachable(&self) -> bool {
        match self {
            SourceError::Interrupted { cause, .. } | SourceError::GaveUp { cause, .. } => {
                cause.is_unreachable()
            }
            SourceError::Dns { .. } | SourceError::Tls { .. } => true,
            other => other.is_transient(),
        }
    }
}

/// How [`fetch`] may use the network and the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchOptions {
    /// Never open a connection; fail when the source is not in the store.
    pub offline: bool,
    /// Rehash a cached file instead of trusting its recorded size and modification time.
    pub verify: bool,
}

/// A verified source in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedSource {
    /// `STORE/sources/sha256-HEX.EXT`.
    pub path: PathBuf,
    /// The sha256 of the content (the store's key for it).
    pub digest: SourceDigest,
    /// Bytes.
    pub size: u64,
}

/// Makes sure `source` is in the store, verified, and returns where. Downloads (or copies a
/// local file) only when no verified copy is cached; see the module's docs for the cache.
pub async fn fetch(
    store: &Store,
    source: &Source,
    options: FetchOptions,
    events: &Events,
) -> Result<FetchedSource, SourceError> {
    let url = SourceUrl::for_location(&source.location);
    let _lock = lock(store, &url).await?;
    clean_stale(store);
    let mut net = Net { offline: options.offline, client: None };
    let expected = expected_digest(store, source, &url, &mut net, events).await?;
    if let Some(found) = cached(store, source, &url, &expected, options, events).await? {
        return Ok(found);
    }
    let (temp, computed, size) = match &source.location {
        Location::Http(_) => {
            if options.offline {
                return Err(SourceError::NotCached { url: url.to_string() });
            }
            let partial = http::Partial::for_url(store, &url, &source.location.file_name());
            let (computed, size) =
                http::download(net.client()?, &url, &partial, &expected.digest, events).await?;
            (Landing::Partial(partial), computed, size)
        }
        Location::File(path) => {
            let (temp, computed, size) =
                copy_local(path, &url, &store.sources_dir(), &expected.digest, events).await?;
            (Landing::Temp(temp), computed, size)
        }
    };
    if !computed.matches(&expected.digest) {
        temp.discard();
        return Err(SourceError::Mismatch {
            url: url.to_string(),
            expected: expected.digest.to_string(),
            actual: computed.actual_for(&expected.digest),
        });
    }
    let path = store.sources_dir().join(file_name_for(&computed.sha256, &source.location));
    temp.land(&path).map_err(|error| http::write_error(&url, &path, error))?;
    let fetched = FetchedSource { path, digest: computed.sha256, size };
    record(store, &url, &expected, &fetched)?;
    Ok(fetched)
}

/// Finds a cached, verified copy of `source` without network access, trusting the recorded
/// size and modification time (no hashing). For `strata layers` and cache keys.
#[must_use]
pub fn lookup(store: &Store, source: &Source) -> Option<FetchedSource> {
    let expected = expected_offline(store, source)?;
    let entry = index::read(&index::by_digest_path(store, &expected.digest))?;
    let path = store.sources_dir().join(&entry.file);
    let metadata = fs::metadata(&path).ok()?;
    let digest = SourceDigest::from_hex(&entry.sha256)?;
    entry.unchanged(&metadata).then_some(FetchedSource { path, digest, size: entry.size })
}

/// The sha256 `source`'s content must have, when it can be told without the network (an inline
/// sha256, a local checksum file, or what a checksum URL gave last time): the name the shared
/// cache knows a source by. `None` for a sha512 or a checksum URL never read.
#[must_use]
pub fn expected_sha256(store: &Store, source: &Source) -> Option<SourceDigest> {
    let expected = expected_offline(store, source)?;
    (expected.digest.algo() == HashAlgo::Sha256)
        .then(|| SourceDigest::from_hex(expected.digest.hex()))
        .flatten()
}

/// Records a source that came into `sources/` another way than [`fetch`] (pulled from the
/// shared cache) in the index, so that a later fetch, `--offline` too, finds it.
pub fn record_pulled(
    store: &Store,
    source: &Source,
    fetched: &FetchedSource,
) -> Result<(), SourceError> {
    let url = SourceUrl::for_location(&source.location);
    let expected = expected_offline(store, source)
        .ok_or_else(|| SourceError::NotCached { url: url.to_string() })?;
    record(store, &url, &expected, fetched)
}

/// [`Expected`] without the network: `None` when only a checksum URL never read could say.
fn expected_offline(store: &Store, source: &Source) -> Option<Expected> {
    let url = SourceUrl::for_location(&source.location);
    match &source.checksum {
        Checksum::Inline(digest) => Some(Expected { digest: digest.clone(), checksum_url: None }),
        Checksum::File(Location::File(path)) => {
            let text = fs::read_to_string(path).ok()?;
            let digest = checksum::find_entry(&text, &source.location.file_name())?;
            let checksum_url = SourceUrl::for_location(&Location::File(path.clone()));
            Some(Expected { digest, checksum_url: Some(checksum_url) })
        }
        Checksum::File(Location::Http(checksum_url)) => {
            let checksum_url = SourceUrl::new(checksum_url);
            let digest =
                index::read(&index::by_url_path(store, &url, &checksum_url))?.expected_digest()?;
            Some(Expected { digest, checksum_url: Some(checksum_url) })
        }
    }
}

/// The client is built on first use, so `--offline` never builds one.
struct Net {
    offline: bool,
    client: Option<reqwest::Client>,
}

impl Net {
    fn client(&mut self) -> Result<&reqwest::Client, SourceError> {
        debug_assert!(!self.offline, "no client is built offline");
        let client = match self.client.take() {
            Some(client) => client,
            None => http::client()?,
        };
        Ok(self.client.insert(client))
    }
}

async fn lock(store: &Store, url: &SourceUrl) -> Result<fs::File, SourceError> {
    let name = http::lock_name(&http::url_key(url));
    store
        .lock_async(&name, crate::store::LockMode::Exclusive)
        .await
        .map_err(|source| SourceError::Lock { url: url.to_string(), source })
}

/// Removes what downloads and local copies left in `sources/` that nothing can resume (empty
/// partial files, `.copy-*.partial`), skipping any whose URL a running fetch holds. Every
/// fetch calls it; returns how many files went.
pub fn clean_stale(store: &Store) -> usize {
    http::sweep(store)
}

/// The digest the content must have, and the checksum file it came from.
struct Expected {
    digest: Digest,
    checksum_url: Option<SourceUrl>,
}

async fn expected_digest(
    store: &Store,
    source: &Source,
    url: &SourceUrl,
    net: &mut Net,
    events: &Events,
) -> Result<Expected, SourceError> {
    let file_name = source.location.file_name();
    let (text, checksum_url) = match &source.checksum {
        Checksum::Inline(digest) => {
            return Ok(Expected { digest: digest.clone(), checksum_url: None });
        }
        Checksum::File(Location::File(path)) => {
            let text = tokio::fs::read(path)
                .await
                .map_err(|source| SourceError::ReadChecksum { path: path.clone(), source })?;
            let checksum_url = SourceUrl::for_location(&Location::File(path.clone()));
            (String::from_utf8_lossy(&text).into_owned(), checksum_url)
        }
        Checksum::File(Location::Http(checksum_url)) => {
            let checksum_url = SourceUrl::new(checksum_url);
            let remembered = || {
                index::read(&index::by_url_path(store, url, &checksum_url))
                    .and_then(|entry| entry.expected_digest())
            };
            if net.offline {
                let digest =
                    remembered().ok_or_else(|| SourceError::NotCached { url: url.to_string() })?;
                return Ok(Expected { digest, checksum_url: Some(checksum_url) });
            }
            match http::fetch_text(net.client()?, &checksum_url).await {
                Ok(text) => (text, checksum_url.clone()),
                Err(error) => match remembered() {
                    Some(digest) if error.is_unreachable() => {
                        events.warn(format!(
                            "{error}; using the digest {checksum_url} gave last time ({digest})"
                        ));
                        return Ok(Expected { digest, checksum_url: Some(checksum_url) });
                    }
                    _ => return Err(error),
                },
            }
        }
    };
    let digest = checksum::find_entry(&text, &file_name).ok_or_else(|| {
        SourceError::NoChecksumEntry { checksum_url: checksum_url.to_string(), file_name }
    })?;
    Ok(Expected { digest, checksum_url: Some(checksum_url) })
}

/// A cached copy that still verifies, or `None` when there is none (a damaged one is deleted).
async fn cached(
    store: &Store,
    source: &Source,
    url: &SourceUrl,
    expected: &Expected,
    options: FetchOptions,
    events: &Events,
) -> Result<Option<FetchedSource>, SourceError> {
    let entry_path = index::by_digest_path(store, &expected.digest);
    let Some(mut entry) = index::read(&entry_path).or_else(|| adopt(store, source, expected))
    else {
        return Ok(None);
    };
    let path = store.sources_dir().join(&entry.file);
    let (Ok(metadata), Some(digest)) = (fs::metadata(&path), SourceDigest::from_hex(&entry.sha256))
    else {
        index::remove(&entry_path);
        return Ok(None);
    };
    let trusted = !options.verify && entry.unchanged(&metadata);
    if !trusted {
        let want_sha512 = expected.digest.algo() == HashAlgo::Sha512;
        let hashed_path = path.clone();
        let (computed, _) =
            tokio::task::spawn_blocking(move || hashing::hash_file(&hashed_path, want_sha512))
                .await
                .map_err(|source| SourceError::Task { source })?
                .map_err(|source| SourceError::StoreRead { path: path.clone(), source })?;
        if !computed.matches(&expected.digest) || computed.sha256.hex() != entry.sha256 {
            let actual = computed.actual_for(&expected.digest);
            let _ = fs::remove_file(&path);
            index::remove(&entry_path);
            if options.offline && matches!(source.location, Location::Http(_)) {
                return Err(SourceError::CachedCorrupt {
                    url: url.to_string(),
                    path,
                    expected: expected.digest.to_string(),
                    actual,
                });
            }
            events.warn(format!(
                "the cached copy of {url} ({}) no longer matches {} (got {actual}): deleted, \
                 fetching it again",
                path.display(),
                expected.digest
            ));
            return Ok(None);
        }
        entry.stamp(&metadata);
    }
    let fetched = FetchedSource { path, digest, size: metadata.len() };
    if !trusted {
        // Re-recorded with the size and time just verified.
        record(store, url, expected, &fetched)?;
    } else if let Some(checksum_url) = &expected.checksum_url {
        write_index(&index::by_url_path(store, url, checksum_url), &entry, url)?;
    }
    events.emit(Event::SourceCached { url: url.to_string(), digest: fetched.digest.to_string() });
    Ok(Some(fetched))
}

/// A file already named by an expected sha256 but missing from the index (an index lost or
/// written by hand) is taken in; it is rehashed before use since its entry has no time.
fn adopt(store: &Store, source: &Source, expected: &Expected) -> Option<Entry> {
    if expected.digest.algo() != HashAlgo::Sha256 {
        return None;
    }
    let digest = SourceDigest::from_hex(expected.digest.hex())?;
    let file = file_name_for(&digest, &source.location);
    fs::metadata(store.sources_dir().join(&file)).ok()?;
    Some(Entry {
        url: SourceUrl::for_location(&source.location).to_string(),
        checksum_url: expected.checksum_url.as_ref().map(SourceUrl::to_string),
        expected: expected.digest.to_string(),
        sha256: digest.hex().to_owned(),
        file,
        size: u64::MAX,
        mtime_secs: 0,
        mtime_nanos: 0,
        verified_at: 0,
    })
}

/// Writes the index entries for a verified file: by digest, and by URL for a checksum file.
fn record(
    store: &Store,
    url: &SourceUrl,
    expected: &Expected,
    fetched: &FetchedSource,
) -> Result<(), SourceError> {
    let metadata = fs::metadata(&fetched.path)
        .map_err(|source| SourceError::StoreRead { path: fetched.path.clone(), source })?;
    let file = fetched.path.file_name().map(|name| name.to_string_lossy().into_owned());
    let mut entry = Entry {
        url: url.to_string(),
        checksum_url: expected.checksum_url.as_ref().map(SourceUrl::to_string),
        expected: expected.digest.to_string(),
        sha256: fetched.digest.hex().to_owned(),
        file: file.unwrap_or_default(),
        size: 0,
        mtime_secs: 0,
        mtime_nanos: 0,
        verified_at: 0,
    };
    entry.stamp(&metadata);
    write_index(&index::by_digest_path(store, &expected.digest), &entry, url)?;
    if let Some(checksum_url) = &expected.checksum_url {
        write_index(&index::by_url_path(store, url, checksum_url), &entry, url)?;
    }
    Ok(())
}

fn write_index(path: &Path, entry: &Entry, url: &SourceUrl) -> Result<(), SourceError> {
    index::write(path, entry).map_err(|source| http::write_error(url, path, source))
}

/// `sha256-HEX.EXT`, EXT from the source's file name (`img` when it has none that fits).
fn file_name_for(digest: &SourceDigest, location: &Location) -> String {
    let name = location.file_name();
    let ext = name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .filter(|ext| {
            (1..=8).contains(&ext.len()) && ext.bytes().all(|b| b.is_ascii_alphanumeric())
        })
        .unwrap_or_else(|| "img".to_owned());
    format!("sha256-{}.{ext}", digest.hex())
}

/// Where verified bytes wait before they are renamed into `sources/`.
enum Landing {
    Partial(http::Partial),
    Temp(tempfile::TempPath),
}

impl Landing {
    fn discard(self) {
        match self {
            Landing::Partial(partial) => partial.remove(),
            Landing::Temp(temp) => drop(temp),
        }
    }

    /// Renames into place and makes the rename durable (the file was fsynced when finished).
    fn land(self, path: &Path) -> io::Result<()> {
        match self {
            Landing::Partial(partial) => {
                fs::rename(partial.data(), path)?;
                partial.remove_meta();
            }
            Landing::Temp(temp) => temp.persist(path).map_err(|error| error.error)?,
        }
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    }
}

/// Copies a local source into a temp file in `sources/`, hashing on the way (read once).
async fn copy_local(
    from: &Path,
    url: &SourceUrl,
    sources_dir: &Path,
    expected: &Digest,
    events: &Events,
) -> Result<(tempfile::TempPath, Computed, u64), SourceError> {
    let from = from.to_owned();
    let dir = sources_dir.to_owned();
    let want_sha512 = expected.algo() == HashAlgo::Sha512;
    let events = events.clone();
    let url = url.clone();
    tokio::task::spawn_blocking(move || {
        let read_error = |source| SourceError::ReadLocal { path: from.clone(), source };
        let mut input = fs::File::open(&from).map_err(read_error)?;
        let total = input.metadata().ok().map(|metadata| metadata.len());
        let started = Instant::now();
        events.emit(Event::DownloadStarted {
            url: url.to_string(),
            total_bytes: total,
            resumed_from: 0,
        });
        // Named by the URL's key, so the stale-work sweep can tell whose lock guards it.
        let prefix = format!(".copy-{}-", http::url_key(&url));
        let temp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".partial")
            .tempfile_in(&dir)
            .map_err(|source| http::write_error(&url, &dir, source))?;
        let (file, temp_path) = temp.into_parts();
        let mut sink = Sink::from_file(&temp_path, file, want_sha512);
        hashing::copy_into(&mut input, &mut sink).map_err(|error| match error {
            hashing::CopyError::Read(source) => read_error(source),
            hashing::CopyError::Write(source) => http::write_error(&url, &temp_path, source),
        })?;
        let (computed, size) =
            sink.finish().map_err(|source| http::write_error(&url, &temp_path, source))?;
        events.emit(Event::DownloadFinished {
            url: url.to_string(),
            digest: computed.sha256.to_string(),
            bytes: size,
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok((temp_path, computed, size))
    })
    .await
    .map_err(|source| SourceError::Task { source })?
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn file_names_take_the_extension() {
        let digest = SourceDigest::from_hex(&"a".repeat(64)).unwrap();
        let name = |url: &str| file_name_for(&digest, &Location::Http(url.into()));
        assert!(name("http://h/debian-12.qcow2").ends_with(".qcow2"));
        assert!(name("http://h/disk.RAW?x=1").ends_with(".raw"));
        assert!(name("http://h/noext").ends_with(".img"));
        assert!(name("http://h/weird.ext with space").ends_with(".img"));
        assert!(name("http://h/x.qcow2").starts_with("sha256-aaaa"));
    }

    #[test]
    fn transient_errors_are_server_and_network_trouble() {
        let status =
            |status| SourceError::Status { url: "u".into(), status, reason: String::new() };
        assert!(status(500).is_transient());
        assert!(status(503).is_transient());
        assert!(!status(404).is_transient());
        assert!(!status(403).is_transient());
        assert!(!SourceError::NotCached { url: "u".into() }.is_transient());
    }
}
