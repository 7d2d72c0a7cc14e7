//! A minimal tar writer (ustar headers, pax records for long names and big sizes) for uploads:
//! regular files, directories and symlinks with their modes. Owns the archive format only;
//! it neither opens connections nor decides where the archive goes.

use bytes::Bytes;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use tokio::sync::mpsc;

const BLOCK: usize = 512;

/// Writes tar entries to `W`. Owner and group are always root (0/0); the extracting tar runs
/// as root with `--no-same-owner` anyway.
pub struct TarWriter<W: Write> {
    out: W,
}

struct Header<'a> {
    name: &'a [u8],
    mode: u32,
    size: u64,
    mtime: u64,
    kind: u8,
    link: &'a [u8],
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter { out }
    }

    pub fn append_dir(&mut self, name: &[u8], mode: u32, mtime: u64) -> io::Result<()> {
        let mut name = name.to_vec();
        if !name.ends_with(b"/") {
            name.push(b'/');
        }
        self.header(&Header { name: &name, mode, size: 0, mtime, kind: b'5', link: b"" })
    }

    pub fn append_symlink(&mut self, name: &[u8], target: &[u8], mtime: u64) -> io::Result<()> {
        self.header(&Header { name, mode: 0o777, size: 0, mtime, kind: b'2', link: target })
    }

    /// Appends a file of exactly `size` bytes read from `content`; fewer is an error.
    pub fn append_file(
        &mut self,
        name: &[u8],
        mode: u32,
        mtime: u64,
        size: u64,
        content: impl Read,
    ) -> io::Result<()> {
        self.header(&Header { name, mode, size, mtime, kind: b'0', link: b"" })?;
        let copied = io::copy(&mut content.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file shrank while it was read ({copied} of {size} bytes)"),
            ));
        }
        self.pad(size)
    }

    /// Ends the archive (two zero blocks) and hands back the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; BLOCK * 2])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rest = (size % BLOCK as u64) as usize;
        if rest != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rest])?;
        }
        Ok(())
    }

    fn header(&mut self, header: &Header<'_>) -> io::Result<()> {
        let mut pax = Vec::new();
        if header.name.len() > 100 {
            pax_record(&mut pax, b"path", header.name);
        }
        if header.link.len() > 100 {
            pax_record(&mut pax, b"linkpath", header.link);
        }
        if header.size > 0o777_7777_7777 {
            pax_record(&mut pax, b"size", header.size.to_string().as_bytes());
        }
        if !pax.is_empty() {
            let pax_header = Header {
                name: b"././@PaxHeader",
                mode: 0o644,
                size: pax.len() as u64,
                mtime: header.mtime,
                kind: b'x',
                link: b"",
            };
            self.out.write_all(&ustar_block(&pax_header))?;
            self.out.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        self.out.write_all(&ustar_block(header))
    }
}

/// One pax record, `LEN key=value\n`, where LEN counts the whole record including itself.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3; // space, '=', newline
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn put(block: &mut [u8; BLOCK], at: usize, width: usize, bytes: &[u8]) {
    let len = bytes.len().min(width);
    block[at..at + len].copy_from_slice(&bytes[..len]);
}

/// An octal number in `width - 1` digits and a NUL; values too big are capped (pax has them).
fn octal(block: &mut [u8; BLOCK], at: usize, width: usize, value: u64) {
    let digits = width - 1;
    let max = (1u64 << (3 * digits)) - 1;
    let text = format!("{:0digits$o}", value.min(max));
    put(block, at, digits, text.as_bytes());
}

fn ustar_block(header: &Header<'_>) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    put(&mut block, 0, 100, header.name);
    octal(&mut block, 100, 8, u64::from(header.mode & 0o7777));
    octal(&mut block, 108, 8, 0);
    octal(&mut block, 116, 8, 0);
    octal(&mut block, 124, 12, header.size);
    octal(&mut block, 136, 12, header.mtime);
    block[156] = header.kind;
    put(&mut block, 157, 100, header.link);
    put(&mut block, 257, 6, b"ustar\0");
    put(&mut block, 263, 2, b"00");
    put(&mut block, 265, 32, b"root");
    put(&mut block, 297, 32, b"root");
    block[148..156].copy_from_slice(b"        ");
    let sum: u32 = block.iter().map(|&byte| u32::from(byte)).sum();
    let text = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(text.as_bytes());
    block
}

fn mtime(meta: &fs::Metadata) -> u64 {
    u64::try_from(meta.mtime()).unwrap_or(0)
}

/// Appends what is inside `root` (not `root` itself), depth first in name order, with names
/// relative to `root`. Symlinks are kept as symlinks.
pub fn append_tree<W: Write>(tar: &mut TarWriter<W>, root: &Path) -> io::Result<()> {
    append_children(tar, root, &mut Vec::new())
}

fn append_children<W: Write>(
    tar: &mut TarWriter<W>,
    dir: &Path,
    prefix: &mut Vec<u8>,
) -> io::Result<()> {
    let mut entries = fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path)?;
        let start = prefix.len();
        prefix.extend_from_slice(entry.file_name().as_bytes());
        let kind = meta.file_type();
        if kind.is_dir() {
            tar.append_dir(prefix, meta.permissions().mode(), mtime(&meta))?;
            prefix.push(b'/');
            append_children(tar, &path, prefix)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&path)?;
            tar.append_symlink(prefix, target.as_os_str().as_bytes(), mtime(&meta))?;
        } else if kind.is_file() {
            let file = fs::File::open(&path)?;
            tar.append_file(prefix, meta.permissions().mode(), mtime(&meta), meta.len(), file)?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a file, a directory or a symlink", path.display()),
            ));
        }
        prefix.truncate(start);
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
        let result = build(&mut tar).and_then(|()| tar.finish()).and_then(|mut out| {
            use std::io::Write;
            out.flush()
        });
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
        let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
        tar.append_file(name.as_bytes(), meta.permissions().mode(), mtime, meta.len(), file)
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
        tar.append_file(name.as_bytes(), mode, mtime, content.len() as u64, content.as_slice())
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
        let archive = tar.finish().unwrap();
        assert_eq!(archive.len() % BLOCK, 0);

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
    fn pax_record_length_counts_itself() {
        for value_len in [1, 5, 85, 86, 95, 996, 997] {
            let mut out = Vec::new();
            pax_record(&mut out, b"path", &vec![b'x'; value_len]);
            let text = String::from_utf8(out.clone()).unwrap();
            let len: usize = text.split(' ').next().unwrap().parse().unwrap();
            assert_eq!(len, out.len(), "{text}");
        }
    }
}
