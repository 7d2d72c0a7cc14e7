//! [`Cache`]: one registry repository, and what strata pushes to and pulls from it.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::artifact::{self, Blob};
use super::transfer::{self, DownloadError, Progress};
use super::{CacheError, CacheUrl, Credentials, CredentialsFrom};
use crate::events::{CacheDirection, Event, Events};
use crate::layer::{Foundation, Layer, LayerKey, LayerMetadata, Layers, Lookup, backing_for};
use crate::source::{FetchedSource, SourceDigest};
use crate::store::{Store, sync_dir};
use crate::trust::{self, Accept, Policy, Refusal, Signed, TrustedKeys};

const CONNECT_WITHIN: Duration = Duration::from_secs(10);
/// A registry that sends nothing for this long is taken as gone.
const READ_WITHIN: Duration = Duration::from_secs(60);
/// Config blobs are small JSON records; anything bigger is not ours.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// A manifest bigger than this is refused before it is parsed.
const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// A signature payload is a few hundred bytes; a signature manifest holds a few of them.
const MAX_PAYLOAD_BYTES: u64 = 64 << 10;
const MAX_SIGNATURES: usize = 32;
/// The config of a signature image, as cosign writes one (an empty image config).
const SIGNATURE_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const SOURCE_CONFIG_FORMAT: u32 = 1;
/// A tag nothing is pushed under: looking it up checks the connection and the login.
const PROBE_TAG: &str = "strata-connection-check";

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The registry had it already (its tag answered): nothing was uploaded.
    AlreadyThere,
    /// Uploaded; `bytes` is what went over the wire (blobs the registry had are not counted).
    Uploaded { bytes: u64 },
}

/// What a source artifact's config records.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceRecord {
    format: u32,
    sha256: String,
    file_name: String,
    bytes: u64,
}

/// A restore point artifact's config: enough to tell what it belongs to.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreRecord {
    format: u32,
    key: String,
}

/// What is being moved, for events and messages.
struct Item<'a> {
    kind: &'static str,
    stage: Option<&'a str>,
    key: &'a str,
    what: String,
}

/// A shared cache: one repository of one registry.
pub struct Cache {
    url: CacheUrl,
    client: oci_client::Client,
    auth: RegistryAuth,
    /// What to check when the registry refuses us (never the secret).
    auth_hint: String,
    events: Events,
    /// How pushes are signed and pulls verified.
    policy: Policy,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache").field("url", &self.url.to_string()).finish_non_exhaustive()
    }
}

impl Cache {
    /// The client for `url` as every command opens it: the credentials found for it
    /// ([`Credentials::discover`]), signing and verifying as `policy` says.
    pub async fn open(
        url: &CacheUrl,
        policy: crate::trust::Policy,
        events: &Events,
    ) -> Result<Cache, CacheError> {
        let (credentials, from) = Credentials::discover(url);
        Ok(Cache::connect(url, &credentials, &from, events).await?.with_policy(policy))
    }

    /// A client for `url`, checked with one cheap request (`GET /v2/`): a registry that is down
    /// is [`CacheError::Unavailable`] here rather than halfway through a build.
    pub async fn connect(
        url: &CacheUrl,
        credentials: &Credentials,
        from: &CredentialsFrom,
        events: &Events,
    ) -> Result<Cache, CacheError> {
        let protocol = if url.plain_http() { ClientProtocol::Http } else { ClientProtocol::Https };
        let config = ClientConfig {
            protocol,
            use_monolithic_push: true,
            connect_timeout: Some(CONNECT_WITHIN),
            read_timeout: Some(READ_WITHIN),
            ..ClientConfig::default()
        };
        let auth_hint = match from {
            CredentialsFrom::Environment => {
                format!("{} and {}", super::USER_ENV, super::PASSWORD_ENV)
            }
            CredentialsFrom::AuthFile(path) => {
                format!("the login for {} in {}", url.registry(), path.display())
            }
            CredentialsFrom::Nowhere => format!(
                "that it allows anonymous access, or set {} and {}",
                super::USER_ENV,
                super::PASSWORD_ENV
            ),
        };
        crate::tls::install_crypto_provider();
        let cache = Cache {
            url: url.clone(),
            client: oci_client::Client::new(config),
            auth: credentials.to_registry_auth(),
            auth_hint,
            events: events.clone(),
            policy: Policy::default(),
        };
        let probe = cache.reference(PROBE_TAG.to_owned());
        cache
            .client
            .auth(&probe, &cache.auth, RegistryOperation::Pull)
            .await
            .map_err(|error| cache.classify("connecting", error))?;
        // Basic auth is only tried on a real request: one manifest HEAD checks the login now.
        cache.has_tag(PROBE_TAG.to_owned(), "connecting").await?;
        Ok(cache)
    }

    #[must_use]
    pub fn url(&self) -> &CacheUrl {
        &self.url
    }

    /// Signs what this client pushes and verifies what it pulls as `policy` says. The default
    /// (without this call) signs nothing and accepts nothing. With `--cache-unsigned` it says so
    /// once (an [`Event::CacheUnsigned`]).
    #[must_use]
    pub fn with_policy(mut self, policy: Policy) -> Self {
        if policy.unsigned() {
            self.events.emit(Event::CacheUnsigned { registry: self.url.registry().to_owned() });
        }
        self.policy = policy;
        self
    }

    /// Whether the registry holds `key`'s layer: one manifest HEAD.
    pub async fn has_layer(&self, key: &LayerKey) -> Result<bool, CacheError> {
        self.has_tag(artifact::layer_tag(key), &format!("looking up layer {}", key.short())).await
    }

