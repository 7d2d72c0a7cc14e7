//! Layer folders on disk: lookup with cheap verification, work folders in `tmp/`, commit.
//!
//! A work folder `tmp/KEY.RANDOM/` sits at the same depth as `layers/KEY/`, so the relative
//! backing path written while building (`../../layers/PARENT/disk.qcow2` or
//! `../../sources/sha256-….qcow2`) stays right after the rename, and after the whole store moves.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{Foundation, LayerError, LayerKey};
use crate::store::{Store, sync_dir, write_atomic};

pub const DISK_FILE: &str = "disk.qcow2";
pub const METADATA_FILE: &str = "layer.json";
/// The record of the last `strata test` against a layer (which checks, their digest, passed or
/// failed, when). Beside the disk, not part of it: writing it leaves the layer valid.
pub const CHECKS_FILE: &str = "checks.json";
/// A layer's restore point: a folder inside the layer's folder (see `stage/restore.rs`).
pub const RESTORE_DIR: &str = "restore";
/// The record of a restore point; a folder without it is not one.
pub const RESTORE_META_FILE: &str = "restore.json";
/// A work folder with this file was kept for the user and is not stale.
const KEPT_MARKER: &str = "KEPT";

/// What `layer.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerMetadata {
    pub key: String,
    pub stage: String,
    pub image: String,
    /// The parent layer's key; `None` for a layer on the source.
    pub parent: Option<String>,
    /// The backing file exactly as written in the qcow2 header (relative).
    pub backing: String,
    pub inputs: serde_json::Value,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub strata_version: String,
    pub disk_bytes: u64,
    pub virtual_bytes: u64,
    pub disk_sha256: String,
    /// The disk's modification time when committed, in nanoseconds: with its size, what a cheap
    /// check compares before trusting `disk_sha256` without rehashing.
    pub disk_mtime_ns: i128,
    pub build_seconds: f64,
    /// The guest's packages (name, arch, version), sorted. Older records hold `name version`
    /// strings: read as packages without an architecture.
    #[serde(default, deserialize_with = "packages_old_or_new")]
    pub packages: Vec<crate::drift::Package>,
    /// The files under `[drift] roots` at the end of the stage (DESIGN §7); empty in older
    /// records.
    #[serde(default)]
    pub files: crate::drift::Manifest,
    /// `ID` and `VERSION_ID` from the guest's /etc/os-release.
    pub os_id: Option<String>,
    pub os_version: Option<String>,
    pub guest_agent: bool,
}

/// Reads `packages` as written now (objects) or by older strata (`name version` strings).
fn packages_old_or_new<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<crate::drift::Package>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Recorded {
        Package(crate::drift::Package),
        Line(String),
    }
    let recorded = Vec::<Recorded>::deserialize(deserializer)?;
    Ok(recorded
        .into_iter()
        .map(|recorded| match recorded {
            Recorded::Package(package) => package,
            Recorded::Line(line) => {
                let (name, version) = line.split_once(' ').unwrap_or((&line, ""));
                crate::drift::Package {
                    name: name.to_owned(),
                    arch: String::new(),
                    version: version.to_owned(),
                    ..crate::drift::Package::default()
                }
            }
        })
        .collect())
}

/// A committed layer.
#[derive(Debug, Clone)]
pub struct Layer {
    pub dir: PathBuf,
    pub metadata: LayerMetadata,
}

impl Layer {
    /// Its restore point folder, if it has one.
    #[must_use]
    pub fn restore_point(&self) -> Option<PathBuf> {
        super::restore_points::restore_point_in(&self.dir)
    }

    /// What its restore point takes on disk: the allocated blocks of its files (saved state,
    /// overlay, seed, record); 0 without one.
    #[must_use]
    pub fn restore_bytes(&self) -> u64 {
        self.restore_point().map_or(0, |dir| super::restore_points::tree_allocated_bytes(&dir))
    }

    #[must_use]
    pub fn disk(&self) -> PathBuf {
        self.dir.join(DISK_FILE)
    }

