//! Publish (DESIGN §11): a built stage, exported for OpenStack (an export already in the output
//! folder is reused), into the cloud's image service. Logs in to Keystone v3 as every OpenStack
//! tool would (`clouds`), finds Glance in the catalog (`keystone`), and speaks Glance v2
//! (`glance`): deletes what an earlier interrupted upload left, reports an active image of the
//! same layer key and sha256 instead of uploading it again, or creates the image with its
//! properties (`properties`), streams the file with progress, waits for `active` and compares
//! Glance's sha512 with the file's; then `--keep N` rotation. An image this run created is
//! deleted again when anything fails or strata is asked to stop.
//! Owns no files in the store; must not build, and never keeps a secret anywhere.

pub mod clouds;
mod glance;
pub mod keystone;
pub mod properties;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};
use tokio_util::sync::CancellationToken;

pub use clouds::{Cloud, CloudsError, Environment, Secret};
pub use glance::Image;
pub use properties::{DiskFormat, PropertyOverride, Visibility};

use crate::definition::{ExportTarget, ImageDefinition};
use crate::events::{Event, Events};
use crate::export::openstack::GlanceImage;
use crate::export::{ExportError, ExportOptions, Selection};
use crate::layer::Layers;
use properties::{Origin, STRATA_IMAGE, STRATA_KEY, STRATA_SHA256, STRATA_STAGE};

/// How long Glance may take to make an uploaded image `active`.
const ACTIVE_WITHIN: Duration = Duration::from_secs(600);
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How long deleting a failed upload may take once strata is asked to stop.
const CLEANUP_WITHIN: Duration = Duration::from_secs(30);
const CONNECT_WITHIN: Duration = Duration::from_secs(30);
/// Waiting for an answer: Glance answers an upload once it has stored all of it.
const READ_WITHIN: Duration = Duration::from_secs(600);
/// Bytes read from the file at a time.
const CHUNK: usize = 1 << 20;
/// Statuses of an image whose upload never finished.
const UNFINISHED: &[&str] = &["queued", "saving", "uploading", "importing", "killed"];

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Clouds(#[from] CloudsError),
    #[error(
        "cloud `{cloud}` ({origin}): Keystone at {url} refused {who} ({status}: {message}): check the password or the application credential's secret"
    )]
    Refused {
        cloud: String,
        origin: String,
        who: String,
        url: String,
        status: u16,
        message: String,
    },
    #[error("cloud `{cloud}`: failed to {what} ({url})")]
    Http {
        cloud: String,
        what: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cloud `{cloud}`: failed to {what}: {url} answered {status}: {message}")]
    Service { cloud: String, what: String, url: String, status: u16, message: String },
    #[error("cloud `{cloud}`: {problem}")]
    Catalog { cloud: String, problem: String },
    #[error("cloud `{cloud}`: failed to set up the HTTP client (cacert {cacert})")]
    Client {
        cloud: String,
        cacert: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("failed to read the export's {path}: export again with `strata export … --force`")]
    ReadExport {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cloud `{cloud}`: image {id} ({name}) is not what was uploaded: {problem}; it was deleted"
    )]
    Mismatch { cloud: String, id: String, name: String, problem: String },
    #[error(
        "cloud `{cloud}`: image {id} ({name}) is `{status}` {seconds}s after its upload, not active; it was deleted"
    )]
    NotActive { cloud: String, id: String, name: String, status: String, seconds: u64 },
    /// Stopped by a signal; an image this run created was deleted.
    #[error("interrupted")]
    Interrupted,
}

impl PublishError {
    /// Whether the input is at fault (clouds.yaml, a cloud that is not there): exit 2.
    #[must_use]
    pub fn is_invalid_input(&self) -> bool {
        match self {
            PublishError::Clouds(error) => !matches!(error, CloudsError::Read { .. }),
            PublishError::Export(ExportError::Plan(crate::layer::PlanError::UnknownStage {
                ..
            })) => true,
            _ => false,
        }
    }
}

