//! HTTP(S) downloads into a resumable `.partial` file, hashed while streaming, with bounded
//! retries. Owns the partial file and its sidecar (`.partial.json`: URL, ETag, Last-Modified);
//! must not name files in `sources/` by content nor touch the index.
//!
//! Proxies come from HTTP_PROXY / HTTPS_PROXY / ALL_PROXY / NO_PROXY (reqwest's system-proxy).
//! A resume sends `Range: bytes=N-` with `If-Range` (a strong ETag, else Last-Modified); a `200`
//! answer means the server ignored the range or the file changed, and the download restarts
//! from zero. Without any validator nothing is resumed.
//!
//! Nothing is written before the server answered 200 or 206: a 404 leaves no file. Retries are
//! bounded three ways: [`MAX_TRIES`] failures in a row without new bytes (bytes count as new
//! only past the most the partial ever held, so a server that sends the same bytes again and
//! again is not "progress"), [`MAX_ATTEMPTS`] requests in all, and no new try after
//! [`RETRY_WINDOW`]. A resume answered 416 while the partial holds as many bytes as the file
//! has is checked against the expected digest before anything is thrown away.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use serde::{Deserialize, Serialize};

use super::SourceError;
use super::hashing::{Computed, Sink};
use super::url::SourceUrl;
use crate::definition::{Digest, HashAlgo};
use crate::events::{Event, Events};
use crate::store::{Store, write_atomic};

/// Failed attempts in a row (without new bytes) before giving up.
pub(crate) const MAX_TRIES: u32 = 5;
/// Requests for one download in all, whatever arrived.
pub(crate) const MAX_ATTEMPTS: u32 = 30;
/// No new try starts this long after the download started.
const RETRY_WINDOW: Duration = Duration::from_secs(6 * 3600);
/// A `.copy-*.partial` whose name carries no URL key (an older strata's) is litter once it
/// has not changed for this long.
const UNKEYED_COPY_AGE: Duration = Duration::from_secs(24 * 3600);
/// How many hex characters of the URL's sha256 name its partial files and lock.
const KEY_CHARS: usize = 16;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// No byte for this long and the attempt counts as failed (then resumes).
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Checksum files are small; anything bigger is not one.
const MAX_TEXT: usize = 16 << 20;
/// Chunks in flight between the network and the writer thread.
const CHANNEL_DEPTH: usize = 64;

pub(crate) fn client() -> Result<reqwest::Client, SourceError> {
    crate::tls::client_builder(CONNECT_TIMEOUT, READ_TIMEOUT)
        .build()
        .map_err(|source| SourceError::Client { source })
}

/// What a partial download is of, and how to ask for the rest of the same file.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct PartialMeta {
    /// The redacted URL: the file's name already carries a hash of the real one.
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    total: Option<u64>,
}

impl PartialMeta {
    /// If-Range needs a strong ETag; without one, Last-Modified.
    fn validator(&self) -> Option<&str> {
        let strong = self.etag.as_deref().filter(|etag| !etag.starts_with("W/"));
        strong.or(self.last_modified.as_deref())
    }

    fn take_validators(&mut self, headers: &HeaderMap) {
        let text =
            |name| headers.get(name).and_then(|value: &header::HeaderValue| value.to_str().ok());
        self.etag = text(header::ETAG).map(str::to_owned);
        self.last_modified = text(header::LAST_MODIFIED).map(str::to_owned);
    }
}

/// The first [`KEY_CHARS`] hex characters of the URL's sha256: partial files and the lock.
pub(crate) fn url_key(url: &SourceUrl) -> String {
    let key = super::index::sha256_hex(url.for_request());
    key.get(..KEY_CHARS).unwrap_or(&key).to_owned()
}

/// The store lock a fetch of the URL with this key holds.
pub(crate) fn lock_name(key: &str) -> String {
    format!("source-{key}")
}

/// `sources/<url key>-<file name>.partial` and its `.partial.json` sidecar.
#[derive(Debug, Clone)]
pub(crate) struct Partial {
    data: PathBuf,
    meta: PathBuf,
}

impl Partial {
    pub(crate) fn for_url(store: &Store, url: &SourceUrl, file_name: &str) -> Self {
        let safe: String = file_name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
            .take(80)
            .collect();
        let stem = format!("{}-{safe}", url_key(url));
        let dir = store.sources_dir();
        Partial {
            data: dir.join(format!("{stem}.partial")),
            meta: dir.join(format!("{stem}.partial.json")),
        }
    }

    pub(crate) fn data(&self) -> &Path {
        &self.data
    }