    /// The last checks record written against this layer (its JSON), if any.
    #[must_use]
    pub fn checks_record(&self) -> Option<Vec<u8>> {
        fs::read(self.dir.join(CHECKS_FILE)).ok()
    }

    /// Replaces the checks record, atomically (what is in it is `check`'s business).
    pub fn write_checks_record(&self, json: &[u8]) -> Result<(), LayerError> {
        let path = self.dir.join(CHECKS_FILE);
        crate::store::write_atomic(&path, json).map_err(|source| LayerError::Write { path, source })
    }

    /// What its disk takes on the filesystem: the allocated blocks. Layers are sparse (a commit
    /// keeps only what differs from the backing chain), so the file's length, which the record
    /// keeps for its integrity check, says more than the layer holds. The length when the
    /// filesystem cannot tell.
    #[must_use]
    pub fn allocated_bytes(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.disk()).map_or(self.metadata.disk_bytes, |meta| meta.blocks() * 512)
    }
}

/// The backing path, relative, that a layer built on `parent` records.
#[must_use]
pub fn backing_for(parent: &Foundation) -> String {
    match parent {
        Foundation::Layer(key) => format!("../../layers/{key}/{DISK_FILE}"),
        Foundation::Source { file_name, .. } => format!("../../sources/{file_name}"),
    }
}

/// A layer being built: `tmp/KEY.RANDOM/`. Removed on drop unless committed or kept.
#[derive(Debug)]
pub struct WorkDir {
    pub key: LayerKey,
    pub dir: PathBuf,
    keep: bool,
}

impl WorkDir {
    #[must_use]
    pub fn disk(&self) -> PathBuf {
        self.dir.join(DISK_FILE)
    }

    /// Keeps the folder after a failure so the user can boot it (`--keep-failed`).
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        // Stale-tmp cleaning leaves marked folders alone; `strata gc` removes them.
        let _ = fs::write(self.dir.join(KEPT_MARKER), b"kept by --keep-failed\n");
        self.dir.clone()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The layers of a [`Store`] (`layers/`, their records, locks and saved guests): what the
/// store holds seen as layers. `Store` is the folders; this is what lives in `layers/`.
#[derive(Debug, Clone)]
pub struct Layers {
    store: Store,
}

impl Layers {
    #[must_use]
    pub fn new(store: Store) -> Self {
        Layers { store }
    }

    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    #[must_use]
    pub fn dir(&self, key: &LayerKey) -> PathBuf {
        self.store.layers_dir().join(key.as_str())
    }

    /// The layer for `key` if it is present and its disk is what was committed.
    /// Cheap by default (size and mtime); `rehash` recomputes the sha256.
    /// A layer that fails the check (its record unreadable, its disk not what the record says)
    /// is moved aside into `tmp/` and reported as `Corrupt`, so it is rebuilt and never used.
    /// Only a build calls this; queries call [`Layers::inspect`].
    pub fn lookup(&self, key: &LayerKey, rehash: bool) -> Result<Lookup, LayerError> {
        let found = self.inspect(key, rehash)?;
        match found {
            Lookup::Corrupt { reason } => self.discard(key, reason),
            other => Ok(other),
        }
    }

    /// Like [`Layers::lookup`], but read-only: a corrupt layer is reported and left where
    /// it is.
    pub fn inspect(&self, key: &LayerKey, rehash: bool) -> Result<Lookup, LayerError> {
        let dir = self.dir(key);
        let metadata_path = dir.join(METADATA_FILE);
        let bytes = match fs::read(&metadata_path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && !dir.exists() => {
                return Ok(Lookup::Missing);
            }
            // A folder without a readable record is a corrupt layer, not a store failure.
            Err(error) => {
                return Ok(Lookup::Corrupt { reason: format!("{METADATA_FILE}: {error}") });
            }
        };
        let metadata: LayerMetadata = match serde_json::from_slice(&bytes) {
            Ok(metadata) => metadata,
            Err(error) => {
                return Ok(Lookup::Corrupt {
                    reason: format!("unreadable {METADATA_FILE}: {error}"),
                });
            }
        };
        let layer = Layer { dir, metadata };
        match verify_disk(&layer, rehash) {
            Ok(()) => Ok(Lookup::Hit(Box::new(layer))),
            Err(reason) => Ok(Lookup::Corrupt { reason }),
        }
    }