    /// Whether the registry holds the source with this content.
    pub async fn has_source(&self, digest: &SourceDigest) -> Result<bool, CacheError> {
        self.has_tag(artifact::source_tag(digest.hex()), "looking up the source").await
    }

    /// Pushes a committed layer unless the registry has it. Two runners pushing one key at once
    /// upload the same blobs and the same manifest: harmless.
    pub async fn push_layer(&self, layer: &Layer) -> Result<Pushed, CacheError> {
        let record = &layer.metadata;
        let key = LayerKey::parse(&record.key).ok_or_else(|| CacheError::Invalid {
            registry: self.url.registry().to_owned(),
            what: format!("the layer in {}", layer.dir.display()),
            reason: format!("its key {:?} is not a layer key", record.key),
        })?;
        let item = Item {
            kind: "layer",
            stage: Some(&record.stage),
            key: key.as_str(),
            what: format!("layer {} ({})", key.short(), record.stage),
        };
        let tag = artifact::layer_tag(&key);
        if self.already_there(&tag, &item.what).await? {
            return Ok(Pushed::AlreadyThere);
        }
        let config_path = layer.dir.join(crate::layer::METADATA_FILE);
        let config = fs::read(&config_path).map_err(io_error(&config_path))?;
        let mut annotations = BTreeMap::from([
            (artifact::KEY_ANNOTATION.to_owned(), key.to_string()),
            (artifact::STAGE_ANNOTATION.to_owned(), record.stage.clone()),
            (artifact::IMAGE_ANNOTATION.to_owned(), record.image.clone()),
        ]);
        if let Some(parent) = &record.parent {
            annotations.insert(artifact::PARENT_ANNOTATION.to_owned(), parent.clone());
        }
        let tmp = store_tmp(&layer.dir);
        self.push_artifact(&item, &tag, &artifact::LAYER, config, &layer.disk(), &tmp, annotations)
            .await
    }

    /// Pulls `key`'s layer into `store` unless it is there, and returns it. `expected_parent`
    /// is the key the chain says it stands on (`None` for a layer on the source); that parent
    /// (or the source) must be in the store already: pull a chain from the bottom up.
    /// `stage` names it in messages (what the caller's plan calls it: the artifact's own claims
    /// mean nothing before its signature is checked).
    pub async fn pull_layer(
        &self,
        store: &Layers,
        key: &LayerKey,
        expected_parent: Option<&LayerKey>,
        stage: &str,
    ) -> Result<Layer, CacheError> {
        let what = format!("layer {} ({stage})", key.short());
        let _lock = lock_layer(store, key).await?;
        if let Lookup::Hit(layer) = store.lookup(key, false)? {
            return Ok(*layer);
        }
        if let Some(parent) = expected_parent
            && !matches!(store.lookup(parent, false)?, Lookup::Hit(_))
        {
            return Err(CacheError::ParentMissing { what, parent: parent.to_string() });
        }
        let tag = artifact::layer_tag(key);
        let claimed =
            Item { kind: "layer", stage: Some(stage), key: key.as_str(), what: what.clone() };
        let (record, disk): (LayerMetadata, _) =
            self.pull_head(&tag, &artifact::LAYER, &claimed).await?;
        self.check_record(&record, key, expected_parent, &what)?;
        let work = store.begin(key)?;
        if !work.dir.join(&record.backing).is_file() {
            return Err(CacheError::ParentMissing { what, parent: record.backing.clone() });
        }
        let stage = record.stage.clone();
        let item = Item { kind: "layer", stage: Some(&stage), key: key.as_str(), what };
        let started = self.started(&item, CacheDirection::Pull, Some(descriptor_size(&disk)));
        let landed = self.download(&tag, &disk, &store.store().tmp_dir(), &item).await?;
        let disk_path = work.disk();
        let file = fs::File::create_new(&disk_path).map_err(io_error(&disk_path))?;
        let (sha256, length) =
            transfer::decompress_sparse(landed.path(), file).await.map_err(|error| {
                self.invalid(&item.what, format!("its disk blob is not zstd: {error}"))
            })?;
        drop(landed);
        if sha256 != record.disk_sha256 || length != record.disk_bytes {
            return Err(CacheError::DigestMismatch {
                registry: self.url.registry().to_owned(),
                what: format!("the disk of {}", item.what),
                expected: format!("sha256:{} ({} bytes)", record.disk_sha256, record.disk_bytes),
                actual: format!("sha256:{sha256} ({length} bytes)"),
            });
        }
        // The record's backing path was checked; the qcow2 header must say the same, or the
        // layer would stand on some other file.
        self.check_header(&disk_path, &record.backing, &item.what).await?;
        // commit() records the new file's mtime, so the cheap check passes from now on.
        let layer = store.commit(work, record)?;
        self.finished(&item, CacheDirection::Pull, descriptor_size(&disk), started);
        Ok(layer)
    }

    /// Pushes a source from the store unless the registry has it, tagged `sha256-HEX`.
    pub async fn push_source(&self, source: &FetchedSource) -> Result<Pushed, CacheError> {
        let hex = source.digest.hex();
        let item = Item { kind: "source", stage: None, key: hex, what: "the source".to_owned() };
        let tag = artifact::source_tag(hex);
        if self.already_there(&tag, &item.what).await? {
            return Ok(Pushed::AlreadyThere);
        }
        let file_name = source
            .path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let record = SourceRecord {
            format: SOURCE_CONFIG_FORMAT,
            sha256: hex.to_owned(),
            file_name,
            bytes: source.size,
        };
        let config = serde_json::to_vec(&record)
            .map_err(|error| self.invalid(&item.what, error.to_string()))?;
        let annotations = BTreeMap::from([(artifact::KEY_ANNOTATION.to_owned(), hex.to_owned())]);
        let tmp = source.path.parent().map_or_else(std::env::temp_dir, |dir| {
            dir.parent().map_or_else(std::env::temp_dir, |root| root.join("tmp"))
        });
        self.push_artifact(&item, &tag, &artifact::SOURCE, config, &source.path, &tmp, annotations)
            .await
    }

