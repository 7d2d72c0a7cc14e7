//! Run folders (`$TMPDIR/strata-run-*`): where a booted guest's seed (it holds the guest's host
//! private key), QMP and agent sockets and UEFI variables live. Each is 0700 whatever the umask,
//! and holds a lock file its owner keeps locked while it lives, so a sweep can tell the folders
//! of processes that died (SIGKILL) from those in use. Must not know what goes inside.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::StageError;

/// What every run folder's name starts with.
pub const RUN_DIR_PREFIX: &str = "strata-run-";
/// The file a run folder's owner keeps locked.
const OWNER_LOCK: &str = "owner.lock";
/// A run folder without a lock file (made by an older strata, or caught between its creation
/// and its lock) is only removed once it is this old.
const UNLOCKED_GRACE: Duration = Duration::from_secs(3600);

/// A 0700 run folder, removed when dropped; its lock is held as long as it lives.
#[derive(Debug)]
pub struct RunDir {
    // Dropped first: the lock goes with the folder.
    _owner: File,
    dir: tempfile::TempDir,
}

impl RunDir {
    /// Makes a fresh run folder under the system temp folder (so socket paths stay short).
    pub fn create(stage: &str) -> Result<RunDir, StageError> {
        let prepare = |path: PathBuf| {
            let stage = stage.to_owned();
            move |source| StageError::Prepare { stage, path, source }
        };
        let private = fs::Permissions::from_mode(0o700);
        let dir = tempfile::Builder::new()
            .prefix(RUN_DIR_PREFIX)
            .permissions(private.clone())
            .tempdir()
            .map_err(prepare(std::env::temp_dir()))?;
        // Created 0700 or less by the umask; exactly 0700 before anything is put inside.
        fs::set_permissions(dir.path(), private).map_err(prepare(dir.path().to_owned()))?;
        let lock_path = dir.path().join(OWNER_LOCK);
        let owner = File::create(&lock_path)
            .and_then(|file| file.lock().map(|()| file))
            .map_err(prepare(lock_path))?;
        Ok(RunDir { _owner: owner, dir })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the run folders in `temp` (the system temp folder) whose owner is gone: its lock
/// file is not held, or there is none and the folder is old. Returns how many went.
#[must_use]
pub fn sweep_stale_run_dirs(temp: &Path) -> usize {
    let Ok(entries) = fs::read_dir(temp) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let is_run_dir = entry.file_name().to_string_lossy().starts_with(RUN_DIR_PREFIX)
            && entry.file_type().is_ok_and(|kind| kind.is_dir());
        if is_run_dir && owner_is_gone(&entry.path()) && fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn owner_is_gone(dir: &Path) -> bool {
    match File::options().write(true).open(dir.join(OWNER_LOCK)) {
        // The lock is dropped at once; a new owner never reuses an old folder.
        Ok(file) => file.try_lock().is_ok(),
        Err(_) => fs::metadata(dir)
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|modified| SystemTime::now().duration_since(modified).ok())
            .is_some_and(|age| age > UNLOCKED_GRACE),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_run_folder_is_swept_only_once_its_owner_is_gone() {
        let root = tempfile::tempdir().unwrap();
        let folder = |name: &str| {
            let dir = root.path().join(format!("{RUN_DIR_PREFIX}{name}"));
            fs::create_dir(&dir).unwrap();
            dir
        };
        // A live owner holds its lock.
        let live = folder("live");
        let owner = File::create(live.join(OWNER_LOCK)).unwrap();
        owner.lock().unwrap();
        // A folder whose owner died: its lock file is there, nobody holds it.
        let dead = folder("dead");
        File::create(dead.join(OWNER_LOCK)).unwrap();
        fs::write(dead.join("seed.img"), b"secret").unwrap();
        // A young folder without a lock file (being created) stays.
        let young = folder("young");
        assert_eq!(sweep_stale_run_dirs(root.path()), 1);
        assert!(!dead.exists(), "the dead owner's folder is removed");
        assert!(live.exists() && young.exists());
    }

    #[test]
    fn a_run_folder_is_0700_and_locked_by_its_owner() {
        let run = RunDir::create("base").unwrap();
        let mode = fs::metadata(run.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(!owner_is_gone(run.path()));
    }
}
