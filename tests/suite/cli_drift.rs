//! `strata drift` against a real OpenSSH server on 127.0.0.1 (no guest): the host key must be
//! in known_hosts (unknown and changed keys refused, exit 1, saying how to trust it); with it,
//! the collection runs as root on this host and is compared with a committed layer's record;
//! unreachable hosts fail within a bounded time; `--hosts` checks several and sums up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::project::{Project, commit_layers_with, strata};
use common::sshd::{Server, Sshd, require_sshd};
use strata::drift::{Inventory, Manifest, Package};

/// A project whose layers record `inventory` (roots: /etc only, to keep it quick), a running
/// sshd, the client key in a file, and an empty home.
struct Setup {
    project: Project,
    server: Server,
    _sshd: Sshd,
    identity: PathBuf,
    home: tempfile::TempDir,
}

impl Setup {
    fn new(inventory: &Inventory) -> Setup {
        let project = Project::new();
        let mut text = std::fs::read_to_string(project.definition()).unwrap();
        text.push_str("[drift]\nroots = [\"/etc\"]\n");
        std::fs::write(project.definition(), text).unwrap();
        strata(&project.store()).arg("fetch").arg(project.definition()).assert().success();
        commit_layers_with(&project, |metadata| {
            metadata.packages.clone_from(&inventory.packages);
            metadata.files = inventory.files.clone();
            metadata.os_id = inventory.os.as_ref().map(|os| os.id.clone());
            metadata.os_version = inventory.os.as_ref().and_then(|os| os.version_id.clone());
        });
        let server = Server::new();
        let sshd = server.start();
        let identity = server.path("id_client");
        common::write_mode(&identity, server.client.private_openssh().unwrap(), 0o600);
        Setup { project, server, _sshd: sshd, identity, home: tempfile::tempdir().unwrap() }
    }

    fn host(&self) -> String {
        format!("root@127.0.0.1:{}", self.server.addr.port())
    }

    /// A known_hosts file with `lines`.
    fn known_hosts(&self, lines: &[String]) -> PathBuf {
        let path = self.home.path().join("known_hosts");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }

    /// The server's real key, as `ssh-keyscan -p PORT NAME` prints it.
    fn key_line(&self, name: &str) -> String {
        let key = self.server.host.public_openssh().unwrap();
        format!("[{name}]:{} {key}", self.server.addr.port())
    }

    fn drift(&self, known_hosts: &Path, args: &[&str]) -> assert_cmd::assert::Assert {
        self.drift_with(&[], known_hosts, args)
    }

    /// `strata GLOBAL… drift DEF --identity … --known-hosts KNOWN_HOSTS ARGS…`.
    fn drift_with(
        &self,
        global: &[&str],
        known_hosts: &Path,
        args: &[&str],
    ) -> assert_cmd::assert::Assert {
        strata(&self.project.store())
            .env("HOME", self.home.path())
            .env_remove("SSH_AUTH_SOCK")
            .args(global)
            .arg("drift")
            .arg(self.project.definition())
            .arg("--identity")
            .arg(&self.identity)
            .arg("--known-hosts")
            .arg(known_hosts)
            .args(args)
            .timeout(Duration::from_secs(120))
            .assert()
    }
}

/// Two packages this host has at no such version: plainly another system.
fn another_system() -> Inventory {
    let package = |name: &str| Package {
        name: name.into(),
        arch: "amd64".into(),
        version: "0.0-not-this-host".into(),
        ..Package::default()
    };
    Inventory {
        os: None,
        packages: vec![package("base-files"), package("libc6")],
        files: Manifest { roots: vec!["/etc".into()], entries: Vec::new() },
    }
}

/// This host's own inventory under /etc, collected the way a layer's seal collects it.
fn this_host() -> Inventory {
    let roots = strata::drift::Roots::new(&["/etc"]).unwrap();
    let ignore = strata::drift::IgnoreRules::new::<&str>(&[]).unwrap();
    let script = strata::drift::collect_script(&roots, &ignore);
    let output = std::process::Command::new("sh").arg("-c").arg(script).output().unwrap();
    strata::drift::parse_inventory(&output.stdout, &roots).unwrap()
}

fn stdout(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stdout).into_owned()
}

fn stderr(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stderr).into_owned()
}