/// What to publish and where.
#[derive(Clone)]
pub struct PublishRequest {
    /// The definition's path as the user typed it, for messages.
    pub shown: PathBuf,
    pub stage: Option<String>,
    /// `--cloud`; `OS_CLOUD` or the `OS_*` variables when `None`.
    pub cloud: Option<String>,
    /// `--name`; `IMAGE-STAGE` when `None`.
    pub name: Option<String>,
    pub visibility: Option<Visibility>,
    pub properties: Vec<PropertyOverride>,
    pub format: DiskFormat,
    /// `--keep N`: older images of the same definition and stage beyond the N newest go.
    pub keep: Option<u32>,
    /// Where the export is (or is written).
    pub output_dir: PathBuf,
    /// Signs the export's provenance when the stage is exported (`--sign-key`).
    pub signer: Option<Arc<dyn crate::sbom::dsse::Signer>>,
}

/// An image deleted by this run, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deleted {
    pub id: String,
    pub name: String,
    /// `leftover`, `rotation`.
    pub reason: String,
}

/// What `publish` did.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    pub cloud: String,
    pub id: String,
    pub name: String,
    /// The image's size in Glance.
    pub size: u64,
    /// Bytes sent by this run: 0 when an identical image was there already.
    pub uploaded_bytes: u64,
    /// An active image of the same layer key and sha256 was there: nothing was uploaded.
    pub reused: bool,
    /// The export in the output folder was reused.
    pub export_reused: bool,
    pub file: PathBuf,
    pub sha256: String,
    pub seconds: f64,
    /// The image's attributes and properties as Glance shows them now.
    pub properties: BTreeMap<String, Value>,
    pub deleted: Vec<Deleted>,
    /// Images `--keep` left because they are protected.
    pub kept_protected: Vec<String>,
}

/// A service's error answer, made short and printable: Keystone's and Glance's JSON `message`,
/// else the text without markup, cut at 300 characters.
#[must_use]
pub fn service_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|value| {
            value
                .pointer("/error/message")
                .or_else(|| value.get("message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| {
            let mut text = String::new();
            let mut in_tag = false;
            for c in body.chars() {
                match c {
                    '<' => in_tag = true,
                    '>' => in_tag = false,
                    c if !in_tag => text.push(c),
                    _ => {}
                }
            }
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        });
    let message = crate::events::printable(&message);
    if message.chars().count() > 300 {
        format!("{}…", message.chars().take(300).collect::<String>())
    } else if message.is_empty() {
        "(no message)".to_owned()
    } else {
        message
    }
}

/// Runs `work` unless `cancel` fires first.
async fn unless_cancelled<T>(
    cancel: &CancellationToken,
    work: impl std::future::Future<Output = Result<T, PublishError>>,
) -> Result<T, PublishError> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(PublishError::Interrupted),
        result = work => result,
    }
}

fn http_client(cloud: &Cloud) -> Result<reqwest::Client, PublishError> {
    let client_error = |source: Box<dyn std::error::Error + Send + Sync>| PublishError::Client {
        cloud: cloud.name.clone(),
        cacert: cloud
            .cacert
            .as_ref()
            .map_or_else(|| "none".to_owned(), |path| path.display().to_string()),
        source,
    };
    let mut builder = crate::tls::client_builder(CONNECT_WITHIN, READ_WITHIN);
    if let Some(path) = &cloud.cacert {
        let pem = std::fs::read(path).map_err(|error| client_error(Box::new(error)))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|error| client_error(Box::new(error)))?;
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if !cloud.verify {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|error| client_error(Box::new(error)))
}

/// The image's Glance `architecture`, from the architecture most of its packages have.
fn architecture(packages: &[crate::drift::Package]) -> Option<&'static str> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for package in packages {
        if let Some(arch) = properties::architecture(&package.arch) {
            *counts.entry(arch).or_default() += 1;
        }
    }
    counts.into_iter().max_by_key(|(_, count)| *count).map(|(arch, _)| arch)
}

