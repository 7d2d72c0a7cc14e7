//! The SSH communicator against a real OpenSSH server on 127.0.0.1 (no guest needed):
//! each test starts its own `sshd -D` with a host key and an authorized key made by strata.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata::communicator::{
    AnsibleError, AnsibleStep, AttemptError, ClientKey, Communicator, CommunicatorError,
    ConnectWait, ExecSpec, HostKey, SshCommunicator, SshTarget,
};
use strata::events::Stream;

use crate::common;

use common::free_port;
use common::sshd::{Server, Sshd, require_sshd, spawn_sshd};

/// What only these tests need of the shared server.
impl Server {
    fn target(&self) -> SshTarget {
        SshTarget {
            addr: self.addr,
            user: "root".to_owned(),
            client_key: self.client.clone(),
            host_key: self.host.public_key().clone(),
        }
    }

    async fn connect(&self) -> SshCommunicator {
        let deadline = Instant::now() + Duration::from_secs(20);
        SshCommunicator::connect(self.target(), deadline, &mut |_| {}).await.unwrap()
    }
}

fn no_env() -> BTreeMap<String, String> {
    BTreeMap::new()
}

#[tokio::test]
async fn exec_streams_stdout_and_stderr_apart_with_exit_codes() {
    require_sshd();
    let server = Server::new();
    let _sshd = server.start();
    let ssh = server.connect().await;
    let mut seen = Vec::new();
    let exit = ssh
        .exec(
            "echo out1; echo err1 >&2; printf 'out2\\nno-newline'; exit 3",
            &no_env(),
            Duration::from_secs(30),
            |stream, line| seen.push((stream, line.to_owned())),
        )
        .await
        .unwrap();
    assert_eq!(exit.code, 3);
    assert!(!exit.success());
    let stdout: Vec<&str> =
        seen.iter().filter(|(s, _)| *s == Stream::Stdout).map(|(_, l)| l.as_str()).collect();
    let stderr: Vec<&str> =
        seen.iter().filter(|(s, _)| *s == Stream::Stderr).map(|(_, l)| l.as_str()).collect();
    assert_eq!(stdout, ["out1", "out2", "no-newline"]);
    assert_eq!(stderr, ["err1"]);

    let ok =
        ssh.exec_as_root("id -u", &no_env(), Duration::from_secs(30), |_, _| {}).await.unwrap();
    assert!(ok.success());

    // Several commands over one connection are cheap.
    let started = Instant::now();
    for _ in 0..5 {
        ssh.exec("true", &no_env(), Duration::from_secs(30), |_, _| {}).await.unwrap();
    }
    eprintln!("5 commands over one connection: {:?}", started.elapsed());
    let id = ssh.boot_id().await.unwrap();
    assert_eq!(id, fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim());
    ssh.close().await;
}

#[tokio::test]
async fn env_values_arrive_verbatim() {
    require_sshd();
    let server = Server::new();
    let _sshd = server.start();
    let ssh = server.connect().await;
    let nasty = [
        ("QUOTES", "it's \"quoted\" ''"),
        ("DOLLARS", "$HOME ${PATH} $(id) `id`"),
        ("NEWLINES", "line1\nline2\n"),
        ("GLOB", "* ? [a-z] ~ ; | & < > #"),
        ("EMPTY", ""),
        ("UNICODE", "grüße ✓"),
    ];
    let env: BTreeMap<String, String> =
        nasty.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let out = server.path("env-out");
    let command = format!(
        "for name in QUOTES DOLLARS NEWLINES GLOB EMPTY UNICODE; do eval \"printf '%s\\0' \\\"\\$$name\\\"\"; done > {}",
        out.display()
    );
    let exit = ssh.exec_as_root(&command, &env, Duration::from_secs(30), |_, _| {}).await.unwrap();
    assert!(exit.success());
    let bytes = fs::read(&out).unwrap();
    let values: Vec<&str> =
        bytes.split(|&b| b == 0).filter_map(|v| std::str::from_utf8(v).ok()).collect();
    for (i, (_, value)) in nasty.iter().enumerate() {
        assert_eq!(values[i], *value);
    }

    let mut bad = BTreeMap::new();
    bad.insert("NOT-A-NAME".to_owned(), "x".to_owned());
    let error = ssh.exec("true", &bad, Duration::from_secs(5), |_, _| {}).await.unwrap_err();
    assert!(matches!(error, CommunicatorError::EnvName { .. }), "{error}");
}