    /// Pulls the source with this content into `sources/` unless it is there. The sources
    /// index is not written: the caller records it through `source` (it owns the index).
    pub async fn pull_source(
        &self,
        store: &Store,
        digest: &SourceDigest,
    ) -> Result<FetchedSource, CacheError> {
        let hex = digest.hex();
        let what = "the source".to_owned();
        let lock_name = format!("cache-source-{}", hex.get(..32).unwrap_or(hex));
        let store_for_lock = store.clone();
        let _lock = wait_for_lock(move || {
            store_for_lock.lock(&lock_name).map_err(crate::layer::LayerError::from)
        })
        .await?;
        let tag = artifact::source_tag(hex);
        let claimed = Item { kind: "source", stage: None, key: hex, what: what.clone() };
        let (record, blob): (SourceRecord, _) =
            self.pull_head(&tag, &artifact::SOURCE, &claimed).await?;
        if record.sha256 != hex || !valid_source_name(&record.file_name, hex) {
            return Err(self.invalid(
                &what,
                format!("it records {} as {:?}, not sha256 {hex}", record.sha256, record.file_name),
            ));
        }
        let path = store.sources_dir().join(&record.file_name);
        if fs::metadata(&path).is_ok_and(|meta| meta.len() == record.bytes) {
            return Ok(FetchedSource { path, digest: digest.clone(), size: record.bytes });
        }
        let item = Item { kind: "source", stage: None, key: hex, what };
        let started = self.started(&item, CacheDirection::Pull, Some(descriptor_size(&blob)));
        let landed = self.download(&tag, &blob, &store.tmp_dir(), &item).await?;
        let sources = store.sources_dir();
        let temp = tempfile::Builder::new()
            .prefix(".cache-pull.")
            .tempfile_in(&sources)
            .map_err(io_error(&sources))?;
        let file = temp.reopen().map_err(io_error(temp.path()))?;
        let (sha256, length) = transfer::decompress_sparse(landed.path(), file)
            .await
            .map_err(|error| self.invalid(&item.what, format!("its blob is not zstd: {error}")))?;
        drop(landed);
        if sha256 != hex || length != record.bytes {
            return Err(CacheError::DigestMismatch {
                registry: self.url.registry().to_owned(),
                what: "the source".to_owned(),
                expected: format!("sha256:{hex} ({} bytes)", record.bytes),
                actual: format!("sha256:{sha256} ({length} bytes)"),
            });
        }
        temp.persist(&path)
            .map_err(|error| CacheError::Io { path: path.clone(), source: error.error })?;
        sync_dir(&sources).map_err(io_error(&sources))?;
        self.finished(&item, CacheDirection::Pull, descriptor_size(&blob), started);
        Ok(FetchedSource { path, digest: digest.clone(), size: length })
    }

    /// Pushes `layer`'s restore point (its `restore/` folder) unless the registry has it.
    /// It holds guest memory and the build's throwaway keys: push only to a private registry.
    pub async fn push_restore(&self, layer: &Layer) -> Result<Pushed, CacheError> {
        let Some(restore) = layer.restore_point() else {
            return Err(CacheError::Io {
                path: layer.dir.join(crate::layer::RESTORE_DIR),
                source: std::io::ErrorKind::NotFound.into(),
            });
        };
        let key = layer.metadata.key.as_str();
        let item = Item {
            kind: "restore",
            stage: Some(&layer.metadata.stage),
            key,
            what: format!("the restore point of {}", layer.metadata.stage),
        };
        let Some(parsed) = LayerKey::parse(key) else {
            return Err(self.invalid(&item.what, format!("{key:?} is not a layer key")));
        };
        let tag = artifact::restore_tag(&parsed);
        if self.already_there(&tag, &item.what).await? {
            return Ok(Pushed::AlreadyThere);
        }
        let tmp = store_tmp(&layer.dir);
        let tar = tar_folder(&restore, &tmp).map_err(io_error(&restore))?;
        let config = serde_json::to_vec(&RestoreRecord { format: 1, key: key.to_owned() })
            .map_err(|error| self.invalid(&item.what, error.to_string()))?;
        let annotations = BTreeMap::from([(artifact::KEY_ANNOTATION.to_owned(), key.to_owned())]);
        self.push_artifact(&item, &tag, &artifact::RESTORE, config, tar.path(), &tmp, annotations)
            .await
    }

