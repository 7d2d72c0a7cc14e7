//! HTTP(S) downloads into a resumable `.partial` file, hashed while streaming, with bounded
//! retries. Owns the partial file and its sidecar (`.partial.json`: URL, ETag, Last-Modified);
//! must not name files in `sources/` by content nor touch the index.
//!
//! Proxies come from HTTP_PROXY / HTTPS_PROXY / ALL_PROXY / NO_PROXY (reqwest's system-proxy).
//! A resume sends `Range: bytes=N-` with `If-Range` (a strong ETag, else Last-Modified); a `200`
//! answer means the server ignored the range or the file changed, and the download restarts
//! from zero. Without any validator nothing is resumed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use serde::{Deserialize, Serialize};

use super::SourceError;
use super::hashing::{Computed, Sink};
use super::index::sha256_hex;
use crate::events::{Event, Events};
use crate::store::{Store, write_atomic};

/// Failed attempts in a row (without new bytes) before giving up.
pub(crate) const MAX_TRIES: u32 = 5;
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
    reqwest::Client::builder()
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .build()
        .map_err(|source| SourceError::Client { source })
}

/// What a partial download is of, and how to ask for the rest of the same file.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct PartialMeta {
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

/// `sources/<url key>-<file name>.partial` and its `.partial.json` sidecar.
#[derive(Debug, Clone)]
pub(crate) struct Partial {
    data: PathBuf,
    meta: PathBuf,
}

impl Partial {
    pub(crate) fn for_url(store: &Store, url: &str, file_name: &str) -> Self {
        let safe: String = file_name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
            .take(80)
            .collect();
        let key = sha256_hex(url);
        let stem = format!("{}-{safe}", key.get(..16).unwrap_or(&key));
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

    /// Resumes the partial file when its sidecar says it is this URL's and can be resumed;
    /// otherwise starts an empty one.
    fn open(&self, url: &str, want_sha512: bool) -> std::io::Result<(Sink, PartialMeta)> {
        let meta = std::fs::read(&self.meta)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<PartialMeta>(&bytes).ok())
            .filter(|meta| meta.url == url && meta.validator().is_some());
        let present = std::fs::metadata(&self.data).is_ok_and(|found| found.len() > 0);
        if let (Some(meta), true) = (meta, present) {
            return Ok((Sink::resume(&self.data, want_sha512)?, meta));
        }
        let _ = std::fs::remove_file(&self.meta);
        let meta = PartialMeta { url: url.to_owned(), ..PartialMeta::default() };
        Ok((Sink::create(&self.data, want_sha512)?, meta))
    }
}

/// Downloads `url` into `partial`, resuming what is there, and returns the digests and length.
/// The bytes stay in the partial file; the caller verifies and renames them.
pub(crate) async fn download(
    client: &reqwest::Client,
    url: &str,
    partial: &Partial,
    want_sha512: bool,
    events: &Events,
) -> Result<(Computed, u64), SourceError> {
    let opened = {
        let (reopened, owned_url) = (partial.clone(), url.to_owned());
        tokio::task::spawn_blocking(move || reopened.open(&owned_url, want_sha512))
            .await
            .map_err(|source| SourceError::Task { source })?
    };
    let (mut sink, mut meta) = opened.map_err(|source| write_error(url, &partial.data, source))?;
    let started = Instant::now();
    let mut failures = 0_u32;
    loop {
        let before = sink.len();
        match attempt(client, url, sink, &mut meta, partial, events).await {
            Outcome::Done(done) => {
                let finished = tokio::task::spawn_blocking(move || done.finish())
                    .await
                    .map_err(|source| SourceError::Task { source })?;
                let (computed, len) =
                    finished.map_err(|source| write_error(url, &partial.data, source))?;
                events.emit(Event::DownloadFinished {
                    url: url.to_owned(),
                    digest: computed.sha256.to_string(),
                    bytes: len,
                    seconds: started.elapsed().as_secs_f64(),
                });
                return Ok((computed, len));
            }
            Outcome::Retry(back, error) => {
                failures = if back.len() > before { 1 } else { failures + 1 };
                if failures >= MAX_TRIES {
                    return Err(SourceError::Interrupted {
                        url: url.to_owned(),
                        tries: failures,
                        kept: back.len(),
                        partial: partial.data.clone(),
                        cause: Box::new(error),
                    });
                }
                let delay = backoff(failures);
                events.warn(format!(
                    "{error}; retrying in {:.1}s (try {} of {MAX_TRIES})",
                    delay.as_secs_f64(),
                    failures + 1
                ));
                tokio::time::sleep(delay).await;
                sink = back;
            }
            Outcome::Fatal(error) => return Err(error),
        }
    }
}