/// Publishes `request`'s stage of `definition` into the cloud. `cancel` stops it (Ctrl-C,
/// SIGTERM): an image this run created is deleted first, then [`PublishError::Interrupted`].
pub async fn publish(
    definition: &ImageDefinition,
    layers: &Layers,
    request: &PublishRequest,
    env: &Environment,
    events: &Events,
    cancel: &CancellationToken,
) -> Result<Published, PublishError> {
    // Everything that can be wrong with the input, before anything slow.
    let cloud = clouds::discover(request.cloud.as_deref(), env)?;
    let selection = Selection {
        stage: request.stage.clone(),
        format: Some(request.format.export_format()),
        target: Some(ExportTarget::Openstack),
    };
    let plan = crate::export::resolve(definition, &request.shown, layers, &selection)?;
    let client = http_client(&cloud)?;
    let session = unless_cancelled(cancel, keystone::authenticate(&client, &cloud)).await?;
    let endpoint =
        keystone::endpoint(&session.catalog, "image", &cloud.interface, cloud.region.as_deref())
            .map_err(|problem| PublishError::Catalog { cloud: cloud.name.clone(), problem })?;
    let glance = glance::Glance::new(client, &endpoint, session.token.clone(), &cloud.name);

    // The export: the one in the folder when it is of this layer, else a new one.
    let dir = &request.output_dir;
    let (manifest, export_reused) = match crate::export::find_existing(&plan, dir) {
        Some(manifest) => (manifest, true),
        None => {
            // Replacing an older export of the same image and stage is what publishing it
            // again means; anything else in the folder stays (the export refuses it).
            let ours = crate::export::find_previous(&plan, dir);
            let options = ExportOptions {
                output_dir: dir.clone(),
                force: ours,
                signer: request.signer.clone(),
            };
            let work = async { Ok(crate::export::export(&plan, &options, events).await?) };
            (unless_cancelled(cancel, work).await?.manifest, false)
        }
    };
    let format = request.format.export_format();
    let file_name = plan.artifact_name(format);
    let artifact =
        manifest.artifacts.iter().find(|artifact| artifact.path == file_name).ok_or_else(|| {
            PublishError::ReadExport {
                path: dir.join(crate::export::MANIFEST_FILE),
                source: std::io::Error::other(format!("it lists no {file_name}")),
            }
        })?;
    let description_path = dir.join(plan.target_file(ExportTarget::Openstack).unwrap_or_default());
    let description: GlanceImage = std::fs::read(&description_path)
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(std::io::Error::other))
        .map_err(|source| PublishError::ReadExport { path: description_path.clone(), source })?;
    let file = dir.join(&artifact.path);
    let origin = Origin {
        image: plan.image.clone(),
        stage: plan.stage.clone(),
        key: plan.layer.metadata.key.clone(),
        sha256: artifact.sha256.clone(),
    };
    let name = request.name.clone().unwrap_or_else(|| description.name.clone());
    let body = properties::create_body(
        &description,
        &origin,
        architecture(&plan.layer.metadata.packages),
        &name,
        request.visibility,
        &request.properties,
    );
    let started = Instant::now();
    events.emit(Event::PublishStarted {
        cloud: cloud.name.clone(),
        image: origin.image.clone(),
        stage: origin.stage.clone(),
        name: name.clone(),
        path: file.clone(),
        format: description.disk_format.clone(),
        bytes: artifact.file_bytes,
    });

    let mut deleted = Vec::new();
    let ours = [
        (STRATA_IMAGE, origin.image.as_str()),
        (STRATA_STAGE, origin.stage.as_str()),
        ("owner", session.project_id.as_str()),
    ];
    let existing = unless_cancelled(cancel, glance.list(&ours)).await?;
    // What an upload that was killed, or that failed without cleaning up, left behind.
    for image in existing.iter().filter(|image| UNFINISHED.contains(&image.status.as_str())) {
        unless_cancelled(cancel, glance.delete(&image.id)).await?;
        deleted.push(note_deleted(events, &cloud.name, image, "leftover"));
    }
    let same = existing.iter().find(|image| {
        image.status == "active"
            && image.property(STRATA_KEY) == Some(origin.key.as_str())
            && image.property(STRATA_SHA256) == Some(origin.sha256.as_str())
    });
    let (image, uploaded_bytes, reused) = match same {
        Some(image) => (image.clone(), 0, true),
        None => {
            let upload = Upload { glance: &glance, cloud: &cloud.name, events, file: &file };
            let image =
                upload.run(&body, &name, artifact.file_bytes, &origin.sha256, cancel).await?;
            (image, artifact.file_bytes, false)
        }
    };

    let mut kept_protected = Vec::new();
    if let Some(keep) = request.keep {
        let all = unless_cancelled(cancel, glance.list(&ours)).await?;
        let (retired, protected) = to_retire(&all, &image.id, keep);
        for old in retired {
            unless_cancelled(cancel, glance.delete(&old.id)).await?;
            deleted.push(note_deleted(events, &cloud.name, old, "rotation"));
        }
        for old in protected {
            events.warn(format!(
                "--keep {keep}: image {} ({}) of cloud `{}` is older but protected: it stays",
                old.id,
                old.display_name(),
                cloud.name
            ));
            kept_protected.push(old.id.clone());
        }
    }

    let seconds = started.elapsed().as_secs_f64();
    let size = image.size.unwrap_or(artifact.file_bytes);
    events.emit(Event::Published {
        cloud: cloud.name.clone(),
        id: image.id.clone(),
        name: image.display_name().to_owned(),
        bytes: uploaded_bytes,
        size,
        seconds,
        reused,
    });
    let mut shown = image.properties.clone();
    shown.insert("status".into(), Value::from(image.status.clone()));
    shown.insert("protected".into(), Value::from(image.protected));
    if let Some(visibility) = &image.visibility {
        shown.insert("visibility".into(), Value::from(visibility.clone()));
    }
    for (key, value) in
        [("os_hash_algo", &image.os_hash_algo), ("os_hash_value", &image.os_hash_value)]
    {
        if let Some(value) = value {
            shown.insert(key.into(), Value::from(value.clone()));
        }
    }
    Ok(Published {
        cloud: cloud.name.clone(),
        id: image.id.clone(),
        name: image.display_name().to_owned(),
        size,
        uploaded_bytes,
        reused,
        export_reused,
        file,
        sha256: origin.sha256,
        seconds,
        properties: shown,
        deleted,
        kept_protected,
    })
}