    /// Pulls `key`'s restore point into its layer's folder (the layer must be in the store).
    /// `Ok(None)` when the registry has none. Whether it fits this runner (its machine
    /// fingerprint) is checked where it is resumed, by `stage::restore`, which boots instead
    /// when it does not.
    pub async fn pull_restore(
        &self,
        store: &Layers,
        key: &LayerKey,
    ) -> Result<Option<PathBuf>, CacheError> {
        let what = format!("the restore point of layer {}", key.short());
        let _lock = lock_layer(store, key).await?;
        let Lookup::Hit(layer) = store.lookup(key, false)? else {
            return Err(CacheError::ParentMissing { what, parent: key.to_string() });
        };
        if let Some(found) = layer.restore_point() {
            return Ok(Some(found));
        }
        let tag = artifact::restore_tag(key);
        if !self.has_tag(tag.clone(), &format!("looking up {what}")).await? {
            return Ok(None);
        }
        let claimed = Item {
            kind: "restore",
            stage: Some(&layer.metadata.stage),
            key: key.as_str(),
            what: what.clone(),
        };
        let (record, blob): (RestoreRecord, _) =
            self.pull_head(&tag, &artifact::RESTORE, &claimed).await?;
        if record.key != key.as_str() {
            return Err(self.invalid(&what, format!("it belongs to layer {}", record.key)));
        }
        let stage = layer.metadata.stage.clone();
        let item = Item { kind: "restore", stage: Some(&stage), key: key.as_str(), what };
        let started = self.started(&item, CacheDirection::Pull, Some(descriptor_size(&blob)));
        let tmp = store.store().tmp_dir();
        let landed = self.download(&tag, &blob, &tmp, &item).await?;
        let tar = tempfile::Builder::new()
            .prefix("cache-restore.")
            .tempfile_in(&tmp)
            .map_err(io_error(&tmp))?;
        let file = tar.reopen().map_err(io_error(tar.path()))?;
        transfer::decompress_sparse(landed.path(), file)
            .await
            .map_err(|error| self.invalid(&item.what, format!("its blob is not zstd: {error}")))?;
        drop(landed);
        let staging = untar_staged(tar.path(), &tmp).map_err(|error| {
            self.invalid(&item.what, format!("its archive cannot be unpacked: {error}"))
        })?;
        // Into the layer's folder as a saved one goes: fsynced, swapped under its lock.
        let into = store.install_restore_point(key, &staging)?;
        self.finished(&item, CacheDirection::Pull, descriptor_size(&blob), started);
        Ok(Some(into))
    }

    /// Pushes `content` (of `media_type`, e.g. `application/spdx+json`) as the cosign
    /// attachment `suffix` (e.g. `sbom`) of the artifact tagged `subject_tag`: tag
    /// `sha256-<subject hex>.<suffix>`, its manifest naming the subject's digest, signed like
    /// every push. The subject must be in the registry.
    pub async fn push_attachment(
        &self,
        subject_tag: &str,
        suffix: &str,
        media_type: &str,
        content: Vec<u8>,
    ) -> Result<Pushed, CacheError> {
        let what = format!("the {suffix} of {subject_tag}");
        let (_, subject) = self.manifest(subject_tag, &what).await?;
        let tag = trust::attachment_tag(&subject, suffix);
        let doing = format!("pushing {what}");
        let oci = self.reference(tag.clone());
        let mut sent = 0u64;
        let content_digest = format!("sha256:{}", hex::encode(Sha256::digest(&content)));
        let config = b"{}".to_vec();
        let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
        for (digest, bytes) in [(&config_digest, &config), (&content_digest, &content)] {
            if !self.blob_exists(&oci, digest, &doing).await? {
                sent += bytes.len() as u64;
                self.client
                    .push_blob(&oci, bytes.clone(), digest)
                    .await
                    .map_err(|error| self.classify(&doing, error))?;
            }
        }
        let descriptor = |media_type: &str, digest: &str, size: usize| OciDescriptor {
            media_type: media_type.to_owned(),
            digest: digest.to_owned(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            urls: None,
            artifact_type: None,
            annotations: None,
        };
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
            config: descriptor(artifact::EMPTY_MEDIA_TYPE, &config_digest, config.len()),
            layers: vec![descriptor(media_type, &content_digest, content.len())],
            subject: None,
            artifact_type: Some(media_type.to_owned()),
            annotations: Some(BTreeMap::from([(
                artifact::SUBJECT_ANNOTATION.to_owned(),
                subject.clone(),
            )])),
        };
        let digest = self.put_manifest(&tag, &manifest, &doing).await?;
        self.sign(&digest, &what).await?;
        Ok(Pushed::Uploaded { bytes: sent })
    }

    /// The attachment `suffix` of the artifact tagged `subject_tag`, verified as every pull is
    /// (its signature, and that it names this subject), at most `limit` bytes; `Ok(None)` when
    /// the registry has none. A refusal is a [`CacheError::Refused`] and an event.
    pub async fn pull_attachment(
        &self,
        subject_tag: &str,
        suffix: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, CacheError> {
        let what = format!("the {suffix} of {subject_tag}");
        let (_, subject) = self.manifest(subject_tag, &what).await?;
        let tag = trust::attachment_tag(&subject, suffix);
        if !self.has_tag(tag.clone(), &format!("looking up {what}")).await? {
            return Ok(None);
        }
        let (manifest, digest) = self.manifest(&tag, &what).await?;
        let item = Item { kind: "attachment", stage: None, key: subject_tag, what: what.clone() };
        self.check_signed(&digest, &item).await?;
        let names = manifest
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(artifact::SUBJECT_ANNOTATION));
        if names != Some(&subject) {
            let refusal = Refusal::OtherManifest { signed: names.cloned().unwrap_or_default() };
            self.refused(&item, &refusal);
            return Err(CacheError::Refused {
                registry: self.url.registry().to_owned(),
                what,
                refusal,
            });
        }
        let [content] = manifest.layers.as_slice() else {
            return Err(self.invalid(&what, format!("it has {} blobs", manifest.layers.len())));
        };
        Ok(Some(self.small_blob(&tag, content, &what, limit).await?))
    }

    // ---- the registry side ----

    fn reference(&self, tag: String) -> Reference {
        Reference::with_tag(self.url.registry().to_owned(), self.url.repository().to_owned(), tag)
    }

    async fn has_tag(&self, tag: String, doing: &str) -> Result<bool, CacheError> {
        let reference = self.reference(tag);
        match self.client.fetch_manifest_digest(&reference, &self.auth).await {
            Ok(_) => Ok(true),
            Err(error) => match self.classify(doing, error) {
                CacheError::NotFound { .. } => Ok(false),
                other => Err(other),
            },
        }
    }

