//! Export: flatten a built stage's layer chain into standalone images (`qemu-img convert`), with
//! their sha256 files, a `manifest.json`, and what OpenStack (`openstack`) and Proxmox VE
//! (`proxmox`) need to use them, and beside them what is inside (`NAME.spdx.json`) and how it
//! was made (`NAME.intoto.jsonl`: SLSA provenance, signed when a key is given; see `sbom`).
//! Every file is written under a temporary name and renamed.
//! Must not build layers, nor write into the store.

mod manifest;
pub mod openstack;
mod output;
pub mod proxmox;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use manifest::{
    ArtifactRecord, LayerRecord, MANIFEST_VERSION, Manifest, SourceRecord, TargetRecord,
};

use crate::definition::{Compression, ExportFormat, ExportTarget, Firmware, ImageDefinition};
use crate::events::{Event, Events};
use crate::layer::{Layer, Layers, PlanError};
use crate::qemu::QemuError;
use crate::qemu::img::{self, ConvertOptions, ImageFormat};

/// How long one conversion, or one check, may take.
const CONVERT_WITHIN: Duration = Duration::from_secs(3 * 3600);
const CHECK_WITHIN: Duration = Duration::from_secs(1800);
/// Parallel coroutines for `qemu-img convert -m`.
const COROUTINES: u32 = 8;
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "stage `{stage}` of {definition} is not built ({reason}): run `strata build {definition} --stage {stage}` first"
    )]
    NotBuilt { definition: String, stage: String, reason: String },
    #[error(
        "{path} already exists: pass --force to overwrite it, or export to another folder with -o"
    )]
    Exists { path: PathBuf },
    #[error(
        "failed to create the output folder {path}: check that it is writable, or choose another with -o"
    )]
    OutputDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write {path}: check the output folder's free space and permissions")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to flatten stage `{stage}` into {path}")]
    Convert {
        stage: String,
        path: PathBuf,
        #[source]
        source: Box<QemuError>,
    },
    #[error("the exported image {path} failed its check")]
    Check {
        path: PathBuf,
        #[source]
        source: Box<QemuError>,
    },
    #[error(
        "the exported image {path} is not what was asked for: {problem}; this is a bug in strata, please report it"
    )]
    Unexpected { path: PathBuf, problem: String },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Sbom(#[from] crate::sbom::SbomError),
    #[error("failed to encode {path}")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// What the command line asked for; `None` takes the definition's `[export]` table and its
/// last stage.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub stage: Option<String>,
    pub format: Option<ExportFormat>,
    pub target: Option<ExportTarget>,
}

/// Where the files go.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub output_dir: PathBuf,
    /// Replace files that are already there.
    pub force: bool,
    /// Signs the provenance (a DSSE envelope); without one it is the bare Statement.
    pub signer: Option<std::sync::Arc<dyn crate::sbom::dsse::Signer>>,
}

/// An export, resolved against the store: the layer to flatten and everything the files say.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    pub image: String,
    pub stage: String,
    /// The stage's layer: its disk is the top of the chain that is flattened.
    pub layer: Layer,
    /// The chain's layers, the first one on the source first.
    pub chain: Vec<LayerRecord>,
    pub source: SourceRecord,
    pub firmware: Firmware,
    pub cpus: u32,
    pub memory_mib: u64,
    pub formats: Vec<ExportFormat>,
    pub compression: Compression,
    pub targets: Vec<ExportTarget>,
    /// What the SBOM beside the images says.
    pub contents: crate::sbom::Contents,
    /// What the provenance names as the build's inputs.
    pub inputs: crate::sbom::provenance::BuildInputs,
}

/// What the platform files say about one exported image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    /// `IMAGE-STAGE`: the name files and uploaded images get.
    pub name: String,
    pub image: String,
    pub stage: String,
    /// The image file's name.
    pub file: String,
    pub format: ImageFormat,
    pub sha256: String,
    pub virtual_bytes: u64,
    pub firmware: Firmware,
    pub cpus: u32,
    pub memory_mib: u64,
    pub os_id: Option<String>,
    pub os_version: Option<String>,
    pub guest_agent: bool,
    pub layer_key: String,
    pub strata_version: String,
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportOutcome {
    pub manifest: Manifest,
    pub manifest_path: PathBuf,
    /// Every file written, in the order written.
    pub files: Vec<PathBuf>,
}