    pub(crate) fn remove(&self) {
        let _ = std::fs::remove_file(&self.data);
        let _ = std::fs::remove_file(&self.meta);
    }

    /// Only the sidecar: once the data file has been renamed into place.
    pub(crate) fn remove_meta(&self) {
        let _ = std::fs::remove_file(&self.meta);
    }

    fn save_meta(&self, meta: &PartialMeta) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(meta).map_err(std::io::Error::other)?;
        write_atomic(&self.meta, &json)
    }

    /// The sidecar, when it is this URL's and the partial file can be resumed.
    fn resumable_meta(&self, shown_url: Option<&str>) -> Option<PartialMeta> {
        let meta = std::fs::read(&self.meta)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<PartialMeta>(&bytes).ok())
            .filter(|meta| shown_url.is_none_or(|url| meta.url == url))
            .filter(|meta| meta.validator().is_some())?;
        let present = std::fs::metadata(&self.data).is_ok_and(|found| found.len() > 0);
        present.then_some(meta)
    }

    /// Resumes the partial file when its sidecar says it is this URL's and can be resumed;
    /// otherwise opens nothing: the file is created (or truncated) once the server answered.
    fn open(
        &self,
        url: &SourceUrl,
        want_sha512: bool,
    ) -> std::io::Result<(Option<Sink>, PartialMeta)> {
        if let Some(meta) = self.resumable_meta(Some(url.redacted())) {
            return Ok((Some(Sink::resume(&self.data, want_sha512)?), meta));
        }
        self.remove_meta();
        Ok((None, PartialMeta { url: url.redacted().to_owned(), ..PartialMeta::default() }))
    }
}

/// Removes what downloads left that no fetch can resume: `.copy-*.partial` files, empty or
/// unresumable `.partial` files and orphaned sidecars in `sources/`; only those whose URL's
/// lock is free (no fetch of that URL is running). Returns how many files were removed.
pub(crate) fn sweep(store: &Store) -> usize {
    let Ok(entries) = std::fs::read_dir(store.sources_dir()) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        removed += if let Some(rest) = name.strip_prefix(".copy-") {
            if name.ends_with(".partial") { sweep_copy(store, rest, &path) } else { 0 }
        } else if let Some(stem) = name.strip_suffix(".partial") {
            sweep_partial(store, stem, &path)
        } else if let Some(stem) = name.strip_suffix(".partial.json") {
            sweep_sidecar(store, stem, &path)
        } else {
            0
        };
    }
    removed
}

/// `.copy-KEY-XXXXXX.partial` (a local copy that died): gone when KEY's lock is free; an
/// unkeyed one when old.
fn sweep_copy(store: &Store, rest: &str, path: &Path) -> usize {
    if key_of(rest).is_some() {
        let Some(_lock) = unlocked(store, rest) else { return 0 };
        return remove_counted(path);
    }
    let age = std::fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .ok()
        .and_then(|modified| modified.elapsed().ok());
    if age.is_some_and(|age| age >= UNKEYED_COPY_AGE) { remove_counted(path) } else { 0 }
}

/// `KEY-NAME.partial`: gone, with its sidecar, when no fetch could resume it.
fn sweep_partial(store: &Store, stem: &str, path: &Path) -> usize {
    let Some(_lock) = unlocked(store, stem) else { return 0 };
    let partial = Partial {
        data: path.to_owned(),
        meta: path.with_file_name(format!("{stem}.partial.json")),
    };
    if partial.resumable_meta(None).is_some() {
        return 0;
    }
    partial.remove_meta();
    remove_counted(path)
}

/// `KEY-NAME.partial.json` without its data file.
fn sweep_sidecar(store: &Store, stem: &str, path: &Path) -> usize {
    let Some(_lock) = unlocked(store, stem) else { return 0 };
    if path.with_file_name(format!("{stem}.partial")).exists() {
        return 0;
    }
    remove_counted(path)
}

fn remove_counted(path: &Path) -> usize {
    usize::from(std::fs::remove_file(path).is_ok())
}

/// The lock of the URL whose key starts `name`, if nobody holds it.
fn unlocked(store: &Store, name: &str) -> Option<std::fs::File> {
    let key = key_of(name)?;
    store.try_lock(&lock_name(key)).ok().flatten()
}

fn key_of(name: &str) -> Option<&str> {
    let key = name.get(..KEY_CHARS)?;
    let keyed = key.bytes().all(|b| b.is_ascii_hexdigit()) && name[KEY_CHARS..].starts_with('-');
    keyed.then_some(key)
}

