//! The CIDATA image: a small vfat file system (fatfs, no external tools) holding user-data,
//! meta-data and optionally network-config, written atomically with mode 0600.
//! Knows nothing of what the files say.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use super::SeedError;

/// The files of a NoCloud seed.
#[derive(Clone)]
pub struct SeedFiles {
    pub user_data: String,
    pub meta_data: String,
    /// Network configuration (v1 or v2); `None` lets cloud-init DHCP the first NIC.
    pub network_config: Option<String>,
}

impl std::fmt::Debug for SeedFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedFiles")
            .field("user_data", &format_args!("<{} bytes>", self.user_data.len()))
            .field("meta_data", &self.meta_data)
            .field("network_config", &self.network_config)
            .finish()
    }
}

/// The volume label NoCloud looks for, padded to the 11 bytes FAT stores.
const LABEL: [u8; 11] = *b"CIDATA     ";
const MIB: u64 = 1024 * 1024;

/// Writes `files` as a vfat image labelled CIDATA at `path` (atomically: a 0600 temp file in
/// the same folder, fsync, rename). The image is 1 MiB, or larger when the files need it.
pub fn write_cidata(path: &Path, files: &SeedFiles) -> Result<(), SeedError> {
    let wrap = |source: io::Error| SeedError::Write { path: path.to_owned(), source };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut entries =
        vec![("user-data", files.user_data.as_bytes()), ("meta-data", files.meta_data.as_bytes())];
    if let Some(network) = &files.network_config {
        entries.push(("network-config", network.as_bytes()));
    }
    // tempfile creates its files with mode 0600, which the rename keeps.
    let mut temp = tempfile::Builder::new().prefix(".cidata-").tempfile_in(dir).map_err(wrap)?;
    let size = image_size(entries.iter().map(|(_, bytes)| bytes.len() as u64));
    fill_image(temp.as_file_mut(), size, &entries).map_err(wrap)?;
    temp.as_file().sync_all().map_err(wrap)?;
    temp.persist(path).map_err(|error| wrap(error.error))?;
    crate::store::sync_dir(dir).map_err(wrap)
}

/// 1 MiB (a FAT12 volume) unless the files need more: then their size rounded up to 4 KiB
/// clusters, plus half a MiB for the file system, in whole MiB.
fn image_size(lengths: impl Iterator<Item = u64>) -> u64 {
    let data: u64 = lengths.map(|len| len.div_ceil(4096) * 4096).sum();
    (data + MIB / 2).div_ceil(MIB).max(1) * MIB
}

fn fill_image(file: &mut File, size: u64, entries: &[(&str, &[u8])]) -> io::Result<()> {
    file.set_len(size)?;
    fatfs::format_volume(&mut *file, fatfs::FormatVolumeOptions::new().volume_label(LABEL))?;
    let fs = fatfs::FileSystem::new(&mut *file, fatfs::FsOptions::new())?;
    {
        let root = fs.root_dir();
        for (name, bytes) in entries {
            let mut entry = root.create_file(name)?;
            entry.truncate()?;
            entry.write_all(bytes)?;
            entry.flush()?;
        }
    }
    fs.unmount()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    use super::*;

    /// Runs one of the tools that judge the image (dosfstools, util-linux, mtools); a missing
    /// one fails the test with its install line.
    fn run(program: &str, args: &[&str]) -> std::process::Output {
        let package = match program {
            "fsck.vfat" => "dosfstools",
            "blkid" => "util-linux",
            _ => "mtools",
        };
        crate::process::require_tool(program, &format!("apt-get install {package}"));
        Command::new(program).args(args).output().unwrap()
    }

    fn files(network: bool) -> SeedFiles {
        SeedFiles {
            user_data: "#cloud-config\nusers: []\n".to_owned(),
            meta_data: "instance-id: \"strata-0011223344556677\"\nlocal-hostname: \"web-base\"\n"
                .to_owned(),
            network_config: network.then(|| "version: 2\n".to_owned()),
        }
    }

    #[test]
    fn image_is_clean_labelled_private_and_readable_by_mtools() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.img");
        write_cidata(&path, &files(true)).unwrap();

        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), MIB);
        let image = path.to_str().unwrap();

        {
            let out = run("fsck.vfat", &["-n", image]);
            assert!(out.status.success(), "fsck.vfat: {}", String::from_utf8_lossy(&out.stdout));
        }
        {
            let out = run("blkid", &["-o", "export", image]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("LABEL=CIDATA\n"), "{text}");
            assert!(text.contains("TYPE=vfat\n"), "{text}");
        }
        {
            let out = run("mdir", &["-b", "-i", image, "::"]);
            let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
            for name in ["::/user-data", "::/meta-data", "::/network-config"] {
                assert!(text.contains(name), "{text}");
            }
        }
        let expected = files(true);
        for (name, content) in [
            ("::user-data", &expected.user_data),
            ("::meta-data", &expected.meta_data),
            ("::network-config", expected.network_config.as_ref().unwrap()),
        ] {
            {
                let out = run("mtype", &["-i", image, name]);
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                assert_eq!(String::from_utf8_lossy(&out.stdout), content.as_str());
            }
        }
    }

    #[test]
    fn without_network_config_there_is_no_such_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.img");
        write_cidata(&path, &files(false)).unwrap();
        let fs = fatfs::FileSystem::new(
            File::open(&path).map(ReadOnly).unwrap(),
            fatfs::FsOptions::new(),
        )
        .unwrap();
        let names: Vec<String> =
            fs.root_dir().iter().filter_map(Result::ok).map(|entry| entry.file_name()).collect();
        assert!(names.contains(&"user-data".to_owned()));
        assert!(!names.contains(&"network-config".to_owned()), "{names:?}");
        assert_eq!(fs.read_volume_label_from_root_dir().unwrap().as_deref(), Some("CIDATA"));
    }

    #[test]
    fn big_user_data_gets_a_bigger_image_and_survives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.img");
        let mut big = files(false);
        big.user_data = "#".repeat(3 * MIB as usize + 17);
        write_cidata(&path, &big).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 * MIB);
        {
            let out = run("fsck.vfat", &["-n", path.to_str().unwrap()]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        }
        {
            let out = run("mtype", &["-i", path.to_str().unwrap(), "::user-data"]);
            assert_eq!(out.stdout.len(), big.user_data.len());
        }
    }

    #[test]
    fn rewriting_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.img");
        write_cidata(&path, &files(false)).unwrap();
        write_cidata(&path, &files(true)).unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }

    /// A read-only view for fatfs, which wants Write too.
    struct ReadOnly(File);
    impl io::Read for ReadOnly {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }
    impl io::Write for ReadOnly {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("read-only"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl io::Seek for ReadOnly {
        fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
            self.0.seek(pos)
        }
    }
}
