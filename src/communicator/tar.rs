//! Tar streams for uploads (written with the `tar` crate): regular files, directories and
//! symlinks with their modes, and the one `upload`/`upload_bytes` every communicator has
//! ([`send_path`], [`send_bytes`]), handed to the communicator's [`Untar`]. Owns the archive
//! format only; it neither opens connections nor decides where the archive goes.

use bytes::Bytes;
use std::fs;
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// The tar archive being written: the `tar` crate's builder. Owner and group are always root
/// (0/0); the extracting tar runs as root with `--no-same-owner` anyway. Long names and link
/// targets get GNU long-name entries, which GNU tar and busybox tar read.
pub type TarWriter<W> = tar::Builder<W>;

fn header(kind: tar::EntryType, mode: u32, mtime: u64, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode & 0o7777);
    header.set_mtime(mtime);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    // Only fails for names longer than the field, and "root" is not.
    let _ = header.set_username("root");
    let _ = header.set_groupname("root");
    header
}

fn append_dir<W: Write>(
    tar: &mut TarWriter<W>,
    name: &Path,
    mode: u32,
    mtime: u64,
) -> io::Result<()> {
    let mut header = header(tar::EntryType::Directory, mode, mtime, 0);
    tar.append_data(&mut header, name, io::empty())
}

fn append_symlink<W: Write>(
    tar: &mut TarWriter<W>,
    name: &Path,
    target: &Path,
    mtime: u64,
) -> io::Result<()> {
    let mut header = header(tar::EntryType::Symlink, 0o777, mtime, 0);
    tar.append_link(&mut header, name, target)
}

/// Appends a file of exactly `size` bytes read from `content`; fewer is an error.
pub(super) fn append_file<W: Write>(
    tar: &mut TarWriter<W>,
    name: &Path,
    mode: u32,
    mtime: u64,
    size: u64,
    content: impl Read,
) -> io::Result<()> {
    let mut header = header(tar::EntryType::Regular, mode, mtime, size);
    let mut exact = ExactSize { inner: content.take(size), left: size };
    tar.append_data(&mut header, name, &mut exact)
}

/// A reader that fails instead of ending early: the `tar` crate pads a short entry with zeros,
/// which would upload a file that silently lost its end.
struct ExactSize<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactSize<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        if read == 0 && self.left > 0 && !buffer.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file shrank while it was read ({} bytes missing)", self.left),
            ));
        }
        self.left = self.left.saturating_sub(read as u64);
        Ok(read)
    }
}

fn mtime(meta: &fs::Metadata) -> u64 {
    u64::try_from(meta.mtime()).unwrap_or(0)
}

/// Appends what is inside `root` (not `root` itself), depth first in name order, with names
/// relative to `root`. Symlinks are kept as symlinks.
pub fn append_tree<W: Write>(tar: &mut TarWriter<W>, root: &Path) -> io::Result<()> {
    append_children(tar, root, &mut PathBuf::new())
}

fn append_children<W: Write>(
    tar: &mut TarWriter<W>,
    dir: &Path,
    prefix: &mut PathBuf,
) -> io::Result<()> {
    let mut entries = fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path)?;
        prefix.push(entry.file_name());
        let kind = meta.file_type();
        if kind.is_dir() {
            append_dir(tar, prefix, meta.permissions().mode(), mtime(&meta))?;
            append_children(tar, &path, prefix)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&path)?;
            append_symlink(tar, prefix, &target, mtime(&meta))?;
        } else if kind.is_file() {
            let file = fs::File::open(&path)?;
            append_file(tar, prefix, meta.permissions().mode(), mtime(&meta), meta.len(), file)?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a file, a directory or a symlink", path.display()),
            ));
        }
        prefix.pop();
    }
    Ok(())
}

/// Tar chunks of `size` bytes produced on a blocking thread.
pub(super) struct ChunkSender {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
    size: usize,
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.size - self.buffer.len();
        let take = data.len().min(room);
        self.buffer.extend_from_slice(&data[..take]);
        if self.buffer.len() >= self.size {
            self.flush()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(self.size)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload ended"))
    }
}

/// Runs `build` on a blocking thread, streaming the tar it writes in chunks of `size`; an
/// error goes down the stream last.
pub(super) fn produce_tar(
    size: usize,
    build: impl FnOnce(&mut TarWriter<ChunkSender>) -> std::io::Result<()> + Send + 'static,
) -> mpsc::Receiver<Result<Bytes, std::io::Error>> {
    let (tx, rx) = mpsc::channel(4);
    let errors = tx.clone();
    tokio::task::spawn_blocking(move || {
        let sender = ChunkSender { tx, buffer: Vec::with_capacity(size), size };
        let mut tar = TarWriter::new(sender);
        let result =
            build(&mut tar).and_then(|()| tar.into_inner()).and_then(|mut out| out.flush());
        if let Err(error) = result {
            // When the receiver is gone there is nobody left to tell.
            let _ = errors.blocking_send(Err(error));
        }
    });
    rx
}

/// A tar stream on its way to the guest, and the guest folder it is to be unpacked in.
pub(super) struct Upload {
    pub dir: String,
    pub chunks: mpsc::Receiver<Result<Bytes, io::Error>>,
}

