//! What is inside an image (DESIGN §10): SPDX 2.3 and CycloneDX 1.6 documents of a built
//! stage's packages, from the record its layer kept at the seal (no boot); which built stages
//! of many definitions hold a package; and the signed provenance `export` writes beside an image
//! (an in-toto Statement with an SLSA Provenance v1 predicate, in a DSSE envelope).
//!
//! Owns the documents' shapes, the license and purl conversions and the DSSE encoding. Reads
//! layer records through `layer`; must not build, boot, write into the store, nor print: it
//! returns bytes and values, and callers write or show them. Signing keys are `trust`'s.

mod cyclonedx;
pub mod dsse;
mod license;
pub mod provenance;
mod purl;
mod query;
mod spdx;

use std::path::Path;

pub use license::{Declared, declared};
pub use purl::{Kind, distro, purl};
pub use query::{Holding, StageState, find_package};

use crate::definition::ImageDefinition;
use crate::drift::Package;
use crate::layer::{BuiltStage, LayerStore, PlanError};

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error(
        "stage `{stage}` of {definition} is not built ({reason}): run `strata build {definition} --stage {stage}` first"
    )]
    NotBuilt { definition: String, stage: String, reason: String },
    #[error(transparent)]
    Plan(PlanError),
    #[error("failed to read {path}, which a step of the build used, for the provenance")]
    ReadInput {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to encode the {what}; this is a bug in strata, please report it")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl SbomError {
    /// Whether the input (a stage the definition does not have) is what is wrong: exit 2.
    #[must_use]
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, SbomError::Plan(PlanError::UnknownStage { .. }))
    }
}

/// The SBOM formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// SPDX 2.3, JSON
    #[default]
    #[value(name = "spdx-json")]
    SpdxJson,
    /// CycloneDX 1.6, JSON
    #[value(name = "cyclonedx-json")]
    CycloneDxJson,
}

impl Format {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Format::SpdxJson => "spdx-json",
            Format::CycloneDxJson => "cyclonedx-json",
        }
    }

    /// The file name ending the ecosystem expects (`.spdx.json`, `.cdx.json`).
    #[must_use]
    pub fn extension(self) -> &'static str {
        match self {
            Format::SpdxJson => "spdx.json",
            Format::CycloneDxJson => "cdx.json",
        }
    }
}

/// The image a stage's system grew from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceImage {
    /// As the definition names it (credentials redacted); a local path for a file source.
    pub url: String,
    /// The file's name (the URL's last segment).
    pub file_name: String,
    pub sha256: String,
}

impl SourceImage {
    /// The URL as a URI: `file://` for a local path.
    #[must_use]
    pub fn uri(&self) -> String {
        if self.url.contains("://") {
            return self.url.clone();
        }
        let path = Path::new(&self.url);
        let absolute = if path.is_absolute() {
            path.to_owned()
        } else {
            std::env::current_dir().map_or_else(|_| path.to_owned(), |dir| dir.join(path))
        };
        url::Url::from_file_path(&absolute).map_or_else(|()| self.url.clone(), String::from)
    }

    /// Where it can be downloaded from, for SPDX's `downloadLocation`: only a network URL.
    fn download_location(&self) -> Option<&str> {
        let lower = self.url.to_ascii_lowercase();
        ["https://", "http://", "ftp://"]
            .iter()
            .any(|scheme| lower.starts_with(scheme))
            .then_some(&self.url)
    }
}

/// Everything an SBOM says about one built stage, from its layer's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    pub image: String,
    pub stage: String,
    /// The stage's layer key.
    pub layer_key: String,
    /// The chain, from the layer on the source up: stage name and layer key.
    pub layers: Vec<(String, String)>,
    /// When the layer was sealed, seconds since the epoch: the document's time, so the same
    /// layer always gives the same bytes.
    pub sealed: u64,
    pub source: SourceImage,
    pub os_id: Option<String>,
    pub os_version: Option<String>,
    /// Sorted by name, then architecture.
    pub packages: Vec<Package>,
}

impl Contents {
    /// From a built stage found in the store.
    #[must_use]
    pub fn of_built(definition: &ImageDefinition, built: &BuiltStage) -> Contents {
        let url = crate::source::SourceUrl::for_location(&definition.source.location).to_string();
        let file_name = url
            .rsplit('/')
            .next()
            .map(|name| name.split(['?', '#']).next().unwrap_or(name))
            .filter(|name| !name.is_empty())
            .unwrap_or("source-image")
            .to_owned();
        let record = &built.layer.metadata;
        Contents {
            image: definition.name.clone(),
            stage: built.stage.name.to_string(),
            layer_key: record.key.clone(),
            layers: built
                .chain
                .iter()
                .map(|(stage, layer)| (stage.clone(), layer.metadata.key.clone()))
                .collect(),
            sealed: record.created,
            source: SourceImage { url, file_name, sha256: built.source.digest.hex().to_owned() },
            os_id: record.os_id.clone(),
            os_version: record.os_version.clone(),
            packages: record.packages.clone(),
        }
    }

