//! The guest-agent communicator. Without a guest: a socket nobody listens on and an "agent"
//! that never answers, each ending in the plain error that suggests `kind = "ssh"`.
//! When the ignored tests run (scripts/test.sh): one boot of the local base image (it carries
//! qemu-guest-agent) with NO network card at all, and everything over the agent: output and
//! exit codes, environment, users, streaming, a timeout killed in the guest, uploads with
//! modes, reboot, freeze/thaw, power-off; and, with `STRATA_BENCH=1`, the measurements (100
//! trivial commands, a 100 MB upload). Set `STRATA_BASE_IMAGE_DIR` to use another folder than
//! `.cache/base-image` (made by `scripts/build-base-image.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use strata::communicator::{
    CloudInitOutcome, Communicator, CommunicatorError, ConnectWait, GuestAgentCommunicator,
};
use strata::events::{Events, Stream};
use strata::qemu::machine::Machine;
use strata::qemu::spec::{MachineSpec, Network};
use strata::seed::{SeedFiles, write_cidata};

use common::{base_image_dir, write_mode};

const USER: &str = "builder";

fn base_image() -> PathBuf {
    base_image_dir().join("debian-12-strata-amd64.qcow2")
}

#[tokio::test]
async fn a_socket_without_an_agent_says_so_and_suggests_ssh() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens.
    let missing = dir.path().join("missing.sock");
    let mut waits = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    let error =
        GuestAgentCommunicator::connect(&missing, USER, deadline, &mut |wait: &ConnectWait| {
            waits.push(wait.reason.clone());
        })
        .await
        .unwrap_err();
    assert!(matches!(error, CommunicatorError::AgentTimeout { .. }), "{error:?}");
    assert!(!waits.is_empty());
    assert!(waits[0].contains("could not connect"), "{waits:?}");

    // Something listens (as QEMU's chardev does before the guest runs qemu-ga) but never answers.
    let silent = dir.path().join("silent.sock");
    let listener = tokio::net::UnixListener::bind(&silent).unwrap();
    let accept = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        // Keep it open and read what comes, answering nothing.
        let mut buf = vec![0u8; 4096];
        let mut total = Vec::new();
        loop {
            stream.readable().await.unwrap();
            match stream.try_read(&mut buf) {
                Ok(0) => break total,
                Ok(n) => total.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break total,
            }
        }
    });
    let started = Instant::now();
    let deadline = started + Duration::from_secs(3);
    let error = GuestAgentCommunicator::connect(&silent, USER, deadline, &mut |_: &ConnectWait| {})
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(3) && waited < Duration::from_secs(5), "{waited:?}");
    let message = error.to_string();
    assert!(message.contains(&silent.display().to_string()), "{message}");
    assert!(message.contains("no qemu-guest-agent"), "{message}");
    assert!(message.contains("kind = \"ssh\""), "{message}");
    let CommunicatorError::AgentTimeout { attempts, last, .. } = &error else {
        panic!("{error:?}")
    };
    assert!(*attempts >= 2, "the sync is resent: {attempts}");
    assert!(last.to_string().contains("guest-sync-delimited"), "{last}");
    // What the agent would have seen: sentinel-prefixed sync requests with fresh ids.
    let sent = accept.await.unwrap();
    let requests: Vec<&[u8]> = sent.split(|&b| b == 0xFF).filter(|part| !part.is_empty()).collect();
    assert_eq!(requests.len() as u32, *attempts);
    let ids: Vec<i64> = requests
        .iter()
        .map(|request| {
            let value: serde_json::Value = serde_json::from_slice(request).unwrap();
            assert_eq!(value["execute"], "guest-sync-delimited");
            value["arguments"]["id"].as_i64().unwrap()
        })
        .collect();
    assert!(ids.windows(2).all(|pair| pair[0] != pair[1]), "{ids:?}");
}

/// One guest with no NIC, its agent socket, and the logs' folder.
struct Guest {
    dir: tempfile::TempDir,
    machine: Machine,
    socket: PathBuf,
}