    /// Moves a bad layer out of `layers/` (into `tmp/`, cleaned later), so it is never used.
    fn discard(&self, key: &LayerKey, reason: String) -> Result<Lookup, LayerError> {
        let from = self.dir(key);
        let to = self.store.tmp_dir().join(format!("{key}.corrupt-{}", std::process::id()));
        fs::rename(&from, &to).map_err(|source| LayerError::Write { path: from, source })?;
        Ok(Lookup::Corrupt { reason })
    }

    /// Moves `key`'s layer out of `layers/` (into `tmp/`, removed later) so a rebuild can take
    /// its place. Layers above it keep pointing at the same path, now the new build's.
    pub fn retire(&self, key: &LayerKey) -> Result<(), LayerError> {
        let from = self.dir(key);
        if !from.exists() {
            return Ok(());
        }
        let to = self.store.tmp_dir().join(format!("{key}.retired-{}", std::process::id()));
        fs::rename(&from, &to).map_err(|source| LayerError::Write { path: from, source })
    }

    /// A fresh work folder for building `key`, mode 0700.
    pub fn begin(&self, key: &LayerKey) -> Result<WorkDir, LayerError> {
        let tmp = self.store.tmp_dir();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{key}."))
            .tempdir_in(&tmp)
            .map_err(|source| LayerError::Write { path: tmp.clone(), source })?
            .keep();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|source| LayerError::Write { path: dir.clone(), source })?;
        Ok(WorkDir { key: key.clone(), dir, keep: false })
    }

    /// Writes layer.json and renames the work folder into `layers/KEY`. The caller holds the
    /// key's lock, so nobody else commits the same key meanwhile.
    pub fn commit(
        &self,
        mut work: WorkDir,
        mut metadata: LayerMetadata,
    ) -> Result<Layer, LayerError> {
        let disk = work.disk();
        let write_err = |path: &Path| {
            let path = path.to_owned();
            move |source| LayerError::Write { path, source }
        };
        let (sha256, size, mtime_ns) = hash_file(&disk).map_err(write_err(&disk))?;
        metadata.disk_sha256 = sha256;
        metadata.disk_bytes = size;
        metadata.disk_mtime_ns = mtime_ns;
        let text = serde_json::to_vec_pretty(&metadata).map_err(LayerError::Encode)?;
        let metadata_path = work.dir.join(METADATA_FILE);
        write_atomic(&metadata_path, &text).map_err(write_err(&metadata_path))?;
        fs::File::open(&disk).and_then(|file| file.sync_all()).map_err(write_err(&disk))?;
        let target = self.dir(&work.key);
        if target.exists() {
            // Someone committed it first (a crash between rename and unlock, at worst): theirs wins.
            return self.lookup(&work.key, false).and_then(|found| match found {
                Lookup::Hit(layer) => Ok(*layer),
                _ => Err(LayerError::Write {
                    path: target.clone(),
                    source: std::io::Error::other("a broken layer folder is in the way"),
                }),
            });
        }
        fs::set_permissions(&work.dir, fs::Permissions::from_mode(0o755))
            .map_err(write_err(&work.dir))?;
        fs::rename(&work.dir, &target).map_err(write_err(&target))?;
        work.keep = true;
        sync_dir(&self.store.layers_dir()).map_err(write_err(&target))?;
        Ok(Layer { dir: target, metadata })
    }

