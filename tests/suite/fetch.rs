//! `strata fetch` and `strata::source::fetch` against real HTTP servers on 127.0.0.1 (see
//! `fetch_support`), real files and real strata processes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::fetch_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fetch_support::{Proxy, Route, Server};
use predicates::prelude::PredicateBooleanExt;
use sha2::{Digest as _, Sha256, Sha512};
use strata::definition::{Checksum, Digest, HashAlgo, Location, Source};
use strata::events::{Event, Events, Recorder};
use strata::source::{self, FetchOptions, SourceError};
use strata::store::Store;

const MIB: usize = 1024 * 1024;

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn sha512(bytes: &[u8]) -> String {
    hex::encode(Sha512::digest(bytes))
}

fn inline(location: Location, bytes: &[u8]) -> Source {
    let digest = Digest::new(HashAlgo::Sha256, &sha256(bytes)).unwrap();
    Source { location, checksum: Checksum::Inline(digest) }
}

fn http(url: String, bytes: &[u8]) -> Source {
    inline(Location::Http(url), bytes)
}

fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    (dir, store)
}

/// The names in `sources/`, without the index folder.
fn source_files(store: &Store) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(store.sources_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "index")
        .collect();
    names.sort();
    names
}

async fn fetch(
    store: &Store,
    source: &Source,
    options: FetchOptions,
) -> (Result<source::FetchedSource, SourceError>, Vec<Event>) {
    let recorder = Arc::new(Recorder::default());
    let events = Events::none().with(recorder.clone());
    let result = source::fetch(store, source, options, &events).await;
    (result, recorder.events())
}

fn online() -> FetchOptions {
    FetchOptions::default()
}

// ---- the library API ----

