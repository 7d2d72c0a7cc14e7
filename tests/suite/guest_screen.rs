//! What a user sees: `strata build` in a real pseudo-terminal (tmux) at a fully cached build
//! and at a failing step, in a narrow terminal, with NO_COLOR; plain lines (timestamped, no
//! escape codes) when stderr is a pipe; and `--log-format json`, whose lines all parse and
//! whose events come in the documented order (docs/events.md).
//!
//! One store, one boot: the JSON build boots the first stage, commits it and fails the second in
//! the same guest; every screen of a cached build stands on the first stage, and the failing
//! build on the terminal resumes the first stage's restore point (the console tail of a booted
//! guest on failure is guest_faults'). Ignored by default (scripts/test.sh runs it); needs the
//! local base image that `scripts/build-base-image.sh` makes (or `STRATA_BASE_IMAGE_DIR`) and
//! tmux.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{HttpServer, base_image_dir, parse_events, stderr, strata_bin};

struct Project {
    dir: tempfile::TempDir,
    store: PathBuf,
    _server: HttpServer,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let server = HttpServer::start(&base_image_dir());
        let url = server.url();
        let text = format!(
            r#"name = "screen"

[source]
url = "{url}/debian-12-strata-amd64.qcow2"
checksum_url = "{url}/SHA256SUMS"

[machine]
memory = "1G"
disk_size = "4G"

[communicator]
user = "builder"
ready_timeout = "10m"

[[stage]]
name = "first"
steps = [
  {{ shell = "echo first-stage-output" }},
  {{ shell = "echo second-step" }},
]

[[stage]]
name = "second-stage-with-a-rather-long-name"
steps = [
  {{ shell = "echo line-one; echo line-two >&2; echo line-three; sleep 2; exit 3" }},
]
"#
        );
        std::fs::write(dir.path().join("screen.toml"), text).unwrap();
        let store = dir.path().join("store");
        Project { dir, store, _server: server }
    }

    fn definition(&self) -> PathBuf {
        self.dir.path().join("screen.toml")
    }

    fn strata(&self) -> Command {
        let mut command = Command::new(strata_bin());
        command.arg("--store").arg(&self.store).env_remove("STRATA_STORE").env_remove("NO_COLOR");
        command
    }

    /// The shell command line for tmux.
    fn command_line(&self, env: &str, args: &str) -> String {
        format!(
            "env {env} {} --store {} build {} {args}",
            strata_bin().display(),
            self.store.display(),
            self.definition().display()
        )
    }
}

/// A tmux server of our own, with one session running a command in a real terminal.
struct Tmux {
    socket: String,
}

const EXIT_MARK: &str = "strata-exit=";

impl Tmux {
    fn run(name: &str, width: u16, height: u16, command: &str) -> Tmux {
        let socket = format!("strata-test-{}-{name}", std::process::id());
        // The shell stays, so the screen can be read after strata exits.
        let script = format!("{command}; echo {EXIT_MARK}$?; sleep 3600");
        let status = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ])
            .arg(script)
            .status()
            .unwrap();
        assert!(status.success(), "tmux failed to start");
        Tmux { socket }
    }

    /// The screen as text; `escapes` keeps colour and attribute codes; `join` joins wrapped lines.
    fn capture(&self, escapes: bool, join: bool) -> String {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket, "capture-pane", "-p", "-S", "-500"]);
        if escapes {
            command.arg("-e");
        }
        if join {
            command.arg("-J");
        }
        let output = command.output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Polls the screen until strata's exit code shows; `watch` sees each screen as its rows
    /// are. Returns the code and the screen with wrapped lines joined (indicatif pads its lines
    /// to the last column, so a line printed after them joins them too).
    fn wait_exit(&self, within: Duration, mut watch: impl FnMut(&str)) -> (i32, String) {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.capture(false, false);
            watch(&screen);
            if let Some(code) = screen.lines().find_map(|line| line.trim().strip_prefix(EXIT_MARK))
            {
                return (code.trim().parse().unwrap(), self.capture(false, true));
            }
            assert!(
                Instant::now() < deadline,
                "strata did not finish within {within:?}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).status();
    }
}

/// Any CSI escape sequence (`ESC [`).
fn has_escape(text: &str) -> bool {
    text.contains("\x1b[")
}

/// SGR codes that set a colour (30–37, 38;…, 39/49 excluded, 40–47, 48;…, 90–107).
fn has_color(text: &str) -> bool {
    text.split("\x1b[").skip(1).any(|rest| {
        let Some(end) = rest.find('m') else { return false };
        let params = &rest[..end];
        if !params.chars().all(|c| c.is_ascii_digit() || c == ';') {
            return false;
        }
        params
            .split(';')
            .filter_map(|p| p.parse::<u32>().ok())
            .any(|p| matches!(p, 30..=38 | 40..=48 | 90..=97 | 100..=107))
    })
}