    /// Every committed layer's metadata (unreadable ones skipped).
    pub fn all(&self) -> Result<Vec<Layer>, LayerError> {
        let dir = self.store.layers_dir();
        let entries =
            fs::read_dir(&dir).map_err(|source| LayerError::Write { path: dir, source })?;
        let mut layers = Vec::new();
        for entry in entries.flatten() {
            let metadata_path = entry.path().join(METADATA_FILE);
            let parsed = fs::read(&metadata_path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<LayerMetadata>(&bytes).ok());
            if let Some(metadata) = parsed {
                layers.push(Layer { dir: entry.path(), metadata });
            }
        }
        Ok(layers)
    }

    /// Removes work folders left by builds that died. Only folders whose key lock is free are
    /// touched, so a running build's work is never removed.
    pub fn clean_stale_tmp(&self) -> Result<usize, LayerError> {
        let tmp = self.store.tmp_dir();
        let entries =
            fs::read_dir(&tmp).map_err(|source| LayerError::Write { path: tmp, source })?;
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(key) = name.split('.').next().and_then(LayerKey::parse) else { continue };
            if entry.path().join(KEPT_MARKER).exists() {
                continue;
            }
            if let Some(_lock) = self.try_lock(&key)?
                && fs::remove_dir_all(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Blocks until this process alone may build `key`.
    pub fn lock(&self, key: &LayerKey) -> Result<fs::File, LayerError> {
        Ok(self.store.lock(&format!("layer-{key}"))?)
    }

    fn try_lock(&self, key: &LayerKey) -> Result<Option<fs::File>, LayerError> {
        Ok(self.store.try_lock(&format!("layer-{key}"))?)
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Hit(Box<Layer>),
    Missing,
    /// It was there but its record is unreadable or its disk does not match it; `lookup` has
    /// moved it aside, `inspect` left it in place.
    Corrupt {
        reason: String,
    },
}

fn verify_disk(layer: &Layer, rehash: bool) -> Result<(), String> {
    let disk = layer.disk();
    let meta = fs::metadata(&disk).map_err(|error| format!("{}: {error}", disk.display()))?;
    let recorded = &layer.metadata;
    let same_stat = meta.len() == recorded.disk_bytes && mtime_ns(&meta) == recorded.disk_mtime_ns;
    if same_stat && !rehash {
        return Ok(());
    }
    let (sha256, _, _) =
        hash_file(&disk).map_err(|error| format!("{}: {error}", disk.display()))?;
    if sha256 == recorded.disk_sha256 {
        Ok(())
    } else {
        Err(format!("disk sha256 is {sha256}, layer.json recorded {}", recorded.disk_sha256))
    }
}

fn mtime_ns(meta: &fs::Metadata) -> i128 {
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}

/// The file's sha256, size and mtime, read once. Holes are not read: the hash is fed zeros for
/// them. A 4 GiB raw export is mostly holes, and reading one just written allocates a zeroed
/// page-cache page for every page of hole (12 of 16 s of its hash here, against 3 s for the
/// zeros themselves).
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64, i128)> {
    let mut file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; HASH_CHUNK];
    let zeros = vec![0; HASH_CHUNK];
    let mut offset = 0;
    while offset < len {
        let (data, end) = next_data(&file, offset, len)?;
        hash_zeros(&mut hasher, data - offset, &zeros);
        if data >= len {
            break;
        }
        file.seek(SeekFrom::Start(data))?;
        hash_range(&mut file, end - data, &mut hasher, &mut buffer)?;
        offset = end;
    }
    let meta = file.metadata()?;
    if meta.len() != len {
        let changed = format!("{} changed size while it was hashed", path.display());
        return Err(std::io::Error::other(changed));
    }
    Ok((hex::encode(hasher.finalize()), len, mtime_ns(&meta)))
}

const HASH_CHUNK: usize = 1 << 20;

/// The next range of `file` at or after `offset` that holds data, as `(start, end)`; `start` is
/// `len` when only a hole is left. Where the filesystem cannot say (no `SEEK_DATA`), all of it.
fn next_data(file: &fs::File, offset: u64, len: u64) -> std::io::Result<(u64, u64)> {
    use nix::unistd::{Whence, lseek};
    let at = |value: u64| i64::try_from(value).map_err(std::io::Error::other);
    let found = |value: i64| u64::try_from(value).map_err(std::io::Error::other);
    let start = match lseek(file, at(offset)?, Whence::SeekData) {
        Ok(start) => found(start)?.min(len),
        Err(nix::errno::Errno::ENXIO) => return Ok((len, len)),
        Err(nix::errno::Errno::EINVAL) => return Ok((offset, len)),
        Err(errno) => return Err(errno.into()),
    };
    let end = match lseek(file, at(start)?, Whence::SeekHole) {
        Ok(end) => found(end)?.clamp(start, len),
        Err(errno) => return Err(errno.into()),
    };
    Ok((start, end))
}

/// Feeds `count` zero bytes to `hasher`, from `zeros` (all zero).
fn hash_zeros(hasher: &mut Sha256, mut count: u64, zeros: &[u8]) {
    while count > 0 {
        let step = at_most(count, zeros.len());
        hasher.update(&zeros[..step]);
        count -= step as u64;
    }
}

/// `count`, or `limit` when that is less.
fn at_most(count: u64, limit: usize) -> usize {
    usize::try_from(count).map_or(limit, |count| count.min(limit))
}

/// Reads exactly `count` bytes from `file`'s position into `hasher`.
fn hash_range(
    file: &mut fs::File,
    mut count: u64,
    hasher: &mut Sha256,
    buffer: &mut [u8],
) -> std::io::Result<()> {
    while count > 0 {
        let want = at_most(count, buffer.len());
        let read = file.read(&mut buffer[..want])?;
        if read == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        hasher.update(&buffer[..read]);
        count -= read as u64;
    }
    Ok(())
}

#[must_use]
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Holes are hashed as the zeros they read as: sparse files of every shape (data first or
    /// last, holes between, all hole, no hole, empty, a size not a multiple of anything) hash
    /// as their plain bytes do.
    #[test]
    fn a_sparse_file_hashes_as_its_bytes() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let mib = 1u64 << 20;
        let shapes: [(u64, &[(u64, usize)]); 7] = [
            (0, &[]),
            (5 * mib + 123, &[]),
            (3 * mib, &[(0, 4096)]),
            (9 * mib + 7, &[(0, 10), (2 * mib + 5, 70_000), (9 * mib, 7)]),
            (4 * mib, &[(mib, 3 * mib as usize)]),
            (mib + 1, &[(0, mib as usize + 1)]),
            (64 * mib, &[(33 * mib + 4095, 2)]),
        ];
        for (index, (len, writes)) in shapes.into_iter().enumerate() {
            let path = dir.path().join(format!("sparse-{index}"));
            let mut file = fs::File::create(&path).unwrap();
            file.set_len(len).unwrap();
            for (at, count) in writes {
                file.seek(SeekFrom::Start(*at)).unwrap();
                let bytes: Vec<u8> = (0..*count).map(|i| (i % 251) as u8 + 1).collect();
                file.write_all(&bytes).unwrap();
            }
            file.sync_all().unwrap();
            let plain = fs::read(&path).unwrap();
            let (sha256, size, _) = hash_file(&path).unwrap();
            assert_eq!(size, len, "shape {index}");
            assert_eq!(sha256, crate::layer::sha256_hex(&plain), "shape {index}");
        }
    }