/// The upload of a local file or directory tree to `remote`, in chunks of `chunk` bytes.
/// A directory's contents go into `remote`; a file goes to `remote`, or into it when `remote`
/// ends with `/`.
pub(super) fn upload_path(local: &Path, remote: &str, chunk: usize) -> io::Result<Upload> {
    if fs::metadata(local)?.is_dir() {
        let root = local.to_owned();
        let chunks = produce_tar(chunk, move |tar| append_tree(tar, &root));
        return Ok(Upload { dir: remote.to_owned(), chunks });
    }
    let (dir, name) = split_remote(remote, local);
    let path = local.to_owned();
    let chunks = produce_tar(chunk, move |tar| {
        let file = fs::File::open(&path)?;
        let meta = file.metadata()?;
        append_file(
            tar,
            Path::new(&name),
            meta.permissions().mode(),
            mtime(&meta),
            meta.len(),
            file,
        )
    });
    Ok(Upload { dir, chunks })
}

/// The upload of `bytes` as the file `remote` with `mode`.
pub(super) fn upload_bytes(bytes: &[u8], remote: &str, mode: u32, chunk: usize) -> Upload {
    let (dir, name) = split_remote(remote, Path::new("file"));
    let content = bytes.to_vec();
    let chunks = produce_tar(chunk, move |tar| {
        let mtime = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        append_file(tar, Path::new(&name), mode, mtime, content.len() as u64, content.as_slice())
    });
    Upload { dir, chunks }
}

/// Where a file upload lands: (folder, name).
pub(super) fn split_remote(remote: &str, local: &Path) -> (String, String) {
    let local_name = || {
        local
            .file_name()
            .map_or_else(|| "file".to_owned(), |name| name.to_string_lossy().into_owned())
    };
    if remote.ends_with('/') {
        return (remote.to_owned(), local_name());
    }
    match remote.rsplit_once('/') {
        Some(("", name)) => ("/".to_owned(), name.to_owned()),
        Some((dir, name)) => (dir.to_owned(), name.to_owned()),
        None => (".".to_owned(), remote.to_owned()),
    }
}

/// A communicator's end of an upload: a tar stream extracted as root in a folder of the guest.
pub(super) trait Untar: Sync {
    /// How much of the stream one message carries.
    fn chunk(&self) -> usize;

    /// Sends `chunks` to `tar -x` in `dir` as root; `local` and `remote` name the upload in
    /// errors.
    fn extract(
        &self,
        dir: &str,
        chunks: mpsc::Receiver<Result<Bytes, io::Error>>,
        local: &str,
        remote: &str,
    ) -> impl Future<Output = Result<(), super::CommunicatorError>> + Send;
}

/// `Communicator::upload`: the file or folder `local` to `remote`.
pub(super) async fn send_path<U: Untar>(
    to: &U,
    local: &Path,
    remote: &str,
) -> Result<(), super::CommunicatorError> {
    let upload = upload_path(local, remote, to.chunk())
        .map_err(|source| super::CommunicatorError::ReadLocal { path: local.to_owned(), source })?;
    to.extract(&upload.dir, upload.chunks, &local.display().to_string(), remote).await
}

/// `Communicator::upload_bytes`: `bytes` to the file `remote` with `mode`.
pub(super) async fn send_bytes<U: Untar>(
    to: &U,
    bytes: &[u8],
    remote: &str,
    mode: u32,
) -> Result<(), super::CommunicatorError> {
    let upload = upload_bytes(bytes, remote, mode, to.chunk());
    to.extract(&upload.dir, upload.chunks, &format!("{} bytes", bytes.len()), remote).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::process::Command;

    use super::*;

    #[test]
    fn gnu_tar_extracts_tree_with_modes_links_and_long_names() {
        let source = tempfile::tempdir().unwrap();
        let root = source.path();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(root.join("bin/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(root.join("bin/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("secret"), vec![7u8; 1000]).unwrap();
        fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
        let long_dir = "d".repeat(90);
        fs::create_dir_all(root.join(&long_dir).join("e".repeat(60))).unwrap();
        fs::write(root.join(&long_dir).join("e".repeat(60)).join("f".repeat(80)), "deep").unwrap();
        symlink("bin/run.sh", root.join("link")).unwrap();
        fs::write(root.join("empty"), "").unwrap();

        let mut tar = TarWriter::new(Vec::new());
        append_tree(&mut tar, root).unwrap();
        let archive = tar.into_inner().unwrap();
        assert_eq!(archive.len() % 512, 0);

        let target = tempfile::tempdir().unwrap();
        let archive_path = target.path().join("a.tar");
        fs::write(&archive_path, &archive).unwrap();
        let out_dir = target.path().join("out");
        fs::create_dir(&out_dir).unwrap();
        let status = Command::new("tar")
            .arg("-xf")
            .arg(&archive_path)
            .arg("-C")
            .arg(&out_dir)
            .status()
            .unwrap();
        assert!(status.success());
        let mode = |p: &str| fs::metadata(out_dir.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("bin/run.sh"), 0o755);
        assert_eq!(mode("secret"), 0o600);
        assert_eq!(fs::read(out_dir.join("secret")).unwrap(), vec![7u8; 1000]);
        let deep = out_dir.join(&long_dir).join("e".repeat(60)).join("f".repeat(80));
        assert_eq!(fs::read_to_string(deep).unwrap(), "deep");
        assert_eq!(fs::read_link(out_dir.join("link")).unwrap(), Path::new("bin/run.sh"));
        assert_eq!(fs::read(out_dir.join("empty")).unwrap().len(), 0);
    }

    #[test]
    fn a_file_that_shrinks_while_read_is_an_error_not_zeros() {
        let mut tar = TarWriter::new(Vec::new());
        let error = append_file(&mut tar, Path::new("f"), 0o644, 0, 10, &b"short"[..]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
