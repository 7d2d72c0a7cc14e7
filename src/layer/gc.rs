//! Garbage collection: what the store can let go. A layer is kept when a given definition's
//! current plan uses it or a kept layer stands on it; a source is kept when a kept layer or a
//! given definition needs it, and a source's saved first boot while its source is kept.
//! Everything else in `layers/`, `boots/`, `sources/` and `tmp/` goes.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::{LayerError, Layers};

/// What gc found to delete, and how many bytes that frees.
#[derive(Debug, Default)]
pub struct Garbage {
    pub paths: Vec<PathBuf>,
    pub bytes: u64,
}

/// Finds what is not needed by `keep_layers` (keys) and `keep_sources` (file names in sources/).
pub fn find(
    layers: &Layers,
    keep_layers: &BTreeSet<String>,
    keep_sources: &BTreeSet<String>,
) -> Result<Garbage, LayerError> {
    let all = layers.all()?;
    // Close the kept set under "stands on": parents of kept layers are kept too.
    let mut kept = keep_layers.clone();
    loop {
        let parents: Vec<String> = all
            .iter()
            .filter(|layer| kept.contains(&layer.metadata.key))
            .filter_map(|layer| layer.metadata.parent.clone())
            .filter(|parent| !kept.contains(parent))
            .collect();
        if parents.is_empty() {
            break;
        }
        kept.extend(parents);
    }
    let mut sources = keep_sources.clone();
    for layer in all.iter().filter(|layer| kept.contains(&layer.metadata.key)) {
        if let Some(name) = layer.metadata.backing.strip_prefix("../../sources/") {
            sources.insert(name.to_owned());
        }
    }
    let mut garbage = Garbage::default();
    let store = layers.store();
    for entry in read_dir(&store.layers_dir())? {
        let name = entry.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !kept.contains(&name) {
            garbage.add(entry);
        }
    }
    for entry in read_dir(&store.sources_dir())? {
        let name = entry.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let base = name.trim_end_matches(".partial");
        let is_source = name.starts_with("sha256-") && !name.ends_with(".partial");
        if is_source && !sources.contains(base) {
            garbage.add(entry);
        }
    }
    for boot in layers.saved_boots()? {
        let source_kept =
            boot.record.as_ref().is_some_and(|record| sources.contains(&record.source));
        if !source_kept {
            garbage.add(boot.dir);
        }
    }
    for entry in read_dir(&store.tmp_dir())? {
        garbage.add(entry);
    }
    Ok(garbage)
}

impl Garbage {
    fn add(&mut self, path: PathBuf) {
        self.bytes += disk_usage(&path);
        self.paths.push(path);
    }

    /// Deletes it all. Layers and saved boots go by renaming into tmp/ first, so a crash never
    /// leaves half of one in `layers/` or `boots/`.
    pub fn delete(&self, layers: &Layers) -> Result<(), LayerError> {
        let store = layers.store();
        let tmp = store.tmp_dir();
        let (layers_dir, boots_dir) = (store.layers_dir(), store.boots_dir());
        for path in &self.paths {
            let parent = path.parent();
            let renamed_first =
                parent == Some(layers_dir.as_path()) || parent == Some(boots_dir.as_path());
            let doomed = if renamed_first {
                let name =
                    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let target = tmp.join(format!("{name}.gc-{}", std::process::id()));
                fs::rename(path, &target)
                    .map_err(|source| LayerError::Write { path: path.clone(), source })?;
                target
            } else {
                path.clone()
            };
            let removed = if doomed.is_dir() {
                fs::remove_dir_all(&doomed)
            } else {
                fs::remove_file(&doomed)
            };
            removed.map_err(|source| LayerError::Write { path: doomed, source })?;
        }
        Ok(())
    }
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, LayerError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(LayerError::Write { path: dir.to_owned(), source }),
    };
    Ok(entries.flatten().map(|entry| entry.path()).collect())
}

/// Bytes a file or tree takes on disk (allocated blocks, so sparse images count right).
fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.blocks() * 512;
    }
    fs::read_dir(path)
        .map_or(0, |entries| entries.flatten().map(|entry| disk_usage(&entry.path())).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::LayerMetadata;
    use crate::store::Store;

    fn fake_layer(store: &Store, key: &str, parent: Option<&str>, source: &str) {
        let dir = store.layers_dir().join(key);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(crate::layer::DISK_FILE), b"disk").unwrap();
        let backing = parent.map_or_else(
            || format!("../../sources/{source}"),
            |p| format!("../../layers/{p}/disk.qcow2"),
        );
        let metadata = LayerMetadata {
            key: key.into(),
            parent: parent.map(Into::into),
            backing,
            disk_bytes: 4,
            virtual_bytes: 4,
            ..LayerMetadata::default()
        };
        fs::write(dir.join("layer.json"), serde_json::to_vec(&metadata).unwrap()).unwrap();
    }

    /// A saved first boot of `source`, keyed by `name` repeated.
    fn fake_boot(layers: &Layers, name: char, source: &str) -> crate::layer::LayerKey {
        let key = crate::layer::LayerKey::parse(&name.to_string().repeat(64)).unwrap();
        let saved = layers.store().tmp_dir().join(format!("boot-{name}"));
        fs::create_dir_all(&saved).unwrap();
        fs::write(saved.join(crate::layer::RESTORE_META_FILE), b"{}").unwrap();
        let record = crate::layer::BootRecord {
            source: source.into(),
            image: "tiny".into(),
            stage: "base".into(),
        };
        layers.install_source_restore_point(&key, &saved, &record).unwrap();
        key
    }

    #[test]
    fn keeps_what_kept_layers_stand_on_and_deletes_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let (a, b, c, old) = ("a".repeat(64), "b".repeat(64), "c".repeat(64), "d".repeat(64));
        fs::write(store.sources_dir().join("sha256-1.qcow2"), b"src1").unwrap();
        fs::write(store.sources_dir().join("sha256-2.qcow2"), b"src2").unwrap();
        fake_layer(&store, &a, None, "sha256-1.qcow2");
        fake_layer(&store, &b, Some(&a), "");
        fake_layer(&store, &c, Some(&b), "");
        fake_layer(&store, &old, None, "sha256-2.qcow2");
        fs::create_dir(store.tmp_dir().join("leftover")).unwrap();
        let layers = Layers::new(store.clone());
        let (kept_boot, old_boot) =
            (fake_boot(&layers, 'e', "sha256-1.qcow2"), fake_boot(&layers, 'f', "sha256-2.qcow2"));
        let garbage = find(&layers, &BTreeSet::from([c.clone()]), &BTreeSet::new()).unwrap();
        let mut names: Vec<String> = garbage
            .paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [old.clone(), old_boot.to_string(), "leftover".into(), "sha256-2.qcow2".into()]
        );
        garbage.delete(&layers).unwrap();
        assert!(layers.source_restore_point(&kept_boot).is_some(), "its source is kept");
        assert!(!layers.boot_dir(&old_boot).exists(), "its source goes, and it with it");
        assert!(store.layers_dir().join(&a).exists() && store.layers_dir().join(&c).exists());
        assert!(!store.layers_dir().join(&old).exists());
        assert!(store.sources_dir().join("sha256-1.qcow2").exists());
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0, "nothing half-deleted left");
    }
}
