//! Instances: a throwaway guest booted on a built layer, as a cloud gives a new VM (a new
//! overlay that is discarded, a new instance-id and seed, new host and user keys), booted and
//! ready (communicator up, cloud-init done). The engine of `strata run` (hand it to a person:
//! login files, then wait until told to stop) and of `strata test` (the definition's `[[test]]`
//! checks on it: events, the layer's checks record, a JUnit file).
//! Owns which layer an instance stands on and how it is booted for either use; the boot itself
//! is `stage/`'s, the checks are `check/`'s. Must not print (events only) nor handle signals
//! (the caller drops the future to stop it: QEMU and the run folder go with it).

// StageError carries console tails for the user; see `stage`.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::check::{Check, CheckError, CheckRecord, CheckResult, Progress};
use crate::definition::ImageDefinition;
use crate::events::{Event, Events};
use crate::layer::{Layer, LayerError, LayerStore, PlanError};
use crate::stage::{RunDir, StageError, StageJob, TAIL_LINES, Vm};
use crate::store::LockMode;

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(
        "stage `{stage}` of {0} is not built ({reason}): run `strata build {0} --stage {stage}` first",
        definition.display()
    )]
    NotBuilt { definition: PathBuf, stage: String, reason: String },
    /// `strata test` on a definition without checks: invalid input.
    #[error(
        "{} has no [[test]] checks: add some (see DESIGN §8), e.g.\n  [[test]]\n  name = \"sshd\"\n  service = \"ssh\"",
        definition.display()
    )]
    NoChecks { definition: PathBuf },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Stage(#[from] Box<StageError>),
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error("stage `{stage}`: failed to write the login files into {}", path.display())]
    Login {
        stage: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stage `{stage}`: the fresh guest is not connected")]
    NotConnected { stage: String },
    #[error("failed to encode the checks record")]
    Record(#[source] serde_json::Error),
    #[error("failed to write the JUnit report {}", path.display())]
    Junit {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", failure_message(image, stage, failed, console))]
    ChecksFailed { image: String, stage: String, failed: Vec<CheckResult>, console: Vec<String> },
}

impl From<StageError> for InstanceError {
    fn from(error: StageError) -> Self {
        InstanceError::Stage(Box::new(error))
    }
}

/// What an instance is booted from, and where its events and logs go.
pub struct Request<'a> {
    pub definition: &'a ImageDefinition,
    /// The definition's file, for messages saying what to run.
    pub definition_path: &'a Path,
    pub layers: &'a LayerStore,
    /// The stage whose layer to boot; default the last.
    pub stage: Option<&'a str>,
    pub events: &'a Events,
    /// The log folder of this run (`logs/ID/`): the console goes in `STAGE/`.
    pub log_dir: &'a Path,
}

/// What the instance is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A person logs in: SSH with a network, whatever the build used.
    Login,
    /// Checks run as the build's communicator did, with the build's network.
    Test,
}

/// A booted instance. Dropping it kills QEMU and removes its run folder.
pub struct Instance {
    pub vm: Vm,
    pub stage: String,
    pub layer: Layer,
    /// 0700: the seed, the QMP socket, login files; removed when dropped.
    run_dir: RunDir,
}

/// How to log into an instance booted for [`Purpose::Login`].
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub port: u16,
    /// The client's private key (0600), in the instance's run folder.
    pub key_path: PathBuf,
    pub known_hosts: PathBuf,
    pub ssh_command: String,
}