    /// The manifest under `tag` and its digest: `sha256:` of its bytes as served (what a
    /// signature names), refused unparsed when it is bigger than [`MAX_MANIFEST_BYTES`].
    async fn manifest(
        &self,
        tag: &str,
        what: &str,
    ) -> Result<(OciImageManifest, String), CacheError> {
        let reference = self.reference(tag.to_owned());
        let (bytes, _digest) = self
            .client
            .pull_manifest_raw(&reference, &self.auth, &[OCI_IMAGE_MEDIA_TYPE])
            .await
            .map_err(|error| self.classify(&format!("pulling {what}"), error))?;
        let manifest = parse_manifest(&bytes).map_err(|reason| self.invalid(what, reason))?;
        Ok((manifest, format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))))
    }

    /// Whether the registry has `tag` already, signed as this runner would sign it: with a
    /// signing key, a tag without our signature is pushed again (overwriting whatever is
    /// there: we sign only what we made).
    async fn already_there(&self, tag: &str, what: &str) -> Result<bool, CacheError> {
        if !self.has_tag(tag.to_owned(), &format!("looking up {what}")).await? {
            return Ok(false);
        }
        let Some(key) = &self.policy.sign_with else { return Ok(true) };
        let (_, digest) = self.manifest(tag, what).await?;
        let mut ours = TrustedKeys::new();
        ours.add(key.public_key().clone());
        let signatures = self.signatures(&digest, what).await?;
        Ok(trust::verify(&signatures.signed, &digest, &ours).is_ok())
    }

    /// Refuses the artifact whose manifest has `digest` unless the policy accepts it: a
    /// [`Event::CacheRefused`] and [`CacheError::Refused`].
    async fn check_signed(&self, digest: &str, item: &Item<'_>) -> Result<(), CacheError> {
        let keys = match &self.policy.accept {
            Accept::Unsigned => return Ok(()),
            Accept::Signed(keys) => keys,
        };
        let signatures = self.signatures(digest, &item.what).await?;
        let Err(refusal) = trust::verify(&signatures.signed, digest, keys) else { return Ok(()) };
        self.refused(item, &refusal);
        Err(CacheError::Refused {
            registry: self.url.registry().to_owned(),
            what: item.what.clone(),
            refusal,
        })
    }

    fn refused(&self, item: &Item<'_>, refusal: &Refusal) {
        self.events.emit(Event::CacheRefused {
            kind: item.kind.to_owned(),
            stage: item.stage.map(str::to_owned),
            key: item.key.to_owned(),
            reason: refusal.reason().to_owned(),
            signer: refusal.key().map(str::to_owned),
            message: refusal.to_string(),
        });
    }

    /// The cosign signatures stored for the manifest `digest` (none when its `.sig` tag is
    /// missing), with the signature manifest's layers as they are, to append to.
    async fn signatures(&self, digest: &str, what: &str) -> Result<Signatures, CacheError> {
        let tag = trust::signature_tag(digest);
        let what = format!("the signatures of {what}");
        // One GET (a missing tag is a 404), not a HEAD first: this is on every pull's path.
        let manifest = match self.manifest(&tag, &what).await {
            Ok((manifest, _)) => manifest,
            Err(CacheError::NotFound { .. }) => return Ok(Signatures::default()),
            Err(error) => return Err(error),
        };
        let mut found = Signatures::default();
        for layer in manifest.layers.iter().take(MAX_SIGNATURES) {
            if layer.media_type != trust::PAYLOAD_MEDIA_TYPE {
                continue;
            }
            let Some(signature) = layer
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(trust::SIGNATURE_ANNOTATION))
            else {
                continue;
            };
            let payload = self.small_blob(&tag, layer, &what, MAX_PAYLOAD_BYTES).await?;
            found.signed.push(Signed {
                payload,
                signature: signature.clone(),
                signer: layer
                    .annotations
                    .as_ref()
                    .and_then(|annotations| annotations.get(trust::SIGNER_ANNOTATION))
                    .cloned(),
            });
            found.layers.push(layer.clone());
        }
        Ok(found)
    }

    /// Signs the manifest `digest` with the policy's key, if any: the signature is appended to
    /// the `sha256-<hex>.sig` image (other keys' signatures stay), unless it is there already.
    async fn sign(&self, digest: &str, what: &str) -> Result<(), CacheError> {
        let Some(key) = &self.policy.sign_with else { return Ok(()) };
        let reference = self.docker_reference();
        let signed = Signed::sign(key, &reference, digest);
        let existing = self.signatures(digest, what).await?;
        if existing
            .signed
            .iter()
            .any(|other| other.payload == signed.payload && other.signature == signed.signature)
        {
            return Ok(());
        }
        let tag = trust::signature_tag(digest);
        let doing = format!("signing {what}");
        let oci = self.reference(tag.clone());
        let payload_digest = format!("sha256:{}", hex::encode(Sha256::digest(&signed.payload)));
        // Small blobs go up without asking first: one upload costs what the question would.
        self.client
            .push_blob(&oci, signed.payload.clone(), &payload_digest)
            .await
            .map_err(|error| self.classify(&doing, error))?;
        let mut layers = existing.layers;
        layers.push(OciDescriptor {
            media_type: trust::PAYLOAD_MEDIA_TYPE.to_owned(),
            digest: payload_digest,
            size: i64::try_from(signed.payload.len()).unwrap_or(i64::MAX),
            urls: None,
            artifact_type: None,
            annotations: Some(signed.annotations()),
        });
        let config = signature_config(&layers);
        let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
        self.client
            .push_blob(&oci, config.clone(), &config_digest)
            .await
            .map_err(|error| self.classify(&doing, error))?;
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
            config: OciDescriptor {
                media_type: SIGNATURE_CONFIG_MEDIA_TYPE.to_owned(),
                digest: config_digest,
                size: i64::try_from(config.len()).unwrap_or(i64::MAX),
                urls: None,
                artifact_type: None,
                annotations: None,
            },
            layers,
            subject: None,
            artifact_type: None,
            annotations: None,
        };
        self.put_manifest(&tag, &manifest, &doing).await?;
        Ok(())
    }

    /// Pushes `manifest` under `tag` as the exact bytes whose digest is returned.
    async fn put_manifest(
        &self,
        tag: &str,
        manifest: &OciImageManifest,
        doing: &str,
    ) -> Result<String, CacheError> {
        let bytes = serde_json::to_vec(manifest)
            .map_err(|error| self.invalid(doing, format!("its manifest: {error}")))?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        self.client
            .push_manifest_raw(
                &self.reference(tag.to_owned()),
                bytes,
                reqwest::header::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE),
            )
            .await
            .map_err(|error| self.classify(doing, error))?;
        Ok(digest)
    }

    /// `HOST[:PORT]/REPOSITORY`: the identity cosign's payload names.
    fn docker_reference(&self) -> String {
        format!("{}/{}", self.url.registry(), self.url.repository())
    }

    /// An artifact's manifest, checked to be of `shape`, with its config parsed (the record)
    /// and its content blob's descriptor.
    /// Its signature is checked first (the policy's): nothing of a refused artifact is read.
    async fn pull_head<T: serde::de::DeserializeOwned>(
        &self,
        tag: &str,
        shape: &artifact::Shape,
        item: &Item<'_>,
    ) -> Result<(T, OciDescriptor), CacheError> {
        let what = item.what.as_str();
        let (manifest, digest) = self.manifest(tag, what).await?;
        self.check_signed(&digest, item).await?;
        let (config, content) = artifact::expect_shape(&manifest, shape)
            .map_err(|reason| self.invalid(what, reason))?;
        let bytes = self.small_blob(tag, config, what, MAX_CONFIG_BYTES).await?;
        let record = parse_config(&bytes).map_err(|reason| self.invalid(what, reason))?;
        Ok((record, content.clone()))
    }

    /// A config blob, into memory (it is small), verified against its digest.
    /// A small blob (a config, a signature payload) into memory, at most `limit` bytes
    /// (checked on the descriptor before asking and on the bytes while they come), verified
    /// against its digest.
    async fn small_blob(
        &self,
        tag: &str,
        descriptor: &OciDescriptor,
        what: &str,
        limit: u64,
    ) -> Result<Vec<u8>, CacheError> {
        use futures_util::StreamExt as _;
        let size = descriptor_size(descriptor);
        if descriptor.size < 0 || size > limit {
            return Err(self.invalid(
                what,
                format!("a blob of {} bytes where at most {limit} are expected", descriptor.size),
            ));
        }
        let doing = format!("pulling {what}");
        let mut stream = self
            .client
            .pull_blob_stream(&self.reference(tag.to_owned()), descriptor)
            .await
            .map_err(|error| self.classify(&doing, error))?
            .stream;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| CacheError::Unavailable {
                registry: self.url.registry().to_owned(),
                doing: doing.clone(),
                source: Box::new(error),
            })?;
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > size {
                return Err(self.invalid(what, format!("a blob longer than its {size} bytes")));
            }
        }
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if actual != descriptor.digest {
            return Err(CacheError::DigestMismatch {
                registry: self.url.registry().to_owned(),
                what: what.to_owned(),
                expected: descriptor.digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// A content blob, landed in a temp file in `tmp` and verified against its digest.
    async fn download(
        &self,
        tag: &str,
        descriptor: &OciDescriptor,
        tmp: &Path,
        item: &Item<'_>,
    ) -> Result<tempfile::NamedTempFile, CacheError> {
        let doing = format!("pulling {}", item.what);
        let stream = self
            .client
            .pull_blob_stream(&self.reference(tag.to_owned()), descriptor)
            .await
            .map_err(|error| self.classify(&doing, error))?;
        let size = descriptor_size(descriptor);
        let progress = Progress::new(&self.events, item.key, CacheDirection::Pull, Some(size));
        transfer::download_verified(stream.stream, &descriptor.digest, size, tmp, &progress)
            .await
            .map_err(|error| match error {
                DownloadError::Network(source) => CacheError::Unavailable {
                    registry: self.url.registry().to_owned(),
                    doing,
                    source: Box::new(source),
                },
                DownloadError::Local(source) => CacheError::Io { path: tmp.to_owned(), source },
                DownloadError::Digest { expected, actual } => CacheError::DigestMismatch {
                    registry: self.url.registry().to_owned(),
                    what: item.what.clone(),
                    expected,
                    actual,
                },
                DownloadError::TooLong { expected } => {
                    self.invalid(&item.what, format!("its blob is longer than {expected} bytes"))
                }
            })
    }

    #[allow(clippy::too_many_arguments)]
    async fn push_artifact(
        &self,
        item: &Item<'_>,
        tag: &str,
        shape: &artifact::Shape,
        config: Vec<u8>,
        content: &Path,
        tmp: &Path,
        annotations: BTreeMap<String, String>,
    ) -> Result<Pushed, CacheError> {
        let reference = self.reference(tag.to_owned());
        let doing = format!("pushing {}", item.what);
        let started = self.started(item, CacheDirection::Push, None);
        let config_blob = Blob {
            media_type: shape.config_media_type,
            digest: format!("sha256:{}", hex::encode(Sha256::digest(&config))),
            size: config.len() as u64,
        };
        let compressed =
            transfer::compress_to_temp(content, tmp).await.map_err(io_error(content))?;
        let content_blob = Blob {
            media_type: shape.content_media_type,
            digest: compressed.digest.clone(),
            size: compressed.size,
        };
        let mut sent = 0u64;
        if !self.blob_exists(&reference, &config_blob.digest, &doing).await? {
            self.client
                .push_blob(&reference, config.clone(), &config_blob.digest)
                .await
                .map_err(|error| self.classify(&doing, error))?;
            sent += config_blob.size;
        }
        if !self.blob_exists(&reference, &content_blob.digest, &doing).await? {
            let progress =
                Progress::new(&self.events, item.key, CacheDirection::Push, Some(compressed.size));
            let stream = transfer::upload_stream(compressed.file.path(), progress)
                .await
                .map_err(io_error(compressed.file.path()))?;
            self.client
                .push_blob_stream(&reference, stream, &content_blob.digest, Some(compressed.size))
                .await
                .map_err(|error| self.classify(&doing, error))?;
            sent += content_blob.size;
        }
        let title = content.file_name().map(|name| name.to_string_lossy().into_owned());
        let manifest = artifact::manifest(
            shape.artifact_type,
            &config_blob,
            &content_blob,
            title.as_deref().unwrap_or("content"),
            annotations,
        );
        let digest = self.put_manifest(tag, &manifest, &doing).await?;
        self.sign(&digest, &item.what).await?;
        self.finished(item, CacheDirection::Push, sent, started);
        Ok(Pushed::Uploaded { bytes: sent })
    }

    async fn blob_exists(
        &self,
        reference: &Reference,
        digest: &str,
        doing: &str,
    ) -> Result<bool, CacheError> {
        self.client
            .blob_exists(reference, digest)
            .await
            .map_err(|error| self.classify(doing, error))
    }

    // ---- checks, events, errors ----

    fn check_record(
        &self,
        record: &LayerMetadata,
        key: &LayerKey,
        expected_parent: Option<&LayerKey>,
        what: &str,
    ) -> Result<(), CacheError> {
        if record.key != key.as_str() {
            return Err(self.invalid(what, format!("its record carries key {}", record.key)));
        }
        if record.parent.as_deref() != expected_parent.map(LayerKey::as_str) {
            return Err(self.invalid(
                what,
                format!(
                    "its parent is {}, the chain expects {}",
                    record.parent.as_deref().unwrap_or("the source"),
                    expected_parent.map_or("the source", LayerKey::as_str)
                ),
            ));
        }
        let backing_ok = match expected_parent {
            Some(parent) => record.backing == backing_for(&Foundation::Layer(parent)),
            None => record.backing.strip_prefix("../../sources/").is_some_and(|name| {
                !name.is_empty() && !name.contains('/') && !name.starts_with('.')
            }),
        };
        if backing_ok {
            Ok(())
        } else {
            Err(self
                .invalid(what, format!("its backing file {:?} is not its parent", record.backing)))
        }
    }

    async fn check_header(&self, disk: &Path, backing: &str, what: &str) -> Result<(), CacheError> {
        let info = crate::qemu::img::info(disk).await.map_err(|error| {
            self.invalid(what, format!("qemu-img cannot read its disk: {error}"))
        })?;
        let as_recorded = info.format == "qcow2"
            && info.backing_filename.as_deref() == Some(backing)
            && info.backing_format.as_deref() == Some("qcow2");
        if as_recorded {
            Ok(())
        } else {
            Err(self.invalid(
                what,
                format!(
                    "its disk is {} on {:?}, its record says qcow2 on {backing:?}",
                    info.format, info.backing_filename
                ),
            ))
        }
    }

    fn started(&self, item: &Item<'_>, direction: CacheDirection, total: Option<u64>) -> Instant {
        self.events.emit(Event::CacheTransferStarted {
            kind: item.kind.to_owned(),
            stage: item.stage.map(str::to_owned),
            key: item.key.to_owned(),
            direction,
            total_bytes: total,
        });
        Instant::now()
    }

    fn finished(&self, item: &Item<'_>, direction: CacheDirection, bytes: u64, started: Instant) {
        self.events.emit(Event::CacheTransferFinished {
            kind: item.kind.to_owned(),
            stage: item.stage.map(str::to_owned),
            key: item.key.to_owned(),
            direction,
            bytes,
            seconds: started.elapsed().as_secs_f64(),
        });
    }

    fn invalid(&self, what: &str, reason: impl Into<String>) -> CacheError {
        CacheError::Invalid {
            registry: self.url.registry().to_owned(),
            what: what.to_owned(),
            reason: reason.into(),
        }
    }

    /// Sorts the client's errors into what a caller acts on: unavailable, refused, missing.
    fn classify(&self, doing: &str, error: OciDistributionError) -> CacheError {
        let registry = self.url.registry().to_owned();
        let doing = doing.to_owned();
        let codes = |codes: &[OciErrorCode]| match &error {
            OciDistributionError::RegistryError { envelope, .. } => {
                envelope.errors.iter().any(|e| codes.contains(&e.code))
            }
            _ => false,
        };
        let refused = matches!(
            &error,
            OciDistributionError::UnauthorizedError { .. }
                | OciDistributionError::AuthenticationFailure(_)
                | OciDistributionError::ServerError { code: 401 | 403, .. }
        ) || codes(&[OciErrorCode::Unauthorized, OciErrorCode::Denied]);
        let missing = matches!(
            &error,
            OciDistributionError::ImageManifestNotFoundError(_)
                | OciDistributionError::ServerError { code: 404, .. }
        ) || codes(&[
            OciErrorCode::ManifestUnknown,
            OciErrorCode::BlobUnknown,
            OciErrorCode::NameUnknown,
            OciErrorCode::NotFound,
        ]);
        let unavailable = match &error {
            OciDistributionError::RequestError(request) => {
                request.is_connect()
                    || request.is_timeout()
                    || request.is_request()
                    || request.is_body()
            }
            OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
            OciDistributionError::IoError(_) => true,
            _ => codes(&[OciErrorCode::Toomanyrequests]),
        };
        if refused {
            CacheError::Auth {
                registry,
                doing,
                hint: self.auth_hint.clone(),
                source: Box::new(error),
            }
        } else if missing {
            CacheError::NotFound { registry, what: doing }
        } else if let OciDistributionError::DigestError(
            oci_client::errors::DigestError::VerificationError { expected, actual },
        ) = &error
        {
            CacheError::DigestMismatch {
                registry,
                what: doing,
                expected: expected.clone(),
                actual: actual.clone(),
            }
        } else if unavailable {
            CacheError::Unavailable { registry, doing, source: Box::new(error) }
        } else {
            CacheError::Registry { registry, doing, source: Box::new(error) }
        }
    }
}

fn descriptor_size(descriptor: &OciDescriptor) -> u64 {
    u64::try_from(descriptor.size).unwrap_or(0)
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError {
    let path = path.to_owned();
    move |source| CacheError::Io { path, source }
}

/// `STORE/tmp` for a layer folder `STORE/layers/KEY`.
fn store_tmp(layer_dir: &Path) -> PathBuf {
    layer_dir
        .parent()
        .and_then(Path::parent)
        .map_or_else(std::env::temp_dir, |root| root.join("tmp"))
}

async fn lock_layer(store: &Layers, key: &LayerKey) -> Result<fs::File, CacheError> {
    let (store, key) = (store.clone(), key.clone());
    wait_for_lock(move || store.lock(&key)).await
}

/// A store lock taken off the async threads (it may wait for another process): the store's
/// one way ([`crate::store::wait_for_lock`]).
async fn wait_for_lock(
    take: impl FnOnce() -> Result<fs::File, crate::layer::LayerError> + Send + 'static,
) -> Result<fs::File, CacheError> {
    crate::store::wait_for_lock(take).await.map_err(CacheError::Layer)
}

/// `sha256-HEX` with an optional extension of letters and digits.
fn valid_source_name(name: &str, hex: &str) -> bool {
    name.strip_prefix(&format!("sha256-{hex}")).is_some_and(|rest| {
        rest.is_empty()
            || rest.strip_prefix('.').is_some_and(|ext| {
                !ext.is_empty() && ext.len() <= 16 && ext.bytes().all(|b| b.is_ascii_alphanumeric())
            })
    })
}

/// The folder's regular files as a tar archive in a temp file in `tmp`.
fn tar_folder(folder: &Path, tmp: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let temp = tempfile::Builder::new().prefix("cache-restore.").tempfile_in(tmp)?;
    let mut builder = tar::Builder::new(temp.reopen()?);
    for entry in fs::read_dir(folder)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            builder.append_path_with_name(entry.path(), entry.file_name())?;
        }
    }
    builder.into_inner()?.sync_all()?;
    Ok(temp)
}

/// Unpacks plain files from `archive` into a new private folder in `parent`, then renames it to
/// `into`: a crash leaves no half restore point.
/// Unpacks a restore point's archive (plain files only, modes 0600) into a new 0700 folder in
/// `tmp`, returned for `Layers::install_restore_point`.
fn untar_staged(archive: &Path, tmp: &Path) -> std::io::Result<PathBuf> {
    let staging = tempfile::Builder::new().prefix("cache-restore-dir.").tempdir_in(tmp)?;
    fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o700))?;
    let mut tar = tar::Archive::new(fs::File::open(archive)?);
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let plain = entry.header().entry_type().is_file()
            && path.components().count() == 1
            && matches!(path.components().next(), Some(std::path::Component::Normal(_)));
        if !plain {
            return Err(std::io::Error::other(format!("unexpected entry {}", path.display())));
        }
        let target = staging.path().join(&path);
        entry.unpack(&target)?;
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600))?;
    }
    Ok(staging.keep())
}