/// Finds the layer to export: the stage (or the last one) must be built, with every layer under
/// it. `shown` is the definition's path as the user typed it, for messages.
pub fn resolve(
    definition: &ImageDefinition,
    shown: &Path,
    layers: &Layers,
    selection: &Selection,
) -> Result<ExportPlan, ExportError> {
    let stage = match &selection.stage {
        Some(stage) => stage.clone(),
        None => definition.stages.last().map(|stage| stage.name.to_string()).unwrap_or_default(),
    };
    let built =
        crate::layer::built_stage(definition, layers, Some(&stage)).map_err(
            |error| match error {
                PlanError::NotBuilt { stage, reason } => {
                    ExportError::NotBuilt { definition: shown.display().to_string(), stage, reason }
                }
                other => ExportError::Plan(other),
            },
        )?;
    let contents = crate::sbom::Contents::of_built(definition, &built);
    let inputs = crate::sbom::provenance::BuildInputs::collect(definition, shown, &built)?;
    let chain = built
        .chain
        .iter()
        .map(|(stage, layer)| LayerRecord { stage: stage.clone(), key: layer.metadata.key.clone() })
        .collect();
    let source = built.source;
    let layer = built.layer;
    let export = &definition.export;
    Ok(ExportPlan {
        image: definition.name.clone(),
        stage,
        layer,
        chain,
        source: SourceRecord {
            url: crate::source::SourceUrl::for_location(&definition.source.location).to_string(),
            sha256: source.digest.hex().to_owned(),
        },
        firmware: definition.machine.firmware,
        cpus: definition.machine.cpus,
        memory_mib: definition.machine.memory.mebibytes(),
        formats: selection.format.map_or_else(|| export.formats.clone(), |format| vec![format]),
        compression: export.compression,
        targets: selection.target.map_or_else(|| export.targets.clone(), |target| vec![target]),
        contents,
        inputs,
    })
}

fn image_format(format: ExportFormat) -> ImageFormat {
    match format {
        ExportFormat::Qcow2 => ImageFormat::Qcow2,
        ExportFormat::Raw => ImageFormat::Raw,
        ExportFormat::Vmdk => ImageFormat::Vmdk,
    }
}

fn target_name(target: ExportTarget) -> &'static str {
    match target {
        ExportTarget::Generic => "generic",
        ExportTarget::Openstack => "openstack",
        ExportTarget::Proxmox => "proxmox",
    }
}

/// The qcow2 compression, for a qcow2 output.
fn compression_of(format: ExportFormat, compression: Compression) -> Option<img::Qcow2Compression> {
    match (format, compression) {
        (ExportFormat::Qcow2, Compression::Zlib) => Some(img::Qcow2Compression::Zlib),
        (ExportFormat::Qcow2, Compression::Zstd) => Some(img::Qcow2Compression::Zstd),
        _ => None,
    }
}

impl ExportPlan {
    /// `IMAGE-STAGE`.
    #[must_use]
    pub fn base_name(&self) -> String {
        format!("{}-{}", self.image, self.stage)
    }

    /// `IMAGE-STAGE.spdx.json`: the SBOM.
    #[must_use]
    pub fn sbom_name(&self) -> String {
        format!("{}.{}", self.base_name(), crate::sbom::Format::SpdxJson.extension())
    }

    /// `IMAGE-STAGE.intoto.jsonl`: the provenance.
    #[must_use]
    pub fn provenance_name(&self) -> String {
        format!("{}.intoto.jsonl", self.base_name())
    }

    #[must_use]
    pub fn artifact_name(&self, format: ExportFormat) -> String {
        format!("{}.{}", self.base_name(), image_format(format).name())
    }

    /// The platform file of `target`; `None` for `generic`, which needs none.
    #[must_use]
    pub fn target_file(&self, target: ExportTarget) -> Option<String> {
        match target {
            ExportTarget::Generic => None,
            ExportTarget::Openstack => Some(format!("{}.openstack.json", self.base_name())),
            ExportTarget::Proxmox => Some(format!("{}.proxmox.sh", self.base_name())),
        }
    }