fn note_deleted(events: &Events, cloud: &str, image: &Image, reason: &str) -> Deleted {
    events.emit(Event::PublishImageDeleted {
        cloud: cloud.to_owned(),
        id: image.id.clone(),
        name: image.display_name().to_owned(),
        reason: reason.to_owned(),
    });
    Deleted {
        id: image.id.clone(),
        name: image.display_name().to_owned(),
        reason: reason.to_owned(),
    }
}

/// `--keep N`: of the finished images other than `current` (which counts as one of the N),
/// the ones beyond the N newest; those that are protected are returned apart, to stay.
fn to_retire<'a>(
    images: &'a [Image],
    current: &str,
    keep: u32,
) -> (Vec<&'a Image>, Vec<&'a Image>) {
    let mut others: Vec<&Image> = images
        .iter()
        .filter(|image| {
            image.id != current && matches!(image.status.as_str(), "active" | "deactivated")
        })
        .collect();
    // Glance's times are ISO 8601 in UTC: text order is time order. Newest first.
    others.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
    let beyond = others.into_iter().skip(keep.saturating_sub(1) as usize);
    beyond.partition(|image| !image.protected)
}

/// One image's creation and upload; the image is deleted again if anything after its creation
/// fails or is cancelled.
struct Upload<'a> {
    glance: &'a glance::Glance,
    cloud: &'a str,
    events: &'a Events,
    file: &'a Path,
}

