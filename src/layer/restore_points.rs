//! Saved guests in the store, the one home of what is kept on disk for warm starts (what they
//! hold and how they are saved and resumed is `stage/restore.rs`'s; when, `build/warm.rs`'s;
//! their identity, [`super::boot_key`] and [`super::machine_shape`]):
//! - a layer's restore point, `layers/KEY/restore/`: the guest saved right after the layer was
//!   cut from it, resumed by the next build of the stage above;
//! - a source's saved first boot, `boots/KEY/`: a guest booted on a source and ready for its
//!   first stage's steps (communicator up, cloud-init done), plus `boot.json` naming the
//!   source, image and stage it was saved for; a later build whose first stage must be built
//!   (the base stage changed, or another definition on the same source) resumes it instead of
//!   booting. gc keeps one while its source is kept;
//! - their lock (many load one at a time, one replaces it) and atomic install;
//! - the cap on their disk use (`strata build --max-restore-size`): the oldest go until their
//!   total is at most the cap, so a long-lived runner's store does not grow without end. Only
//!   saved guests go, never a layer (a stage whose restore point is gone boots instead); never
//!   one a build is loading or replacing (it holds the lock).
//!
//! Must not boot or resume anything, nor decide when to save or cap: `build` and `stage` do.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{LayerError, LayerKey, LayerStore, RESTORE_DIR, RESTORE_META_FILE};
use crate::store::sync_dir;
use crate::units::ByteSize;

impl LayerStore {
    /// `key`'s restore point folder, if it has one.
    #[must_use]
    pub fn restore_point(&self, key: &LayerKey) -> Option<PathBuf> {
        restore_point_in(&self.dir(key))
    }

    /// Blocks until nobody replaces `key`'s restore point; many may read it at once. Hold it
    /// while a guest loads the restore point.
    pub fn lock_restore_point_shared(&self, key: &LayerKey) -> Result<fs::File, LayerError> {
        Ok(self.store().lock_shared(&format!("restore-{key}"))?)
    }

    /// Moves the restore point saved in `saved` (a folder in `tmp/`) into `key`'s folder,
    /// replacing any there: its files and folder are fsynced first, and the swap is made under
    /// the restore point's exclusive lock, so no build is loading the old one meanwhile.
    pub fn install_restore_point(
        &self,
        key: &LayerKey,
        saved: &Path,
    ) -> Result<PathBuf, LayerError> {
        let target = self.dir(key).join(RESTORE_DIR);
        self.install_saved(key, saved, &target)?;
        Ok(target)
    }

    /// Moves the folder `saved` to `target` (whose parent exists), replacing any there: its
    /// files and folder fsynced first, the swap made under the restore point lock of `key`.
    pub(super) fn install_saved(
        &self,
        key: &LayerKey,
        saved: &Path,
        target: &Path,
    ) -> Result<(), LayerError> {
        let write_err = |path: &Path| {
            let path = path.to_owned();
            move |source| LayerError::Write { path, source }
        };
        for entry in fs::read_dir(saved).map_err(write_err(saved))? {
            let path = entry.map_err(write_err(saved))?.path();
            fs::File::open(&path).and_then(|file| file.sync_all()).map_err(write_err(&path))?;
        }
        sync_dir(saved).map_err(write_err(saved))?;
        let _exclusive = self.store().lock(&format!("restore-{key}"))?;
        match fs::remove_dir_all(target) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(LayerError::Write { path: target.to_owned(), source: error });
            }
            _ => {}
        }
        fs::rename(saved, target).map_err(write_err(target))?;
        let parent = target.parent().unwrap_or(target);
        sync_dir(parent).map_err(write_err(parent))
    }
}

/// The allocated blocks of the files in `dir` (a restore point's: state, overlay, seed,
/// records); 0 when it cannot be read.
#[must_use]
pub fn tree_allocated_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter_map(|entry| entry.metadata().ok())
            .fold(0u64, |sum, meta| sum.saturating_add(meta.blocks().saturating_mul(512)))
    })
}