    /// Every file this export writes, by name.
    #[must_use]
    pub fn output_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for format in &self.formats {
            let artifact = self.artifact_name(*format);
            names.push(format!("{artifact}.sha256"));
            names.push(artifact);
        }
        names.extend(self.targets.iter().filter_map(|target| self.target_file(*target)));
        names.push(self.sbom_name());
        names.push(self.provenance_name());
        names.push(MANIFEST_FILE.to_owned());
        names
    }

    fn facts(&self, artifact: &ArtifactRecord, format: ExportFormat) -> ImageFacts {
        let metadata = &self.layer.metadata;
        ImageFacts {
            name: self.base_name(),
            image: self.image.clone(),
            stage: self.stage.clone(),
            file: artifact.path.clone(),
            format: image_format(format),
            sha256: artifact.sha256.clone(),
            virtual_bytes: artifact.virtual_bytes,
            firmware: self.firmware,
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            os_id: metadata.os_id.clone(),
            os_version: metadata.os_version.clone(),
            guest_agent: metadata.guest_agent,
            layer_key: metadata.key.clone(),
            strata_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// The export of `plan` already in `dir`, when there is one to reuse: its `manifest.json` is of
/// the same layer, with an artifact of each of the plan's formats (same compression) whose file
/// has the recorded size, and each of the plan's target files with its recorded sha256. `None`
/// means export again. Reads only the manifest and the small target files.
#[must_use]
pub fn find_existing(plan: &ExportPlan, dir: &Path) -> Option<Manifest> {
    let bytes = std::fs::read(dir.join(MANIFEST_FILE)).ok()?;
    let manifest: Manifest = serde_json::from_slice(&bytes).ok()?;
    let same_layer = manifest.image == plan.image
        && manifest.stage == plan.stage
        && manifest.layers.last().is_some_and(|layer| layer.key == plan.layer.metadata.key);
    if !same_layer {
        return None;
    }
    for format in &plan.formats {
        let name = plan.artifact_name(*format);
        let compression = compression_of(*format, plan.compression).map(|c| c.name().to_owned());
        let artifact = manifest.artifacts.iter().find(|artifact| artifact.path == name)?;
        let size = std::fs::metadata(dir.join(&name)).ok()?.len();
        if artifact.compression != compression || size != artifact.file_bytes {
            return None;
        }
    }
    for target in &plan.targets {
        let Some(name) = plan.target_file(*target) else { continue };
        let record = manifest.targets.iter().find(|record| record.path == name)?;
        let bytes = std::fs::read(dir.join(&name)).ok()?;
        if crate::layer::sha256_hex(&bytes) != record.sha256 {
            return None;
        }
    }
    Some(manifest)
}

/// Whether `dir` holds an export of the same image and stage (of any layer): replacing it is
/// what exporting that stage again means.
#[must_use]
pub fn find_previous(plan: &ExportPlan, dir: &Path) -> bool {
    std::fs::read(dir.join(MANIFEST_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Manifest>(&bytes).ok())
        .is_some_and(|manifest| manifest.image == plan.image && manifest.stage == plan.stage)
}

/// Writes the plan's images, their sha256 files, the platform files and `manifest.json` into
/// the output folder. Nothing there is replaced without `force`; checked before any work.
pub async fn export(
    plan: &ExportPlan,
    options: &ExportOptions,
    events: &Events,
) -> Result<ExportOutcome, ExportError> {
    let dir = &options.output_dir;
    std::fs::create_dir_all(dir)
        .map_err(|source| ExportError::OutputDir { path: dir.clone(), source })?;
    if !options.force {
        for name in plan.output_names() {
            let path = dir.join(&name);
            if path.symlink_metadata().is_ok() {
                return Err(ExportError::Exists { path });
            }
        }
    }
    let mut files = Vec::new();
    let mut artifacts = Vec::new();
    for format in &plan.formats {
        let artifact = convert_one(plan, *format, options, events).await?;
        let path = dir.join(&artifact.path);
        let sha_name = format!("{}.sha256", artifact.path);
        let sha_line = format!("{}  {}\n", artifact.sha256, artifact.path);
        write(dir, &sha_name, sha_line.as_bytes(), 0o644, options.force)?;
        events.emit(Event::ExportArtifact {
            path: path.clone(),
            format: artifact.format.clone(),
            bytes: artifact.file_bytes,
            sha256: artifact.sha256.clone(),
        });
        files.push(path);
        files.push(dir.join(sha_name));
        artifacts.push((artifact, *format));
    }
    let mut targets = Vec::new();
    if let Some((primary, format)) = artifacts.first() {
        let facts = plan.facts(primary, *format);
        for target in &plan.targets {
            let Some(name) = plan.target_file(*target) else { continue };
            let path = dir.join(&name);
            let (bytes, mode) = match target {
                ExportTarget::Openstack => (
                    openstack::render(&facts)
                        .map_err(|source| ExportError::Encode { path: path.clone(), source })?,
                    0o644,
                ),
                ExportTarget::Proxmox => (proxmox::render(&facts).into_bytes(), 0o755),
                ExportTarget::Generic => continue,
            };
            write(dir, &name, &bytes, mode, options.force)?;
            let sha256 = crate::layer::sha256_hex(&bytes);
            events.emit(Event::ExportArtifact {
                path: path.clone(),
                format: target_name(*target).to_owned(),
                bytes: bytes.len() as u64,
                sha256: sha256.clone(),
            });
            targets.push(TargetRecord {
                target: target_name(*target).to_owned(),
                path: name,
                image: primary.path.clone(),
                sha256,
            });
            files.push(path);
        }
    }
    let (sbom, provenance) = write_sbom_and_provenance(plan, options, &artifacts, events)?;
    files.push(sbom);
    files.push(provenance);
    let manifest =
        manifest(plan, artifacts.into_iter().map(|(artifact, _)| artifact).collect(), targets);
    let manifest_path = dir.join(MANIFEST_FILE);
    let bytes = manifest
        .to_bytes()
        .map_err(|source| ExportError::Encode { path: manifest_path.clone(), source })?;
    write(dir, MANIFEST_FILE, &bytes, 0o644, options.force)?;
    events.emit(Event::ExportArtifact {
        path: manifest_path.clone(),
        format: "manifest".to_owned(),
        bytes: bytes.len() as u64,
        sha256: crate::layer::sha256_hex(&bytes),
    });
    files.push(manifest_path.clone());
    Ok(ExportOutcome { manifest, manifest_path, files })
}

/// The SBOM, then the provenance naming the images and the SBOM by their digests.
fn write_sbom_and_provenance(
    plan: &ExportPlan,
    options: &ExportOptions,
    artifacts: &[(ArtifactRecord, ExportFormat)],
    events: &Events,
) -> Result<(PathBuf, PathBuf), ExportError> {
    use crate::sbom::provenance::{self, Subject};
    let dir = &options.output_dir;
    let sbom_name = plan.sbom_name();
    let sbom = crate::sbom::render(&plan.contents, crate::sbom::Format::SpdxJson)?;
    write(dir, &sbom_name, &sbom, 0o644, options.force)?;
    let sbom_sha256 = crate::layer::sha256_hex(&sbom);
    events.emit(Event::ExportArtifact {
        path: dir.join(&sbom_name),
        format: "spdx-json".to_owned(),
        bytes: sbom.len() as u64,
        sha256: sbom_sha256.clone(),
    });
    let subjects: Vec<Subject> = artifacts
        .iter()
        .map(|(artifact, _)| Subject {
            name: artifact.path.clone(),
            sha256: artifact.sha256.clone(),
        })
        .collect();
    let byproducts = [Subject { name: sbom_name.clone(), sha256: sbom_sha256 }];
    let statement = provenance::statement(&plan.contents, &plan.inputs, &subjects, &byproducts);
    let line = provenance::jsonl(&statement, options.signer.as_deref())?;
    let provenance_name = plan.provenance_name();
    write(dir, &provenance_name, &line, 0o644, options.force)?;
    let format = if options.signer.is_some() { "provenance-dsse" } else { "provenance" };
    events.emit(Event::ExportArtifact {
        path: dir.join(&provenance_name),
        format: format.to_owned(),
        bytes: line.len() as u64,
        sha256: crate::layer::sha256_hex(&line),
    });
    Ok((dir.join(sbom_name), dir.join(provenance_name)))
}

fn manifest(
    plan: &ExportPlan,
    artifacts: Vec<ArtifactRecord>,
    targets: Vec<TargetRecord>,
) -> Manifest {
    let metadata = &plan.layer.metadata;
    let built = SystemTime::UNIX_EPOCH + Duration::from_secs(metadata.created);
    Manifest {
        manifest_version: MANIFEST_VERSION,
        image: plan.image.clone(),
        stage: plan.stage.clone(),
        strata_version: env!("CARGO_PKG_VERSION").to_owned(),
        built_by: metadata.strata_version.clone(),
        built_at_unix: metadata.created,
        built_at: crate::units::format_utc(built),
        exported_at: crate::units::format_utc(SystemTime::now()),
        firmware: plan.firmware.name().to_owned(),
        os_id: metadata.os_id.clone(),
        os_version: metadata.os_version.clone(),
        guest_agent: metadata.guest_agent,
        source: plan.source.clone(),
        layers: plan.chain.clone(),
        artifacts,
        targets,
    }
}

fn write(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
    overwrite: bool,
) -> Result<(), ExportError> {
    let path = dir.join(name);
    output::write_file(dir, name, bytes, mode, overwrite).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            ExportError::Exists { path }
        } else {
            ExportError::Write { path, source }
        }
    })
}

