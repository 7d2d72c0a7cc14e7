//! Moving bytes: compressing a file into a temp file (digest known before the upload),
//! streaming a file up with progress, and landing a download in a temp file verified against
//! its digest, then decompressing it with zero runs as holes (layers stay sparse). Never holds
//! a whole blob in memory.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_compression::tokio::bufread::{ZstdDecoder, ZstdEncoder};
use futures_util::{Stream, StreamExt as _};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _, BufReader};

use crate::events::{CacheDirection, Event, Events};

const BUFFER: usize = 1 << 20;
/// Holes are made in blocks of this size: the filesystem's block, and qcow2's smallest cluster
/// is larger, so no zero run worth a hole is missed.
const HOLE_BLOCK: usize = 4096;
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// A file's content as it will be uploaded.
pub struct Compressed {
    pub file: tempfile::NamedTempFile,
    /// `sha256:HEX` of the compressed bytes.
    pub digest: String,
    pub size: u64,
}

/// Compresses `source` with zstd into a temp file in `tmp_dir`, hashing what it writes.
pub async fn compress_to_temp(source: &Path, tmp_dir: &Path) -> std::io::Result<Compressed> {
    let input = tokio::fs::File::open(source).await?;
    let mut encoder = ZstdEncoder::new(BufReader::with_capacity(BUFFER, input));
    let file = tempfile::Builder::new().prefix("cache-push.").tempfile_in(tmp_dir)?;
    let mut output = tokio::fs::File::from_std(file.reopen()?);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buffer = vec![0; BUFFER];
    loop {
        let read = encoder.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        output.write_all(&buffer[..read]).await?;
        size = size.saturating_add(read as u64);
    }
    output.sync_all().await?;
    Ok(Compressed { file, digest: format!("sha256:{}", hex::encode(hasher.finalize())), size })
}

/// Emits progress events at most four times a second.
#[derive(Clone)]
pub struct Progress {
    events: Events,
    key: String,
    direction: CacheDirection,
    total_bytes: Option<u64>,
    /// Bytes so far, and when the last event went out (`None`: none yet, so the first chunk
    /// is reported at once).
    state: Arc<Mutex<(u64, Option<Instant>)>>,
}

impl Progress {
    #[must_use]
    pub fn new(events: &Events, key: &str, direction: CacheDirection, total: Option<u64>) -> Self {
        Progress {
            events: events.clone(),
            key: key.to_owned(),
            direction,
            total_bytes: total,
            state: Arc::new(Mutex::new((0, None))),
        }
    }

    pub fn advance(&self, bytes: usize) {
        let Ok(mut state) = self.state.lock() else { return };
        state.0 = state.0.saturating_add(bytes as u64);
        if state.1.is_none_or(|last| last.elapsed() >= PROGRESS_EVERY) {
            state.1 = Some(Instant::now());
            self.events.emit(Event::CacheTransferProgress {
                key: self.key.clone(),
                direction: self.direction,
                done_bytes: state.0,
                total_bytes: self.total_bytes,
            });
        }
    }
}

/// The file as a stream of chunks for an upload, reporting progress as it is read.
pub async fn upload_stream(
    path: &Path,
    progress: Progress,
) -> std::io::Result<
    impl Stream<Item = Result<bytes::Bytes, oci_client::errors::OciDistributionError>> + use<>,
> {
    let file = tokio::fs::File::open(path).await?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, BUFFER);
    Ok(stream.map(move |chunk| {
        if let Ok(bytes) = &chunk {
            progress.advance(bytes.len());
        }
        chunk.map_err(oci_client::errors::OciDistributionError::IoError)
    }))
}

/// Why a download did not land.
#[derive(Debug)]
pub enum DownloadError {
    /// The connection broke, or the registry's verifier refused the stream.
    Network(std::io::Error),
    /// Writing the temp file failed.
    Local(std::io::Error),
    Digest {
        expected: String,
        actual: String,
    },
    /// More bytes came than the manifest said.
    TooLong {
        expected: u64,
    },
}

