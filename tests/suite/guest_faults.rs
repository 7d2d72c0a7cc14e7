//! Faults a user meets, proved on real guests: every step kind in one stage (uploads with
//! modes, a script with a rendered environment, a reboot), then, on top of that committed stage,
//! a failing step, a timed-out step, QEMU killed mid-step, strata killed and interrupted while
//! booting, a guest that never answers SSH. And QEMU missing from PATH (no guest needed).
//!
//! Boots cost about a minute each under TCG, so the guest scenarios share one store and run in
//! one test, in an order where every fault stands on the first stage's cached layer; that store
//! starts with the source and its saved first boot, so the first stage resumes rather than
//! boots (the demo's cold build, shared by all guest tests, saved it), and the faults in a step
//! resume the first stage's restore point where the boot is not what they prove. They are
//! ignored by default (scripts/test.sh runs them) and need the local base image that
//! `scripts/build-base-image.sh` makes (or `STRATA_BASE_IMAGE_DIR`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use common::demo::fixture_store;
use common::{
    HttpServer, base_image_dir, named, parse_events, stages_of, stderr, strata_bin, write_mode,
};

/// A definition in a temp folder whose first stage uses every step kind; the second stage
/// is rewritten for each fault.
struct Project {
    dir: tempfile::TempDir,
    store: PathBuf,
    url: String,
    _server: HttpServer,
}

const FIRST_STAGE: &str = r#"
[[stage]]
name = "every-step"
steps = [
  { upload = "tree/", to = "/opt/tree/" },
  { upload = "single.conf", to = "/etc/strata-single.conf" },
  { run = "check-env.sh", env = { FROM_VARS = "{{ vars.x }}-rendered" } },
  { shell = "stat -c '%a %n' /opt/tree/bin/tool.sh /opt/tree/secret /opt/tree/nested /opt/tree/nested/deeper/leaf.txt /etc/strata-single.conf && test \"$(stat -c %a /opt/tree/secret)\" = 600 && test \"$(stat -c %a /opt/tree/bin/tool.sh)\" = 755 && /opt/tree/bin/tool.sh" },
  { shell = "cat /proc/sys/kernel/random/boot_id > /var/tmp/boot-before && echo boot-before $(cat /var/tmp/boot-before)" },
  { reboot = true },
  { shell = "now=$(cat /proc/sys/kernel/random/boot_id); echo boot-after $now; test \"$now\" != \"$(cat /var/tmp/boot-before)\" && echo new-boot-id" },
]
"#;

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let server = HttpServer::start(&base_image_dir());
        let url = server.url();
        let root = dir.path();
        std::fs::create_dir_all(root.join("tree/bin")).unwrap();
        std::fs::create_dir_all(root.join("tree/nested/deeper")).unwrap();
        write_mode(&root.join("tree/bin/tool.sh"), "#!/bin/sh\necho tool-ran-as $(id -u)\n", 0o755);
        write_mode(&root.join("tree/secret"), "s3cret\n", 0o600);
        write_mode(&root.join("tree/nested/deeper/leaf.txt"), "leaf\n", 0o644);
        write_mode(&root.join("single.conf"), "single=1\n", 0o640);
        write_mode(
            &root.join("check-env.sh"),
            "#!/bin/sh\nset -eu\necho \"FROM_VARS=$FROM_VARS\"\necho \"uid=$(id -u)\"\n",
            0o755,
        );
        // A runner's store that already holds the source and its saved first boot (from the
        // demo's cold build, which every guest test shares): the first stage resumes it, and a
        // reboot step then reboots a resumed guest.
        let store = root.join("store");
        let fixture = fixture_store();
        std::fs::create_dir_all(&store).unwrap();
        for dir in ["sources", "boots"] {
            let status = Command::new("cp")
                .args(["-a", "--reflink=auto"])
                .arg(fixture.join(dir))
                .arg(&store)
                .status()
                .unwrap();
            assert!(status.success(), "copying the fixture's {dir}/");
        }
        let project = Project { dir, store, url, _server: server };
        project.define("10m", "{ shell = \"true\" }");
        project
    }

    /// Writes the definition: the first stage, and a second stage `broken` with these steps.
    fn define(&self, ready_timeout: &str, second_steps: &str) {
        let url = &self.url;
        let text = format!(
            r#"name = "faults"

[source]
url = "{url}/debian-12-strata-amd64.qcow2"
checksum_url = "{url}/SHA256SUMS"

[machine]
cpus = 2
memory = "1G"
disk_size = "4G"

[communicator]
kind = "ssh"
user = "builder"
ready_timeout = "{ready_timeout}"

[vars]
x = "from-vars"
{FIRST_STAGE}
[[stage]]
name = "broken"
steps = [
  {second_steps},
]
"#
        );
        std::fs::write(self.definition(), text).unwrap();
    }

    fn definition(&self) -> PathBuf {
        self.dir.path().join("faults.toml")
    }

    fn strata(&self) -> Command {
        let mut command = Command::new(strata_bin());
        command.arg("--store").arg(&self.store).env_remove("STRATA_STORE").env("NO_COLOR", "1");
        command
    }

    fn build(&self, json: bool, extra: &[&str]) -> (Output, Vec<Value>, Duration) {
        let mut command = self.strata();
        if json {
            command.args(["--log-format", "json"]);
        }
        let started = Instant::now();
        let output = command.arg("build").arg(self.definition()).args(extra).output().unwrap();
        let events = if json { parse_events(&output.stdout) } else { Vec::new() };
        (output, events, started.elapsed())
    }

    /// Starts a JSON build whose events arrive on a channel as they come.
    fn spawn_build(&self, extra: &[&str]) -> Spawned {
        let mut child = self
            .strata()
            .args(["--log-format", "json", "build"])
            .arg(self.definition())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let event: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if sender.send(event).is_err() {
                    break;
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        let (err_sender, stderr_text) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
            let _ = err_sender.send(text);
        });
        Spawned { child, events, stderr: stderr_text, seen: Vec::new() }
    }

    fn tmp_entries(&self) -> Vec<String> {
        names(&self.store.join("tmp"))
    }

    fn layers(&self) -> Vec<String> {
        names(&self.store.join("layers"))
    }
}