fn backoff(failures: u32) -> Duration {
    let factor = 2_u32.saturating_pow(failures.saturating_sub(1));
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

enum Outcome {
    Done(Sink),
    /// Worth another try; the sink holds whatever arrived, consistent with its hashes.
    Retry(Sink, SourceError),
    Fatal(SourceError),
}

async fn attempt(
    client: &reqwest::Client,
    url: &str,
    mut sink: Sink,
    meta: &mut PartialMeta,
    partial: &Partial,
    events: &Events,
) -> Outcome {
    let mut request = client.get(url);
    if sink.len() > 0 {
        match meta.validator() {
            Some(validator) => {
                request = request
                    .header(header::RANGE, format!("bytes={}-", sink.len()))
                    .header(header::IF_RANGE, validator);
            }
            None => {
                if let Err(source) = sink.restart() {
                    return Outcome::Fatal(write_error(url, sink.path(), source));
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
        StatusCode::PARTIAL_CONTENT => {
            let range = content_range(response.headers());
            match range {
                Some((start, total)) if start == sink.len() => {
                    if meta.validator().is_none() {
                        meta.take_validators(response.headers());
                    }
                    total
                }
                _ => {
                    if let Err(source) = sink.restart() {
                        return Outcome::Fatal(write_error(url, sink.path(), source));
                    }
                    return Outcome::Retry(sink, SourceError::BadRange { url: url.to_owned() });
                }
            }
        }
        StatusCode::OK => {
            if sink.len() > 0
                && let Err(source) = sink.restart()
            {
                return Outcome::Fatal(write_error(url, sink.path(), source));
            }
            meta.take_validators(response.headers());
            response.content_length()
        }
        StatusCode::RANGE_NOT_SATISFIABLE if sink.len() > 0 => {
            // The partial file is no prefix of what the server has now.
            if let Err(source) = sink.restart() {
                return Outcome::Fatal(write_error(url, sink.path(), source));
            }
            return Outcome::Retry(sink, status_error(url, status));
        }
        _ => return classify(sink, status_error(url, status)),
    };
    meta.total = total;
    if let Err(source) = partial.save_meta(meta) {
        return Outcome::Fatal(write_error(url, &partial.meta, source));
    }
    let resumed_from = sink.len();
    events.emit(Event::DownloadStarted { url: url.to_owned(), total_bytes: total, resumed_from });

    // The network side stays here; writing and hashing run on a blocking thread.
    let path = sink.path().to_owned();
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(CHANNEL_DEPTH);
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
                        url: url.to_owned(),
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
        return Outcome::Retry(sink, SourceError::Body { url: url.to_owned(), source });
    }
    match total {
        Some(total) if sink.len() != total => {
            let got = sink.len();
            Outcome::Retry(sink, SourceError::Truncated { url: url.to_owned(), got, total })
        }
        _ => Outcome::Done(sink),
    }
}

fn classify(sink: Sink, error: SourceError) -> Outcome {
    if error.is_transient() { Outcome::Retry(sink, error) } else { Outcome::Fatal(error) }
}

/// `Content-Range: bytes START-END/TOTAL` as (START, TOTAL); TOTAL may be `*`.
fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let range = value.trim().strip_prefix("bytes ")?;
    let (span, total) = range.split_once('/')?;
    let (start, _end) = span.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// Fetches a small text file (a checksum file), with the same retries.
pub(crate) async fn fetch_text(client: &reqwest::Client, url: &str) -> Result<String, SourceError> {
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
                url: url.to_owned(),
                tries: failures,
                cause: Box::new(error),
            });
        }
        tokio::time::sleep(backoff(failures)).await;
    }
}

async fn fetch_text_once(client: &reqwest::Client, url: &str) -> Result<String, SourceError> {
    let mut response = client.get(url).send().await.map_err(|error| request_error(url, error))?;
    if response.status() != StatusCode::OK {
        return Err(status_error(url, response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|source| SourceError::Body { url: url.to_owned(), source })?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_TEXT {
            return Err(SourceError::ChecksumFileTooBig { url: url.to_owned(), limit: MAX_TEXT });
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn status_error(url: &str, status: StatusCode) -> SourceError {
    SourceError::Status {
        url: url.to_owned(),
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("").to_owned(),
    }
}

/// Sorts reqwest's errors into what a user can act on.
fn request_error(url: &str, error: reqwest::Error) -> SourceError {
    let url = url.to_owned();
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
pub(crate) fn write_error(url: &str, path: &Path, source: std::io::Error) -> SourceError {
    let url = url.to_owned();
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
        let one = Partial::for_url(&store, "http://a/x y.img", "x y.img");
        let two = Partial::for_url(&store, "http://b/x y.img", "x y.img");
        assert_ne!(one.data, two.data);
        assert!(one.data.to_string_lossy().ends_with("-x_y.img.partial"));
    }
}
