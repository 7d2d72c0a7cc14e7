//! The shared cache against a real registry: Debian's `docker-registry` (distribution v2) on
//! 127.0.0.1, its own folder and a free port, started by each test and killed on drop. Layers
//! are real qcow2 overlays (qemu-img, qemu-io) committed through `LayerStore`. No guest boots.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use strata::cache::{Cache, CacheError, Credentials, CredentialsFrom, Pushed};
use strata::events::{CacheDirection, Event, Events, Observer, Recorder};
use strata::layer::{Layer, LayerKey, LayerMetadata, LayerStore, Lookup, sha256_hex};
use strata::source::{FetchedSource, SourceDigest};
use strata::store::Store;
use strata::trust::{Accept, Algorithm, Policy, SigningKey, TrustedKeys};

use crate::common;

use common::registry::Registry;

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// `bytes` of incompressible content, the same for the same seed.
fn noise(bytes: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(bytes + 8);
    while out.len() < bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(bytes);
    out
}

fn key_of(name: &str) -> LayerKey {
    LayerKey::parse(&sha256_hex(name.as_bytes())).unwrap()
}

/// A qcow2 source in `sources/sha256-HEX.qcow2`, 256 MiB virtual with `data_mib` written.
fn make_source(store: &Store, data_mib: usize) -> FetchedSource {
    let raw = store.tmp_dir().join("source-data");
    std::fs::write(&raw, noise(data_mib << 20, 7)).unwrap();
    let temp = store.tmp_dir().join("source.qcow2");
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&temp).arg("256M"));
    run(Command::new("qemu-io")
        .args(["-f", "qcow2", "-c"])
        .arg(format!("write -q -s {} 1M {data_mib}M", raw.display()))
        .arg(&temp));
    std::fs::remove_file(&raw).unwrap();
    let hex = sha256_hex(&std::fs::read(&temp).unwrap());
    let path = store.sources_dir().join(format!("sha256-{hex}.qcow2"));
    std::fs::rename(&temp, &path).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    FetchedSource { path, digest: SourceDigest::from_hex(&hex).unwrap(), size }
}

/// A layer committed through the store as a build commits one: a qcow2 overlay on `backing`
/// (relative, as strata writes it) with `data_kib` of noise written at `offset_mib`.
fn make_layer(
    layers: &LayerStore,
    stage: &str,
    parent: Option<&LayerKey>,
    backing: &str,
    data_kib: usize,
    offset_mib: usize,
) -> Layer {
    let key = key_of(stage);
    let work = layers.begin(&key).unwrap();
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing])
        .arg(work.disk())
        .current_dir(&work.dir));
    let raw = work.dir.join("data");
    std::fs::write(&raw, noise(data_kib << 10, offset_mib as u64 + 3)).unwrap();
    run(Command::new("qemu-io")
        .args(["-f", "qcow2", "-c"])
        .arg(format!("write -q -s {} {offset_mib}M {data_kib}K", raw.display()))
        .arg(work.disk())
        .current_dir(&work.dir));
    std::fs::remove_file(&raw).unwrap();
    let metadata = LayerMetadata {
        key: key.to_string(),
        stage: stage.to_owned(),
        image: "test".to_owned(),
        parent: parent.map(ToString::to_string),
        backing: backing.to_owned(),
        inputs: serde_json::json!({ "stage": stage }),
        created: strata::layer::now_secs(),
        strata_version: "test".to_owned(),
        ..LayerMetadata::default()
    };
    layers.commit(work, metadata).unwrap()
}

/// A store with a source, a ~6 MiB layer on it and a small layer on that.
struct Chain {
    store: Store,
    layers: LayerStore,
    source: FetchedSource,
    base: Layer,
    app: Layer,
}

fn chain(dir: &Path) -> Chain {
    let store = Store::open(dir).unwrap();
    let layers = LayerStore::new(store.clone());
    let source = make_source(&store, 4);
    let source_backing =
        format!("../../sources/{}", source.path.file_name().unwrap().to_string_lossy());
    let base = make_layer(&layers, "base", None, &source_backing, 6 << 10, 8);
    let base_key = key_of("base");
    let app = make_layer(
        &layers,
        "app",
        Some(&base_key),
        &format!("../../layers/{base_key}/disk.qcow2"),
        512,
        40,
    );
    Chain { store, layers, source, base, app }
}

