//! The artifact format: media types, tags and annotations. Bumping a `v1` here makes older
//! strata ignore newer artifacts rather than misread them.

use std::collections::BTreeMap;

use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest};

use crate::layer::LayerKey;

pub const LAYER_ARTIFACT_TYPE: &str = "application/vnd.strata.layer.v1";
/// The config blob: the layer's `layer.json`, as committed.
pub const LAYER_CONFIG_MEDIA_TYPE: &str = "application/vnd.strata.layer.config.v1+json";
/// The one layer blob: `disk.qcow2` compressed with zstd.
pub const LAYER_DISK_MEDIA_TYPE: &str = "application/vnd.strata.layer.disk.v1.qcow2+zstd";

pub const SOURCE_ARTIFACT_TYPE: &str = "application/vnd.strata.source.v1";
pub const SOURCE_CONFIG_MEDIA_TYPE: &str = "application/vnd.strata.source.config.v1+json";
pub const SOURCE_DISK_MEDIA_TYPE: &str = "application/vnd.strata.source.disk.v1+zstd";

pub const RESTORE_ARTIFACT_TYPE: &str = "application/vnd.strata.restore.v1";
pub const RESTORE_CONFIG_MEDIA_TYPE: &str = "application/vnd.strata.restore.config.v1+json";
/// The restore folder as a tar archive, compressed with zstd.
pub const RESTORE_TAR_MEDIA_TYPE: &str = "application/vnd.strata.restore.v1.tar+zstd";

pub const KEY_ANNOTATION: &str = "dev.strata.key";
pub const PARENT_ANNOTATION: &str = "dev.strata.parent";
pub const STAGE_ANNOTATION: &str = "dev.strata.stage";
pub const IMAGE_ANNOTATION: &str = "dev.strata.image";
const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// On an attachment's manifest: the digest of the manifest it is attached to (signed with it,
/// so an attachment cannot be moved to another artifact).
pub const SUBJECT_ANNOTATION: &str = "dev.strata.subject";
/// The empty config of an attachment (`{}`), as OCI 1.1 artifacts have it.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// A layer's tag: its key.
#[must_use]
pub fn layer_tag(key: &LayerKey) -> String {
    key.as_str().to_owned()
}

/// A source's tag: `sha256-HEX` (a tag cannot hold `:`).
#[must_use]
pub fn source_tag(sha256_hex: &str) -> String {
    format!("sha256-{sha256_hex}")
}

/// A restore point's tag: `KEY.restore`.
#[must_use]
pub fn restore_tag(key: &LayerKey) -> String {
    format!("{key}.restore")
}

/// A blob as the manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: &'static str,
    /// `sha256:HEX`.
    pub digest: String,
    pub size: u64,
}

impl Blob {
    fn descriptor(&self, title: Option<&str>) -> OciDescriptor {
        OciDescriptor {
            media_type: self.media_type.to_owned(),
            digest: self.digest.clone(),
            size: i64::try_from(self.size).unwrap_or(i64::MAX),
            urls: None,
            artifact_type: None,
            annotations: title
                .map(|title| BTreeMap::from([(TITLE_ANNOTATION.to_owned(), title.to_owned())])),
        }
    }
}

/// An image manifest for one artifact: a config blob and one content blob. Nothing in it
/// changes between two pushes of the same content, so two runners pushing one key at once
/// write the same manifest.
#[must_use]
pub fn manifest(
    artifact_type: &str,
    config: &Blob,
    content: &Blob,
    title: &str,
    annotations: BTreeMap<String, String>,
) -> OciImageManifest {
    OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
        config: config.descriptor(None),
        layers: vec![content.descriptor(Some(title))],
        subject: None,
        artifact_type: Some(artifact_type.to_owned()),
        annotations: Some(annotations),
    }
}

/// What one kind of artifact is made of.
#[derive(Debug)]
pub struct Shape {
    pub artifact_type: &'static str,
    pub config_media_type: &'static str,
    pub content_media_type: &'static str,
}

pub const LAYER: Shape = Shape {
    artifact_type: LAYER_ARTIFACT_TYPE,
    config_media_type: LAYER_CONFIG_MEDIA_TYPE,
    content_media_type: LAYER_DISK_MEDIA_TYPE,
};

pub const SOURCE: Shape = Shape {
    artifact_type: SOURCE_ARTIFACT_TYPE,
    config_media_type: SOURCE_CONFIG_MEDIA_TYPE,
    content_media_type: SOURCE_DISK_MEDIA_TYPE,
};

pub const RESTORE: Shape = Shape {
    artifact_type: RESTORE_ARTIFACT_TYPE,
    config_media_type: RESTORE_CONFIG_MEDIA_TYPE,
    content_media_type: RESTORE_TAR_MEDIA_TYPE,
};

/// Checks a pulled manifest is one of ours, of the `shape` wanted, and returns its two blobs'
/// descriptors (config, content). `Err` says why not.
pub fn expect_shape<'a>(
    manifest: &'a OciImageManifest,
    shape: &Shape,
) -> Result<(&'a OciDescriptor, &'a OciDescriptor), String> {
    if manifest.artifact_type.as_deref() != Some(shape.artifact_type) {
        return Err(format!(
            "its artifact type is {}, not {}",
            manifest.artifact_type.as_deref().unwrap_or("missing"),
            shape.artifact_type
        ));
    }
    if manifest.config.media_type != shape.config_media_type {
        return Err(format!("its config has media type {}", manifest.config.media_type));
    }
    match manifest.layers.as_slice() {
        [content] if content.media_type == shape.content_media_type => {
            Ok((&manifest.config, content))
        }
        [content] => Err(format!("its blob has media type {}", content.media_type)),
        layers => Err(format!("it has {} blobs, not one", layers.len())),
    }
}