/// Downloads `url` into `partial`, resuming what is there, and returns the digests and length.
/// The bytes stay in the partial file; the caller verifies and renames them. `expected` is
/// used only to recognise a partial file that already holds the whole file.
pub(crate) async fn download(
    client: &reqwest::Client,
    url: &SourceUrl,
    partial: &Partial,
    expected: &Digest,
    events: &Events,
) -> Result<(Computed, u64), SourceError> {
    let want_sha512 = expected.algo() == HashAlgo::Sha512;
    let opened = {
        let (reopened, owned_url) = (partial.clone(), url.clone());
        tokio::task::spawn_blocking(move || reopened.open(&owned_url, want_sha512))
            .await
            .map_err(|source| SourceError::Task { source })?
    };
    let (mut sink, mut meta) = opened.map_err(|source| write_error(url, &partial.data, source))?;
    let started = Instant::now();
    let mut failures = 0_u32;
    let mut attempts = 0_u32;
    // The most bytes the partial file ever held: only more than that is progress.
    let mut high_water = sink.as_ref().map_or(0, Sink::len);
    loop {
        attempts += 1;
        let wanted = Wanted { expected, want_sha512 };
        match attempt(client, url, sink, &mut meta, partial, wanted, events).await {
            Outcome::Done(done) => {
                let finished = tokio::task::spawn_blocking(move || done.finish())
                    .await
                    .map_err(|source| SourceError::Task { source })?;
                let (computed, len) =
                    finished.map_err(|source| write_error(url, &partial.data, source))?;
                events.emit(Event::DownloadFinished {
                    url: url.to_string(),
                    digest: computed.sha256.to_string(),
                    bytes: len,
                    seconds: started.elapsed().as_secs_f64(),
                });
                return Ok((computed, len));
            }
            Outcome::Retry(back, error) => {
                let kept = back.as_ref().map_or(0, Sink::len);
                failures = if kept > high_water { 1 } else { failures + 1 };
                high_water = high_water.max(kept);
                let delay = backoff(failures);
                let out_of_time = started.elapsed() + delay >= RETRY_WINDOW;
                if failures >= MAX_TRIES || attempts >= MAX_ATTEMPTS || out_of_time {
                    if kept == 0 {
                        partial.remove();
                    }
                    return Err(SourceError::Interrupted {
                        url: url.to_string(),
                        tries: attempts,
                        kept,
                        partial: partial.data.clone(),
                        cause: Box::new(error),
                    });
                }
                events.warn(format!(
                    "{error}; retrying in {:.1}s (try {}; at most {MAX_TRIES} in a row without \
                     new bytes)",
                    delay.as_secs_f64(),
                    attempts + 1,
                ));
                tokio::time::sleep(delay).await;
                sink = back;
            }
            Outcome::Fatal(error) => {
                if high_water == 0 {
                    partial.remove();
                }
                return Err(error);
            }
        }
    }
}

fn backoff(failures: u32) -> Duration {
    let factor = 2_u32.saturating_pow(failures.saturating_sub(1));
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

enum Outcome {
    Done(Sink),
    /// Worth another try; the sink (if one was opened) holds whatever arrived, consistent with
    /// its hashes.
    Retry(Option<Sink>, SourceError),
    Fatal(SourceError),
}

/// What the content must be, for a partial file that may already be whole.
#[derive(Clone, Copy)]
struct Wanted<'a> {
    expected: &'a Digest,
    want_sha512: bool,
}