/// The order docs/events.md promises for a build.
fn assert_valid_order(events: &[Value]) {
    let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(names.first(), Some(&"build_started"), "{names:?}");
    assert!(matches!(names.last(), Some(&("build_finished" | "error"))), "{names:?}");
    for event in events {
        assert_eq!(event["version"], 1, "{event}");
        assert!(event["time"].as_f64().unwrap() > 1.0e9, "{event}");
    }
    let times: Vec<f64> = events.iter().map(|e| e["time"].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "times never go back");
    let built: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "layer_committed")
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    assert!(!built.is_empty());
    for stage in built {
        // This stage's lifecycle, without console lines and step output (they come anywhere
        // between qemu_started and powering_off, and between a step's start and finish).
        let lifecycle: Vec<&str> = events
            .iter()
            .filter(|e| e["stage"] == stage)
            .map(|e| e["event"].as_str().unwrap())
            .filter(|name| !matches!(*name, "console" | "step_output"))
            .collect();
        let mut expected =
            vec!["stage_started", "qemu_started", "communicator_ready", "cloud_init_done"];
        // A first stage that booted saves the source's first boot before its steps.
        let first_stage = events.iter().any(|e| {
            e["event"] == "restore_saved" && e["stage"] == stage && e["first_boot"] == true
        });
        if first_stage {
            expected.push("restore_saved");
        }
        let steps =
            events.iter().filter(|e| e["stage"] == stage && e["event"] == "step_started").count();
        for _ in 0..steps {
            expected.extend(["step_started", "step_finished"]);
        }
        let index_of = |name: &str| {
            events.iter().position(|e| e["stage"] == stage && e["event"] == name).unwrap()
        };
        // A guest that goes on to the stage above is cut, not powered off.
        let goes_on = events
            .iter()
            .skip(index_of("sysprep"))
            .any(|e| e["event"] == "stage_started" && e["stage"] != stage);
        expected.push("sysprep");
        if !goes_on {
            expected.push("powering_off");
        }
        expected.extend(["committing", "layer_committed"]);
        assert_eq!(lifecycle, expected, "stage {stage}'s events");
        let outputs: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e["stage"] == stage && e["event"] == "step_output")
            .map(|(i, _)| i)
            .collect();
        assert!(outputs.iter().all(|&i| i > index_of("step_started") && i < index_of("sysprep")));
        // Steps are numbered in order, each output inside its own step.
        let indices: Vec<u64> = events
            .iter()
            .filter(|e| e["stage"] == stage && e["event"] == "step_started")
            .map(|e| e["index"].as_u64().unwrap())
            .collect();
        assert_eq!(indices, (0..steps as u64).collect::<Vec<_>>());
    }
}