async fn boot(dir: tempfile::TempDir) -> Guest {
    let base = base_image();
    assert!(base.exists(), "{} is missing: run scripts/build-base-image.sh", base.display());
    let overlay = dir.path().join("disk.qcow2");
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&base)
        .arg(&overlay)
        .status()
        .unwrap();
    assert!(status.success());
    let seed = dir.path().join("seed.img");
    let user_data = format!(
        "#cloud-config\nusers:\n  - name: {USER}\n    shell: /bin/bash\n    lock_passwd: true\n\
         ssh_genkeytypes: []\nssh_quiet_keygen: true\n\
         cloud_config_modules: [runcmd]\ncloud_final_modules: [scripts-user, final-message]\n"
    );
    let files = SeedFiles {
        user_data,
        meta_data: "instance-id: qga-test-1\nlocal-hostname: qga-test\n".to_owned(),
        network_config: None,
    };
    write_cidata(&seed, &files).unwrap();
    let socket = dir.path().join("qga.sock");
    let mut spec = MachineSpec::new("qga-test", &overlay, dir.path());
    spec.cpus = 2;
    spec.memory_mib = 1024;
    spec.seed = Some(seed);
    spec.network = Network::None;
    spec.guest_agent_socket = Some(socket.clone());
    let machine = Machine::start(spec, &Events::none(), "qga").await.unwrap();
    Guest { dir, machine, socket }
}

fn console(guest: &Guest) -> String {
    guest.machine.console_tail(30).join("\n")
}

async fn capture(
    agent: &GuestAgentCommunicator,
    command: &str,
    env: &BTreeMap<String, String>,
    as_root: bool,
) -> (i32, String, String) {
    let mut out = String::new();
    let mut err = String::new();
    let mut on_output = |stream: Stream, line: &str| {
        let text = if stream == Stream::Stdout { &mut out } else { &mut err };
        text.push_str(line);
        text.push('\n');
    };
    let timeout = Duration::from_secs(120);
    let exit = if as_root {
        agent.exec_as_root(command, env, timeout, &mut on_output).await
    } else {
        agent.exec(command, env, timeout, &mut on_output).await
    }
    .unwrap_or_else(|error| panic!("`{command}`: {error}"));
    (exit.code, out, err)
}