/// Boots a fresh instance on the requested stage's layer.
pub async fn boot(request: &Request<'_>, purpose: Purpose) -> Result<Instance, InstanceError> {
    let Request { definition, definition_path, layers, stage, events, log_dir } = *request;
    // gc takes this lock exclusively: it never removes the layers a booting VM stands on.
    let _gc_guard = layers.store().lock_async("gc", LockMode::Shared).await?;
    let built =
        crate::layer::built_stage(definition, layers, stage).map_err(|error| match error {
            PlanError::NotBuilt { stage, reason } => {
                InstanceError::NotBuilt { definition: definition_path.to_owned(), stage, reason }
            }
            other => InstanceError::Plan(other),
        })?;
    let stage_name = built.stage.name.to_string();
    let log_dir = log_dir.join(&stage_name);
    std::fs::create_dir_all(&log_dir)
        .map_err(|source| LayerError::Write { path: log_dir.clone(), source })?;
    let mut shaped = definition.clone();
    let mut stage = built.stage.clone();
    if purpose == Purpose::Login {
        shaped.communicator.kind = crate::definition::CommunicatorKind::Ssh;
        stage.network = true;
    }
    let layer = built.layer;
    let job = StageJob {
        definition: &shaped,
        stage: &stage,
        disk: layer.disk(),
        backing: String::new(),
        parent_disk: layer.disk(),
        grow_to: None,
        log_dir,
        events,
        snapshot: true,
    };
    let run_dir = RunDir::create(&stage_name)?;
    let vm = crate::stage::boot(&job, run_dir.path()).await?;
    Ok(Instance { vm, stage: stage_name, layer, run_dir })
}

impl Instance {
    /// Writes the login files into the run folder and emits `vm_ready` with how to log in.
    pub fn login(&self, events: &Events) -> Result<Login, InstanceError> {
        let key_path = self.run_dir.path().join("id_ed25519");
        let known_hosts = self.run_dir.path().join("known_hosts");
        crate::stage::write_login_files(&self.vm, &key_path, &known_hosts).map_err(|source| {
            InstanceError::Login {
                stage: self.stage.clone(),
                path: self.run_dir.path().to_owned(),
                source,
            }
        })?;
        let port = self.vm.target.addr.port();
        let user = self.vm.target.user.clone();
        let ssh_command = format!(
            "ssh -i {} -o UserKnownHostsFile={} -p {port} {user}@127.0.0.1",
            key_path.display(),
            known_hosts.display()
        );
        events.emit(Event::VmReady {
            stage: self.stage.clone(),
            user: user.clone(),
            port,
            key_path: key_path.clone(),
            ssh_command: ssh_command.clone(),
        });
        Ok(Login { user, port, key_path, known_hosts, ssh_command })
    }

    /// Runs until `stop` ends (`Some` of what it gave) or the guest dies (`None`), then kills
    /// QEMU and removes the run folder.
    pub async fn run_until<T>(self, stop: impl std::future::Future<Output = T>) -> Option<T> {
        let stopped = tokio::select! {
            value = stop => Some(value),
            _ = self.vm.machine.died() => None,
        };
        let _ = self.vm.machine.kill().await;
        drop(self.run_dir);
        stopped
    }
}

/// What `strata test` asks for.
pub struct TestRequest<'a> {
    pub instance: Request<'a>,
    /// `--junit FILE`.
    pub junit: Option<&'a Path>,
}

/// The definition's `[[test]]` entries as checks (validated with the definition, names unique
/// included).
pub fn checks_of(definition: &ImageDefinition) -> Result<Vec<Check>, CheckError> {
    definition
        .tests
        .iter()
        .map(|spec| Check::new(spec.name.clone(), spec.kind.clone(), Some(spec.timeout)))
        .collect()
}