pub(super) fn restore_point_in(layer_dir: &Path) -> Option<PathBuf> {
    let dir = layer_dir.join(RESTORE_DIR);
    dir.join(RESTORE_META_FILE).is_file().then_some(dir)
}

/// What a saved first boot was saved for, beside its restore.json.
pub const BOOT_RECORD_FILE: &str = "boot.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootRecord {
    /// The source's file name in `sources/`: gc keeps the boot while it keeps the source.
    pub source: String,
    /// The definition and first stage whose build saved it (others may resume it).
    pub image: String,
    pub stage: String,
}

/// A saved first boot in the store.
#[derive(Debug, Clone)]
pub struct SavedBoot {
    pub key: LayerKey,
    pub dir: PathBuf,
    /// `None` when its boot.json is missing or unreadable (gc removes it).
    pub record: Option<BootRecord>,
}

impl LayerStore {
    /// The folder of the saved first boot `key`, whether or not there is one.
    #[must_use]
    pub fn boot_dir(&self, key: &LayerKey) -> PathBuf {
        self.store().boots_dir().join(key.as_str())
    }

    /// The saved first boot `key`, when there is a whole one.
    #[must_use]
    pub fn source_restore_point(&self, key: &LayerKey) -> Option<PathBuf> {
        let dir = self.boot_dir(key);
        let whole = dir.join(RESTORE_META_FILE).is_file() && dir.join(BOOT_RECORD_FILE).is_file();
        whole.then_some(dir)
    }

    /// Moves the first boot saved in `saved` (a folder in `tmp/`) to `boots/KEY/`, with its
    /// record, replacing any there (under its lock, as for a layer's restore point).
    pub fn install_source_restore_point(
        &self,
        key: &LayerKey,
        saved: &Path,
        record: &BootRecord,
    ) -> Result<PathBuf, LayerError> {
        let record_path = saved.join(BOOT_RECORD_FILE);
        let text = serde_json::to_vec_pretty(record).map_err(LayerError::Encode)?;
        crate::store::write_atomic(&record_path, &text)
            .map_err(|source| LayerError::Write { path: record_path.clone(), source })?;
        // `boots/` itself is made by `Store::open`.
        let target = self.boot_dir(key);
        self.install_saved(key, saved, &target)?;
        Ok(target)
    }

    /// Every folder in `boots/` named like a key, with its record when readable.
    pub fn saved_boots(&self) -> Result<Vec<SavedBoot>, LayerError> {
        let boots = self.store().boots_dir();
        let entries = match fs::read_dir(&boots) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(LayerError::Write { path: boots, source }),
        };
        let mut saved = Vec::new();
        for entry in entries.flatten() {
            let Some(key) = LayerKey::parse(&entry.file_name().to_string_lossy()) else { continue };
            let dir = entry.path();
            let record = fs::read(dir.join(BOOT_RECORD_FILE))
                .ok()
                .and_then(|text| serde_json::from_slice(&text).ok());
            saved.push(SavedBoot { key, dir, record });
        }
        saved.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(saved)
    }
}

/// A restore point in the store, with what the cap weighs it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePoint {
    /// The layer it belongs to (it resumes the stage above that layer).
    pub key: LayerKey,
    /// That layer's stage and image, from its layer.json.
    pub stage: String,
    pub image: String,
    pub dir: PathBuf,
    /// What it takes on disk (allocated blocks).
    pub bytes: u64,
    /// When it was saved, in seconds since the Unix epoch.
    pub created: u64,
}