struct Spawned {
    child: Child,
    events: mpsc::Receiver<Value>,
    stderr: mpsc::Receiver<String>,
    seen: Vec<Value>,
}

impl Spawned {
    /// Waits for the first event named `name` (for stage `stage`, if given).
    fn wait_for(&mut self, name: &str, stage: Option<&str>, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    self.seen.push(event.clone());
                    if event["event"] == name && stage.is_none_or(|stage| event["stage"] == stage) {
                        return event;
                    }
                }
                Err(error) => panic!(
                    "no `{name}` event within {within:?} ({error}); saw {:#?}; strata: {:?}",
                    self.seen.iter().map(|e| e["event"].clone()).collect::<Vec<_>>(),
                    self.child.try_wait()
                ),
            }
        }
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(i32::try_from(self.child.id()).unwrap()), signal).unwrap();
    }

    /// Waits for strata to exit; returns its status, when it exited, and its stderr.
    fn wait_exit(mut self, within: Duration) -> (ExitStatus, Instant, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("strata did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let exited = Instant::now();
        let stderr = self.stderr.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        (status, exited, stderr)
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn output_lines(events: &[Value], stage: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "step_output" && e["stage"] == stage)
        .map(|e| e["line"].as_str().unwrap().to_owned())
        .collect()
}

/// True once `pid` is gone (or a zombie nobody reaped yet: it runs no more).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        }
    }
}