async fn attempt(
    client: &reqwest::Client,
    url: &SourceUrl,
    mut sink: Option<Sink>,
    meta: &mut PartialMeta,
    partial: &Partial,
    wanted: Wanted<'_>,
    events: &Events,
) -> Outcome {
    let mut request = client.get(url.for_request());
    let have = sink.as_ref().map_or(0, Sink::len);
    if have > 0 {
        match meta.validator() {
            Some(validator) => {
                request = request
                    .header(header::RANGE, format!("bytes={have}-"))
                    .header(header::IF_RANGE, validator);
            }
            None => {
                if let Some(Err(source)) = sink.as_mut().map(Sink::restart) {
                    return Outcome::Fatal(write_error(url, &partial.data, source));
                }
            }
        }
    }
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(error) => return classify(sink, request_error(url, error)),
    };
    let status = response.status();
    let total = match status {
        StatusCode::PARTIAL_CONTENT => match content_range(response.headers()) {
            Some((start, total)) if start == sink.as_ref().map_or(0, Sink::len) => {
                if meta.validator().is_none() {
                    meta.take_validators(response.headers());
                }
                total
            }
            _ => {
                if let Some(Err(source)) = sink.as_mut().map(Sink::restart) {
                    return Outcome::Fatal(write_error(url, &partial.data, source));
                }
                return Outcome::Retry(sink, SourceError::BadRange { url: url.to_string() });
            }
        },
        StatusCode::OK => {
            if let Some(Err(source)) =
                sink.as_mut().filter(|sink| sink.len() > 0).map(Sink::restart)
            {
                return Outcome::Fatal(write_error(url, &partial.data, source));
            }
            meta.take_validators(response.headers());
            response.content_length()
        }
        StatusCode::RANGE_NOT_SATISFIABLE if have > 0 => {
            let whole = unsatisfied_range_total(response.headers());
            if let Some(sink) = sink.take_if(|sink| already_whole(sink, whole, wanted)) {
                return Outcome::Done(sink);
            }
            // The partial file is no prefix of what the server has now.
            if let Some(Err(source)) = sink.as_mut().map(Sink::restart) {
                return Outcome::Fatal(write_error(url, &partial.data, source));
            }
            return Outcome::Retry(sink, status_error(url, status));
        }
        _ => return classify(sink, status_error(url, status)),
    };
    // The server said 200 or 206: only now is anything written.
    let sink = match sink {
        Some(sink) => sink,
        None => match Sink::create(&partial.data, wanted.want_sha512) {
            Ok(sink) => sink,
            Err(source) => return Outcome::Fatal(write_error(url, &partial.data, source)),
        },
    };
    meta.total = total;
    if let Err(source) = partial.save_meta(meta) {
        return Outcome::Fatal(write_error(url, &partial.meta, source));
    }
    let resumed_from = sink.len();
    events.emit(Event::DownloadStarted { url: url.to_string(), total_bytes: total, resumed_from });
    // The network side stays here; writing and hashing run on a blocking thread.
    let path = sink.path().to_owned();
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let mut sink = sink;
    let writer = tokio::task::spawn_blocking(move || {
        while let Some(chunk) = receiver.blocking_recv() {
            sink.write(&chunk)?;
        }
        sink.flush()?;
        Ok::<Sink, std::io::Error>(sink)
    });
    let mut done = resumed_from;
    let mut last_progress = Instant::now();
    let mut body_error = None;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                done += chunk.len() as u64;
                if sender.send(chunk).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
                if last_progress.elapsed() >= PROGRESS_EVERY {
                    last_progress = Instant::now();
                    events.emit(Event::DownloadProgress {
                        url: url.to_string(),
                        done_bytes: done,
                        total_bytes: total,
                    });
                }
            }
            Ok(None) => break,
            Err(error) => {
                body_error = Some(error);
                break;
            }
        }
    }
    drop(sender);
    let sink = match writer.await {
        Ok(Ok(sink)) => sink,
        Ok(Err(source)) => return Outcome::Fatal(write_error(url, &path, source)),
        Err(source) => return Outcome::Fatal(SourceError::Task { source }),
    };
    if let Some(source) = body_error {
        let body = SourceError::Body { url: url.to_string(), source: source.without_url() };
        return Outcome::Retry(Some(sink), body);
    }
    match total {
        Some(total) if sink.len() != total => {
            let got = sink.len();
            let truncated = SourceError::Truncated { url: url.to_string(), got, total };
            Outcome::Retry(Some(sink), truncated)
        }
        _ => Outcome::Done(sink),
    }
}

fn classify(sink: Option<Sink>, error: SourceError) -> Outcome {
    if error.is_transient() { Outcome::Retry(sink, error) } else { Outcome::Fatal(error) }
}

/// Whether a partial file a resume was refused for (416) already holds the whole file: as
/// many bytes as the server says it has, with the expected digest.
fn already_whole(sink: &Sink, whole: Option<u64>, wanted: Wanted<'_>) -> bool {
    whole == Some(sink.len()) && sink.digests().matches(wanted.expected)
}

/// `Content-Range: bytes START-END/TOTAL` as (START, TOTAL); TOTAL may be `*`.
fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let range = value.trim().strip_prefix("bytes ")?;
    let (span, total) = range.split_once('/')?;
    let (start, _end) = span.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// `Content-Range: bytes */TOTAL`, as a 416 answers: the length of the file the server has.
fn unsatisfied_range_total(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let total = value.trim().strip_prefix("bytes")?.trim_start().strip_prefix("*/")?;
    total.trim().parse().ok()
}