/// Lands `stream` in a temp file in `tmp_dir`, hashing while it streams; `Ok` only when the
/// content has exactly the `expected` digest (`sha256:HEX`) and at most `size` bytes.
pub async fn download_verified(
    mut stream: impl Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
    expected: &str,
    size: u64,
    tmp_dir: &Path,
    progress: &Progress,
) -> Result<tempfile::NamedTempFile, DownloadError> {
    let file = tempfile::Builder::new()
        .prefix("cache-pull.")
        .tempfile_in(tmp_dir)
        .map_err(DownloadError::Local)?;
    let mut output = tokio::fs::File::from_std(file.reopen().map_err(DownloadError::Local)?);
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    let actual = |hasher: Sha256| format!("sha256:{}", hex::encode(hasher.finalize()));
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            // oci-client's own verifier fails the stream at its end on a mismatch.
            Err(error) if is_digest_error(&error) => {
                return Err(DownloadError::Digest {
                    expected: expected.to_owned(),
                    actual: actual(hasher),
                });
            }
            Err(error) => return Err(DownloadError::Network(error)),
        };
        got = got.saturating_add(chunk.len() as u64);
        if got > size {
            return Err(DownloadError::TooLong { expected: size });
        }
        hasher.update(&chunk);
        output.write_all(&chunk).await.map_err(DownloadError::Local)?;
        progress.advance(chunk.len());
    }
    output.flush().await.map_err(DownloadError::Local)?;
    let actual = actual(hasher);
    if actual != expected {
        return Err(DownloadError::Digest { expected: expected.to_owned(), actual });
    }
    Ok(file)
}

fn is_digest_error(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(<dyn std::error::Error + Send + Sync>::is::<oci_client::errors::DigestError>)
}

/// Decompresses `from` into the empty file `to`, writing runs of zero blocks as holes. Returns the
/// sha256 (hex) and length of what was written, zeros included.
pub async fn decompress_sparse(from: &Path, to: std::fs::File) -> std::io::Result<(String, u64)> {
    let input = tokio::fs::File::open(from).await?;
    let mut decoder = ZstdDecoder::new(BufReader::with_capacity(BUFFER, input));
    let mut output = tokio::fs::File::from_std(to);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; BUFFER];
    let (mut length, mut position) = (0u64, 0u64);
    loop {
        let filled = fill(&mut decoder, &mut buffer).await?;
        if filled == 0 {
            break;
        }
        hasher.update(&buffer[..filled]);
        for block in buffer[..filled].chunks(HOLE_BLOCK) {
            if block.iter().any(|&byte| byte != 0) {
                if position != length {
                    output.seek(std::io::SeekFrom::Start(length)).await?;
                }
                output.write_all(block).await?;
                position = length + block.len() as u64;
            }
            length += block.len() as u64;
        }
    }
    output.set_len(length).await?;
    output.sync_all().await?;
    Ok((hex::encode(hasher.finalize()), length))
}

/// Reads until `buffer` is full or the input ends, so blocks stay aligned to the file.
async fn fill(
    reader: &mut (impl tokio::io::AsyncRead + Unpin),
    buffer: &mut [u8],
) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let read = reader.read(&mut buffer[filled..]).await?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    Ok(filled)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[tokio::test]
    async fn a_compressed_file_comes_back_identical_and_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let original = dir.path().join("disk");
        let mut content = vec![0u8; 8 << 20];
        content[4096..8192].fill(7);
        content[(6 << 20) + 13] = 1;
        std::fs::write(&original, &content).unwrap();

        let compressed = compress_to_temp(&original, dir.path()).await.unwrap();
        assert!(compressed.size < 64 << 10, "{} bytes compressed", compressed.size);
        let copy = dir.path().join("copy");
        let file = std::fs::File::create_new(&copy).unwrap();
        let (sha256, length) = decompress_sparse(compressed.file.path(), file).await.unwrap();

        assert_eq!(std::fs::read(&copy).unwrap(), content);
        assert_eq!(length, content.len() as u64);
        assert_eq!(sha256, hex::encode(Sha256::digest(&content)));
        let allocated = std::fs::metadata(&copy).unwrap().blocks() * 512;
        assert!(allocated < 1 << 20, "{allocated} bytes allocated: not sparse");
    }

    #[tokio::test]
    async fn a_download_with_the_wrong_digest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let progress = Progress::new(&Events::none(), "k", CacheDirection::Pull, None);
        let chunks = || futures_util::stream::iter([Ok(bytes::Bytes::from_static(b"hello"))]);
        let right = format!("sha256:{}", hex::encode(Sha256::digest(b"hello")));
        let landed = download_verified(chunks(), &right, 5, dir.path(), &progress).await;
        assert_eq!(std::fs::read(landed.unwrap().path()).unwrap(), b"hello");

        let wrong = format!("sha256:{}", "0".repeat(64));
        let refused = download_verified(chunks(), &wrong, 5, dir.path(), &progress).await;
        assert!(matches!(refused, Err(DownloadError::Digest { .. })));
        let too_long = download_verified(chunks(), &right, 4, dir.path(), &progress).await;
        assert!(matches!(too_long, Err(DownloadError::TooLong { .. })));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "temp files left");
    }
}
