//! Running a stage's steps in order over the communicator, each streamed to events (and so to
//! its log and the display); the first failure stops the stage with its output and the console.

use std::time::{Duration, Instant};

use super::{
    LastLines, StageError, StageJob, TAIL_LINES, Vm, communicator_error, race_death, render_env,
};
use crate::communicator::{AnsibleError, AnsibleStep, Communicator, CommunicatorError, ExitInfo};
use crate::definition::{Step, StepAction};
use crate::events::{Event, Stream};
use crate::units::format_duration;

/// How long a step whose connection broke waits to learn whether QEMU died meanwhile.
const DEATH_SETTLE: Duration = Duration::from_secs(2);

pub async fn run_all(job: &StageJob<'_>, vm: &mut Vm) -> Result<(), StageError> {
    let total = job.stage.steps.len();
    for (index, step) in job.stage.steps.iter().enumerate() {
        run_one(job, vm, index, total, step).await?;
    }
    Ok(())
}

async fn run_one(
    job: &StageJob<'_>,
    vm: &mut Vm,
    index: usize,
    total: usize,
    step: &Step,
) -> Result<(), StageError> {
    let stage = job.stage.name.to_string();
    let description = describe(job, step);
    let env = render_env(&step.env, &job.definition.vars)
        .map_err(|source| StageError::StepEnv { stage: stage.clone(), step: index + 1, source })?;
    job.events.emit(Event::StepStarted {
        stage: stage.clone(),
        index,
        total,
        description: description.clone(),
    });
    let started = Instant::now();
    let mut tail = LastLines::new(TAIL_LINES);
    let mut on_output = |stream: Stream, line: &str| {
        tail.push(line);
        job.events.emit(Event::StepOutput {
            stage: stage.clone(),
            index,
            stream,
            line: line.to_owned(),
        });
    };
    let during = format!("during step {}/{total} ({description})", index + 1);
    let outcome: Result<ExitInfo, CommunicatorError> = match &step.action {
        StepAction::Reboot => {
            super::guest::reboot(job, vm, &during).await?;
            Ok(ExitInfo { code: 0, signal: None, duration: started.elapsed() })
        }
        action => {
            let ssh = super::guest::link(vm, &stage)?;
            let work = async {
                match action {
                    StepAction::Shell { command } => {
                        ssh.exec_as_root(command, &env, step.timeout, &mut on_output).await
                    }
                    StepAction::Run { script } => {
                        ssh.run_script(script, &env, step.timeout, &mut on_output).await
                    }
                    StepAction::Upload { from, to } => {
                        let upload = tokio::time::timeout(step.timeout, ssh.upload(from, to));
                        match upload.await {
                            Ok(result) => result.map(|()| ExitInfo {
                                code: 0,
                                signal: None,
                                duration: started.elapsed(),
                            }),
                            Err(_) => Err(CommunicatorError::Timeout {
                                guest: ssh.describe(),
                                command: format!("upload {}", from.display()),
                                timeout: step.timeout,
                            }),
                        }
                    }
                    StepAction::Ansible { playbook, extra_vars, tags } => {
                        let ansible =
                            AnsibleStep::new(playbook.clone(), extra_vars.clone(), tags.clone());
                        run_ansible(&ansible, job, ssh, step.timeout, &mut on_output).await
                    }
                    StepAction::Reboot => {
                        Ok(ExitInfo { code: 0, signal: None, duration: started.elapsed() })
                    }
                }
            };
            race_death(&vm.machine, &stage, &during, work).await?
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let failed = |outcome: String, tail: &LastLines| StageError::StepFailed {
        stage: stage.clone(),
        number: index + 1,
        total,
        description: description.clone(),
        outcome,
        output: tail.lines(),
        console: vm.machine.console_tail(TAIL_LINES),
    };
    // QEMU killed mid-step drops the SSH connection, which the step often notices before the
    // supervisor reaps QEMU: then the error must say that QEMU died, not that SSH broke.
    let broken = match &outcome {
        Ok(exit) => exit.signal.is_some() || vm.machine.exited().is_some(),
        Err(CommunicatorError::Timeout { .. }) => false,
        Err(_) => true,
    };
    if broken && tokio::time::timeout(DEATH_SETTLE, vm.machine.died()).await.is_ok() {
        return Err(StageError::QemuDied {
            stage,
            during,
            console: vm.machine.console_tail(TAIL_LINES),
            source: vm.machine.died_error(),
        });
    }
    match outcome {
        Ok(exit) => {
            job.events.emit(Event::StepFinished {
                stage: stage.clone(),
                index,
                exit_code: exit.code,
                seconds,
            });
            if exit.success() {
                Ok(())
            } else {
                let how = match &exit.signal {
                    Some(signal) => format!("was killed by {signal}"),
                    None => format!("exited with code {}", exit.code),
                };
                Err(failed(how, &tail))
            }
        }
        Err(CommunicatorError::Timeout { timeout, .. }) => {
            job.events.emit(Event::StepFinished {
                stage: stage.clone(),
                index,
                exit_code: 124,
                seconds,
            });
            Err(failed(format!("timed out after {} and was killed", as_written(timeout)), &tail))
        }
        Err(source) => {
            job.events.emit(Event::StepFinished {
                stage: stage.clone(),
                index,
                exit_code: -1,
                seconds,
            });
            Err(communicator_error(
                vm,
                &stage,
                &format!("step {}/{total} ({description}) failed", index + 1),
                source,
            ))
        }
    }
}

/// Runs an Ansible step over the build's SSH target, in a 0700 work folder of its own. Needs
/// the SSH communicator (validation refuses the step otherwise).
async fn run_ansible(
    ansible: &AnsibleStep,
    job: &StageJob<'_>,
    link: &super::Link,
    timeout: Duration,
    on_output: &mut (dyn FnMut(Stream, &str) + Send),
) -> Result<ExitInfo, CommunicatorError> {
    let Some(ssh) = link.ssh() else {
        return Err(CommunicatorError::Unsupported {
            guest: link.describe(),
            what: "an Ansible step".to_owned(),
        });
    };
    let work = super::run_dir(job.stage.name.as_str()).map_err(|_| {
        CommunicatorError::Ansible(Box::new(AnsibleError::WorkFolder {
            dir: std::env::temp_dir(),
            source: std::io::Error::other("failed to create a private temporary folder"),
        }))
    })?;
    match ansible.run(ssh.target(), work.path(), timeout, on_output).await {
        Ok(exit) => Ok(exit),
        Err(AnsibleError::Timeout { playbook, timeout }) => Err(CommunicatorError::Timeout {
            guest: ssh.describe(),
            command: format!("ansible-playbook {}", playbook.display()),
            timeout,
        }),
        Err(other) => Err(CommunicatorError::Ansible(Box::new(other))),
    }
}

/// A configured duration as a user writes it ("5s", "15m", "2h"), else as `units` shows one.
fn as_written(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    match (duration.subsec_nanos(), secs) {
        (0, 0) => format_duration(duration),
        (0, _) if secs.is_multiple_of(3600) => format!("{}h", secs / 3600),
        (0, _) if secs.is_multiple_of(60) => format!("{}m", secs / 60),
        (0, _) if secs < 60 => format!("{secs}s"),
        _ => format_duration(duration),
    }
}

/// "shell: apt-get install …", "run: scripts/harden.sh": paths shown relative to the definition.
fn describe(job: &StageJob<'_>, step: &Step) -> String {
    let base = job.definition.path.parent().unwrap_or(std::path::Path::new("/"));
    let show = |path: &std::path::Path| pathdiff(path, base);
    let text = match &step.action {
        StepAction::Run { script } => format!("run {}", show(script)),
        StepAction::Shell { command } => format!("shell: {}", command.lines().next().unwrap_or("")),
        StepAction::Upload { from, to } => format!("upload {} -> {to}", show(from)),
        StepAction::Reboot => "reboot".to_owned(),
        StepAction::Ansible { playbook, .. } => format!("ansible {}", show(playbook)),
    };
    if text.chars().count() > 80 {
        let cut: String = text.chars().take(79).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// `path` relative to `base` when it lies below it or beside it; else as it is.
fn pathdiff(path: &std::path::Path, base: &std::path::Path) -> String {
    if let Ok(below) = path.strip_prefix(base) {
        return below.display().to_string();
    }
    if let Some(parent) = base.parent()
        && let Ok(beside) = path.strip_prefix(parent)
    {
        return format!("../{}", beside.display());
    }
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::as_written;

    #[test]
    fn timeouts_read_as_they_were_written() {
        assert_eq!(as_written(Duration::from_secs(5)), "5s");
        assert_eq!(as_written(Duration::from_secs(900)), "15m");
        assert_eq!(as_written(Duration::from_secs(7200)), "2h");
        assert_eq!(as_written(Duration::from_secs(90)), "1m30s");
        assert_eq!(as_written(Duration::from_millis(1500)), "1.5s");
    }
}