#[tokio::test(flavor = "multi_thread")]
async fn downloads_verifies_and_then_uses_the_cache() {
    let server = Server::start();
    let body = random_bytes(3 * MIB + 17, 1);
    server.route("/images/disk.qcow2", Route::body(body.clone()));
    let (_dir, store) = new_store();
    let source = http(server.url("/images/disk.qcow2"), &body);

    let (result, events) = fetch(&store, &source, online()).await;
    let fetched = result.unwrap();
    assert_eq!(fetched.path, store.sources_dir().join(format!("sha256-{}.qcow2", sha256(&body))));
    assert_eq!(fs::read(&fetched.path).unwrap(), body);
    assert_eq!(fetched.size, body.len() as u64);
    assert_eq!(fetched.digest.hex(), sha256(&body));
    assert!(matches!(events.first(), Some(Event::DownloadStarted { resumed_from: 0, .. })));
    assert!(events.iter().any(|event| matches!(event, Event::DownloadFinished { bytes, .. } if *bytes == body.len() as u64)));
    assert_eq!(source_files(&store), [format!("sha256-{}.qcow2", sha256(&body))]);

    let (again, events) = fetch(&store, &source, online()).await;
    assert_eq!(again.unwrap(), fetched);
    assert!(matches!(events.as_slice(), [Event::SourceCached { .. }]), "{events:?}");
    assert_eq!(server.requests("/images/disk.qcow2").len(), 1, "the cache needs no request");
    assert_eq!(source::lookup(&store, &source), Some(fetched));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_connection_resumes_where_it_broke() {
    let server = Server::start();
    let body = random_bytes(4 * MIB, 2);
    let route = Route { drop_after_once: Some(MIB + 5), ..Route::body(body.clone()) };
    server.route("/disk.img", route);
    let (_dir, store) = new_store();

    let (result, events) = fetch(&store, &http(server.url("/disk.img"), &body), online()).await;
    let fetched = result.unwrap();
    assert_eq!(fs::read(&fetched.path).unwrap(), body);
    let requests = server.requests("/disk.img");
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].headers.get("range").map(String::as_str), Some("bytes=1048581-"));
    assert!(requests[1].headers.contains_key("if-range"));
    assert_eq!(server.body_bytes("/disk.img"), body.len() as u64, "nothing was sent twice");
    assert!(events.iter().any(|event| matches!(event, Event::Warning { .. })));
    assert!(events.iter().any(
        |event| matches!(event, Event::DownloadStarted { resumed_from, .. } if *resumed_from == (MIB + 5) as u64)
    ));
    assert_eq!(source_files(&store).len(), 1, "no partial left: {:?}", source_files(&store));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_ranges_makes_it_start_over() {
    let server = Server::start();
    let body = random_bytes(2 * MIB, 3);
    let route =
        Route { drop_after_once: Some(MIB), ignore_range: true, ..Route::body(body.clone()) };
    server.route("/disk.img", route);
    let (_dir, store) = new_store();

    let (result, _) = fetch(&store, &http(server.url("/disk.img"), &body), online()).await;
    assert_eq!(fs::read(result.unwrap().path).unwrap(), body);
    assert_eq!(server.requests("/disk.img").len(), 2);
    assert_eq!(server.body_bytes("/disk.img"), (MIB + body.len()) as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn not_found_is_not_retried() {
    let server = Server::start();
    let (_dir, store) = new_store();
    let url = server.url("/missing.qcow2");
    let (result, _) = fetch(&store, &http(url.clone(), b"x"), online()).await;
    let error = result.unwrap_err();
    assert!(matches!(error, SourceError::Status { status: 404, .. }), "{error:?}");
    assert!(error.to_string().contains(&url), "{error}");
    assert_eq!(server.requests("/missing.qcow2").len(), 1);
    assert!(source_files(&store).iter().all(|name| !name.starts_with("sha256-")));
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_are_retried() {
    let server = Server::start();
    let body = random_bytes(100_000, 4);
    server.route("/disk.img", Route { fail_first: vec![500, 503], ..Route::body(body.clone()) });
    let (_dir, store) = new_store();
    let (result, events) = fetch(&store, &http(server.url("/disk.img"), &body), online()).await;
    assert_eq!(fs::read(result.unwrap().path).unwrap(), body);
    assert_eq!(server.requests("/disk.img").len(), 3);
    let warnings = events.iter().filter(|event| matches!(event, Event::Warning { .. })).count();
    assert_eq!(warnings, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_are_followed() {
    let server = Server::start();
    let body = random_bytes(10_000, 5);
    server.route("/real.qcow2", Route::body(body.clone()));
    server
        .route("/latest.qcow2", Route { redirect: Some("/real.qcow2".into()), ..Route::default() });
    let (_dir, store) = new_store();
    let (result, _) = fetch(&store, &http(server.url("/latest.qcow2"), &body), online()).await;
    assert_eq!(fs::read(result.unwrap().path).unwrap(), body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_checksum_leaves_nothing_behind() {
    let server = Server::start();
    let body = random_bytes(MIB, 6);
    server.route("/disk.qcow2", Route::body(body.clone()));
    let (_dir, store) = new_store();
    let url = server.url("/disk.qcow2");
    let (result, _) = fetch(&store, &http(url.clone(), b"something else"), online()).await;
    let error = result.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, SourceError::Mismatch { .. }), "{error:?}");
    assert!(message.contains(&url), "{message}");
    assert!(message.contains(&sha256(&body)), "actual digest named: {message}");
    assert!(message.contains(&sha256(b"something else")), "expected digest named: {message}");
    assert!(source_files(&store).is_empty(), "{:?}", source_files(&store));
}

#[tokio::test(flavor = "multi_thread")]
async fn sha512_checksums_still_store_by_sha256() {
    let server = Server::start();
    let body = random_bytes(300_000, 7);
    server.route("/disk.qcow2", Route::body(body.clone()));
    let (_dir, store) = new_store();
    let digest = Digest::new(HashAlgo::Sha512, &sha512(&body)).unwrap();
    let source = Source {
        location: Location::Http(server.url("/disk.qcow2")),
        checksum: Checksum::Inline(digest),
    };
    let (result, _) = fetch(&store, &source, online()).await;
    let fetched = result.unwrap();
    assert_eq!(fetched.digest.hex(), sha256(&body));
    let wrong = Digest::new(HashAlgo::Sha512, &sha512(b"other")).unwrap();
    let other = Source {
        location: Location::Http(server.url("/disk.qcow2")),
        checksum: Checksum::Inline(wrong),
    };
    let (result, _) = fetch(&store, &other, online()).await;
    assert!(matches!(result, Err(SourceError::Mismatch { .. })));
    assert!(fetched.path.exists(), "a mismatch of another source leaves the cached one alone");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_checksum_file_format_is_understood() {
    let server = Server::start();
    let body = random_bytes(200_000, 8);
    server.route("/images/disk.qcow2", Route::body(body.clone()));
    let (hex256, hex512) = (sha256(&body), sha512(&body));
    let other = sha256(b"other");
    let formats = [
        ("gnu", format!("{other}  other.qcow2\n{hex256}  disk.qcow2\n")),
        ("star", format!("{other} *other.qcow2\n{hex256} *disk.qcow2\n")),
        ("gnu512", format!("{hex512}  disk.qcow2\n")),
        ("bsd", format!("SHA256 (other.qcow2) = {other}\nSHA512 (disk.qcow2) = {hex512}\n")),
        (
            "signed",
            format!(
                "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n- {hex256}  disk.qcow2\n\
                 -----BEGIN PGP SIGNATURE-----\n\niQEzBAEBCAAdFiEE\n=x1y2\n-----END PGP SIGNATURE-----\n"
            ),
        ),
    ];
    for (name, text) in formats {
        let path = format!("/sums/{name}");
        server.route(&path, Route::body(text));
        let (_dir, store) = new_store();
        let source = Source {
            location: Location::Http(server.url("/images/disk.qcow2")),
            checksum: Checksum::File(Location::Http(server.url(&path))),
        };
        let (result, _) = fetch(&store, &source, online()).await;
        let fetched = result.unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(fetched.digest.hex(), hex256, "{name}");
        // Offline, the index remembers what the checksum file said.
        let before = server.total_requests();
        let offline = FetchOptions { offline: true, verify: false };
        let (again, _) = fetch(&store, &source, offline).await;
        assert_eq!(again.unwrap(), fetched, "{name}");
        assert_eq!(server.total_requests(), before, "{name}: offline made a request");
        assert_eq!(source::lookup(&store, &source), Some(fetched), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checksum_file_without_the_entry_is_an_error() {
    let server = Server::start();
    server.route("/disk.qcow2", Route::body(b"abc".to_vec()));
    server.route("/SHA256SUMS", Route::body(format!("{}  other.qcow2\n", sha256(b"abc"))));
    let (_dir, store) = new_store();
    let source = Source {
        location: Location::Http(server.url("/disk.qcow2")),
        checksum: Checksum::File(Location::Http(server.url("/SHA256SUMS"))),
    };
    let (result, _) = fetch(&store, &source, online()).await;
    let message = result.unwrap_err().to_string();
    assert!(message.contains(&server.url("/SHA256SUMS")), "{message}");
    assert!(message.contains("disk.qcow2"), "{message}");
    assert!(server.requests("/disk.qcow2").is_empty(), "nothing downloaded without a checksum");
}

#[tokio::test(flavor = "multi_thread")]
async fn local_files_and_local_checksum_files() {
    let dir = tempfile::tempdir().unwrap();
    let body = random_bytes(MIB + 3, 9);
    let image = dir.path().join("local.raw");
    fs::write(&image, &body).unwrap();
    let sums = dir.path().join("SHA512SUMS");
    fs::write(&sums, format!("{}  local.raw\n", sha512(&body))).unwrap();
    let (_store_dir, store) = new_store();
    let source = Source {
        location: Location::File(image.clone()),
        checksum: Checksum::File(Location::File(sums)),
    };
    let (result, events) =
        fetch(&store, &source, FetchOptions { offline: true, verify: false }).await;
    let fetched = result.unwrap();
    assert_eq!(fetched.path.extension().unwrap(), "raw");
    assert_eq!(fs::read(&fetched.path).unwrap(), body);
    assert!(events.iter().any(|event| matches!(event, Event::DownloadFinished { .. })));
    assert_eq!(source_files(&store).len(), 1, "{:?}", source_files(&store));
    let (again, events) = fetch(&store, &source, online()).await;
    assert_eq!(again.unwrap(), fetched);
    assert!(matches!(events.as_slice(), [Event::SourceCached { .. }]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_cache_is_noticed_and_fetched_again() {
    let server = Server::start();
    let body = random_bytes(500_000, 10);
    server.route("/disk.qcow2", Route::body(body.clone()));
    let (_dir, store) = new_store();
    let source = http(server.url("/disk.qcow2"), &body);
    let fetched = fetch(&store, &source, online()).await.0.unwrap();

    // Same size, same modification time: only --verify notices.
    let mtime = fs::metadata(&fetched.path).unwrap().modified().unwrap();
    let mut damaged = body.clone();
    damaged[1000] ^= 0xff;
    fs::write(&fetched.path, &damaged).unwrap();
    fs::File::options().write(true).open(&fetched.path).unwrap().set_modified(mtime).unwrap();
    let trusted = fetch(&store, &source, online()).await.0.unwrap();
    assert_eq!(trusted, fetched, "size and time unchanged: trusted");
    assert_eq!(server.requests("/disk.qcow2").len(), 1);

    let offline_verify = FetchOptions { offline: true, verify: true };
    let error = fetch(&store, &source, offline_verify).await.0.unwrap_err();
    assert!(matches!(error, SourceError::CachedCorrupt { .. }), "{error:?}");
    assert!(!fetched.path.exists(), "the damaged file is deleted");

    let (result, events) =
        fetch(&store, &source, FetchOptions { offline: false, verify: true }).await;
    assert_eq!(fs::read(result.unwrap().path).unwrap(), body);
    assert!(events.iter().any(|event| matches!(event, Event::DownloadFinished { .. })));

    // A changed modification time makes it rehash (and still trust good content).
    fs::File::options().write(true).open(&fetched.path).unwrap().set_modified(mtime).unwrap();
    let (result, events) = fetch(&store, &source, online()).await;
    assert_eq!(result.unwrap().path, fetched.path);
    assert!(matches!(events.as_slice(), [Event::SourceCached { .. }]));
    assert_eq!(server.requests("/disk.qcow2").len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_without_a_cached_copy_fails_without_a_request() {
    let server = Server::start();
    let (_dir, store) = new_store();
    let url = server.url("/disk.qcow2");
    let offline = FetchOptions { offline: true, verify: false };
    let message = fetch(&store, &http(url.clone(), b"x"), offline).await.0.unwrap_err().to_string();
    assert!(message.contains(&url) && message.contains("strata fetch"), "{message}");
    let checksum_file = Source {
        location: Location::Http(url),
        checksum: Checksum::File(Location::Http(server.url("/SHA256SUMS"))),
    };
    assert!(matches!(
        fetch(&store, &checksum_file, offline).await.0,
        Err(SourceError::NotCached { .. })
    ));
    assert_eq!(server.total_requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_and_dns_failures_name_the_url() {
    let server = Server::start();
    let (_dir, store) = new_store();
    // https against a plain HTTP server: the handshake fails.
    let url = format!("https://127.0.0.1:{}/disk.qcow2", server.port);
    let error = fetch(&store, &http(url.clone(), b"x"), online()).await.0.unwrap_err();
    assert!(matches!(error, SourceError::Tls { .. }), "{error:?}");
    assert!(error.to_string().contains(&url));
    let url = "http://strata-test.invalid/disk.qcow2".to_owned();
    let error = fetch(&store, &http(url.clone(), b"x"), online()).await.0.unwrap_err();
    assert!(matches!(error, SourceError::Dns { .. }), "{error:?}");
    assert!(error.to_string().contains(&url));
}

// ---- the command line ----

fn write_definition(dir: &Path, url: &str, checksum: &str) -> PathBuf {
    let path = dir.join("image.toml");
    let text = format!(
        "name = \"test\"\n\n[source]\nurl = \"{url}\"\n{checksum}\n\n\
         [[stage]]\nname = \"base\"\nsteps = [{{ shell = \"true\" }}]\n"
    );
    fs::write(&path, text).unwrap();
    path
}

fn strata(store: &Path) -> assert_cmd::Command {
    let mut command = assert_cmd::Command::new(env!("CARGO_BIN_EXE_strata"));
    command.env("STRATA_STORE", store);
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        command.env_remove(name);
    }
    command
}

#[test]
fn cli_fetch_then_offline() {
    let server = Server::start();
    let body = random_bytes(MIB, 11);
    server.route("/disk.qcow2", Route::body(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let checksum = format!("checksum = \"sha256:{}\"", sha256(&body));
    let definition = write_definition(dir.path(), &server.url("/disk.qcow2"), &checksum);

    strata(&store).arg("fetch").arg(&definition).arg("--offline").assert().code(1).stderr(
        predicates::str::contains(server.url("/disk.qcow2"))
            .and(predicates::str::contains("strata fetch")),
    );
    assert_eq!(server.total_requests(), 0);

    strata(&store).arg("fetch").arg(&definition).assert().success();
    let stored = store.join("sources").join(format!("sha256-{}.qcow2", sha256(&body)));
    assert_eq!(fs::read(stored).unwrap(), body);

    strata(&store)
        .args(["--log-format", "json", "fetch"])
        .arg(&definition)
        .arg("--offline")
        .assert()
        .success()
        .stdout(predicates::str::contains("\"event\":\"source_cached\""));
    assert_eq!(server.requests("/disk.qcow2").len(), 1);
}

#[test]
fn cli_fetch_wrong_checksum_exits_1() {
    let server = Server::start();
    server.route("/disk.qcow2", Route::body(b"abc".to_vec()));
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let checksum = format!("checksum = \"sha256:{}\"", sha256(b"abd"));
    let definition = write_definition(dir.path(), &server.url("/disk.qcow2"), &checksum);
    strata(&store)
        .arg("fetch")
        .arg(&definition)
        .assert()
        .code(1)
        .stderr(predicates::str::contains("checksum mismatch"));
    let left: Vec<_> = fs::read_dir(store.join("sources"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name != "index")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn cli_fetch_goes_through_http_proxy() {
    let server = Server::start();
    let proxy = Proxy::start();
    let body = random_bytes(300_000, 12);
    server.route("/disk.qcow2", Route::body(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let checksum = format!("checksum = \"sha256:{}\"", sha256(&body));
    let definition = write_definition(dir.path(), &server.url("/disk.qcow2"), &checksum);
    strata(&store)
        .env("HTTP_PROXY", format!("http://127.0.0.1:{}", proxy.port))
        .arg("fetch")
        .arg(&definition)
        .assert()
        .success();
    assert_eq!(proxy.targets(), [server.url("/disk.qcow2")]);
    assert_eq!(server.requests("/disk.qcow2").len(), 1);
}

#[test]
fn cli_two_fetches_at_once_download_once() {
    let server = Server::start();
    let body = random_bytes(2 * MIB, 13);
    // About a second of download, so the two processes overlap.
    let route = Route { throttle: Some(Duration::from_millis(30)), ..Route::body(body.clone()) };
    server.route("/disk.qcow2", route);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let checksum = format!("checksum = \"sha256:{}\"", sha256(&body));
    let definition = write_definition(dir.path(), &server.url("/disk.qcow2"), &checksum);
    let spawn = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_strata"));
        command.env("STRATA_STORE", &store).env_remove("HTTP_PROXY").env_remove("http_proxy");
        command.arg("fetch").arg(&definition).spawn().unwrap()
    };
    let (mut first, mut second) = (spawn(), spawn());
    assert!(first.wait().unwrap().success());
    assert!(second.wait().unwrap().success());
    assert_eq!(server.requests("/disk.qcow2").len(), 1);
    assert_eq!(server.body_bytes("/disk.qcow2"), body.len() as u64);
}

#[test]
fn cli_a_killed_fetch_resumes() {
    let server = Server::start();
    let body = random_bytes(4 * MIB, 14);
    let route = Route { throttle: Some(Duration::from_millis(20)), ..Route::body(body.clone()) };
    server.route("/disk.qcow2", route);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let checksum = format!("checksum = \"sha256:{}\"", sha256(&body));
    let definition = write_definition(dir.path(), &server.url("/disk.qcow2"), &checksum);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .env("STRATA_STORE", &store)
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .arg("fetch")
        .arg(&definition)
        .spawn()
        .unwrap();
    // Kill it once a part has arrived (and been flushed into the partial file).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.body_bytes("/disk.qcow2") < (2 * MIB) as u64 {
        assert!(std::time::Instant::now() < deadline, "the download never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let sent_before = server.body_bytes("/disk.qcow2");

    server.route("/disk.qcow2", Route::body(body.clone()));
    strata(&store).arg("fetch").arg(&definition).assert().success();
    let stored = store.join("sources").join(format!("sha256-{}.qcow2", sha256(&body)));
    assert_eq!(fs::read(stored).unwrap(), body);
    let requests = server.requests("/disk.qcow2");
    assert_eq!(requests.len(), 2);
    assert!(requests[1].headers.contains_key("range"), "the second run resumed");
    let resent = server.body_bytes("/disk.qcow2") - sent_before;
    assert!(resent < body.len() as u64, "resent {resent} of {} bytes", body.len());
}

#[test]
fn cli_file_urls_and_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let body = random_bytes(100_000, 15);
    fs::write(dir.path().join("base.qcow2"), &body).unwrap();
    let checksum = format!("checksum = \"sha256:{}\"", sha256(&body));
    let stored = store.join("sources").join(format!("sha256-{}.qcow2", sha256(&body)));

    let definition = write_definition(dir.path(), "base.qcow2", &checksum);
    strata(&store).arg("fetch").arg(&definition).assert().success();
    assert_eq!(fs::read(&stored).unwrap(), body);

    fs::remove_dir_all(&store).unwrap();
    let url = format!("file://{}", dir.path().join("base.qcow2").display());
    let definition = write_definition(dir.path(), &url, &checksum);
    strata(&store).arg("fetch").arg(&definition).arg("--offline").assert().success();
    assert_eq!(fs::read(&stored).unwrap(), body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_keeps_failing_is_given_up_on() {
    let server = Server::start();
    let body = random_bytes(1000, 16);
    server.route("/disk.img", Route { fail_first: vec![502; 10], ..Route::body(body.clone()) });
    let (_dir, store) = new_store();
    let url = server.url("/disk.img");
    let error = fetch(&store, &http(url.clone(), &body), online()).await.0.unwrap_err();
    assert!(matches!(error, SourceError::Interrupted { tries: 5, .. }), "{error:?}");
    assert!(error.to_string().contains(&url), "{error}");
    assert_eq!(server.requests("/disk.img").len(), 5, "bounded retries");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_reported_as_such() {
    let server = Server::start();
    let body = random_bytes(3 * MIB, 17);
    server.route("/disk.qcow2", Route::body(body.clone()));
    let (_dir, store) = new_store();
    let url = server.url("/disk.qcow2");
    // The partial file is where the download is written; /dev/full answers ENOSPC.
    let key = sha256(url.as_bytes());
    let partial = store.sources_dir().join(format!("{}-disk.qcow2.partial", &key[..16]));
    std::os::unix::fs::symlink("/dev/full", &partial).unwrap();
    let error = fetch(&store, &http(url.clone(), &body), online()).await.0.unwrap_err();
    assert!(matches!(error, SourceError::DiskFull { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("disk full") && message.contains(&url), "{message}");
    assert_eq!(server.requests("/disk.qcow2").len(), 1, "no retry for a full disk");
}

// ---- a lying Content-Length (issue 16, item 6) ----

#[tokio::test(flavor = "multi_thread")]
async fn a_content_length_longer_than_the_body_keeps_the_whole_file() {
    let server = Server::start();
    let body = random_bytes(MIB, 18);
    server.route("/disk.img", Route { extra_length: 1000, ..Route::body(body.clone()) });
    let (_dir, store) = new_store();
    let source = http(server.url("/disk.img"), &body);
    let fetched = tokio::time::timeout(Duration::from_secs(60), fetch(&store, &source, online()))
        .await
        .expect("the fetch never ends")
        .0
        .unwrap();
    assert_eq!(fs::read(&fetched.path).unwrap(), body);
    // The body, then a resume answered 416 whose partial already is the whole, right file.
    assert_eq!(server.requests("/disk.img").len(), 2);
    assert_eq!(server.body_bytes("/disk.img"), body.len() as u64, "downloaded once");
    assert_eq!(source_files(&store).len(), 1, "{:?}", source_files(&store));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lying_server_with_other_bytes_is_given_up_on() {
    let server = Server::start();
    let body = random_bytes(200_000, 19);
    server.route("/disk.img", Route { extra_length: 1000, ..Route::body(body.clone()) });
    let (_dir, store) = new_store();
    let source = http(server.url("/disk.img"), b"what the definition expects");
    let started = std::time::Instant::now();
    let (result, _) =
        tokio::time::timeout(Duration::from_secs(60), fetch(&store, &source, online()))
            .await
            .expect("the fetch never ends");
    let error = result.unwrap_err();
    assert!(matches!(error, SourceError::Interrupted { .. }), "{error:?}");
    let requests = server.requests("/disk.img").len();
    assert!(requests <= 5, "{requests} requests: the same bytes again are no progress");
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
}

// ---- credentials in URLs (issue 16, item 7) ----

const SECRETS: [&str; 4] = ["hunter2user", "s3cr3t-t0ken", "AMZSIGNATURE0123", "AKIDCREDENTIAL"];

fn secret_url(server: &Server, path: &str) -> String {
    format!(
        "http://hunter2user:s3cr3t-t0ken@127.0.0.1:{}{path}?X-Amz-Signature=AMZSIGNATURE0123\
         &x-amz-credential=AKIDCREDENTIAL&v=1",
        server.port
    )
}

fn assert_no_secret(what: &str, text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} holds `{secret}`:\n{text}");
    }
}

fn assert_no_secret_in_files(dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_no_secret_in_files(&path);
        } else {
            assert_no_secret(&path.display().to_string(), path.display().to_string().as_bytes());
            assert_no_secret(&path.display().to_string(), &fs::read(&path).unwrap_or_default());
        }
    }
}

#[test]
fn credentials_in_the_url_are_sent_but_never_shown_nor_stored() {
    let server = Server::start();
    let body = random_bytes(300_000, 20);
    // A 503 first: a warning that names the URL.
    let route = Route { fail_first: vec![503], ..Route::body(body.clone()) };
    server.route("/disk.qcow2", route);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let checksum = format!("checksum = \"sha256:{}\"", sha256(&body));
    let definition = write_definition(dir.path(), &secret_url(&server, "/disk.qcow2"), &checksum);

    for format in ["human", "json"] {
        let output = strata(&store)
            .args(["--log-format", format, "fetch"])
            .arg(&definition)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_no_secret("stdout", &output.stdout);
        assert_no_secret("stderr", &output.stderr);
    }
    let requests = server.requests("/disk.qcow2");
    assert_eq!(requests.len(), 2, "{requests:?}");
    let authorization = requests[0].headers.get("authorization").expect("Basic auth is sent");
    assert!(authorization.starts_with("Basic "), "{authorization}");
    assert!(requests[0].target.contains("AMZSIGNATURE0123"), "the real URL is requested");

    // A download that fails for good, and a checksum file behind a signed URL.
    let other = format!("checksum = \"sha256:{}\"", sha256(b"not cached"));
    let missing = write_definition(dir.path(), &secret_url(&server, "/missing.qcow2"), &other);
    for format in ["human", "json"] {
        let output =
            strata(&store).args(["--log-format", format, "fetch"]).arg(&missing).output().unwrap();
        assert_eq!(output.status.code(), Some(1));
        assert_no_secret("stdout", &output.stdout);
        assert_no_secret("stderr", &output.stderr);
        let shown = String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout);
        assert!(shown.contains("/missing.qcow2"), "the URL is still named: {shown}");
    }
    server.route("/SHA256SUMS", Route::body(format!("{}  disk.qcow2\n", sha256(&body))));
    let checksum = format!("checksum_url = \"{}\"", secret_url(&server, "/SHA256SUMS"));
    let signed = write_definition(dir.path(), &secret_url(&server, "/disk.qcow2"), &checksum);
    let output =
        strata(&store).args(["--log-format", "json", "fetch"]).arg(&signed).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_no_secret("stdout", &output.stdout);
    assert_no_secret("stderr", &output.stderr);

    assert_no_secret_in_files(&store);
}

// ---- litter (issue 16, item 12) ----

#[tokio::test(flavor = "multi_thread")]
async fn a_404_leaves_no_file() {
    let server = Server::start();
    let (_dir, store) = new_store();
    let (result, _) = fetch(&store, &http(server.url("/missing.qcow2"), b"x"), online()).await;
    assert!(matches!(result, Err(SourceError::Status { status: 404, .. })), "{result:?}");
    assert!(source_files(&store).is_empty(), "{:?}", source_files(&store));
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_partials_are_swept_unless_a_fetch_holds_them() {
    let (dir, store) = new_store();
    let sources = store.sources_dir();
    let key = |url: &str| sha256(url.as_bytes())[..16].to_owned();
    // A local copy killed half-way, an empty partial after a failed download, and an orphaned
    // sidecar: litter. A resumable partial, and litter of a fetch still running: kept.
    let killed_copy = format!(".copy-{}-Xa9b3c.partial", key("/images/a.qcow2"));
    let empty = format!("{}-b.qcow2.partial", key("http://h/b.qcow2"));
    let orphan = format!("{}-c.qcow2.partial.json", key("http://h/c.qcow2"));
    let resumable = format!("{}-d.qcow2.partial", key("http://h/d.qcow2"));
    let busy_copy = format!(".copy-{}-Zz0000.partial", key("/images/e.qcow2"));
    fs::write(sources.join(&killed_copy), b"half a copy").unwrap();
    fs::write(sources.join(&empty), b"").unwrap();
    fs::write(sources.join(&orphan), b"{}").unwrap();
    fs::write(sources.join(&resumable), b"first bytes").unwrap();
    let sidecar = r#"{"url":"http://h/d.qcow2","etag":"\"e\"","last_modified":null,"total":99}"#;
    fs::write(sources.join(format!("{resumable}.json")), sidecar).unwrap();
    fs::write(sources.join(&busy_copy), b"being copied").unwrap();
    let _running = store.lock(&format!("source-{}", key("/images/e.qcow2"))).unwrap();

    // Any fetch sweeps: here one of a local file.
    let body = random_bytes(1000, 21);
    let image = dir.path().join("local.img");
    fs::write(&image, &body).unwrap();
    fetch(&store, &inline(Location::File(image), &body), online()).await.0.unwrap();

    let left = source_files(&store);
    for gone in [&killed_copy, &empty, &orphan] {
        assert!(!left.contains(gone), "{gone} is still there: {left:?}");
    }
    for kept in [&resumable, &format!("{resumable}.json"), &busy_copy] {
        assert!(left.contains(kept), "{kept} was removed: {left:?}");
    }
}