#[test]
#[ignore = "boots a guest under QEMU: scripts/test.sh runs it"]
fn the_screen_shows_cached_built_and_failed_stages() {
    // The screens are read from tmux.
    common::require_tool("tmux", "apt-get install tmux");
    let project = Project::new();

    // 1. --log-format json while the first stage boots and is built, and the second fails in
    // the same guest: every line parses, in order.
    let started = Instant::now();
    let output = project
        .strata()
        .args(["--log-format", "json", "build"])
        .arg(project.definition())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    eprintln!(
        "first stage built, second failed, one boot: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    let events = parse_events(stdout.as_bytes());
    assert!(events.iter().all(|e| e["version"].is_u64() && e["event"].is_string()));
    assert_valid_order(&events);
    assert!(
        events.iter().any(|e| e["event"] == "restore_saved" && e["first_boot"] == true),
        "the first stage's boot was saved for later first stages"
    );
    assert!(
        events.iter().any(|e| e["event"] == "restore_saved" && e["first_boot"] == false),
        "the first stage's running guest was saved for the stage above"
    );
    assert_eq!(events.last().unwrap()["event"], "error");
    assert!(!has_escape(&stdout) && !has_escape(&stderr(&output)));
    let key = events.iter().find(|e| e["event"] == "layer_committed").unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let short = &key[..12];

    // 2. A fully cached build on a 120x40 terminal: a line per stage, then the table.
    let tmux = Tmux::run("cached", 120, 40, &project.command_line("", "--stage first"));
    tmux.wait_exit(Duration::from_secs(60), |_| {});
    let screen = tmux.capture(false, false);
    eprintln!("cached build, 120 columns:\n{screen}");
    let stage_line =
        screen.lines().find(|line| line.contains("first") && line.contains("cached")).unwrap();
    assert!(
        stage_line.contains(&format!("first cached {short}")),
        "the short key on the stage's line: {stage_line}"
    );
    let header = screen.lines().position(|line| {
        line.starts_with("stage") && line.contains("time") && line.contains("layer")
    });
    let header = header.unwrap_or_else(|| panic!("no closing table:\n{screen}"));
    let rows: Vec<&str> = screen.lines().skip(header + 1).take(3).collect();
    assert!(
        rows[0].starts_with("first") && rows[0].contains("cached") && rows[0].contains("MiB"),
        "{rows:?}"
    );
    assert!(rows[1].starts_with("total"), "{rows:?}");
    assert_eq!(rows[2].trim(), format!("{EXIT_MARK}0"), "nothing else is printed: {rows:?}");
    drop(tmux);

    // NO_COLOR: no colour codes at all (the display uses none anyway; this keeps it so).
    let tmux = Tmux::run("nocolor", 120, 40, &project.command_line("NO_COLOR=1", "--stage first"));
    tmux.wait_exit(Duration::from_secs(60), |_| {});
    let raw = tmux.capture(true, false);
    assert!(!has_color(&raw), "colour codes with NO_COLOR=1: {raw:?}");
    drop(tmux);

    // A narrow terminal: the stage's line still holds its name, state and key on one row.
    let tmux = Tmux::run("narrow", 40, 20, &project.command_line("", "--stage first"));
    let (code, _) = tmux.wait_exit(Duration::from_secs(60), |_| {});
    let screen = tmux.capture(false, false);
    eprintln!("cached build, 40 columns:\n{screen}");
    assert_eq!(code, 0);
    assert!(screen.lines().any(|line| line.contains(&format!("first cached {short}"))), "{screen}");

    // 3. Pipes, not a terminal: plain lines, timestamped, no escape codes.
    let output = project
        .strata()
        .arg("build")
        .arg(project.definition())
        .args(["--stage", "first"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = stderr(&output);
    assert!(
        !has_escape(&text) && !has_escape(&String::from_utf8_lossy(&output.stdout)),
        "{text:?}"
    );
    let cached_line = text
        .lines()
        .find(|line| line.contains("first: cached"))
        .unwrap_or_else(|| panic!("{text}"));
    let clock = cached_line.split(' ').next().unwrap();
    assert!(
        clock.len() == 8
            && clock.chars().enumerate().all(|(i, c)| if i == 2 || i == 5 {
                c == ':'
            } else {
                c.is_ascii_digit()
            }),
        "a timestamp leads each line: {cached_line}"
    );

    // 4. A failing step on a narrow 60x40 terminal: the live display while it starts from the
    // first stage's restore point (one row per stage, truncated, never wrapped), then the error
    // and where the logs are.
    let tmux = Tmux::run("failing", 60, 40, &project.command_line("", ""));
    let long = "second-stage-with-a-rather-long-name";
    let mut live_rows: Vec<String> = Vec::new();
    let started = Instant::now();
    let (code, screen) = tmux.wait_exit(Duration::from_secs(900), |screen| {
        for row in screen.lines().filter(|row| row.contains(long) && !row.contains("error")) {
            if !live_rows.iter().any(|seen| seen == row) {
                live_rows.push(row.to_owned());
            }
        }
    });
    eprintln!("failing build ({:.1}s), 60 columns:\n{screen}", started.elapsed().as_secs_f64());
    eprintln!("the stage's rows as they changed:\n{}", live_rows.join("\n"));
    assert_eq!(code, 1, "{screen}");
    // (The step sleeps 2 s, so that its row is seen; a resume's own row lasts no time.)
    for phase in ["booting", "step 1/1", "failed"] {
        assert!(
            live_rows.iter().any(|row| row.contains(phase)),
            "no row said `{phase}`: {live_rows:#?}"
        );
    }
    // It resumed the first stage's saved guest: of every build's events (their logs folders),
    // the one build that resumed is a failed one.
    let resumed: Vec<Vec<Value>> = std::fs::read_dir(project.store.join("logs"))
        .unwrap()
        .filter_map(|entry| std::fs::read(entry.unwrap().path().join("events.jsonl")).ok())
        .map(|bytes| parse_events(&bytes))
        .filter(|events| events.iter().any(|e| e["event"] == "restore_resumed"))
        .collect();
    assert_eq!(resumed.len(), 1, "one build resumed the first stage's restore point");
    assert_eq!(resumed[0].last().unwrap()["event"], "error");
    for row in &live_rows {
        assert!(row.chars().count() <= 60, "{row:?}");
    }
    for expected in [
        "first cached",
        "stage `second-stage-with-a-rather-long-name`",
        "step 1/1 (shell: echo line-one; echo line-two >&2; echo line-three; sleep 2; exit 3) exited with code 3",
        "| line-one",
        "| line-two",
        "| line-three",
        "logs: ",
    ] {
        assert!(screen.contains(expected), "the screen lacks `{expected}`:\n{screen}");
    }
    common::assert_no_console_from_before_the_resume(&screen);
    let error_at = screen.find("error: ").unwrap_or_else(|| panic!("no error line:\n{screen}"));
    assert!(
        screen.rfind("logs: ").unwrap() > error_at,
        "the logs line comes after the error:\n{screen}"
    );
}