fn empty_store(dir: &Path) -> (Store, LayerStore) {
    let store = Store::open(dir).unwrap();
    (store.clone(), LayerStore::new(store))
}

/// A client that signs with a fresh key and trusts it.
async fn connect(registry: &Registry, events: &Events) -> Cache {
    Cache::connect(&registry.url(), &Credentials::Anonymous, &CredentialsFrom::Nowhere, events)
        .await
        .unwrap()
        .with_policy(signing_policy())
}

fn signing_policy() -> Policy {
    let key = Arc::new(SigningKey::random(Algorithm::EcdsaP256).unwrap());
    let mut trusted = TrustedKeys::new();
    trusted.add(key.public_key().clone());
    Policy { sign_with: Some(key), accept: Accept::Signed(trusted) }
}

fn assert_untouched(store: &Store, key: &LayerKey) {
    assert!(!store.layers_dir().join(key.as_str()).exists(), "a layer folder appeared");
    let left: Vec<_> =
        std::fs::read_dir(store.tmp_dir()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "tmp/ is not clean: {left:?}");
}

fn assert_same_file(a: &Path, b: &Path) {
    assert!(std::fs::read(a).unwrap() == std::fs::read(b).unwrap(), "{} differs", b.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn layers_and_sources_round_trip_byte_identical_and_are_uploaded_once() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let a = chain(&dir.path().join("a"));
    let recorder = Arc::new(Recorder::default());
    let cache = connect(&registry, &Events::none().with(recorder.clone())).await;

    let base_key = key_of("base");
    let app_key = key_of("app");
    assert!(!cache.has_layer(&base_key).await.unwrap());
    assert!(matches!(cache.push_source(&a.source).await.unwrap(), Pushed::Uploaded { .. }));
    let Pushed::Uploaded { bytes } = cache.push_layer(&a.base).await.unwrap() else {
        panic!("the first push uploaded nothing")
    };
    assert!(bytes > 6 << 20, "{bytes} bytes pushed for a 6 MiB layer of noise");
    // Two pushes of one key at once (two runners): both succeed, one artifact results.
    let (first, second) = tokio::join!(cache.push_layer(&a.app), cache.push_layer(&a.app));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(matches!(first, Pushed::Uploaded { .. }) || matches!(second, Pushed::Uploaded { .. }));
    assert!(cache.has_layer(&base_key).await.unwrap());
    assert!(cache.has_layer(&app_key).await.unwrap());

    // The second push asks first and uploads nothing.
    let blobs_before = registry.blob_files().len();
    assert_eq!(cache.push_layer(&a.base).await.unwrap(), Pushed::AlreadyThere);
    assert_eq!(cache.push_source(&a.source).await.unwrap(), Pushed::AlreadyThere);
    assert_eq!(registry.blob_files().len(), blobs_before);

    let (store_b, layers_b) = empty_store(&dir.path().join("b"));
    // A layer whose foundation is missing is refused, and nothing enters the store.
    let early = cache.pull_layer(&layers_b, &base_key, None, "test").await.unwrap_err();
    assert!(matches!(early, CacheError::ParentMissing { .. }), "{early}");
    let early = cache.pull_layer(&layers_b, &app_key, Some(&base_key), "test").await.unwrap_err();
    assert!(matches!(early, CacheError::ParentMissing { .. }), "{early}");
    assert_untouched(&store_b, &base_key);

    let source_b = cache.pull_source(&store_b, &a.source.digest).await.unwrap();
    assert_eq!(source_b.path.file_name(), a.source.path.file_name());
    assert_same_file(&a.source.path, &source_b.path);

    let base_b = cache.pull_layer(&layers_b, &base_key, None, "test").await.unwrap();
    // The record must carry the parent the chain expects.
    let wrong = cache.pull_layer(&layers_b, &app_key, None, "test").await.unwrap_err();
    eprintln!("{wrong}");
    assert!(matches!(wrong, CacheError::Invalid { .. }), "{wrong}");
    assert_untouched(&store_b, &app_key);
    let app_b = cache.pull_layer(&layers_b, &app_key, Some(&base_key), "test").await.unwrap();
    for (ours, theirs) in [(&a.base, &base_b), (&a.app, &app_b)] {
        assert_same_file(&ours.disk(), &theirs.disk());
        assert_eq!(theirs.metadata.disk_sha256, ours.metadata.disk_sha256);
        let allocated = std::fs::metadata(theirs.disk()).unwrap().blocks() * 512;
        let original = std::fs::metadata(ours.disk()).unwrap().blocks() * 512;
        assert!(allocated <= original + (64 << 10), "not sparse: {allocated} > {original}");
    }
    // Found by the cheap check and by a rehash, and usable by QEMU as a chain.
    for key in [&base_key, &app_key] {
        assert!(matches!(layers_b.lookup(key, false).unwrap(), Lookup::Hit(_)));
        assert!(matches!(layers_b.lookup(key, true).unwrap(), Lookup::Hit(_)));
    }
    run(Command::new("qemu-img").args(["check", "-q"]).arg(app_b.disk()));
    run(Command::new("qemu-img").arg("compare").arg(a.app.disk()).arg(app_b.disk()));
    // Pulling what is there is a lookup.
    let again = cache.pull_layer(&layers_b, &app_key, Some(&base_key), "test").await.unwrap();
    assert_eq!(again.metadata.disk_mtime_ns, app_b.metadata.disk_mtime_ns);
    assert_untouched(&store_b, &key_of("nothing"));

    let events = recorder.events();
    let pulls = events
        .iter()
        .filter(|e| {
            matches!(e, Event::CacheTransferFinished { direction: CacheDirection::Pull, .. })
        })
        .count();
    assert_eq!(pulls, 3, "source, base and app pulled once each: {events:?}");
    drop(a.layers);
    drop(a.store);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_blob_is_refused_and_nothing_enters_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let a = chain(&dir.path().join("a"));
    let cache = connect(&registry, &Events::none()).await;
    cache.push_layer(&a.base).await.unwrap();

    // Overwrite the middle of the big blob's data in the registry's own storage.
    let big = registry
        .blob_files()
        .into_iter()
        .max_by_key(|path| std::fs::metadata(path).unwrap().len())
        .unwrap();
    let mut data = std::fs::read(&big).unwrap();
    let middle = data.len() / 2;
    data[middle..middle + 64].fill(0x5a);
    std::fs::write(&big, data).unwrap();

    let (store_b, layers_b) = empty_store(&dir.path().join("b"));
    std::fs::copy(&a.source.path, store_b.sources_dir().join(a.source.path.file_name().unwrap()))
        .unwrap();
    let error = cache.pull_layer(&layers_b, &key_of("base"), None, "test").await.unwrap_err();
    eprintln!("{error}");
    assert!(matches!(error, CacheError::DigestMismatch { .. }), "{error}");
    assert!(!error.is_unavailable());
    assert_untouched(&store_b, &key_of("base"));
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_a_wrong_password_is_one_line_naming_the_registry_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let output =
        Command::new("htpasswd").args(["-Bbn", "runner", "right-pass-42"]).output().unwrap();
    assert!(output.status.success(), "htpasswd (apache2-utils) runs");
    std::fs::write(&htpasswd, output.stdout).unwrap();
    let registry = Registry::start(dir.path(), Some(&htpasswd));
    let a = chain(&dir.path().join("a"));

    let secret = "wrong-pass-1337";
    let wrong = Credentials::Basic { user: "runner".into(), password: secret.into() };
    let error =
        Cache::connect(&registry.url(), &wrong, &CredentialsFrom::Environment, &Events::none())
            .await
            .unwrap_err();
    eprintln!("{error}");
    assert!(matches!(error, CacheError::Auth { .. }), "{error}");
    assert!(!error.is_unavailable());
    let message = error.to_string();
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains(&format!("127.0.0.1:{}", registry.port)), "{message}");
    assert!(message.contains("STRATA_CACHE_PASSWORD"), "{message}");
    let mut everything = format!("{error:?} {wrong:?}");
    let mut cause: Option<&dyn std::error::Error> = Some(&error);
    while let Some(current) = cause {
        everything.push_str(&current.to_string());
        cause = current.source();
    }
    assert!(!everything.contains(secret), "the password leaked: {everything}");

    // Anonymous is refused too, and says what to set.
    let anonymous = Cache::connect(
        &registry.url(),
        &Credentials::Anonymous,
        &CredentialsFrom::Nowhere,
        &Events::none(),
    )
    .await
    .unwrap_err();
    assert!(matches!(anonymous, CacheError::Auth { .. }), "{anonymous}");

    let right = Credentials::Basic { user: "runner".into(), password: "right-pass-42".into() };
    let cache =
        Cache::connect(&registry.url(), &right, &CredentialsFrom::Environment, &Events::none())
            .await
            .unwrap();
    assert!(matches!(cache.push_layer(&a.base).await.unwrap(), Pushed::Uploaded { .. }));
    assert!(cache.has_layer(&key_of("base")).await.unwrap());
}