    #[test]
    fn old_package_lines_and_a_record_without_files_still_load() {
        let mut record = serde_json::to_value(LayerMetadata::default()).unwrap();
        record["packages"] = serde_json::json!(["htop 3.2.2-2", "bash 5.2.15-2+b2"]);
        record.as_object_mut().unwrap().remove("files");
        let old: LayerMetadata = serde_json::from_value(record).unwrap();
        assert_eq!(old.packages[0].name, "htop");
        assert_eq!(old.packages[0].version, "3.2.2-2");
        assert_eq!(old.packages[1].arch, "");
        assert!(old.files.is_empty());
        let new = serde_json::to_value(&old).unwrap();
        assert_eq!(new["packages"][0]["name"], "htop");
        let again: LayerMetadata = serde_json::from_value(new).unwrap();
        assert_eq!(again, old);
        // Packages recorded before source packages and licenses were: neither.
        let mut record = serde_json::to_value(LayerMetadata::default()).unwrap();
        record["packages"] =
            serde_json::json!([{ "name": "bash", "arch": "amd64", "version": "5.2.15-2+b2" }]);
        let old: LayerMetadata = serde_json::from_value(record).unwrap();
        assert_eq!((old.packages[0].source.as_ref(), old.packages[0].licenses.len()), (None, 0));
        let text = serde_json::to_string(&old).unwrap();
        assert!(!text.contains("licenses") && !text.contains("source"), "{text}");
    }