fn alive(pid: i32) -> bool {
    Command::new("kill")
        .arg("-0")
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_in_the_guest() {
    require_sshd();
    let server = Server::new();
    let _sshd = server.start();
    let ssh = server.connect().await;
    let pids = server.path("pids");
    let command = format!(
        "echo $$ > {p}; sleep 300 & echo $! >> {p}; echo started; wait",
        p = pids.display()
    );
    let started = Instant::now();
    let mut lines = Vec::new();
    let error = ssh
        .exec_as_root(&command, &no_env(), Duration::from_secs(2), |_, line| {
            lines.push(line.to_owned());
        })
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(error, CommunicatorError::Timeout { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("timeout of 2"), "{message}");
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(8), "{waited:?}");
    assert_eq!(lines, ["started"]);
    let pids: Vec<i32> =
        fs::read_to_string(&pids).unwrap().lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(pids.len(), 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&pid| alive(pid)) {
        assert!(Instant::now() < deadline, "processes {pids:?} survived the timeout");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The session is still usable afterwards.
    let exit = ssh.exec("true", &no_env(), Duration::from_secs(10), |_, _| {}).await.unwrap();
    assert!(exit.success());
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn uploads_keep_modes_for_trees_files_and_bytes() {
    require_sshd();
    let server = Server::new();
    let _sshd = server.start();
    let ssh = server.connect().await;

    let app = server.path("app");
    fs::create_dir_all(app.join("lib/nested")).unwrap();
    fs::write(app.join("run.sh"), "#!/bin/sh\necho run\n").unwrap();
    fs::set_permissions(app.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(app.join("secret"), "s3cret").unwrap();
    fs::set_permissions(app.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(app.join("lib/nested/data.bin"), vec![0u8, 1, 2, 255]).unwrap();
    fs::set_permissions(app.join("lib/nested"), fs::Permissions::from_mode(0o750)).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(app.join("big"), &big).unwrap();

    // A tree: the contents of app/ go into opt/app/ (created).
    let remote = server.path("opt/app");
    ssh.upload(&app, &format!("{}/", remote.display())).await.unwrap();
    assert_eq!(mode(&remote.join("run.sh")), 0o755);
    assert_eq!(mode(&remote.join("secret")), 0o600);
    assert_eq!(mode(&remote.join("lib/nested")), 0o750);
    assert_eq!(fs::read(remote.join("lib/nested/data.bin")).unwrap(), [0u8, 1, 2, 255]);
    assert_eq!(fs::read(remote.join("big")).unwrap(), big);
    assert!(!remote.join("app").exists(), "the folder itself must not be nested");

    // A single file, to a new name and into a folder.
    let target = server.path("etc/renamed.sh");
    ssh.upload(&app.join("run.sh"), target.to_str().unwrap()).await.unwrap();
    assert_eq!(mode(&target), 0o755);
    assert_eq!(fs::read_to_string(&target).unwrap(), "#!/bin/sh\necho run\n");
    let into = server.path("into/");
    ssh.upload(&app.join("secret"), into.to_str().unwrap()).await.unwrap();
    assert_eq!(mode(&into.join("secret")), 0o600);

    // Bytes with a mode.
    let script = server.path("bin/hello");
    ssh.upload_bytes(b"#!/bin/sh\necho hello\n", script.to_str().unwrap(), 0o700).await.unwrap();
    assert_eq!(mode(&script), 0o700);

    // A missing local file is an error naming it.
    let error = ssh.upload(&server.path("missing"), "/tmp/x").await.unwrap_err();
    assert!(error.to_string().contains("missing"), "{error}");

    // An upload tar refuses (a file where a folder should be) names the remote path.
    let blocker = server.path("blocker");
    fs::write(&blocker, "file").unwrap();
    let error = ssh.upload(&app, &format!("{}/sub", blocker.display())).await.unwrap_err();
    assert!(matches!(error, CommunicatorError::Upload { .. }), "{error}");
}

#[tokio::test]
async fn run_script_uploads_runs_with_env_and_cleans_up() {
    require_sshd();
    let server = Server::new();
    let _sshd = server.start();
    let ssh = server.connect().await;
    let script = server.path("step.sh");
    fs::write(&script, "#!/bin/sh\necho \"port=$APP_PORT self=$0\"\necho warn >&2\nexit 5\n")
        .unwrap();
    let mut env = BTreeMap::new();
    env.insert("APP_PORT".to_owned(), "8080".to_owned());
    let mut seen = Vec::new();
    let exit = ssh
        .run_script(&script, &env, Duration::from_secs(30), |stream, line| {
            seen.push((stream, line.to_owned()));
        })
        .await
        .unwrap();
    assert_eq!(exit.code, 5);
    assert_eq!(seen[0].0, Stream::Stdout);
    assert!(seen[0].1.starts_with("port=8080 self=/tmp/strata-step-"), "{seen:?}");
    assert_eq!(seen[1], (Stream::Stderr, "warn".to_owned()));
    let uploaded = seen[0].1.trim_start_matches("port=8080 self=");
    assert!(!Path::new(uploaded).exists(), "{uploaded} was not removed");
}

#[tokio::test]
async fn a_wrong_host_key_is_refused_at_once() {
    require_sshd();
    let server = Server::new();
    let _sshd = server.start();
    let impostor = HostKey::generate().unwrap();
    let mut target = server.target();
    target.host_key = impostor.public_key().clone();
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut waits = 0;
    let error = SshCommunicator::connect(target, deadline, &mut |_| waits += 1).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(waits, 0, "a mismatch must not be retried");
    let message = error.to_string();
    let expected = format!(
        "host key mismatch: expected {}, got {}",
        impostor.fingerprint(),
        server.host.fingerprint()
    );
    assert!(message.contains(&expected), "{message}");
}

#[tokio::test]
async fn connect_waits_for_a_server_that_comes_up_late() {
    require_sshd();
    let server = Server::new();
    let delay = Duration::from_millis(2500);
    let started = Instant::now();
    let starter = {
        let config = server.dir.path().join("sshd_config");
        let port = server.addr.port();
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            (spawn_sshd(&config, port), Instant::now())
        })
    };
    let mut waits: Vec<ConnectWait> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ssh =
        SshCommunicator::connect(server.target(), deadline, &mut |wait| waits.push(wait.clone()))
            .await
            .unwrap();
    let connected = Instant::now();
    let (_sshd, spawned) = starter.join().unwrap();
    assert!(connected.duration_since(started) >= delay);
    assert!(waits.len() >= 3, "{waits:?}");
    assert_eq!(waits[0].attempt, 1);
    assert!(waits.iter().all(|w| !w.reason.is_empty()));
    let late = connected.duration_since(spawned);
    eprintln!("connected {late:?} after sshd was started, after {} attempts", waits.len());
    assert!(late < Duration::from_millis(1500), "strata noticed the server {late:?} late");
    let exit = ssh.exec("true", &no_env(), Duration::from_secs(10), |_, _| {}).await.unwrap();
    assert!(exit.success());
}

#[tokio::test]
async fn connect_gives_up_at_the_deadline_when_nothing_listens() {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let target = SshTarget {
        addr,
        user: "debian".to_owned(),
        client_key: ClientKey::generate().unwrap(),
        host_key: HostKey::generate().unwrap().public_key().clone(),
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(2);
    let mut waits = 0;
    let error = SshCommunicator::connect(target, deadline, &mut |_| waits += 1).await.unwrap_err();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1500) && waited < Duration::from_secs(3), "{waited:?}");
    assert!(waits >= 3, "{waits}");
    let CommunicatorError::ConnectTimeout { last, .. } = &error else { panic!("{error}") };
    assert!(matches!(**last, AttemptError::Connect(_)), "{last}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("debian@{addr}")) && message.contains("ready_timeout"),
        "{message}"
    );
}

#[tokio::test]
async fn a_refused_client_key_is_retried_then_reported() {
    require_sshd();
    let server = Server::new();
    let _sshd = server.start();
    let mut target = server.target();
    target.client_key = ClientKey::generate().unwrap();
    let deadline = Instant::now() + Duration::from_secs(4);
    let error = SshCommunicator::connect(target, deadline, &mut |_| {}).await.unwrap_err();
    let CommunicatorError::ConnectTimeout { last, .. } = &error else { panic!("{error}") };
    assert!(matches!(**last, AttemptError::AuthRejected { .. }), "{last}");
}

/// A held command over a real channel: it says its marker and waits; `proceed_with` lets it go
/// on to the next marker, reading the line it is given. One that ended before being let go says
/// so, with nothing said (how a seal started ahead learns that a reboot step ended it).
#[tokio::test]
async fn held_commands_proceed_from_marker_to_marker_reading_the_line_they_are_sent() {
    require_sshd();
    let server = Server::new();
    let _sshd = server.start();
    let ssh = server.connect().await;
    let env = no_env();
    let marks = server.path("marks");
    let script = format!(
        "echo one; echo ready; read -r said || exit 0; echo \"two $said\" >> {m}; echo again; \
         read -r _ || exit 0; echo three >> {m}; echo done",
        m = marks.display()
    );
    let spec = ExecSpec {
        command: &script,
        env: &env,
        timeout: Duration::from_secs(30),
        as_root: true,
        guest_timeout: false,
    };
    let within = Duration::from_secs(20);
    let held = ssh.hold(spec, "test", "ready", within).await.map_err(|e| e.error).unwrap();
    assert_eq!(held.said(), "one\n");
    assert!(!marks.exists(), "it waits at its first marker");
    // What it reads is the line strata sends (how a seal standing by learns its stage's mode).
    let held =
        held.proceed_with("keep-caches", "again", within).await.map_err(|e| e.error).unwrap();
    assert_eq!(fs::read_to_string(&marks).unwrap(), "two keep-caches\n");
    let held = held.proceed("done", within).await.map_err(|e| e.error).unwrap();
    assert_eq!(fs::read_to_string(&marks).unwrap(), "two keep-caches\nthree\n");
    drop(held);

    // Ended before it was let go (here, at once): `proceed` gets nothing from it.
    let spec = ExecSpec { command: "echo ready; exit 0", ..spec };
    let held = ssh.hold(spec, "test", "ready", within).await.map_err(|e| e.error).unwrap();
    let gone = held.proceed("again", within).await.err().unwrap();
    assert!(gone.stdout.is_empty(), "{:?}", gone.stdout);
    assert!(!matches!(gone.error, CommunicatorError::Timeout { .. }), "{}", gone.error);

    // What it said before its marker is decoded whole. SSH's packets split a long output
    // anywhere, also inside a character (the seal's inventory lists file names such as
    // ca-certificates' `NetLock_Arany_=Class_Gold=_Főtanúsítvány.pem`): 100,000 times an ASCII
    // byte and a two-byte character, so a boundary at a power of two falls inside one two times
    // in three. A split character must not come out as two replacement characters.
    let command = "yes xő | head -n 100000 | tr -d '\\n'; echo; echo ready; read -r _ || true";
    let spec = ExecSpec { command, ..spec };
    let held = ssh.hold(spec, "test", "ready", within).await.map_err(|e| e.error).unwrap();
    let said = held.said().to_owned();
    let split = said.matches('\u{fffd}').count();
    assert_eq!(split, 0, "{split} replacement characters: a character was split");
    assert_eq!(said, format!("{}\n", "xő".repeat(100_000)));
    drop(held);
    ssh.close().await;
}

/// Creates a file from extra vars with `copy`, skips a task whose tag is not selected, and
/// records the modes of the key file and its folder while the play runs.
const PLAYBOOK: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - name: write the greeting
      copy:
        dest: "{{ out_dir }}/greeting"
        content: "{{ greeting }}\n"
        mode: "0644"
      tags: [app]
    - name: note the modes of the key and its folder
      shell: "stat -c %a {{ work_parent }}/ansible-*/id_ed25519 {{ work_parent }}/ansible-* > {{ out_dir }}/modes"
      tags: [app]
    - name: not selected by the tags
      file:
        path: "{{ out_dir }}/skipped"
        state: touch
      tags: [other]
"#;

/// A running sshd, a playbook in its own folder and an empty work folder; `None` (the test is
/// skipped) without sshd or ansible-playbook.
struct Play {
    server: Server,
    sshd: Sshd,
    site: tempfile::TempDir,
    playbook: PathBuf,
    work: tempfile::TempDir,
}

impl Play {
    fn new(name: &str, text: &str) -> Play {
        require_sshd();
        common::require_tool("ansible-playbook", "apt-get install ansible-core");
        let server = Server::new();
        let sshd = server.start();
        let site = tempfile::tempdir().unwrap();
        let playbook = site.path().join(name);
        fs::write(&playbook, text).unwrap();
        Play { server, sshd, site, playbook, work: tempfile::tempdir().unwrap() }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ansible_runs_a_playbook_over_the_pinned_host_key() {
    let Play { server, sshd: _sshd, site: _site, playbook, work } = Play::new("site.yml", PLAYBOOK);
    let out = server.dir.path();
    let greeting = "hello 'world' \"$HOME\" `id` ✓";
    let mut vars = BTreeMap::new();
    vars.insert("out_dir".to_owned(), serde_json::json!(out));
    vars.insert("work_parent".to_owned(), serde_json::json!(work.path()));
    vars.insert("greeting".to_owned(), serde_json::json!(greeting));
    let step = AnsibleStep::new(playbook.clone(), vars, vec!["app".to_owned()]);

    let mut seen: Vec<(Stream, String)> = Vec::new();
    let started = Instant::now();
    let exit = step
        .run(&server.target(), work.path(), Duration::from_secs(300), &mut |stream, line| {
            seen.push((stream, line.to_owned()));
        })
        .await
        .unwrap();
    eprintln!("playbook of 2 selected tasks: {:?}", started.elapsed());
    let text: Vec<&str> = seen.iter().map(|(_, line)| line.as_str()).collect();
    assert!(exit.success(), "{}", text.join("\n"));
    assert!(text.iter().any(|line| line.starts_with("TASK [write the greeting]")), "{text:?}");
    assert!(
        text.iter().any(|line| line.contains("ok=2") && line.contains("changed=2")),
        "{text:?}"
    );
    assert_eq!(fs::read_to_string(out.join("greeting")).unwrap(), format!("{greeting}\n"));
    assert!(!out.join("skipped").exists(), "a task tagged `other` ran");
    assert_eq!(fs::read_to_string(out.join("modes")).unwrap(), "600\n700\n");
    assert_eq!(fs::read_dir(work.path()).unwrap().count(), 0, "the work folder was left");

    // A guest whose host key is not the pinned one is refused.
    let mut impostor = server.target();
    impostor.host_key = HostKey::generate().unwrap().public_key().clone();
    fs::remove_file(out.join("greeting")).unwrap();
    let mut seen = Vec::new();
    let exit = step
        .run(&impostor, work.path(), Duration::from_secs(120), &mut |_, line| {
            seen.push(line.to_owned());
        })
        .await
        .unwrap();
    eprintln!("refused after {:?}", exit.duration);
    assert!(!exit.success());
    let all = seen.join("\n");
    assert!(all.contains("UNREACHABLE") && all.contains("Host key verification failed"), "{all}");
    assert!(!out.join("greeting").exists());
    assert_eq!(fs::read_dir(work.path()).unwrap().count(), 0, "the work folder was left");
}

#[tokio::test]
async fn ansible_names_its_package_and_the_missing_playbook() {
    let server = Server::new();
    let site = tempfile::tempdir().unwrap();
    let playbook = site.path().join("site.yml");
    fs::write(&playbook, PLAYBOOK).unwrap();
    let work = tempfile::tempdir().unwrap();
    let step = AnsibleStep::new(playbook, BTreeMap::new(), Vec::new())
        .with_program("/nonexistent/ansible-playbook");
    let error = step
        .run(&server.target(), work.path(), Duration::from_secs(10), &mut |_, _| {})
        .await
        .unwrap_err();
    assert!(matches!(error, AnsibleError::Start { .. }), "{error}");
    let chain = format!("{error}: {}", std::error::Error::source(&error).unwrap());
    assert!(chain.contains("ansible-core"), "{chain}");
    assert_eq!(fs::read_dir(work.path()).unwrap().count(), 0, "the work folder was left");

    let missing = AnsibleStep::new(site.path().join("nope.yml"), BTreeMap::new(), Vec::new());
    let error = missing
        .run(&server.target(), work.path(), Duration::from_secs(10), &mut |_, _| {})
        .await
        .unwrap_err();
    assert!(error.to_string().contains("nope.yml"), "{error}");
}

/// A playbook that outlives its timeout is stopped, and one whose run is dropped (a cancelled
/// build) is killed; either way the key's folder is gone at once.
#[tokio::test(flavor = "multi_thread")]
async fn ansible_work_folder_goes_on_timeout_and_cancel() {
    let slow = "- hosts: all\n  gather_facts: false\n  tasks:\n    - command: sleep 120\n";
    let Play { server, sshd: _sshd, site: _site, playbook, work } = Play::new("slow.yml", slow);
    let step = AnsibleStep::new(playbook, BTreeMap::new(), Vec::new());
    let target = server.target();
    let started = Instant::now();
    let error =
        step.run(&target, work.path(), Duration::from_secs(4), &mut |_, _| {}).await.unwrap_err();
    assert!(matches!(error, AnsibleError::Timeout { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    assert_eq!(fs::read_dir(work.path()).unwrap().count(), 0, "the work folder was left");

    let mut ignore = |_: Stream, _: &str| {};
    let run = step.run(&target, work.path(), Duration::from_secs(300), &mut ignore);
    let cancelled = tokio::time::timeout(Duration::from_secs(3), run).await;
    assert!(cancelled.is_err(), "the slow playbook finished");
    assert_eq!(fs::read_dir(work.path()).unwrap().count(), 0, "the work folder was left");
}
