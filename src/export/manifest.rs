//! `manifest.json`: what one export wrote (each file's name, format, sizes, sha256), where it
//! came from (the layer keys, the source's URL and digest), and when it was built. Pure data.

use serde::{Deserialize, Serialize};

/// Bumped when a field changes incompatibly.
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub manifest_version: u32,
    pub image: String,
    pub stage: String,
    /// The strata that exported the image.
    pub strata_version: String,
    /// The strata that built the stage's layer.
    pub built_by: String,
    /// When the stage's layer was built: seconds since the Unix epoch, and in UTC.
    pub built_at_unix: u64,
    pub built_at: String,
    pub exported_at: String,
    pub firmware: String,
    pub os_id: Option<String>,
    pub os_version: Option<String>,
    pub guest_agent: bool,
    pub source: SourceRecord,
    /// The layers the images were flattened from, the first one on the source first.
    pub layers: Vec<LayerRecord>,
    pub artifacts: Vec<ArtifactRecord>,
    /// Files for a platform (`openstack`, `proxmox`).
    pub targets: Vec<TargetRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// As the definition names it (a URL or a local path), credentials redacted.
    pub url: String,
    /// The sha256 of the source image as stored.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub stage: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// Relative to the manifest's folder.
    pub path: String,
    pub format: String,
    /// qcow2 only: `zstd`, `zlib`, or `None` for an uncompressed image.
    pub compression: Option<String>,
    pub virtual_bytes: u64,
    pub file_bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    pub target: String,
    /// Relative to the manifest's folder.
    pub path: String,
    /// The image file it uses.
    pub image: String,
    pub sha256: String,
}

impl Manifest {
    /// Pretty JSON and a newline.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        Ok(bytes)
    }
}