#[test]
fn an_unknown_or_changed_host_key_is_refused_with_how_to_trust_it() {
    require_sshd();
    let setup = Setup::new(&another_system());
    let empty = setup.known_hosts(&[]);
    let assert = setup.drift(&empty, &["--host", &setup.host()]).code(1);
    let message = stderr(&assert);
    let port = setup.server.addr.port();
    assert!(message.contains("host key") && message.contains("not known"), "{message}");
    assert!(message.contains(&format!("ssh-keyscan -p {port} 127.0.0.1 >>")), "{message}");
    assert!(message.contains(&setup.server.host.fingerprint()), "{message}");
    assert!(stdout(&assert).is_empty(), "{}", stdout(&assert));

    let other = strata::communicator::HostKey::generate().unwrap().public_openssh().unwrap();
    let wrong = setup.known_hosts(&[format!("[127.0.0.1]:{port} {other}")]);
    let assert = setup.drift(&wrong, &["--host", &setup.host()]).code(1);
    let message = stderr(&assert);
    assert!(message.contains("CHANGED") && message.contains("ssh-keygen -R"), "{message}");
}

#[test]
fn another_system_is_one_line_and_exit_3_and_a_match_is_exit_0() {
    require_sshd();
    let setup = Setup::new(&another_system());
    let known = setup.known_hosts(&[setup.key_line("127.0.0.1")]);
    let assert = setup.drift(&known, &["--host", &setup.host()]).code(3);
    let out = stdout(&assert);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one finding:\n{out}");
    assert!(
        lines[1].contains("different system") && lines[1].contains("2 of the 2 packages"),
        "{out}"
    );
    assert!(!stderr(&assert).contains("error"), "{}", stderr(&assert));

    let json =
        setup.drift_with(&["--log-format", "json"], &known, &["--host", &setup.host()]).code(3);
    let events = common::parse_events(&json.get_output().stdout);
    let findings = common::named(&events, "drift_finding");
    assert_eq!(findings.len(), 1, "{events:?}");
    assert_eq!(findings[0]["kind"], "different_system");
    assert_eq!(findings[0]["host"], setup.host());
    assert_eq!(findings[0]["stage"], "final");
    let checked = common::named(&events, "drift_checked");
    assert_eq!(checked.len(), 1, "{events:?}");
    assert_eq!(checked[0]["outcome"], "drifted");

    // The layer records exactly what this host holds under /etc: no drift.
    let setup = Setup::new(&this_host());
    let known = setup.known_hosts(&[setup.key_line("127.0.0.1")]);
    let assert = setup.drift(&known, &["--host", &setup.host()]).code(0);
    assert!(stderr(&assert).contains("no differences"), "{}", stderr(&assert));
}

#[test]
fn an_unreachable_host_fails_within_a_bounded_time() {
    require_sshd();
    let setup = Setup::new(&another_system());
    let known = setup.known_hosts(&[]);
    let port = common::free_port();
    let started = Instant::now();
    let assert = setup.drift(&known, &["--host", &format!("root@127.0.0.1:{port}")]).code(1);
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    let message = stderr(&assert);
    assert!(message.contains(&format!("127.0.0.1:{port}: unreachable")), "{message}");
}

#[test]
fn hosts_files_are_checked_together_and_summed_up() {
    require_sshd();
    let setup = Setup::new(&another_system());
    let known = setup.known_hosts(&[setup.key_line("127.0.0.1"), setup.key_line("localhost")]);
    let port = setup.server.addr.port();
    let fleet = setup.home.path().join("fleet.txt");
    std::fs::write(
        &fleet,
        format!("# web tier\nroot@127.0.0.1:{port}\n\nroot@localhost:{port}  # same\n"),
    )
    .unwrap();
    let assert = setup.drift(&known, &["--hosts", fleet.to_str().unwrap()]).code(3);
    let message = stderr(&assert);
    assert!(message.contains("2 host(s): 0 clean, 2 drifted, 0 could not be checked"), "{message}");
    assert_eq!(stdout(&assert).lines().count(), 3, "{}", stdout(&assert));

    // One host down: the check is incomplete, exit 1, and the drift is still shown.
    let down = common::free_port();
    std::fs::write(&fleet, format!("root@127.0.0.1:{port}\nroot@127.0.0.1:{down}\n")).unwrap();
    let assert = setup.drift(&known, &["--hosts", fleet.to_str().unwrap()]).code(1);
    let message = stderr(&assert);
    assert!(message.contains("1 drifted, 1 could not be checked"), "{message}");
    assert!(message.contains(&format!("127.0.0.1:{down}: could not check")), "{message}");
    assert!(stdout(&assert).contains("different system"), "{}", stdout(&assert));

    // A bad line: invalid input, exit 2, naming the file and the line.
    std::fs::write(&fleet, format!("root@127.0.0.1:{port}\nweb2:notaport\n")).unwrap();
    let assert = setup.drift(&known, &["--hosts", fleet.to_str().unwrap()]).code(2);
    let message = stderr(&assert);
    assert!(message.contains("fleet.txt, line 2"), "{message}");
}