impl LayerStore {
    /// Every restore point beside a committed layer, and every source's saved first boot,
    /// oldest first.
    pub fn restore_points(&self) -> Result<Vec<RestorePoint>, LayerError> {
        let boots =
            self.saved_boots()?.into_iter().filter_map(|boot| self.first_boot_point(&boot.key));
        let mut points: Vec<RestorePoint> = self
            .all()?
            .into_iter()
            .filter_map(|layer| {
                let dir = layer.restore_point()?;
                let key = LayerKey::parse(&layer.metadata.key)?;
                Some(RestorePoint {
                    key,
                    stage: layer.metadata.stage.clone(),
                    image: layer.metadata.image.clone(),
                    bytes: layer.restore_bytes(),
                    created: created(&dir),
                    dir,
                })
            })
            .chain(boots)
            .collect();
        points.sort_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)));
        Ok(points)
    }

    /// The source's saved first boot `key` as a restore point, when there is a whole one.
    #[must_use]
    pub fn first_boot_point(&self, key: &LayerKey) -> Option<RestorePoint> {
        let dir = self.source_restore_point(key)?;
        let text = fs::read(dir.join(BOOT_RECORD_FILE)).ok()?;
        let record: super::BootRecord = serde_json::from_slice(&text).ok()?;
        Some(RestorePoint {
            key: key.clone(),
            stage: format!("{} (the source's first boot)", record.stage),
            image: record.image,
            bytes: tree_allocated_bytes(&dir),
            created: created(&dir),
            dir,
        })
    }

    /// The sources' saved first boots the first stages of `plan` would resume, each with its
    /// stage's name (what `strata layers` lists).
    #[must_use]
    pub fn first_boots(
        &self,
        definition: &crate::definition::ImageDefinition,
        plan: &super::Plan,
    ) -> Vec<(String, RestorePoint)> {
        plan.stages
            .iter()
            .filter(|planned| planned.parent.is_none())
            .filter_map(|planned| {
                let key = super::first_boot_key(definition, &planned.stage, &plan.source)?;
                Some((planned.stage.name.to_string(), self.first_boot_point(&key)?))
            })
            .collect()
    }

    /// Removes the oldest restore points until the rest take at most `max` on disk, and returns
    /// the ones it removed. One whose lock another build holds (it is loading it, or installing
    /// a new one) is left, and the total may then stay above the cap until the next call.
    pub fn cap_restore_points(&self, max: ByteSize) -> Result<Vec<RestorePoint>, LayerError> {
        let points = self.restore_points()?;
        let mut total = points.iter().fold(0u64, |sum, point| sum.saturating_add(point.bytes));
        let mut removed = Vec::new();
        for point in points {
            if total <= max.bytes() {
                break;
            }
            // Non-blocking: a build that holds it is using it, and the cap must not wait on it.
            let Some(_exclusive) = self.store().try_lock(&format!("restore-{}", point.key))? else {
                continue;
            };
            total = total.saturating_sub(point.bytes);
            // Another build's cap may have removed it since the listing.
            if point.dir.exists() {
                self.remove_restore_point(&point)?;
                removed.push(point);
            }
        }
        Ok(removed)
    }

    /// Moves `point` out of its layer's folder (or `boots/`) into `tmp/` (one rename: a crash
    /// leaves it whole in one place or the other), then deletes it. The caller holds its lock.
    fn remove_restore_point(&self, point: &RestorePoint) -> Result<(), LayerError> {
        let write_err = |path: &Path| {
            let path = path.to_owned();
            move |source| LayerError::Write { path, source }
        };
        let doomed = self.store().tmp_dir().join(format!(
            "{}.restore-capped-{}",
            point.key,
            std::process::id()
        ));
        fs::rename(&point.dir, &doomed).map_err(write_err(&point.dir))?;
        let parent = point.dir.parent().unwrap_or(&point.dir);
        sync_dir(parent).map_err(write_err(parent))?;
        fs::remove_dir_all(&doomed).map_err(write_err(&doomed))
    }
}

