//! A build's log folder, `logs/BUILD-ID/`: every event in `events.jsonl`, each step's output
//! with timestamps in `STAGE/step-N.log`. QEMU's console and stderr land beside them, written
//! by `qemu/`. Old folders are pruned so the last `KEEP` builds remain.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::events::{Event, Observer, Stamped, Stream};
use crate::units::format_utc;

/// How many builds' logs are kept by default.
pub const KEEP: usize = 20;

pub struct BuildLog {
    id: String,
    dir: PathBuf,
    files: Mutex<Files>,
}

struct Files {
    events: Option<File>,
    steps: HashMap<(String, usize), File>,
}

impl BuildLog {
    /// Creates `logs_dir/BUILD-ID/` and prunes older builds beyond [`KEEP`].
    pub fn create(logs_dir: &Path) -> io::Result<Self> {
        let now = SystemTime::now();
        let stamp = format_utc(now).replace([':', '-'], "");
        let random = std::process::id()
            ^ now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let id = format!("{}-{:05x}", stamp.trim_end_matches('Z'), random & 0xfffff);
        let dir = logs_dir.join(&id);
        fs::create_dir_all(&dir)?;
        let events = File::create(dir.join("events.jsonl"))?;
        prune(logs_dir, KEEP)?;
        Ok(BuildLog {
            id,
            dir,
            files: Mutex::new(Files { events: Some(events), steps: HashMap::new() }),
        })
    }

    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder for one stage's console, QEMU stderr and step logs.
    pub fn stage_dir(&self, stage: &str) -> io::Result<PathBuf> {
        let dir = self.dir.join(stage);
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn step_file<'a>(
        &self,
        files: &'a mut Files,
        stage: &str,
        index: usize,
    ) -> Option<&'a mut File> {
        let key = (stage.to_owned(), index);
        if !files.steps.contains_key(&key) {
            let dir = self.stage_dir(stage).ok()?;
            let file = File::options()
                .create(true)
                .append(true)
                .open(dir.join(format!("step-{}.log", index + 1)))
                .ok()?;
            files.steps.insert(key.clone(), file);
        }
        files.steps.get_mut(&key)
    }
}

impl Observer for BuildLog {
    fn observe(&self, event: &Event) {
        let Ok(mut files) = self.files.lock() else { return };
        if let (Some(file), Ok(line)) =
            (files.events.as_mut(), serde_json::to_string(&Stamped::now(event)))
        {
            let _ = writeln!(file, "{line}");
        }
        let now = format_utc(SystemTime::now());
        let step_line = match event {
            Event::StepStarted { stage, index, description, .. } => {
                Some((stage, *index, format!("{now} start {description}")))
            }
            Event::StepOutput { stage, index, stream, line } => {
                let tag = match stream {
                    Stream::Stdout => "out",
                    Stream::Stderr => "err",
                };
                Some((stage, *index, format!("{now} {tag} {line}")))
            }
            Event::StepFinished { stage, index, exit_code, seconds } => {
                Some((stage, *index, format!("{now} exit {exit_code} after {seconds:.1}s")))
            }
            _ => None,
        };
        if let Some((stage, index, line)) = step_line
            && let Some(file) = self.step_file(&mut files, stage, index)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}

/// Removes the oldest build folders so that at most `keep` remain. Names sort by time.
fn prune(logs_dir: &Path, keep: usize) -> io::Result<()> {
    let mut builds: Vec<PathBuf> = fs::read_dir(logs_dir)?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    builds.sort();
    let excess = builds.len().saturating_sub(keep);
    for old in &builds[..excess] {
        let _ = fs::remove_dir_all(old);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_events_and_step_output_and_prunes_old_builds() {
        let logs = tempfile::tempdir().unwrap();
        for i in 0..KEEP + 3 {
            fs::create_dir(logs.path().join(format!("20000101T0000{i:02}-00000"))).unwrap();
        }
        let log = BuildLog::create(logs.path()).unwrap();
        log.observe(&Event::StepStarted {
            stage: "base".into(),
            index: 0,
            total: 1,
            description: "shell: true".into(),
        });
        log.observe(&Event::StepOutput {
            stage: "base".into(),
            index: 0,
            stream: Stream::Stderr,
            line: "oops".into(),
        });
        let events = fs::read_to_string(log.dir().join("events.jsonl")).unwrap();
        assert_eq!(events.lines().count(), 2);
        let step = fs::read_to_string(log.dir().join("base/step-1.log")).unwrap();
        assert!(step.contains("start shell: true") && step.contains("err oops"), "{step}");
        assert_eq!(fs::read_dir(logs.path()).unwrap().count(), KEEP);
        assert!(log.dir().exists(), "the new build survives pruning");
    }
}