    #[test]
    fn a_sparse_layer_reports_its_allocated_blocks_not_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let disk = std::fs::File::create(dir.path().join(DISK_FILE)).unwrap();
        disk.set_len(8 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&disk, &[1u8; 64 << 10], 1 << 20).unwrap();
        disk.sync_all().unwrap();
        let layer = Layer {
            dir: dir.path().to_owned(),
            metadata: LayerMetadata { disk_bytes: 8 << 20, ..LayerMetadata::default() },
        };
        let allocated = layer.allocated_bytes();
        assert!((64 << 10..1 << 20).contains(&allocated), "{allocated} bytes allocated");

        // No disk to ask: the recorded length.
        let gone = Layer { dir: dir.path().join("gone"), metadata: layer.metadata.clone() };
        assert_eq!(gone.allocated_bytes(), 8 << 20);
    }

    #[test]
    fn an_unreadable_record_is_corrupt_and_only_lookup_moves_it_aside() {
        let root = tempfile::tempdir().unwrap();
        let layers = Layers::new(Store::open(root.path()).unwrap());
        let key = LayerKey::parse(&"a".repeat(64)).unwrap();
        fs::create_dir_all(layers.dir(&key)).unwrap();
        fs::write(layers.dir(&key).join(METADATA_FILE), b"\xff\xfe not utf-8").unwrap();
        assert!(matches!(layers.inspect(&key, false).unwrap(), Lookup::Corrupt { .. }));
        assert!(layers.dir(&key).exists(), "a query leaves it in place");
        assert!(layers.all().unwrap().is_empty(), "all() skips it");
        assert!(matches!(layers.lookup(&key, false).unwrap(), Lookup::Corrupt { .. }));
        assert!(!layers.dir(&key).exists(), "a build's lookup moves it aside");
        assert!(matches!(layers.inspect(&key, false).unwrap(), Lookup::Missing));
    }

    #[test]
    fn a_restore_point_is_installed_beside_its_layer_and_replaces_the_old_one() {
        let root = tempfile::tempdir().unwrap();
        let layers = Layers::new(Store::open(root.path()).unwrap());
        let key = LayerKey::parse(&"a".repeat(64)).unwrap();
        fs::create_dir_all(layers.dir(&key)).unwrap();
        assert!(layers.restore_point(&key).is_none());
        for state in ["first", "second"] {
            let saved = layers.store().tmp_dir().join(format!("{key}.restore"));
            fs::create_dir_all(&saved).unwrap();
            fs::write(saved.join(RESTORE_META_FILE), "{}").unwrap();
            fs::write(saved.join("state.zst"), state).unwrap();
            let installed = layers.install_restore_point(&key, &saved).unwrap();
            assert!(!saved.exists(), "moved, not copied");
            assert_eq!(layers.restore_point(&key), Some(installed.clone()));
            assert_eq!(fs::read_to_string(installed.join("state.zst")).unwrap(), state);
        }
        // A reader holds the shared lock; the next install waits for it, not for other readers.
        let _reader = layers.lock_restore_point_shared(&key).unwrap();
        let _another = layers.lock_restore_point_shared(&key).unwrap();
    }
}