/// Kills the registry when the first chunk of a blob has moved in `direction`.
struct KillMidTransfer {
    direction: CacheDirection,
    registry: Mutex<Option<Registry>>,
}

impl Observer for KillMidTransfer {
    fn observe(&self, event: &Event) {
        if let Event::CacheTransferProgress { direction, .. } = event
            && *direction == self.direction
            && let Ok(mut registry) = self.registry.lock()
            && let Some(registry) = registry.as_mut()
        {
            registry.kill();
        }
    }
}

impl KillMidTransfer {
    fn restart(&self) {
        self.registry.lock().unwrap().as_mut().unwrap().restart();
    }
}

/// A registry killed while a 64 MiB layer streams up, then down: each time the error says the
/// cache is unavailable, the store is whole, and the next try works.
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_killed_mid_push_or_mid_pull_leaves_the_store_whole_and_the_next_try_works() {
    let dir = tempfile::tempdir().unwrap();
    let store_a = Store::open(&dir.path().join("a")).unwrap();
    let layers_a = LayerStore::new(store_a.clone());
    let source = make_source(&store_a, 1);
    let source_name = source.path.file_name().unwrap().to_owned();
    let big = make_layer(
        &layers_a,
        "big",
        None,
        &format!("../../sources/{}", source_name.to_string_lossy()),
        64 << 10,
        8,
    );
    let key = key_of("big");

    let registry = Registry::start(dir.path(), None);
    let url = registry.url();
    let killer = Arc::new(KillMidTransfer {
        direction: CacheDirection::Push,
        registry: Mutex::new(Some(registry)),
    });
    let events = Events::none().with(killer.clone());
    let anonymous = (Credentials::Anonymous, CredentialsFrom::Nowhere);
    let policy = signing_policy();
    let cache = Cache::connect(&url, &anonymous.0, &anonymous.1, &events)
        .await
        .unwrap()
        .with_policy(policy.clone());
    let error = cache.push_layer(&big).await.unwrap_err();
    eprintln!("{error}");
    assert!(error.is_unavailable(), "{error}");
    assert!(error.to_string().contains(url.registry()), "{error}");
    let left: Vec<_> =
        std::fs::read_dir(store_a.tmp_dir()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "the push left {left:?}");
    assert!(matches!(layers_a.lookup(&key, true).unwrap(), Lookup::Hit(_)));

    // Down: connecting says so, distinguishable from a refusal.
    let down = Cache::connect(&url, &anonymous.0, &anonymous.1, &Events::none()).await.unwrap_err();
    eprintln!("{down}");
    assert!(down.is_unavailable(), "{down}");

    killer.restart();
    let cache = Cache::connect(&url, &anonymous.0, &anonymous.1, &Events::none())
        .await
        .unwrap()
        .with_policy(policy.clone());
    assert!(!cache.has_layer(&key).await.unwrap(), "a half push became visible");
    assert!(matches!(cache.push_layer(&big).await.unwrap(), Pushed::Uploaded { .. }));

    let (store_b, layers_b) = empty_store(&dir.path().join("b"));
    std::fs::copy(&source.path, store_b.sources_dir().join(&source_name)).unwrap();
    let registry = killer.registry.lock().unwrap().take();
    let killer = Arc::new(KillMidTransfer {
        direction: CacheDirection::Pull,
        registry: Mutex::new(registry),
    });
    let events = Events::none().with(killer.clone());
    let cache = Cache::connect(&url, &anonymous.0, &anonymous.1, &events)
        .await
        .unwrap()
        .with_policy(policy.clone());
    let error = cache.pull_layer(&layers_b, &key, None, "test").await.unwrap_err();
    eprintln!("{error}");
    assert!(error.is_unavailable(), "{error}");
    assert_untouched(&store_b, &key);

    killer.restart();
    let cache = Cache::connect(&url, &anonymous.0, &anonymous.1, &Events::none())
        .await
        .unwrap()
        .with_policy(policy.clone());
    let pulled = cache.pull_layer(&layers_b, &key, None, "test").await.unwrap();
    assert_same_file(&big.disk(), &pulled.disk());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_point_round_trips_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let a = chain(&dir.path().join("a"));
    let restore = a.base.dir.join("restore");
    std::fs::create_dir(&restore).unwrap();
    std::fs::write(restore.join("restore.json"), br#"{"format":1}"#).unwrap();
    std::fs::write(restore.join("state.zst"), noise(100 << 10, 11)).unwrap();
    std::fs::write(restore.join("overlay.qcow2"), noise(10 << 10, 12)).unwrap();
    let cache = connect(&registry, &Events::none()).await;
    cache.push_layer(&a.base).await.unwrap();

    let (store_b, layers_b) = empty_store(&dir.path().join("b"));
    std::fs::copy(&a.source.path, store_b.sources_dir().join(a.source.path.file_name().unwrap()))
        .unwrap();
    cache.pull_layer(&layers_b, &key_of("base"), None, "test").await.unwrap();
    // Not pushed yet: nothing to pull, and a layer pull never brings one.
    assert_eq!(cache.pull_restore(&layers_b, &key_of("base")).await.unwrap(), None);

    assert!(matches!(cache.push_restore(&a.base).await.unwrap(), Pushed::Uploaded { .. }));
    assert_eq!(cache.push_restore(&a.base).await.unwrap(), Pushed::AlreadyThere);
    let pulled = cache.pull_restore(&layers_b, &key_of("base")).await.unwrap().unwrap();
    for file in ["restore.json", "state.zst", "overlay.qcow2"] {
        assert_same_file(&restore.join(file), &pulled.join(file));
        assert_eq!(
            std::fs::metadata(pulled.join(file)).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert_eq!(std::fs::metadata(&pulled).unwrap().permissions().mode() & 0o777, 0o700);
    assert_untouched(&store_b, &key_of("nothing"));
}

/// Times and bytes on loopback, for the report: `cargo test --test suite cache_registry::measure -- --ignored
/// --nocapture`. The source is the local base image when there is one (`STRATA_BASE_IMAGE_DIR`),
/// else ~200 MiB of noise.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a check"]
async fn measure_push_and_pull() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let a = chain(&dir.path().join("a"));
    let cache = connect(&registry, &Events::none()).await;
    let source = base_image(&a.store).unwrap_or_else(|| make_source(&a.store, 200));

    let timed = Instant::now();
    let pushed = cache.push_layer(&a.base).await.unwrap();
    let push_layer = timed.elapsed();
    let timed = Instant::now();
    let pushed_source = cache.push_source(&source).await.unwrap();
    let push_source = timed.elapsed();

    let (store_b, layers_b) = empty_store(&dir.path().join("b"));
    let timed = Instant::now();
    let pulled_source = cache.pull_source(&store_b, &source.digest).await.unwrap();
    let pull_source = timed.elapsed();
    std::fs::copy(&a.source.path, store_b.sources_dir().join(a.source.path.file_name().unwrap()))
        .unwrap();
    let timed = Instant::now();
    cache.pull_layer(&layers_b, &key_of("base"), None, "test").await.unwrap();
    let pull_layer = timed.elapsed();
    assert_eq!(pulled_source.size, source.size);
    println!(
        "layer: {} bytes (allocated {}), pushed {pushed:?} in {push_layer:?}, pulled in {pull_layer:?}",
        a.base.metadata.disk_bytes,
        a.base.allocated_bytes()
    );
    println!(
        "source: {} bytes, pushed {pushed_source:?} in {push_source:?}, pulled in {pull_source:?}",
        source.size
    );
}

fn base_image(store: &Store) -> Option<FetchedSource> {
    let dir = std::env::var_os("STRATA_BASE_IMAGE_DIR").map(PathBuf::from)?;
    let image = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|ext| ext == "qcow2"))?;
    let hex = sha256_hex(&std::fs::read(&image).ok()?);
    let path = store.sources_dir().join(format!("sha256-{hex}.qcow2"));
    std::fs::copy(&image, &path).ok()?;
    let size = std::fs::metadata(&path).ok()?.len();
    Some(FetchedSource { path, digest: SourceDigest::from_hex(&hex)?, size })
}
