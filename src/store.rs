//! The store's root and its layout (`sources/`, `layers/`, `boots/`, `logs/`, `tmp/`,
//! `locks/`), where it lives by default, its named locks (and the one way to wait for one
//! without stalling the async runtime, [`wait_for_lock`]), and atomic writes. Must not know
//! what goes into each folder.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "failed to prepare the store at {path}: check that it is writable, or pass --store DIR"
    )]
    Prepare {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no store folder given and neither XDG_CACHE_HOME nor HOME is set: pass --store DIR")]
    NoDefault,
    /// The blocking thread that waited for a lock panicked or was cancelled.
    #[error("failed to wait for a store lock")]
    LockWait(#[source] tokio::task::JoinError),
}

/// Shared (readers, e.g. builds against gc) or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// Runs `take`, which waits for a lock (a store's, a layer's, a restore point's), on a
/// blocking thread, so the async runtime keeps running meanwhile. The one home of that wait:
/// every async caller that takes a file lock goes through it.
pub async fn wait_for_lock<E>(
    take: impl FnOnce() -> Result<File, E> + Send + 'static,
) -> Result<File, E>
where
    E: From<StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(take).await.map_err(|error| E::from(StoreError::LockWait(error)))?
}

/// A store on disk. Opening it creates its folders; nothing else is written.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// `$XDG_CACHE_HOME/strata`, else `~/.cache/strata`.
    pub fn default_root() -> Result<PathBuf, StoreError> {
        let non_empty = |name| std::env::var_os(name).filter(|value| !value.is_empty());
        if let Some(cache) = non_empty("XDG_CACHE_HOME") {
            return Ok(PathBuf::from(cache).join("strata"));
        }
        non_empty("HOME")
            .map(|home| PathBuf::from(home).join(".cache").join("strata"))
            .ok_or(StoreError::NoDefault)
    }

    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let root = std::path::absolute(root)
            .map_err(|source| StoreError::Prepare { path: root.to_owned(), source })?;
        let store = Store { root };
        for dir in [
            store.sources_dir(),
            store.layers_dir(),
            store.boots_dir(),
            store.logs_dir(),
            store.tmp_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(|source| StoreError::Prepare { path: dir, source })?;
        }
        Ok(store)
    }

    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    #[must_use]
    pub fn sources_dir(&self) -> PathBuf {
        self.root.join("sources")
    }

    #[must_use]
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// Sources' saved first boots (`layer/restore_points.rs`).
    #[must_use]
    pub fn boots_dir(&self) -> PathBuf {
        self.root.join("boots")
    }

    #[must_use]
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Work in progress; never read as a result.
    #[must_use]
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Takes an exclusive lock on `locks/NAME.lock`, waiting for whoever holds it.
    /// The lock is released when the returned file is dropped (or the process dies).
    pub fn lock(&self, name: &str) -> Result<File, StoreError> {
        let dir = self.root.join("locks");
        let path = dir.join(format!("{name}.lock"));
        let locked = fs::create_dir_all(&dir)
            .and_then(|()| File::options().create(true).truncate(false).write(true).open(&path))
            .and_then(|file| file.lock().map(|()| file));
        locked.map_err(|source| StoreError::Lock { path, source })
    }

    /// [`Store::lock`] or [`Store::lock_shared`], waited for on a blocking thread (see
    /// [`wait_for_lock`]).
    pub async fn lock_async(&self, name: &str, mode: LockMode) -> Result<File, StoreError> {
        let (store, name) = (self.clone(), name.to_owned());
        wait_for_lock(move || match mode {
            LockMode::Shared => store.lock_shared(&name),
            LockMode::Exclusive => store.lock(&name),
        })
        .await
    }

    /// Takes the lock only if nobody holds it; `None` when somebody does.
    pub fn try_lock(&self, name: &str) -> Result<Option<File>, StoreError> {
        let dir = self.root.join("locks");
        let path = dir.join(format!("{name}.lock"));
        let file = fs::create_dir_all(&dir)
            .and_then(|()| File::options().create(true).truncate(false).write(true).open(&path))
            .map_err(|source| StoreError::Lock { path: path.clone(), source })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(source)) => Err(StoreError::Lock { path, source }),
        }
    }

    /// Like [`Store::lock`] but shared: many readers at once, none while a writer holds it.
    pub fn lock_shared(&self, name: &str) -> Result<File, StoreError> {
        let dir = self.root.join("locks");
        let path = dir.join(format!("{name}.lock"));
        let locked = fs::create_dir_all(&dir)
            .and_then(|()| File::options().create(true).truncate(false).write(true).open(&path))
            .and_then(|file| file.lock_shared().map(|()| file));
        locked.map_err(|source| StoreError::Lock { path, source })
    }
}

/// Writes `bytes` to `path` atomically: a temp file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|error| error.error)?;
    sync_dir(dir)
}

/// Makes a rename in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn open_creates_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        for sub in ["sources", "layers", "logs", "tmp"] {
            assert!(store.root().join(sub).is_dir(), "{sub} missing");
        }
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left");
    }

    #[tokio::test]
    async fn an_async_lock_waits_off_the_runtime_for_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let shared = store.lock_async("gc", LockMode::Shared).await.unwrap();
        let second = store.lock_async("gc", LockMode::Shared).await.unwrap();
        assert!(store.try_lock("gc").unwrap().is_none(), "shared holders keep an exclusive out");
        drop((shared, second));
        let exclusive = store.lock_async("gc", LockMode::Exclusive).await.unwrap();
        // Another holder waits on a blocking thread while this runtime (one thread) goes on.
        let waiter = tokio::spawn({
            let store = store.clone();
            async move { store.lock_async("gc", LockMode::Exclusive).await.map(drop) }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the second exclusive lock waits for the first");
        drop(exclusive);
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
