//! Sources' saved first boots: `boots/KEY/` holds what `stage/restore.rs` saves of a guest booted
//! on a source and ready for its first stage's steps (communicator up, cloud-init done), plus
//! `boot.json` naming the source, image and stage it was saved for. A later build whose first
//! stage must be built (the base stage changed, or another definition on the same source)
//! resumes it instead of booting. Keyed by [`super::boot_key`]; gc keeps one while its source is
//! kept; the restore cap weighs them with layers' restore points.
//! Must not boot or resume anything: `build` and `stage` do.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{LayerError, LayerKey, LayerStore, RESTORE_META_FILE};

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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