async fn root(agent: &GuestAgentCommunicator, command: &str) -> String {
    let (code, out, err) = capture(agent, command, &BTreeMap::new(), true).await;
    assert_eq!(code, 0, "`{command}`: {out}{err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots a guest under QEMU: scripts/test.sh runs it"]
async fn everything_over_the_guest_agent_without_a_network() {
    let dir = tempfile::Builder::new().prefix("strata-qga-").tempdir().unwrap();
    let guest = boot(dir).await;
    let started = guest.machine.started();
    let deadline = started + Duration::from_secs(600);
    let mut waits = 0;
    let mut agent = GuestAgentCommunicator::connect(&guest.socket, USER, deadline, &mut |_| {
        waits += 1;
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\nconsole:\n{}", console(&guest)));
    eprintln!("guest agent answered {:?} after QEMU started ({waits} waits)", started.elapsed());

    let outcome = agent.wait_cloud_init(Instant::now() + Duration::from_secs(300)).await.unwrap();
    eprintln!("cloud-init {outcome:?} at {:?}", started.elapsed());
    assert!(matches!(outcome, CloudInitOutcome::Done | CloudInitOutcome::Degraded { .. }));

    // No network card at all.
    let links = root(&agent, "ls /sys/class/net").await;
    assert_eq!(links.split_whitespace().collect::<Vec<_>>(), ["lo"], "{links}");

    // Output, exit codes, streams apart.
    let no_env = BTreeMap::new();
    let (code, out, err) =
        capture(&agent, "echo out1; echo err1 >&2; printf 'no newline'; exit 3", &no_env, true)
            .await;
    assert_eq!((code, out.as_str(), err.as_str()), (3, "out1\nno newline\n", "err1\n"));
    let (code, _, _) = capture(&agent, "false", &no_env, true).await;
    assert_eq!(code, 1);

    // Environment: values kept exactly, a sane PATH and HOME; root and the login user.
    let mut env = BTreeMap::new();
    env.insert("NASTY".to_owned(), "it's $HOME `x` \"q\" ;|&".to_owned());
    env.insert("EMPTY".to_owned(), String::new());
    let (code, out, _) = capture(
        &agent,
        "printf '%s|%s|%s|%s|%s\\n' \"$NASTY\" \"$EMPTY\" \"$(id -un)\" \"$HOME\" \"$(pwd)\"; command -v runuser",
        &env,
        true,
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(out, "it's $HOME `x` \"q\" ;|&||root|/root|/home/builder\n/usr/sbin/runuser\n");
    let (code, out, _) =
        capture(&agent, "printf '%s|%s|%s\\n' \"$NASTY\" \"$(id -un)\" \"$HOME\"", &env, false)
            .await;
    assert_eq!(code, 0);
    assert_eq!(out, format!("it's $HOME `x` \"q\" ;|&|{USER}|/home/{USER}\n"));

    // Lines arrive while the command runs.
    let mut seen = Vec::new();
    let begun = Instant::now();
    agent
        .exec_as_root(
            "echo first; sleep 3; echo second",
            &no_env,
            Duration::from_secs(60),
            |_, line| {
                seen.push((line.to_owned(), begun.elapsed()));
            },
        )
        .await
        .unwrap();
    let ended = begun.elapsed();
    assert_eq!(seen.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(), ["first", "second"]);
    assert!(seen[0].1 + Duration::from_secs(2) < ended, "not streamed: {seen:?} ended {ended:?}");

    // A command past its timeout is killed in the guest.
    let begun = Instant::now();
    let error = agent
        .exec_as_root("echo going; sleep 4242", &no_env, Duration::from_secs(3), |_, _| {})
        .await
        .unwrap_err();
    assert!(matches!(error, CommunicatorError::Timeout { .. }), "{error:?}");
    assert!(begun.elapsed() < Duration::from_secs(20), "{:?}", begun.elapsed());
    let (code, out, _) = capture(&agent, "pgrep -af 'sleep [4]242'", &no_env, true).await;
    assert_eq!(code, 1, "still running: {out}");

    // Uploads: a tree with modes and nested folders, a file to a path and into a folder.
    let local = tempfile::tempdir().unwrap();
    let tree = local.path().join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::create_dir_all(tree.join("nested/deeper")).unwrap();
    write_mode(&tree.join("bin/tool.sh"), b"#!/bin/sh\necho tool-ran-as $(id -u)\n", 0o755);
    write_mode(&tree.join("secret"), b"s3cret\n", 0o600);
    write_mode(&tree.join("nested/deeper/leaf.txt"), b"leaf\n", 0o644);
    std::fs::set_permissions(tree.join("nested"), std::fs::Permissions::from_mode(0o750)).unwrap();
    agent.upload(&tree, "/opt/tree/").await.unwrap();
    let single = local.path().join("single.conf");
    write_mode(&single, b"single=1\n", 0o640);
    agent.upload(&single, "/etc/strata-single.conf").await.unwrap();
    agent.upload(&single, "/etc/strata-dir/").await.unwrap();
    let out = root(
        &agent,
        "stat -c '%a %U %n' /opt/tree/bin/tool.sh /opt/tree/secret /opt/tree/nested \
         /opt/tree/nested/deeper/leaf.txt /etc/strata-single.conf /etc/strata-dir/single.conf; \
         /opt/tree/bin/tool.sh; cat /opt/tree/secret",
    )
    .await;
    assert_eq!(
        out,
        "755 root /opt/tree/bin/tool.sh\n600 root /opt/tree/secret\n750 root /opt/tree/nested\n\
         644 root /opt/tree/nested/deeper/leaf.txt\n640 root /etc/strata-single.conf\n\
         640 root /etc/strata-dir/single.conf\ntool-ran-as 0\ns3cret\n"
    );
    agent.upload_bytes(b"#!/bin/sh\necho bytes\n", "/usr/local/bin/bytes.sh", 0o700).await.unwrap();
    assert_eq!(root(&agent, "stat -c %a /usr/local/bin/bytes.sh; bytes.sh").await, "700\nbytes\n");
    // A script step, as the stage engine runs it; its temp file is gone afterwards.
    let script = local.path().join("step.sh");
    write_mode(&script, b"#!/bin/sh\necho \"step $STEP_VAR as $(id -un)\"\nexit 4\n", 0o644);
    let mut step_env = BTreeMap::new();
    step_env.insert("STEP_VAR".to_owned(), "value".to_owned());
    let mut lines = Vec::new();
    let exit = agent
        .run_script(&script, &step_env, Duration::from_secs(60), |_, line| {
            lines.push(line.to_owned());
        })
        .await
        .unwrap();
    assert_eq!((exit.code, lines), (4, vec!["step value as root".to_owned()]));
    assert_eq!(root(&agent, "ls /tmp | grep -c '^strata-' || true").await, "0\n");
    // A failing upload names the remote path.
    let error = agent.upload(&single, "/proc/strata/").await.unwrap_err();
    assert!(matches!(error, CommunicatorError::Upload { .. }), "{error:?}");

    // Freeze and thaw (what a live cut does around its snapshot).
    let frozen = agent.freeze().await.unwrap();
    assert!(frozen >= 1, "{frozen}");
    let thawed = agent.thaw().await.unwrap();
    assert_eq!(thawed, frozen);
    assert_eq!(
        root(&agent, "echo after-thaw > /var/tmp/t && cat /var/tmp/t").await,
        "after-thaw\n"
    );

    // Measurements only with STRATA_BENCH=1 (they cost minutes under TCG): 100 trivial
    // commands and a 100 MB upload. Otherwise a 2 MB upload, still many chunks, is checked.
    let bench = std::env::var_os("STRATA_BENCH").is_some_and(|value| value == "1");
    if bench {
        measure_commands(&agent).await;
    }
    let local_big = tempfile::tempdir().unwrap();
    let size = if bench { 100 * 1000 * 1000 } else { 2 * 1000 * 1000 };
    agent = upload_checked(agent, local_big.path(), size).await;

    // Reboot: a new boot id, and commands work again.
    let before = agent.boot_id().await.unwrap();
    let begun = Instant::now();
    let mut reboot_waits = 0;
    agent
        .reboot(Instant::now() + Duration::from_secs(600), &mut |_| reboot_waits += 1)
        .await
        .unwrap_or_else(|error| panic!("{error}\nconsole:\n{}", console(&guest)));
    eprintln!("reboot took {:?} ({reboot_waits} waits)", begun.elapsed());
    let after = agent.boot_id().await.unwrap();
    assert_ne!(before, after);
    assert_eq!(root(&agent, "cat /etc/strata-single.conf").await, "single=1\n");

    // Power off through the agent: QEMU exits.
    agent.power_off().await.unwrap();
    let status = guest.machine.wait_exit(Duration::from_secs(120)).await.unwrap();
    eprintln!("powered off: {status}");
    drop(guest.dir);
}

/// 100 trivial commands over the agent, and the same process chain run in the guest alone.
async fn measure_commands(agent: &GuestAgentCommunicator) {
    let no_env = BTreeMap::new();
    let begun = Instant::now();
    for _ in 0..100 {
        let exit =
            agent.exec_as_root("true", &no_env, Duration::from_secs(60), |_, _| {}).await.unwrap();
        assert!(exit.success());
    }
    let per_command = begun.elapsed() / 100;
    eprintln!("MEASURE qga: 100 x `true` in {:?}: {per_command:?} per command", begun.elapsed());
    let out = root(
        agent,
        "s=$(date +%s%N); for i in $(seq 20); do sh -c 'exec timeout --kill-after=10s 60s env /bin/sh -c true'; done; \
         echo $(( ($(date +%s%N) - s) / 20000000 ))",
    )
    .await;
    eprintln!("MEASURE guest: the same process chain alone: {}ms per command", out.trim());
}

/// Uploads `size` random bytes with small and large writes; each copy's sha256 is checked in
/// the guest. Returns the agent (its chunk size is a builder setting).
async fn upload_checked(
    mut agent: GuestAgentCommunicator,
    local: &std::path::Path,
    size: usize,
) -> GuestAgentCommunicator {
    let big = local.join("big.bin");
    let mut bytes = vec![0u8; size];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for chunk in bytes.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&big, &bytes).unwrap();
    let digest = Command::new("sha256sum").arg(&big).output().unwrap();
    let digest = String::from_utf8(digest.stdout).unwrap();
    let digest = digest.split_whitespace().next().unwrap().to_owned();
    drop(bytes);
    for chunk_kib in [48usize, 1024] {
        agent = agent.with_upload_chunk(chunk_kib * 1024);
        let begun = Instant::now();
        agent.upload(&big, "/var/tmp/big.bin").await.unwrap();
        let took = begun.elapsed();
        eprintln!(
            "MEASURE qga: {} MB upload, {chunk_kib} KiB writes: {took:?}, {:.1} MB/s",
            size / 1_000_000,
            size as f64 / 1e6 / took.as_secs_f64()
        );
        let out = root(&agent, "sha256sum /var/tmp/big.bin && rm /var/tmp/big.bin").await;
        assert!(out.starts_with(&digest), "{out} vs {digest}");
    }
    agent
}