/// What a `.sig` image holds: the signatures, and its layers as they are.
#[derive(Debug, Default)]
struct Signatures {
    signed: Vec<Signed>,
    layers: Vec<OciDescriptor>,
}

/// The image config cosign gives a signature image: empty, its rootfs naming the layers.
fn signature_config(layers: &[OciDescriptor]) -> Vec<u8> {
    let diff_ids: Vec<&str> = layers.iter().map(|layer| layer.digest.as_str()).collect();
    serde_json::json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{ "created": "0001-01-01T00:00:00Z" }],
        "os": "",
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    })
    .to_string()
    .into_bytes()
}

/// Parses a config blob (an artifact's record) after bounding its size; `Err` says why it is
/// not one.
pub fn parse_config<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "its record is {} bytes, more than the {MAX_CONFIG_BYTES} strata reads",
            bytes.len()
        ));
    }
    serde_json::from_slice(bytes).map_err(|error| format!("its record is invalid: {error}"))
}

/// Parses a manifest's bytes after bounding their size; `Err` says why it is not one.
pub fn parse_manifest(bytes: &[u8]) -> Result<OciImageManifest, String> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(format!(
            "its manifest is {} bytes, more than the {MAX_MANIFEST_BYTES} strata reads",
            bytes.len()
        ));
    }
    let manifest: OciImageManifest = serde_json::from_slice(bytes)
        .map_err(|error| format!("its manifest is invalid: {error}"))?;
    if manifest.schema_version != 2 {
        return Err(format!("its manifest has schema version {}", manifest.schema_version));
    }
    match manifest.media_type.as_deref() {
        Some(OCI_IMAGE_MEDIA_TYPE) | None => Ok(manifest),
        Some(other) => Err(format!("its manifest has the unknown media type {other}")),
    }
}
