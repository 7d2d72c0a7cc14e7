//! Running checks one after another through a [`GuestExec`], and what they leave: results
//! for events, the layer's record and JUnit.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Check, CheckError, ChecksDigest, guest_command};
use crate::communicator::{Communicator, CommunicatorError};
use crate::units::format_duration;

/// How much of a check's output a result keeps (the end, where the failure is).
const OUTPUT_LIMIT: usize = 16 * 1024;
/// Beyond a retried check's own timeout, for its last attempt (an HTTP fetch may take 10 s)
/// and an interpreter start under emulation.
const LAST_ATTEMPT: Duration = Duration::from_secs(20);

/// What a command run in the guest left: its exit code and its output, stdout and stderr
/// merged (the check's command merges them itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestOutput {
    pub code: i32,
    pub output: String,
}

/// Why a command did not give a [`GuestOutput`].
#[derive(Debug)]
pub enum ExecFailure {
    /// It ran past its timeout and was killed: the check fails.
    TimedOut,
    /// The guest could not be asked at all (connection lost, …): the run stops.
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// Runs one command as root in the guest under test: the communicator's exec, or in tests a
/// local shell.
pub trait GuestExec: Send + Sync {
    fn exec_check(
        &self,
        command: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<GuestOutput, ExecFailure>> + Send;
}

impl<C: Communicator> GuestExec for C {
    async fn exec_check(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<GuestOutput, ExecFailure> {
        let mut output = String::new();
        let env = BTreeMap::new();
        let exit = self
            .exec_as_root(command, &env, timeout, |_, line| {
                output.push_str(line);
                output.push('\n');
            })
            .await
            .map_err(|error| match error {
                CommunicatorError::Timeout { .. } => ExecFailure::TimedOut,
                other => ExecFailure::Other(Box::new(other)),
            })?;
        Ok(GuestOutput { code: exit.code, output })
    }
}

/// How one check went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    /// `http`, `shell`, `service` or `port`.
    pub kind: String,
    pub passed: bool,
    pub seconds: f64,
    /// The end of what the check's command printed (stdout and stderr merged).
    pub output: String,
    /// When it finished, in seconds since the Unix epoch.
    pub when: u64,
}

/// What a layer's record keeps about the checks run against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    /// Which checks ran: the digest of the set, see [`ChecksDigest::of`].
    pub checks_sha256: ChecksDigest,
    pub passed: bool,
    /// When the last check finished, in seconds since the Unix epoch.
    pub when: u64,
    pub results: Vec<CheckResult>,
}

impl CheckRecord {
    pub fn new(checks: &[Check], results: Vec<CheckResult>) -> Result<CheckRecord, CheckError> {
        Ok(CheckRecord {
            checks_sha256: ChecksDigest::of(checks)?,
            passed: results.iter().all(|result| result.passed),
            when: results.iter().map(|result| result.when).max().unwrap_or_else(unix_now),
            results,
        })
    }
}

/// How a run of checks goes, as it goes (for events).
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    Started(&'a Check),
    Finished(&'a CheckResult),
}

/// Runs `checks` in order; `on_progress` hears each check start and each result as it comes.
/// A check that fails does not stop the others; a guest that cannot be reached does.
pub async fn run_checks<E: GuestExec>(
    exec: &E,
    checks: &[Check],
    mut on_progress: impl FnMut(Progress<'_>) + Send,
) -> Result<Vec<CheckResult>, CheckError> {
    let mut results = Vec::with_capacity(checks.len());
    for check in checks {
        on_progress(Progress::Started(check));
        let result = run_check(exec, check).await?;
        on_progress(Progress::Finished(&result));
        results.push(result);
    }
    Ok(results)
}

/// Runs one check.
pub async fn run_check<E: GuestExec>(exec: &E, check: &Check) -> Result<CheckResult, CheckError> {
    let command = guest_command(check);
    let wait =
        if check.kind().retried() { check.timeout() + LAST_ATTEMPT } else { check.timeout() };
    let started = Instant::now();
    let outcome = exec.exec_check(&command, wait).await;
    let seconds = started.elapsed().as_secs_f64();
    let (passed, output) = match outcome {
        Ok(GuestOutput { code: 0, output }) => (true, output),
        Ok(GuestOutput { code, output }) => (false, format!("{output}(exit status {code})\n")),
        Err(ExecFailure::TimedOut) => (
            false,
            format!(
                "did not finish within its timeout of {} and was killed\n",
                format_duration(wait)
            ),
        ),
        Err(ExecFailure::Other(source)) => {
            return Err(CheckError::Guest { name: check.name().to_owned(), source });
        }
    };
    Ok(CheckResult {
        name: check.name().to_owned(),
        kind: check.kind().label().to_owned(),
        passed,
        seconds,
        output: tail(output, OUTPUT_LIMIT),
        when: unix_now(),
    })
}

/// The last `limit` bytes of `text`, cut at a character boundary.
fn tail(text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[…]{}", &text[start..])
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::ffi::OsString;
    use std::net::TcpListener;
    use std::path::Path;

    use super::*;
    use crate::check::CheckKind;
    use crate::process::{Command, ProcessError};

    /// Runs the generated commands with the host's /bin/sh, as the guest would.
    struct HostShell {
        path: Option<OsString>,
    }

    impl GuestExec for HostShell {
        async fn exec_check(
            &self,
            command: &str,
            timeout: Duration,
        ) -> Result<GuestOutput, ExecFailure> {
            let mut child = Command::new("/bin/sh").args(["-c", command]);
            if let Some(path) = &self.path {
                child = child.env("PATH", path);
            }
            match child.output_unchecked(timeout).await {
                Ok(done) => Ok(GuestOutput {
                    code: done.status.code().unwrap_or(-1),
                    output: String::from_utf8_lossy(&done.stdout).into_owned() + &done.stderr,
                }),
                Err(ProcessError::Timeout { .. }) => Err(ExecFailure::TimedOut),
                Err(other) => Err(ExecFailure::Other(Box::new(other))),
            }
        }
    }

    const HOST: HostShell = HostShell { path: None };

    fn check(kind: CheckKind, seconds: u64) -> Check {
        Check::new("c", kind, Some(Duration::from_secs(seconds))).unwrap()
    }

    async fn run(exec: &HostShell, kind: CheckKind, seconds: u64) -> CheckResult {
        run_check(exec, &check(kind, seconds)).await.unwrap()
    }

    fn http(url: &str, status: u16, contains: Option<&str>) -> CheckKind {
        CheckKind::Http { url: url.to_owned(), status, contains: contains.map(str::to_owned) }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// A PATH holding only links to these host tools (to take python3 or curl away).
    fn only_tools(dir: &Path, tools: &[&str]) -> OsString {
        for tool in tools {
            let found =
                ["/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(tool)).find(|p| p.exists());
            std::os::unix::fs::symlink(found.unwrap(), dir.join(tool)).unwrap();
        }
        dir.as_os_str().to_owned()
    }

    async fn http_server(root: &Path, port: u16) -> crate::process::Child {
        let server = Command::new("/usr/bin/python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(root)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "http.server did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    async fn http_cases(exec: &HostShell, url: &str) {
        let pass = run(exec, http(&format!("{url}/health"), 200, Some("ok")), 5).await;
        assert!(pass.passed, "{}", pass.output);
        assert!(pass.output.contains("status 200"), "{}", pass.output);
        let missing = run(exec, http(&format!("{url}/missing"), 200, None), 1).await;
        assert!(!missing.passed);
        assert!(missing.output.contains("status 404 (expected 200)"), "{}", missing.output);
        let wanted = run(exec, http(&format!("{url}/missing"), 404, None), 1).await;
        assert!(wanted.passed);
        let other = run(exec, http(&format!("{url}/health"), 200, Some("nope")), 1).await;
        assert!(!other.passed);
        assert!(other.output.contains("does not contain"), "{}", other.output);
    }

    #[tokio::test]
    async fn http_checks_fetch_with_python_then_curl_then_wget() {
        let site = tempfile::tempdir().unwrap();
        std::fs::write(site.path().join("health"), "all ok\n").unwrap();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        // Started late: the check retries until the server answers.
        let late = {
            let root = site.path().to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                http_server(&root, port).await
            })
        };
        let started = Instant::now();
        let first = run(&HOST, http(&format!("{url}/health"), 200, None), 20).await;
        assert!(first.passed, "{}", first.output);
        assert!(started.elapsed() >= Duration::from_millis(1500));
        let _server = late.await.unwrap();
        http_cases(&HOST, &url).await;

        let common = ["date", "sleep", "mktemp", "rm", "grep", "awk", "head", "cat"];
        let with_curl = tempfile::tempdir().unwrap();
        let tools: Vec<&str> = common.iter().copied().chain(["curl"]).collect();
        let curl = HostShell { path: Some(only_tools(with_curl.path(), &tools)) };
        http_cases(&curl, &url).await;
        let with_wget = tempfile::tempdir().unwrap();
        let tools: Vec<&str> = common.iter().copied().chain(["wget"]).collect();
        let wget = HostShell { path: Some(only_tools(with_wget.path(), &tools)) };
        http_cases(&wget, &url).await;
        let bare = tempfile::tempdir().unwrap();
        let none = HostShell { path: Some(only_tools(bare.path(), &common)) };
        let nothing = run(&none, http(&format!("{url}/health"), 200, None), 1).await;
        assert!(nothing.output.contains("neither python3, curl nor wget"), "{}", nothing.output);
    }

    #[tokio::test]
    async fn port_checks_see_listeners() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = run(&HOST, CheckKind::Port { port }, 5).await;
        assert!(open.passed, "{}", open.output);
        let v6 = TcpListener::bind("[::1]:0");
        if let Ok(v6) = v6 {
            let port = v6.local_addr().unwrap().port();
            let open = run(&HOST, CheckKind::Port { port }, 5).await;
            assert!(open.passed, "{}", open.output);
        }
        let closed = free_port();
        let started = Instant::now();
        let shut = run(&HOST, CheckKind::Port { port: closed }, 1).await;
        assert!(!shut.passed);
        assert!(
            shut.output.contains(&format!("nothing listens on TCP port {closed}")),
            "{}",
            shut.output
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn service_checks_wait_for_the_unit_to_be_active() {
        let fake = tempfile::tempdir().unwrap();
        let state = fake.path().join("state");
        std::fs::write(&state, "activating\n").unwrap();
        let systemctl = fake.path().join("systemctl");
        let script = format!(
            "#!/bin/sh\ncase \"$1\" in\n is-active) s=$(cat {s}); echo \"$s\"; [ \"$s\" = active ];;\n \
             status) for a; do last=$a; done; echo \"fake status of $last\"; exit 3;;\nesac\n",
            s = state.display()
        );
        std::fs::write(&systemctl, script).unwrap();
        std::fs::set_permissions(&systemctl, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let path = format!("{}:{}", fake.path().display(), std::env::var("PATH").unwrap());
        let exec = HostShell { path: Some(path.into()) };
        let unit = CheckKind::Service { unit: "strata-demo.service".into() };
        let later = {
            let state = state.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                std::fs::write(state, "active\n").unwrap();
            })
        };
        let up = run(&exec, unit.clone(), 20).await;
        later.await.unwrap();
        assert!(up.passed, "{}", up.output);
        assert_eq!(up.output, "strata-demo.service is active\n");
        std::fs::write(&state, "failed\n").unwrap();
        let down = run(&exec, unit, 1).await;
        assert!(!down.passed);
        assert!(down.output.contains("strata-demo.service is failed"), "{}", down.output);
        assert!(down.output.contains("fake status of strata-demo.service"), "{}", down.output);
    }

    #[tokio::test]
    async fn shell_checks_run_once_and_are_bounded() {
        let shell =
            |command: &str, seconds| check(CheckKind::Shell { command: command.into() }, seconds);
        let ok = run_check(&HOST, &shell("echo fine; echo also >&2", 5)).await.unwrap();
        assert!(ok.passed);
        assert_eq!(ok.output, "fine\nalso\n");
        let bad = run_check(&HOST, &shell("echo 'permitrootlogin yes'; exit 3", 5)).await.unwrap();
        assert!(!bad.passed);
        assert!(bad.output.contains("permitrootlogin yes\n(exit status 3)"), "{}", bad.output);
        let started = Instant::now();
        let slow = run_check(&HOST, &shell("sleep 30", 1)).await.unwrap();
        assert!(!slow.passed);
        assert!(slow.output.contains("did not finish within"), "{}", slow.output);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_set_runs_in_order_and_makes_a_record() {
        let checks = [
            Check::new("passes", CheckKind::Shell { command: "true".into() }, None).unwrap(),
            Check::new("fails", CheckKind::Shell { command: "false".into() }, None).unwrap(),
        ];
        let mut heard = Vec::new();
        let results = run_checks(&HOST, &checks, |progress| match progress {
            Progress::Started(check) => heard.push(format!("start {}", check.name())),
            Progress::Finished(result) => heard.push(result.name.clone()),
        });
        let results = results.await.unwrap();
        assert_eq!(heard, ["start passes", "passes", "start fails", "fails"]);
        let record = CheckRecord::new(&checks, results).unwrap();
        assert!(!record.passed);
        assert_eq!(record.checks_sha256, ChecksDigest::of(&checks).unwrap());
        let json = serde_json::to_string(&record).unwrap();
        let back: CheckRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, record);
        assert!(json.contains("\"checks_sha256\":\""), "{json}");
    }

    #[test]
    fn tails_cut_at_character_boundaries() {
        assert_eq!(tail("short".into(), 10), "short");
        assert_eq!(tail("ab✓cd".into(), 4), "[…]cd");
    }
}