/// Fetches a small text file (a checksum file), with the same retries.
pub(crate) async fn fetch_text(
    client: &reqwest::Client,
    url: &SourceUrl,
) -> Result<String, SourceError> {
    let mut failures = 0;
    loop {
        let error = match fetch_text_once(client, url).await {
            Ok(text) => return Ok(text),
            Err(error) if error.is_transient() => error,
            Err(error) => return Err(error),
        };
        failures += 1;
        if failures >= MAX_TRIES {
            return Err(SourceError::GaveUp {
                url: url.to_string(),
                tries: failures,
                cause: Box::new(error),
            });
        }
        tokio::time::sleep(backoff(failures)).await;
    }
}

async fn fetch_text_once(client: &reqwest::Client, url: &SourceUrl) -> Result<String, SourceError> {
    let mut response =
        client.get(url.for_request()).send().await.map_err(|error| request_error(url, error))?;
    if response.status() != StatusCode::OK {
        return Err(status_error(url, response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|source| SourceError::Body {
        url: url.to_string(),
        source: source.without_url(),
    })? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_TEXT {
            return Err(SourceError::ChecksumFileTooBig { url: url.to_string(), limit: MAX_TEXT });
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn status_error(url: &SourceUrl, status: StatusCode) -> SourceError {
    SourceError::Status {
        url: url.to_string(),
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("").to_owned(),
    }
}

/// Sorts reqwest's errors into what a user can act on.
/// The URL is taken out of reqwest's error: it is the real one, secrets included.
fn request_error(url: &SourceUrl, error: reqwest::Error) -> SourceError {
    let url = url.to_string();
    let error = error.without_url();
    if error.is_dns() {
        SourceError::Dns { url, source: error }
    } else if looks_like_tls(&error) {
        SourceError::Tls { url, source: error }
    } else if error.is_timeout() {
        SourceError::Timeout { url, source: error }
    } else if error.is_connect() {
        SourceError::Connect { url, source: error }
    } else if error.is_redirect() {
        SourceError::Redirect { url, source: error }
    } else if error.is_builder() {
        SourceError::BadUrl { url, source: error }
    } else {
        SourceError::Request { url, source: error }
    }
}

/// reqwest does not type TLS failures; rustls's messages are recognisable in the chain.
fn looks_like_tls(error: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(inner) = cause {
        let text = inner.to_string().to_ascii_lowercase();
        let markers = ["certificate", "tls", "handshake", "corrupt message", "alert"];
        if markers.iter().any(|marker| text.contains(marker)) {
            return true;
        }
        cause = inner.source();
    }
    false
}

/// A failed write: "disk full" gets its own error, since the fix is different.
pub(crate) fn write_error(url: &SourceUrl, path: &Path, source: std::io::Error) -> SourceError {
    let url = url.to_string();
    let path = path.to_owned();
    if source.kind() == std::io::ErrorKind::StorageFull {
        SourceError::DiskFull { url, path, source }
    } else {
        SourceError::Write { url, path, source }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let delays: Vec<_> = (1..=7).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
    }

    #[test]
    fn content_range_is_parsed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_RANGE, "bytes 100-199/200".parse().unwrap());
        assert_eq!(content_range(&headers), Some((100, Some(200))));
        headers.insert(header::CONTENT_RANGE, "bytes 5-9/*".parse().unwrap());
        assert_eq!(content_range(&headers), Some((5, None)));
        headers.insert(header::CONTENT_RANGE, "items 1-2/3".parse().unwrap());
        assert_eq!(content_range(&headers), None);
        headers.insert(header::CONTENT_RANGE, "bytes */4096".parse().unwrap());
        assert_eq!(unsatisfied_range_total(&headers), Some(4096));
    }

    #[test]
    fn weak_etags_are_not_validators() {
        let meta = PartialMeta {
            etag: Some("W/\"x\"".into()),
            last_modified: Some("Tue, 01 Jan 2030 00:00:00 GMT".into()),
            ..PartialMeta::default()
        };
        assert_eq!(meta.validator(), Some("Tue, 01 Jan 2030 00:00:00 GMT"));
        let meta = PartialMeta { etag: Some("\"x\"".into()), ..meta };
        assert_eq!(meta.validator(), Some("\"x\""));
    }

    #[test]
    fn partial_names_are_safe_and_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let one = Partial::for_url(&store, &SourceUrl::new("http://a/x y.img"), "x y.img");
        let two = Partial::for_url(&store, &SourceUrl::new("http://b/x y.img"), "x y.img");
        assert_ne!(one.data, two.data);
        assert!(one.data.to_string_lossy().ends_with("-x_y.img.partial"));
    }
}