    /// `IMAGE-STAGE`.
    #[must_use]
    pub fn name(&self) -> String {
        format!("{}-{}", self.image, self.stage)
    }

    #[must_use]
    pub fn kind(&self) -> Kind {
        Kind::of_os(self.os_id.as_deref())
    }

    /// The purl of one of its packages.
    #[must_use]
    pub fn purl_of(&self, package: &Package) -> Option<String> {
        purl(package, self.kind(), self.os_id.as_deref(), self.os_version.as_deref())
    }

    /// The sealing time as RFC 3339 UTC.
    #[must_use]
    pub fn sealed_at(&self) -> String {
        crate::units::format_utc(
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(self.sealed),
        )
    }
}

/// Finds `stage` (default: the last) built in the store. `shown` is the definition's path as
/// the user typed it, for messages.
pub fn contents(
    definition: &ImageDefinition,
    shown: &Path,
    layers: &LayerStore,
    stage: Option<&str>,
) -> Result<Contents, SbomError> {
    let built =
        crate::layer::built_stage(definition, layers, stage).map_err(|error| match error {
            PlanError::NotBuilt { stage, reason } => {
                SbomError::NotBuilt { definition: shown.display().to_string(), stage, reason }
            }
            other => SbomError::Plan(other),
        })?;
    Ok(Contents::of_built(definition, &built))
}

/// The document in `format`: pretty JSON ending in a newline, the same bytes for the same
/// layer.
pub fn render(contents: &Contents, format: Format) -> Result<Vec<u8>, SbomError> {
    let document = match format {
        Format::SpdxJson => spdx::document(contents),
        Format::CycloneDxJson => cyclonedx::document(contents),
    };
    let mut bytes = serde_json::to_vec_pretty(&document)
        .map_err(|source| SbomError::Encode { what: "SBOM", source })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// A built stage's SBOM: `strata sbom DEF [--stage NAME] [--format F]`.
pub fn sbom(
    definition: &ImageDefinition,
    shown: &Path,
    layers: &LayerStore,
    stage: Option<&str>,
    format: Format,
) -> Result<(Contents, Vec<u8>), SbomError> {
    let contents = contents(definition, shown, layers, stage)?;
    let bytes = render(&contents, format)?;
    Ok((contents, bytes))
}

/// The media type of an SPDX JSON document (the SBOM attached to a layer in the cache).
pub const SPDX_MEDIA_TYPE: &str = "application/spdx+json";

/// One layer's SPDX document from its record alone, for the shared cache (where the definition,
/// and so the source's URL, is not known): the source named by its store file and sha256.
/// `None` if it cannot be encoded.
#[must_use]
pub fn layer_document(
    record: &crate::layer::LayerMetadata,
    source: &crate::source::FetchedSource,
) -> Option<Vec<u8>> {
    let file_name = crate::layer::source_file_name(source);
    let contents = Contents {
        image: record.image.clone(),
        stage: record.stage.clone(),
        layer_key: record.key.clone(),
        layers: vec![(record.stage.clone(), record.key.clone())],
        sealed: record.created,
        source: SourceImage {
            url: file_name.clone(),
            file_name,
            sha256: source.digest.hex().to_owned(),
        },
        os_id: record.os_id.clone(),
        os_version: record.os_version.clone(),
        packages: record.packages.clone(),
    };
    render(&contents, Format::SpdxJson).ok()
}

/// Whether `bytes` is an SPDX 2.3 JSON document of the layer `key` (its namespace ends in it).
#[must_use]
pub fn describes_layer(bytes: &[u8], key: &str) -> bool {
    let Ok(document) = serde_json::from_slice::<serde_json::Value>(bytes) else { return false };
    document["spdxVersion"] == "SPDX-2.3"
        && document["documentNamespace"]
            .as_str()
            .is_some_and(|namespace| namespace.ends_with(&format!("/{key}")))
}

/// A name made of what an SPDX identifier or a CycloneDX `bom-ref` allows: letters, digits,
/// `.` and `-`; anything else becomes `-`.
fn id_safe(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect()
}

#[cfg(test)]
pub(crate) mod tests;