fn assert_gone_within(pid: u32, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while !process_gone(pid) {
        assert!(Instant::now() < deadline, "{what}: qemu (pid {pid}) still runs after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `logs: DIR` line strata prints after a failure.
fn logs_dir_in(text: &str) -> PathBuf {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("logs: "))
        .unwrap_or_else(|| panic!("no `logs:` line in:\n{text}"));
    PathBuf::from(line.trim())
}

const BOOT: Duration = Duration::from_secs(600);

#[test]
#[ignore = "boots a guest under QEMU: scripts/test.sh runs it"]
fn faults_on_real_guests_are_reported_and_leave_the_store_clean() {
    let project = Project::new();
    let started = Instant::now();

    // 1. Every step kind in one stage, on the source's saved first boot; the stage commits, and
    // so does `broken` (one step, `true`) above it, which saves every-step's restore point: a
    // failing and a timed-out step (2, 3) resume it rather than boot; the faults that prove
    // something of a booted guest (4-7) pass --no-warm.
    let (output, events, took) = project.build(true, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    eprintln!("every-step stage (resumed, 7 steps, reboot) and broken: {:.1}s", took.as_secs_f64());
    let resumed = named(&events, "restore_resumed");
    assert!(
        resumed.len() == 1 && resumed[0]["from"].as_str().unwrap().contains("/boots/"),
        "the first stage resumed the source's first boot: {resumed:?}"
    );
    let lines = output_lines(&events, "every-step");
    for expected in [
        "FROM_VARS=from-vars-rendered",
        "uid=0",
        "755 /opt/tree/bin/tool.sh",
        "600 /opt/tree/secret",
        "755 /opt/tree/nested",
        "644 /opt/tree/nested/deeper/leaf.txt",
        "640 /etc/strata-single.conf",
        "tool-ran-as 0",
        "new-boot-id",
    ] {
        assert!(
            lines.iter().any(|line| line == expected),
            "no line `{expected}` in the steps' output: {lines:#?}"
        );
    }
    let finished: Vec<i64> =
        named(&events, "step_finished").iter().map(|e| e["exit_code"].as_i64().unwrap()).collect();
    assert_eq!(finished, [0; 8]);
    assert_eq!(stages_of(&events, "layer_committed"), ["every-step", "broken"]);
    assert_eq!(stages_of(&events, "restore_saved"), ["broken"], "every-step's restore point");
    let layers = project.layers();
    assert_eq!(layers.len(), 2);

    // 2. A failing step: the error names the stage, the step, its code, its output, the
    // console and the logs; the stage below stays committed.
    project.define("10m", r#"{ shell = "echo before-fail; echo on-stderr >&2; exit 3" }"#);
    let (output, _, took) = project.build(false, &[]);
    let text = stderr(&output);
    eprintln!("failing step (resume + fail): {:.1}s\n{text}", took.as_secs_f64());
    assert!(
        text.contains("broken: resumed a saved guest instead of booting"),
        "it resumed every-step's restore point:\n{text}"
    );
    assert_eq!(output.status.code(), Some(1), "{text}");
    for expected in [
        "stage `broken`",
        "step 1/1",
        "shell: echo before-fail; echo on-stderr >&2; exit 3",
        "exited with code 3",
        "its last output lines:",
        "| before-fail",
        "| on-stderr",
        "logs: ",
    ] {
        assert!(text.contains(expected), "stderr lacks `{expected}`:\n{text}");
    }
    // The console's tail with a failure is proven on booted guests (4 and 7 here, guest_screen's
    // failing step).
    common::assert_no_console_from_before_the_resume(&text);
    let error_at = text.find("exited with code 3").unwrap();
    let logs_at = text.find("logs: ").unwrap();
    assert!(logs_at > error_at, "the logs line comes after the error:\n{text}");
    let logs = logs_dir_in(&text);
    assert!(logs.starts_with(project.store.join("logs")), "{}", logs.display());
    let step_log = std::fs::read_to_string(logs.join("broken/step-1.log")).unwrap();
    for expected in ["out before-fail", "err on-stderr", "exit 3"] {
        assert!(step_log.contains(expected), "step log lacks `{expected}`:\n{step_log}");
    }
    let logged = parse_events(&std::fs::read(logs.join("events.jsonl")).unwrap());
    assert_eq!(logged.first().unwrap()["event"], "build_started");
    assert!(named(&logged, "step_finished").iter().any(|e| e["exit_code"] == 3));
    assert!(
        named(&logged, "error")
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains("exited with code 3"))
    );
    // The console of the guest that ran the stage is logged (here, a resumed one's).
    assert!(logs.join("broken/console.log").is_file(), "no console.log in {}", logs.display());
    assert_eq!(project.layers(), layers, "the stage below stays committed, nothing else");
    assert!(
        project.tmp_entries().is_empty(),
        "a failed stage leaves no work: {:?}",
        project.tmp_entries()
    );
    let (output, events, took) = project.build(true, &["--stage", "every-step"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(named(&events, "stage_cached").len(), 1, "the rerun finds the first stage cached");
    assert!(named(&events, "stage_started").is_empty());
    assert!(took < Duration::from_secs(10), "a cached rerun took {took:?}");

    // 3. A timed-out step, with --keep-failed: reported as timed out and killed; the disk kept.
    project.define("10m", r#"{ shell = "echo sleeping; sleep 600", timeout = "5s" }"#);
    let (output, _, took) = project.build(false, &["--keep-failed"]);
    let text = stderr(&output);
    eprintln!("timed-out step (resume + 5s): {:.1}s\n{text}", took.as_secs_f64());
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "step 1/1 (shell: echo sleeping; sleep 600) timed out after 5s and was killed"
        ),
        "{text}"
    );
    assert!(text.contains("| sleeping"), "{text}");
    let kept = project.tmp_entries();
    assert_eq!(kept.len(), 1, "--keep-failed keeps the work folder: {kept:?}");
    let kept_dir = project.store.join("tmp").join(&kept[0]);
    assert!(kept_dir.join("disk.qcow2").is_file());
    assert!(text.contains(&kept_dir.display().to_string()), "the kept folder is named:\n{text}");
    assert!(
        text.contains("qemu-system-x86_64") && text.contains("disk.qcow2"),
        "how to boot the kept disk:\n{text}"
    );
    std::fs::remove_dir_all(&kept_dir).unwrap();

    // 4. QEMU killed during a step: strata notices at once and says so, with the console's tail
    // (a booted guest's: --no-warm).
    project.define("10m", r#"{ shell = "echo waiting; sleep 600" }"#);
    let mut build = project.spawn_build(&["--no-warm"]);
    let qemu = build.wait_for("qemu_started", Some("broken"), BOOT);
    let pid = u32::try_from(qemu["pid"].as_u64().unwrap()).unwrap();
    build.wait_for("step_started", Some("broken"), BOOT);
    build.wait_for("step_output", Some("broken"), Duration::from_secs(60));
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    let (status, exited, text) = build.wait_exit(Duration::from_secs(60));
    let noticed = exited.duration_since(killed);
    eprintln!("qemu killed mid-step: strata exited {:.2}s later\n{text}", noticed.as_secs_f64());
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(noticed < Duration::from_secs(5), "strata took {noticed:?} to notice QEMU's death");
    assert!(text.contains("qemu died during step 1/1"), "{text}");
    assert!(text.contains("the console's last lines:"), "{text}");
    assert!(project.tmp_entries().is_empty(), "{:?}", project.tmp_entries());

    // 5. strata killed (SIGKILL) while booting: QEMU dies with it; the next build cleans tmp/.
    let mut build = project.spawn_build(&["--no-warm"]);
    let qemu = build.wait_for("qemu_started", Some("broken"), BOOT);
    let pid = u32::try_from(qemu["pid"].as_u64().unwrap()).unwrap();
    build.signal(Signal::SIGKILL);
    let (status, _, _) = build.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), None, "killed by a signal");
    assert_gone_within(pid, Duration::from_secs(5), "strata SIGKILLed");
    assert_eq!(project.tmp_entries().len(), 1, "a killed strata leaves its work folder");
    let (output, _, _) = project.build(true, &["--stage", "every-step"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        project.tmp_entries().is_empty(),
        "the next build cleans stale work: {:?}",
        project.tmp_entries()
    );

    // 6. Ctrl-C while booting: exit 130, QEMU gone, tmp/ empty, layers/ unchanged.
    let mut build = project.spawn_build(&["--no-warm"]);
    let qemu = build.wait_for("qemu_started", Some("broken"), BOOT);
    let pid = u32::try_from(qemu["pid"].as_u64().unwrap()).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    build.signal(Signal::SIGINT);
    let interrupted = Instant::now();
    let (status, exited, text) = build.wait_exit(Duration::from_secs(30));
    eprintln!(
        "Ctrl-C while booting: exited {:.2}s later\n{text}",
        exited.duration_since(interrupted).as_secs_f64()
    );
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(text.contains("interrupted"), "{text}");
    assert_gone_within(pid, Duration::from_secs(5), "Ctrl-C");
    assert!(project.tmp_entries().is_empty(), "{:?}", project.tmp_entries());
    assert_eq!(project.layers(), layers);

    // 7. A guest that never answers in time: the ready timeout is named, the console shown.
    project.define("15s", r#"{ shell = "echo never-reached" }"#);
    let (output, _, took) = project.build(false, &["--no-warm"]);
    let text = stderr(&output);
    eprintln!("ready_timeout 15s: {:.1}s\n{text}", took.as_secs_f64());
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("did not become ready"), "{text}");
    assert!(text.contains("ready_timeout"), "{text}");
    assert!(text.contains("gave up after 15"), "{text}");
    assert!(text.contains("the console's last lines:"), "{text}");
    assert!(took < Duration::from_secs(90), "a 15s ready timeout took {took:?}");
    assert!(project.tmp_entries().is_empty(), "{:?}", project.tmp_entries());
    assert_eq!(project.layers(), layers);

    eprintln!("all guest faults: {:.1}s", started.elapsed().as_secs_f64());
}

/// QEMU's tools missing from PATH: the error names the Debian package to install. No guest
/// is booted (the tools are never found), so this is not ignored.
#[test]
fn missing_qemu_names_the_package_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let source = root.join("tiny.qcow2");
    common::require_tool("qemu-img", "apt-get install qemu-utils");
    let created = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&source)
        .arg("64M")
        .status()
        .unwrap();
    assert!(created.success(), "qemu-img create {}", source.display());
    let digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(std::fs::read(&source).unwrap()))
    };
    let definition = root.join("tiny.toml");
    std::fs::write(
        &definition,
        format!(
            "name = \"tiny\"\n[source]\nurl = \"tiny.qcow2\"\nchecksum = \"sha256:{digest}\"\n\
             [[stage]]\nname = \"only\"\nsteps = [ {{ shell = \"true\" }} ]\n"
        ),
    )
    .unwrap();
    let build = |path: &str, warm: bool| {
        Command::new(strata_bin())
            .arg("--store")
            .arg(root.join("store"))
            .env_remove("STRATA_STORE")
            .env("PATH", path)
            .arg("build")
            .arg(&definition)
            .args(if warm { &[][..] } else { &["--no-warm"][..] })
            .output()
            .unwrap()
    };
    let strata = |path: &str| build(path, false);

    // Restore points need zstd (QEMU runs it): checked first, unless --no-warm.
    let output = build("/nonexistent-dir", true);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("`zstd` was not found") && text.contains("package `zstd`"), "{text}");

    // Nothing of QEMU on PATH: qemu-img is the first one needed.
    let output = strata("/nonexistent-dir");
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("qemu-img") && text.contains("qemu-utils"), "{text}");

    // qemu-img there, qemu-system-x86_64 not.
    let bin = root.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let qemu_img = which("qemu-img");
    std::os::unix::fs::symlink(qemu_img, bin.join("qemu-img")).unwrap();
    let output = strata(bin.to_str().unwrap());
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("qemu-system-x86_64") && text.contains("qemu-system-x86"), "{text}");
    assert!(names(&root.join("store/tmp")).is_empty(), "no work left behind");
    assert!(names(&root.join("store/layers")).is_empty());
}

fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}
