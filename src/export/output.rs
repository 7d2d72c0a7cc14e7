//! Output files of an export: each is written under a hidden temporary name in the output
//! folder (`.NAME.tmp-RANDOM`), fsynced, and renamed into place; a temporary left by a failure
//! or Ctrl-C is removed by its guard. Knows nothing of what the files hold.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempPath;

/// A reserved temporary name beside the final file; removed on drop unless persisted.
#[derive(Debug)]
pub struct TempOutput {
    temp: TempPath,
    dir: PathBuf,
}

impl TempOutput {
    /// Reserves `.NAME.tmp-RANDOM` in `dir` (an empty file, mode 0600 until persisted).
    pub fn reserve(dir: &Path, name: &str) -> io::Result<Self> {
        let file = tempfile::Builder::new()
            .prefix(&format!(".{name}.tmp-"))
            .rand_bytes(8)
            .tempfile_in(dir)?;
        Ok(TempOutput { temp: file.into_temp_path(), dir: dir.to_owned() })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// Fsyncs the file, gives it `mode`, and renames it to `target` (in the same folder).
    /// Without `overwrite`, an existing `target` is an error (`AlreadyExists`) and stays as it is.
    pub fn persist(self, target: &Path, mode: u32, overwrite: bool) -> io::Result<()> {
        let file = fs::File::open(&self.temp)?;
        file.sync_all()?;
        fs::set_permissions(&self.temp, fs::Permissions::from_mode(mode))?;
        let dir = self.dir.clone();
        if overwrite {
            self.temp.persist(target).map_err(|error| error.error)?;
        } else {
            self.temp.persist_noclobber(target).map_err(|error| error.error)?;
        }
        crate::store::sync_dir(&dir)
    }
}

/// Writes `bytes` to `dir/name` through a temporary name: fsync, `mode`, rename.
pub fn write_file(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
    overwrite: bool,
) -> io::Result<()> {
    let temp = TempOutput::reserve(dir, name)?;
    {
        let mut file = fs::OpenOptions::new().write(true).truncate(true).open(temp.path())?;
        file.write_all(bytes)?;
    }
    temp.persist(&dir.join(name), mode, overwrite)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_dropped_temporary_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let temp = TempOutput::reserve(dir.path(), "demo-final.qcow2").unwrap();
        let name = temp.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".demo-final.qcow2.tmp-"), "{name}");
        fs::write(temp.path(), b"half an image").unwrap();
        drop(temp);
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn persist_renames_with_the_mode_and_refuses_to_clobber_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        write_file(dir.path(), "a.json", b"one", 0o644, false).unwrap();
        let path = dir.path().join("a.json");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        let error = write_file(dir.path(), "a.json", b"two", 0o644, false).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write_file(dir.path(), "a.json", b"three", 0o755, true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o755);
        assert_eq!(names(dir.path()), ["a.json"], "no temporary is left");
    }
}