/// `strata test`: the definition's checks on a fresh instance of the stage (nothing left from
/// the build can make a check pass), each with its events; the results go into the layer's
/// checks record and, if asked, a JUnit file. `Ok` with the results when all pass;
/// [`InstanceError::ChecksFailed`] when any fails.
pub async fn test(request: &TestRequest<'_>) -> Result<Vec<CheckResult>, InstanceError> {
    let Request { definition, definition_path, events, .. } = request.instance;
    let checks = checks_of(definition)?;
    if checks.is_empty() {
        return Err(InstanceError::NoChecks { definition: definition_path.to_owned() });
    }
    let instance = boot(&request.instance, Purpose::Test).await?;
    let stage = instance.stage.clone();
    let started = Instant::now();
    let link = instance
        .vm
        .link
        .as_ref()
        .ok_or_else(|| InstanceError::NotConnected { stage: stage.clone() })?;
    let outcome = crate::check::run_checks(link, &checks, |progress| match progress {
        Progress::Started(check) => events.emit(Event::CheckStarted {
            stage: stage.clone(),
            name: check.name().to_owned(),
            kind: check.kind().label().to_owned(),
        }),
        Progress::Finished(result) => events.emit(Event::CheckFinished {
            stage: stage.clone(),
            name: result.name.clone(),
            kind: result.kind.clone(),
            passed: result.passed,
            seconds: result.seconds,
            output: result.output.clone(),
        }),
    })
    .await;
    let console = instance.vm.machine.console_tail(TAIL_LINES);
    let _ = instance.vm.machine.kill().await;
    let results = outcome?;
    let failed: Vec<CheckResult> =
        results.iter().filter(|result| !result.passed).cloned().collect();
    events.emit(Event::ChecksFinished {
        stage: stage.clone(),
        passed: results.len() - failed.len(),
        failed: failed.len(),
        seconds: started.elapsed().as_secs_f64(),
    });
    let record = CheckRecord::new(&checks, results.clone())?;
    let json = serde_json::to_vec_pretty(&record).map_err(InstanceError::Record)?;
    instance.layer.write_checks_record(&json)?;
    if let Some(path) = request.junit {
        let suite = format!("{}.{stage}", definition.name);
        let tail = (!failed.is_empty()).then(|| console.join("\n"));
        let xml = crate::check::junit_xml(&suite, &results, tail.as_deref())?;
        crate::store::write_atomic(path, xml.as_bytes())
            .map_err(|source| InstanceError::Junit { path: path.to_owned(), source })?;
    }
    if failed.is_empty() {
        return Ok(results);
    }
    Err(InstanceError::ChecksFailed { image: definition.name.clone(), stage, failed, console })
}

/// Which checks failed, each with its output's end, then the console's last lines.
fn failure_message(image: &str, stage: &str, failed: &[CheckResult], console: &[String]) -> String {
    let names: Vec<String> = failed.iter().map(|result| format!("`{}`", result.name)).collect();
    let mut message = format!(
        "{} check(s) failed on a fresh boot of {image}.{stage}: {}",
        failed.len(),
        names.join(", ")
    );
    for result in failed {
        message.push_str(&format!("\n\ncheck `{}` ({}) output:", result.name, result.kind));
        let lines: Vec<&str> = result.output.lines().collect();
        for line in &lines[lines.len().saturating_sub(TAIL_LINES)..] {
            message.push_str(&format!("\n  {}", crate::events::printable(line)));
        }
    }
    if !console.is_empty() {
        message.push_str("\n\nthe console's last lines:");
        for line in console {
            message.push_str(&format!("\n  {}", crate::events::printable(line)));
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, passed: bool, output: &str) -> CheckResult {
        CheckResult {
            name: name.into(),
            kind: "shell".into(),
            passed,
            seconds: 0.1,
            output: output.into(),
            when: 0,
        }
    }

    #[test]
    fn failed_checks_say_which_with_their_output_and_the_console() {
        let long: String = (1..=30).map(|n| format!("line {n}\n")).collect();
        let error = InstanceError::ChecksFailed {
            image: "web".into(),
            stage: "app".into(),
            failed: vec![result("sshd", false, &long), result("nginx", false, "\u{1b}[31mno\n")],
            console: vec!["login:".into()],
        };
        let text = error.to_string();
        assert!(text.starts_with("2 check(s) failed on a fresh boot of web.app: `sshd`, `nginx`"));
        assert!(text.contains("check `sshd` (shell) output:\n  line 11\n"), "{text}");
        assert!(!text.contains("line 10\n"), "only the last {TAIL_LINES} lines: {text}");
        assert!(text.contains("check `nginx` (shell) output:\n  no"), "escapes dropped: {text}");
        assert!(text.ends_with("the console's last lines:\n  login:"), "{text}");
    }

    #[test]
    fn a_definition_without_checks_is_invalid_input_naming_the_file() {
        let error = InstanceError::NoChecks { definition: "images/web.toml".into() };
        assert!(error.to_string().starts_with("images/web.toml has no [[test]] checks"));
    }
}