/// The file's digests, computed while it is sent.
#[derive(Default)]
struct Digests {
    sha256: Sha256,
    sha512: Sha512,
    bytes: u64,
}

impl Upload<'_> {
    async fn run(
        &self,
        body: &serde_json::Map<String, Value>,
        name: &str,
        bytes: u64,
        sha256: &str,
        cancel: &CancellationToken,
    ) -> Result<Image, PublishError> {
        let created = unless_cancelled(cancel, self.glance.create(body)).await?;
        let result =
            unless_cancelled(cancel, self.send_and_check(&created, name, bytes, sha256)).await;
        match result {
            Ok(image) => Ok(image),
            Err(error) => {
                // Not cancellable: this is the cleanup the cancel asked for.
                let cleanup = tokio::time::timeout(CLEANUP_WITHIN, self.glance.delete(&created.id));
                match cleanup.await {
                    Ok(Ok(())) => {
                        note_deleted(self.events, self.cloud, &created, "failed");
                    }
                    Ok(Err(cleanup_error)) => self.events.warn(format!(
                        "failed to delete the unfinished image {} of cloud `{}` ({}); the next publish deletes it",
                        created.id,
                        self.cloud,
                        crate::events::error_chain(&cleanup_error)
                    )),
                    Err(_) => self.events.warn(format!(
                        "deleting the unfinished image {} of cloud `{}` took more than {}s; the next publish deletes it",
                        created.id,
                        self.cloud,
                        CLEANUP_WITHIN.as_secs()
                    )),
                }
                Err(error)
            }
        }
    }

    async fn send_and_check(
        &self,
        created: &Image,
        name: &str,
        bytes: u64,
        sha256: &str,
    ) -> Result<Image, PublishError> {
        let read_error = |source| PublishError::ReadExport { path: self.file.to_owned(), source };
        let file = tokio::fs::File::open(self.file).await.map_err(read_error)?;
        let length = file.metadata().await.map_err(read_error)?.len();
        if length != bytes {
            return Err(read_error(std::io::Error::other(format!(
                "it is {length} bytes, the manifest says {bytes}"
            ))));
        }
        let digests = Arc::new(Mutex::new(Digests::default()));
        let seen = Arc::clone(&digests);
        let events = self.events.clone();
        let shown_name = name.to_owned();
        let step = (bytes / 100).max(4 << 20);
        let mut last = 0u64;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, CHUNK).map(move |chunk| {
            if let Ok(chunk) = &chunk
                && let Ok(mut digests) = seen.lock()
            {
                digests.sha256.update(chunk);
                digests.sha512.update(chunk);
                digests.bytes += chunk.len() as u64;
                let done = digests.bytes;
                if done - last >= step || done == bytes {
                    last = done;
                    events.emit(Event::PublishProgress {
                        name: shown_name.clone(),
                        done_bytes: done,
                        total_bytes: bytes,
                    });
                }
            }
            chunk
        });
        self.glance.upload(&created.id, bytes, reqwest::Body::wrap_stream(stream)).await?;
        let (local256, local512, sent) = {
            let digests = digests
                .lock()
                .map_err(|_| read_error(std::io::Error::other("the digest state was poisoned")))?;
            (
                hex::encode(digests.sha256.clone().finalize()),
                hex::encode(digests.sha512.clone().finalize()),
                digests.bytes,
            )
        };
        let mismatch = |problem: String| PublishError::Mismatch {
            cloud: self.cloud.to_owned(),
            id: created.id.clone(),
            name: name.to_owned(),
            problem,
        };
        if sent != bytes || local256 != sha256 {
            return Err(mismatch(format!(
                "the file {} changed since it was exported (sha256 {local256}, the manifest says {sha256}): export again with --force",
                self.file.display()
            )));
        }
        let image = self.wait_active(created, name).await?;
        if image.os_hash_algo.as_deref() != Some("sha512")
            || image.os_hash_value.as_deref() != Some(local512.as_str())
        {
            return Err(mismatch(format!(
                "Glance's {} {} is not the file's sha512 {local512}",
                image.os_hash_algo.as_deref().unwrap_or("os_hash_algo (none)"),
                image.os_hash_value.as_deref().unwrap_or("(none)")
            )));
        }
        if image.size.is_some_and(|size| size != bytes) {
            return Err(mismatch(format!(
                "Glance holds {} bytes, the file is {bytes}",
                image.size.unwrap_or_default()
            )));
        }
        Ok(image)
    }

    /// Polls the image until it is `active`, for at most [`ACTIVE_WITHIN`].
    async fn wait_active(&self, created: &Image, name: &str) -> Result<Image, PublishError> {
        let started = Instant::now();
        loop {
            let image = self.glance.get(&created.id).await?;
            match image.status.as_str() {
                "active" => return Ok(image),
                "saving" | "queued" | "importing" | "uploading"
                    if started.elapsed() < ACTIVE_WITHIN =>
                {
                    tokio::time::sleep(POLL_EVERY).await;
                }
                status => {
                    return Err(PublishError::NotActive {
                        cloud: self.cloud.to_owned(),
                        id: created.id.clone(),
                        name: name.to_owned(),
                        status: status.to_owned(),
                        seconds: started.elapsed().as_secs(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn image(id: &str, created: &str, status: &str, protected: bool) -> Image {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": "demo-final", "status": status, "protected": protected,
            "created_at": created,
        }))
        .unwrap()
    }

    #[test]
    fn keep_retires_the_oldest_but_never_the_current_nor_a_protected_one() {
        let images = vec![
            image("a", "2026-12-01T10:00:00Z", "active", false),
            image("b", "2026-12-02T10:00:00Z", "active", true),
            image("c", "2026-12-03T10:00:00Z", "active", false),
            image("d", "2026-12-04T10:00:00Z", "deactivated", false),
            image("now", "2026-12-05T10:00:00Z", "active", false),
            image("q", "2026-12-06T10:00:00Z", "queued", false),
        ];
        let ids = |list: Vec<&Image>| list.iter().map(|image| image.id.clone()).collect::<Vec<_>>();
        let (retired, protected) = to_retire(&images, "now", 1);
        assert_eq!(ids(retired), ["d", "c", "a"]);
        assert_eq!(ids(protected), ["b"]);
        let (retired, protected) = to_retire(&images, "now", 3);
        assert_eq!(ids(retired), ["a"]);
        assert_eq!(ids(protected), ["b"]);
        // The current image is kept even when it is not the newest (a rollback), and counts
        // as one of the N: with it, the newest other one stays.
        let (retired, _) = to_retire(&images, "a", 2);
        assert_eq!(ids(retired), ["d", "c"]);
    }

    #[test]
    fn service_messages_are_short_and_plain() {
        let keystone = r#"{"error":{"code":401,"message":"The request you have made requires authentication.","title":"Unauthorized"}}"#;
        assert_eq!(service_message(keystone), "The request you have made requires authentication.");
        let glance =
            "<html><body><h1>403 Forbidden</h1>\n  Not allowed to publicize.</body></html>";
        assert_eq!(service_message(glance), "403 Forbidden Not allowed to publicize.");
        assert_eq!(service_message(""), "(no message)");
        assert!(service_message(&"x".repeat(400)).ends_with('…'));
    }

    #[test]
    fn the_architecture_is_the_packages_majority() {
        let package = |arch: &str| crate::drift::Package {
            name: "p".into(),
            arch: arch.into(),
            version: "1".into(),
            source: None,
            licenses: Vec::new(),
        };
        let packages = vec![package("amd64"), package("all"), package("amd64"), package("i386")];
        assert_eq!(architecture(&packages), Some("x86_64"));
        assert_eq!(architecture(&[]), None);
    }
}
