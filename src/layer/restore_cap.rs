//! The cap on restore points' disk use (`strata build --max-restore-size`): the oldest restore
//! points go until their total is at most the cap, so a long-lived runner's store does not grow
//! without end. Only restore points go, never a layer (a stage whose restore point is gone
//! boots instead of resuming); never one a build is loading or replacing (it holds the restore
//! point's lock). Must not decide when to cap: `build` does.

use std::fs;
use std::path::{Path, PathBuf};

use super::{LayerError, LayerKey, LayerStore, RESTORE_META_FILE};
use crate::store::sync_dir;
use crate::units::ByteSize;

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
        let text = fs::read(dir.join(super::BOOT_RECORD_FILE)).ok()?;
        let record: super::BootRecord = serde_json::from_slice(&text).ok()?;
        Some(RestorePoint {
            key: key.clone(),
            stage: format!("{} (the source's first boot)", record.stage),
            image: record.image,
            bytes: super::store::tree_allocated_bytes(&dir),
            created: created(&dir),
            dir,
        })
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
mod tests {
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