/// Flattens the chain into one image under a temporary name, checks it (no backing file, no
/// corruption, the right size) while it hashes it, and renames it into place.
async fn convert_one(
    plan: &ExportPlan,
    format: ExportFormat,
    options: &ExportOptions,
    events: &Events,
) -> Result<ArtifactRecord, ExportError> {
    let dir = &options.output_dir;
    let name = plan.artifact_name(format);
    let path = dir.join(&name);
    let temp = output::TempOutput::reserve(dir, &name)
        .map_err(|source| ExportError::Write { path: path.clone(), source })?;
    let compression = compression_of(format, plan.compression);
    let convert = ConvertOptions {
        format: image_format(format),
        compression,
        out_of_order: true,
        coroutines: Some(COROUTINES),
        within: CONVERT_WITHIN,
    };
    let total = plan.layer.metadata.virtual_bytes;
    events.emit(Event::ExportStarted {
        path: path.clone(),
        format: image_format(format).name().to_owned(),
        virtual_bytes: total,
    });
    let mut progress = |percent: f64| {
        let done = (percent.clamp(0.0, 100.0) / 100.0 * total as f64) as u64;
        events.emit(Event::ExportConvertProgress {
            path: path.clone(),
            done_bytes: done,
            total_bytes: total,
        });
    };
    img::convert(&plan.layer.disk(), temp.path(), &convert, &mut progress).await.map_err(
        |source| ExportError::Convert {
            stage: plan.stage.clone(),
            path: path.clone(),
            source: Box::new(source),
        },
    )?;
    // Hashed while qemu-img checks it: both only read the finished file, and the hash is most
    // of what an export adds to the conversion. (A failed check drops the hash.)
    let temp_path = temp.path().to_owned();
    let hashing = tokio::task::spawn_blocking(move || crate::layer::hash_file(&temp_path));
    let info = img::info(temp.path())
        .await
        .map_err(|source| ExportError::Check { path: path.clone(), source: Box::new(source) })?;
    if let Some(backing) = &info.backing_filename {
        let problem = format!("it has the backing file {backing}");
        return Err(ExportError::Unexpected { path, problem });
    }
    if info.format != image_format(format).name() || info.virtual_size != total {
        let problem = format!(
            "it is {} of {} bytes, not {} of {total}",
            info.format,
            info.virtual_size,
            image_format(format).name()
        );
        return Err(ExportError::Unexpected { path, problem });
    }
    // qemu-img checks qcow2 and vmdk; raw has nothing to check.
    if format != ExportFormat::Raw {
        img::check(temp.path(), CHECK_WITHIN).await.map_err(|source| ExportError::Check {
            path: path.clone(),
            source: Box::new(source),
        })?;
    }
    let hashed = hashing.await.map_err(|error| ExportError::Write {
        path: path.clone(),
        source: std::io::Error::other(error),
    })?;
    let (sha256, file_bytes, _) =
        hashed.map_err(|source| ExportError::Write { path: path.clone(), source })?;
    temp.persist(&path, 0o644, options.force).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            ExportError::Exists { path: path.clone() }
        } else {
            ExportError::Write { path: path.clone(), source }
        }
    })?;
    Ok(ArtifactRecord {
        path: name,
        format: image_format(format).name().to_owned(),
        compression: compression.map(|compression| compression.name().to_owned()),
        virtual_bytes: info.virtual_size,
        file_bytes,
        sha256,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// The demo's final stage, as the platform renderers see it.
    pub(crate) fn facts(firmware: Firmware) -> ImageFacts {
        ImageFacts {
            name: "demo-final".into(),
            image: "demo".into(),
            stage: "final".into(),
            file: "demo-final.qcow2".into(),
            format: ImageFormat::Qcow2,
            sha256: "00".repeat(32),
            virtual_bytes: 4 << 30,
            firmware,
            cpus: 2,
            memory_mib: 1024,
            os_id: Some("debian".into()),
            os_version: Some("12".into()),
            guest_agent: true,
            layer_key: "ab12".into(),
            strata_version: "0.1.0".into(),
        }
    }

    use crate::process::run_for_test as run;

    /// A project with a small real source image and a two-stage definition, and its store.
    struct Fixture {
        dir: tempfile::TempDir,
        definition: ImageDefinition,
        layers: Layers,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let source = dir.path().join("src.qcow2");
            let source_str = source.to_str().unwrap();
            run("qemu-img", &["create", "-q", "-f", "qcow2", source_str, "64M"]);
            run("qemu-io", &["-c", "write -P 0x5a 0 2M", source_str]);
            let (sha256, _, _) = crate::layer::hash_file(&source).unwrap();
            let text = format!(
                "name = \"tiny\"\n[source]\nurl = \"src.qcow2\"\nchecksum = \"sha256:{sha256}\"\n\
                 [machine]\nfirmware = \"uefi\"\ncpus = 3\nmemory = \"768M\"\n\
                 [[stage]]\nname = \"base\"\nsteps = [{{ shell = \"true\" }}]\n\
                 [[stage]]\nname = \"top\"\nsteps = [{{ shell = \"true\" }}]\n\
                 [export]\nformats = [\"qcow2\", \"raw\"]\ncompression = \"zstd\"\n\
                 targets = [\"openstack\", \"proxmox\"]\n"
            );
            let path = dir.path().join("tiny.toml");
            std::fs::write(&path, text).unwrap();
            let definition = crate::definition::load(&path).unwrap();
            let store = crate::store::Store::open(&dir.path().join("store")).unwrap();
            Fixture { dir, definition, layers: Layers::new(store) }
        }

        async fn fetch(&self) {
            let options = crate::source::FetchOptions::default();
            crate::source::fetch(
                self.layers.store(),
                &self.definition.source,
                options,
                &Events::none(),
            )
            .await
            .unwrap();
        }

        /// Commits a real layer for each stage in turn: an overlay on the one below with a
        /// few MiB of its own, as a build would leave it.
        async fn build(&self) {
            for (index, stage) in ["base", "top"].iter().enumerate() {
                let options = crate::layer::PlanOptions {
                    stop_at: Some((*stage).to_owned()),
                    ..crate::layer::PlanOptions::default()
                };
                let plan = crate::layer::plan_from_store(&self.definition, &self.layers, &options)
                    .unwrap()
                    .unwrap();
                let planned = plan.stages.last().unwrap();
                let backing = planned.backing(&plan.source);
                let work = self.layers.begin(&planned.key).unwrap();
                img::create_overlay(&work.disk(), &backing, "qcow2", None).await.unwrap();
                let offset = format!("write -P 0x{:x} {}M 3M", 0x11 * (index + 1), 8 * (index + 1));
                run("qemu-io", &["-c", &offset, work.disk().to_str().unwrap()]);
                let metadata = crate::layer::LayerMetadata {
                    created: 1_795_906_865,
                    strata_version: "0.0.9".into(),
                    virtual_bytes: 64 << 20,
                    build_seconds: 1.0,
                    os_id: Some("debian".into()),
                    os_version: Some("12".into()),
                    guest_agent: true,
                    ..planned.metadata("tiny", backing)
                };
                self.layers.commit(work, metadata).unwrap();
            }
        }

        fn resolve(&self, selection: &Selection) -> Result<ExportPlan, ExportError> {
            resolve(&self.definition, Path::new("images/tiny.toml"), &self.layers, selection)
        }

        fn out(&self) -> PathBuf {
            self.dir.path().join("out")
        }
    }

    fn not_built_message(result: Result<ExportPlan, ExportError>) -> String {
        match result {
            Err(error @ ExportError::NotBuilt { .. }) => {
                let message = error.to_string();
                assert_eq!(crate::Error::from(error).exit_code(), 1);
                message
            }
            other => panic!("expected NotBuilt, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_stage_that_is_not_built_names_the_build_command() {
        let fixture = Fixture::new();
        let message = not_built_message(fixture.resolve(&Selection::default()));
        assert!(
            message.contains("run `strata build images/tiny.toml --stage top` first"),
            "{message}"
        );
        assert!(message.contains("source image is not in the store"), "{message}");
        fixture.fetch().await;
        let selection = Selection { stage: Some("base".into()), ..Selection::default() };
        let message = not_built_message(fixture.resolve(&selection));
        assert!(message.contains("`strata build images/tiny.toml --stage base`"), "{message}");
        assert!(message.contains("stage `base` has no layer"), "{message}");
        let selection = Selection { stage: Some("nope".into()), ..Selection::default() };
        assert_eq!(
            crate::Error::from(fixture.resolve(&selection).unwrap_err()).exit_code(),
            2,
            "an unknown stage is a usage error"
        );
    }

    #[tokio::test]
    async fn export_flattens_the_chain_and_writes_checksums_targets_and_manifest() {
        let fixture = Fixture::new();
        fixture.fetch().await;
        fixture.build().await;
        let plan = fixture.resolve(&Selection::default()).unwrap();
        assert_eq!(plan.stage, "top");
        let options = ExportOptions { output_dir: fixture.out(), force: false, signer: None };
        let recorder = std::sync::Arc::new(crate::events::Recorder::default());
        let events = Events::none().with(recorder.clone());
        let outcome = export(&plan, &options, &events).await.unwrap();
        let out = fixture.out();

        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "manifest.json",
                "tiny-top.intoto.jsonl",
                "tiny-top.openstack.json",
                "tiny-top.proxmox.sh",
                "tiny-top.qcow2",
                "tiny-top.qcow2.sha256",
                "tiny-top.raw",
                "tiny-top.raw.sha256",
                "tiny-top.spdx.json",
            ],
            "no temporary file is left"
        );
        assert_eq!(outcome.files.len(), 9);

        // The manifest as written: layers, source, artifacts whose digests match their files.
        let manifest: Manifest =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest, outcome.manifest);
        assert_eq!((manifest.image.as_str(), manifest.stage.as_str()), ("tiny", "top"));
        assert_eq!(manifest.built_at, "2026-11-28T23:01:05Z");
        assert_eq!(manifest.built_at_unix, 1_795_906_865);
        assert_eq!(manifest.built_by, "0.0.9");
        assert_eq!(manifest.strata_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(manifest.firmware, "uefi");
        let stages: Vec<&str> = manifest.layers.iter().map(|layer| layer.stage.as_str()).collect();
        assert_eq!(stages, ["base", "top"]);
        assert_eq!(manifest.layers[1].key, plan.layer.metadata.key);
        assert_eq!(manifest.source.url, fixture.dir.path().join("src.qcow2").display().to_string());
        let (source_sha, _, _) =
            crate::layer::hash_file(&fixture.dir.path().join("src.qcow2")).unwrap();
        assert_eq!(manifest.source.sha256, source_sha);
        assert_eq!(manifest.artifacts.len(), 2);
        for artifact in &manifest.artifacts {
            let path = out.join(&artifact.path);
            let (sha256, size, _) = crate::layer::hash_file(&path).unwrap();
            assert_eq!(artifact.sha256, sha256, "{}", artifact.path);
            assert_eq!(artifact.file_bytes, size);
            assert_eq!(artifact.virtual_bytes, 64 << 20);
            let line =
                std::fs::read_to_string(out.join(format!("{}.sha256", artifact.path))).unwrap();
            assert_eq!(line, format!("{sha256}  {}\n", artifact.path));
            let check = std::process::Command::new("sha256sum")
                .arg("-c")
                .arg(format!("{}.sha256", artifact.path))
                .current_dir(&out)
                .output()
                .unwrap();
            assert!(check.status.success(), "sha256sum -c {}", artifact.path);
            // Byte for byte what the chain shows the guest.
            run(
                "qemu-img",
                &[
                    "compare",
                    "-f",
                    "qcow2",
                    "-F",
                    &artifact.format,
                    plan.layer.disk().to_str().unwrap(),
                    path.to_str().unwrap(),
                ],
            );
            let info: serde_json::Value = serde_json::from_slice(
                &run("qemu-img", &["info", "--output=json", path.to_str().unwrap()]).stdout,
            )
            .unwrap();
            assert!(info.get("backing-filename").is_none(), "{info}");
            assert_eq!(info["format"], artifact.format.as_str());
        }
        assert_eq!(manifest.artifacts[0].compression.as_deref(), Some("zstd"));
        assert_eq!(manifest.artifacts[1].compression, None);
        let qcow2 = String::from_utf8(
            run("qemu-img", &["info", out.join("tiny-top.qcow2").to_str().unwrap()]).stdout,
        )
        .unwrap();
        assert!(qcow2.contains("compression type: zstd"), "{qcow2}");
        assert_eq!(manifest.targets.len(), 2);
        for target in &manifest.targets {
            assert_eq!(target.image, "tiny-top.qcow2");
            let (sha256, _, _) = crate::layer::hash_file(&out.join(&target.path)).unwrap();
            assert_eq!(target.sha256, sha256);
        }

        // The platform files describe the first image and the definition's machine.
        let glance: openstack::GlanceImage =
            serde_json::from_slice(&std::fs::read(out.join("tiny-top.openstack.json")).unwrap())
                .unwrap();
        assert_eq!(glance.properties["hw_firmware_type"], "uefi");
        assert_eq!(glance.properties["os_distro"], "debian");
        assert_eq!(glance.min_disk, 1);
        assert_eq!(glance.sha256, manifest.artifacts[0].sha256);
        let script = std::fs::read_to_string(out.join("tiny-top.proxmox.sh")).unwrap();
        assert!(script.contains("--cores 3 --memory 768"), "{script}");
        assert!(script.contains("--bios ovmf"), "{script}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(out.join("tiny-top.proxmox.sh")).unwrap().permissions().mode()
                & 0o777,
            0o755
        );
        run("sh", &["-n", out.join("tiny-top.proxmox.sh").to_str().unwrap()]);

        // Progress came in bytes, ending at the whole virtual size.
        let events = recorder.events();
        let last = events.iter().rev().find_map(|event| match event {
            Event::ExportConvertProgress { done_bytes, total_bytes, .. } => {
                Some((*done_bytes, *total_bytes))
            }
            _ => None,
        });
        assert_eq!(last, Some((64 << 20, 64 << 20)));
        let exported =
            events.iter().filter(|event| matches!(event, Event::ExportArtifact { .. })).count();
        assert_eq!(exported, 7, "two images, two target files, SBOM, provenance, the manifest");

        // The provenance names both images by their digests, the SBOM as a byproduct, the
        // definition and the source.
        let line = std::fs::read_to_string(out.join("tiny-top.intoto.jsonl")).unwrap();
        assert_eq!(line.lines().count(), 1);
        let statement: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
        assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
        for (subject, artifact) in
            statement["subject"].as_array().unwrap().iter().zip(&manifest.artifacts)
        {
            assert_eq!(subject["name"], artifact.path.as_str());
            assert_eq!(subject["digest"]["sha256"], artifact.sha256.as_str());
        }
        let predicate = &statement["predicate"];
        let definition_sha =
            crate::layer::sha256_hex(&std::fs::read(&fixture.definition.path).unwrap());
        assert_eq!(
            predicate["buildDefinition"]["externalParameters"]["definition"]["digest"]["sha256"],
            definition_sha
        );
        assert_eq!(predicate["buildDefinition"]["externalParameters"]["stage"], "top");
        assert_eq!(
            predicate["buildDefinition"]["resolvedDependencies"][0]["digest"]["sha256"],
            source_sha
        );
        assert_eq!(
            predicate["runDetails"]["builder"]["version"]["strata"],
            env!("CARGO_PKG_VERSION")
        );
        let (sbom_sha, _, _) = crate::layer::hash_file(&out.join("tiny-top.spdx.json")).unwrap();
        assert_eq!(predicate["runDetails"]["byproducts"][0]["digest"]["sha256"], sbom_sha);
        let sbom: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("tiny-top.spdx.json")).unwrap())
                .unwrap();
        assert_eq!(sbom["packages"][0]["checksums"][0]["checksumValue"], source_sha);
    }

    #[tokio::test]
    async fn existing_outputs_are_kept_unless_forced() {
        let fixture = Fixture::new();
        fixture.fetch().await;
        fixture.build().await;
        let selection = Selection {
            format: Some(ExportFormat::Raw),
            target: Some(ExportTarget::Generic),
            ..Selection::default()
        };
        let plan = fixture.resolve(&selection).unwrap();
        assert_eq!(
            plan.output_names(),
            [
                "tiny-top.raw.sha256",
                "tiny-top.raw",
                "tiny-top.spdx.json",
                "tiny-top.intoto.jsonl",
                "manifest.json"
            ]
        );
        let out = fixture.out();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("manifest.json"), b"someone else's").unwrap();
        let options = ExportOptions { output_dir: out.clone(), force: false, signer: None };
        let error = export(&plan, &options, &Events::none()).await.unwrap_err();
        assert!(
            matches!(&error, ExportError::Exists { path } if path.ends_with("manifest.json")),
            "{error}"
        );
        assert!(error.to_string().contains("pass --force"), "{error}");
        assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), b"someone else's");
        assert!(!out.join("tiny-top.raw").exists(), "nothing was converted");

        let forced = ExportOptions { output_dir: out.clone(), force: true, signer: None };
        export(&plan, &forced, &Events::none()).await.unwrap();
        let manifest: Manifest =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest.artifacts[0].path, "tiny-top.raw");
        assert!(manifest.targets.is_empty());
        // Again, forced, over its own files.
        export(&plan, &forced, &Events::none()).await.unwrap();
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 5);
    }
}