/// When the restore point in `dir` was saved: its restore.json's `created`, else the record's
/// modification time, else 0 (the oldest: an unreadable one goes first).
fn created(dir: &Path) -> u64 {
    let meta_path = dir.join(RESTORE_META_FILE);
    let recorded = fs::read(&meta_path)
        .ok()
        .and_then(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
        .and_then(|meta| meta["created"].as_u64());
    recorded.unwrap_or_else(|| {
        fs::metadata(&meta_path)
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |since| since.as_secs())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod first_boot_tests {
    use super::*;
    use crate::store::Store;

    fn key(c: char) -> LayerKey {
        LayerKey::parse(&c.to_string().repeat(64)).unwrap()
    }

    fn saved_folder(layers: &LayerStore, name: &str) -> PathBuf {
        let saved = layers.store().tmp_dir().join(name);
        fs::create_dir_all(&saved).unwrap();
        fs::write(saved.join(RESTORE_META_FILE), b"{}").unwrap();
        fs::write(saved.join("state.zst"), b"state").unwrap();
        saved
    }

    #[test]
    fn a_saved_boot_is_installed_with_its_record_and_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let layers = LayerStore::new(Store::open(dir.path()).unwrap());
        let record = BootRecord {
            source: "sha256-ab.qcow2".into(),
            image: "web".into(),
            stage: "base".into(),
        };
        assert!(layers.source_restore_point(&key('a')).is_none());
        let first = saved_folder(&layers, "first");
        let installed = layers.install_source_restore_point(&key('a'), &first, &record).unwrap();
        assert_eq!(layers.source_restore_point(&key('a')), Some(installed.clone()));
        assert!(!first.exists());
        let second = saved_folder(&layers, "second");
        fs::write(second.join("state.zst"), b"newer").unwrap();
        layers.install_source_restore_point(&key('a'), &second, &record).unwrap();
        assert_eq!(fs::read(installed.join("state.zst")).unwrap(), b"newer");
        let boots = layers.saved_boots().unwrap();
        assert_eq!(boots.len(), 1);
        assert_eq!(boots[0].record.as_ref(), Some(&record));
    }

    #[test]
    fn a_folder_without_its_record_is_not_resumed_and_is_listed_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let layers = LayerStore::new(Store::open(dir.path()).unwrap());
        let half = layers.boot_dir(&key('b'));
        fs::create_dir_all(&half).unwrap();
        fs::write(half.join(RESTORE_META_FILE), b"{}").unwrap();
        fs::create_dir_all(layers.store().boots_dir().join("not-a-key")).unwrap();
        assert!(layers.source_restore_point(&key('b')).is_none());
        let boots = layers.saved_boots().unwrap();
        assert_eq!(boots.len(), 1);
        assert!(boots[0].record.is_none());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod cap_tests {
    use super::*;
    use crate::layer::{LayerMetadata, METADATA_FILE, RESTORE_DIR};
    use crate::store::Store;

    const MIB: usize = 1 << 20;

    /// A layer folder with a layer.json and a fake restore point of `mib` MiB saved at `created`.
    fn layer_with_restore_point(
        layers: &LayerStore,
        name: char,
        created: u64,
        mib: usize,
    ) -> LayerKey {
        let key = LayerKey::parse(&name.to_string().repeat(64)).unwrap();
        let dir = layers.dir(&key);
        fs::create_dir_all(dir.join(RESTORE_DIR)).unwrap();
        let metadata = LayerMetadata {
            key: key.to_string(),
            stage: format!("stage-{name}"),
            image: "tiny".into(),
            ..LayerMetadata::default()
        };
        fs::write(dir.join(METADATA_FILE), serde_json::to_vec(&metadata).unwrap()).unwrap();
        let record = serde_json::json!({ "format": 1, "created": created });
        fs::write(dir.join(RESTORE_DIR).join(RESTORE_META_FILE), record.to_string()).unwrap();
        fs::write(dir.join(RESTORE_DIR).join("state.zst"), vec![7u8; mib * MIB]).unwrap();
        key
    }

    fn store() -> (tempfile::TempDir, LayerStore) {
        let root = tempfile::tempdir().unwrap();
        let layers = LayerStore::new(Store::open(root.path()).unwrap());
        (root, layers)
    }

    #[test]
    fn the_oldest_restore_points_go_until_the_rest_fit_and_layers_stay() {
        let (_root, layers) = store();
        let newest = layer_with_restore_point(&layers, 'a', 300, 2);
        let oldest = layer_with_restore_point(&layers, 'b', 100, 2);
        let middle = layer_with_restore_point(&layers, 'c', 200, 2);
        let order: Vec<LayerKey> =
            layers.restore_points().unwrap().into_iter().map(|point| point.key).collect();
        assert_eq!(order, [oldest.clone(), middle.clone(), newest.clone()]);

        let removed = layers.cap_restore_points(ByteSize(5 * MIB as u64)).unwrap();
        let removed: Vec<&str> = removed.iter().map(|point| point.stage.as_str()).collect();
        assert_eq!(removed, ["stage-b"], "one removal brings 6 MiB under 5 MiB");
        assert!(layers.restore_point(&oldest).is_none());
        assert!(layers.dir(&oldest).join(METADATA_FILE).is_file(), "the layer stays");
        assert!(layers.restore_point(&middle).is_some() && layers.restore_point(&newest).is_some());
        assert_eq!(
            fs::read_dir(layers.store().tmp_dir()).unwrap().count(),
            0,
            "nothing left in tmp/"
        );

        let again = layers.cap_restore_points(ByteSize(5 * MIB as u64)).unwrap();
        assert!(again.is_empty(), "the rest fit");
        let removed = layers.cap_restore_points(ByteSize(0)).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(layers.restore_points().unwrap().is_empty());
    }

    #[test]
    fn a_restore_point_a_build_is_loading_is_left_and_the_next_oldest_goes() {
        let (_root, layers) = store();
        let oldest = layer_with_restore_point(&layers, 'a', 100, 2);
        let newer = layer_with_restore_point(&layers, 'b', 200, 2);
        let _loading = layers.lock_restore_point_shared(&oldest).unwrap();
        let removed = layers.cap_restore_points(ByteSize(3 * MIB as u64)).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].key, newer);
        assert!(layers.restore_point(&oldest).is_some(), "the one in use stays");
    }

    #[test]
    fn a_sources_saved_first_boot_counts_and_goes_by_age_like_the_others() {
        let (_root, layers) = store();
        let newer = layer_with_restore_point(&layers, 'a', 300, 2);
        let boot = LayerKey::parse(&"e".repeat(64)).unwrap();
        let saved = layers.store().tmp_dir().join("boot");
        fs::create_dir_all(&saved).unwrap();
        let record = serde_json::json!({ "format": 1, "created": 100 });
        fs::write(saved.join(RESTORE_META_FILE), record.to_string()).unwrap();
        fs::write(saved.join("state.zst"), vec![7u8; 2 * MIB]).unwrap();
        let boot_record = crate::layer::BootRecord {
            source: "sha256-1.qcow2".into(),
            image: "tiny".into(),
            stage: "base".into(),
        };
        layers.install_source_restore_point(&boot, &saved, &boot_record).unwrap();
        let points = layers.restore_points().unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].key, boot, "the oldest first");
        assert!(points[0].stage.contains("first boot"), "{:?}", points[0]);
        let removed = layers.cap_restore_points(ByteSize(3 * MIB as u64)).unwrap();
        assert_eq!(removed.len(), 1);
        assert!(layers.source_restore_point(&boot).is_none());
        assert!(!layers.boot_dir(&boot).exists());
        assert!(layers.restore_point(&newer).is_some());
        assert_eq!(fs::read_dir(layers.store().tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn a_restore_point_without_a_readable_record_counts_by_its_files_time() {
        let (_root, layers) = store();
        let key = layer_with_restore_point(&layers, 'a', 100, 1);
        let meta = layers.dir(&key).join(RESTORE_DIR).join(RESTORE_META_FILE);
        fs::write(&meta, "not json").unwrap();
        let points = layers.restore_points().unwrap();
        assert!(points[0].created > 1_700_000_000, "{points:?}");
        assert!(points[0].bytes >= MIB as u64, "{points:?}");
    }
}
