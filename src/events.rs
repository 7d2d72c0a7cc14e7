//! Typed events: the engine's only way to tell the outside world what it does.
//! The engine emits; `report/` renders (bars, plain lines, JSON) and the build log records.
//! Nothing here prints, and nothing outside `report/` may print either.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

/// Bumped when an event's fields change incompatibly; every JSON line carries it.
pub const SCHEMA_VERSION: u32 = 1;

/// Which of a step's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Which way a shared-cache transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheDirection {
    Push,
    Pull,
}

impl CacheDirection {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            CacheDirection::Push => "push",
            CacheDirection::Pull => "pull",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    BuildStarted {
        build_id: String,
        image: String,
        stages: Vec<String>,
        log_dir: PathBuf,
    },
    SourceCached {
        url: String,
        digest: String,
    },
    DownloadStarted {
        url: String,
        total_bytes: Option<u64>,
        resumed_from: u64,
    },
    DownloadProgress {
        url: String,
        done_bytes: u64,
        total_bytes: Option<u64>,
    },
    DownloadFinished {
        url: String,
        digest: String,
        bytes: u64,
        seconds: f64,
    },
    StageCached {
        stage: String,
        key: String,
    },
    StageStarted {
        stage: String,
        key: String,
    },
    QemuStarted {
        stage: String,
        accel: String,
        pid: u32,
    },
    /// A line the guest wrote on its serial console.
    Console {
        stage: String,
        line: String,
    },
    CommunicatorReady {
        stage: String,
        seconds: f64,
    },
    CloudInitDone {
        stage: String,
        seconds: f64,
    },
    StepStarted {
        stage: String,
        index: usize,
        total: usize,
        description: String,
    },
    StepOutput {
        stage: String,
        index: usize,
        stream: Stream,
        line: String,
    },
    StepFinished {
        stage: String,
        index: usize,
        exit_code: i32,
        seconds: f64,
    },
    Sysprep {
        stage: String,
    },
    PoweringOff {
        stage: String,
    },
    Committing {
        stage: String,
    },
    LayerCommitted {
        stage: String,
        key: String,
        /// The qcow2 file's length.
        bytes: u64,
        /// What it takes on disk (it is sparse).
        allocated_bytes: u64,
        seconds: f64,
    },
    ExportArtifact {
        path: PathBuf,
        format: String,
        bytes: u64,
        sha256: String,
    },
    /// A running guest was saved as a restore point for `stage`: the guest that built the
    /// stage below (cut), or with `first_boot`, the source's first boot, ready for `stage`'s
    /// steps.
    RestoreSaved {
        stage: String,
        bytes: u64,
        seconds: f64,
        first_boot: bool,
    },
    /// `--max-restore-size`: the restore point of `stage`'s layer `key` was removed (the
    /// oldest first) so that restore points take at most `max_bytes`; the layer stays, and the
    /// stage above it boots next time instead of resuming.
    RestorePointRemoved {
        stage: String,
        key: String,
        bytes: u64,
        max_bytes: u64,
    },
    /// `stage` resumed a saved guest instead of booting one.
    RestoreResumed {
        stage: String,
        from: String,
        seconds: f64,
    },
    /// `strata run`: the throwaway VM is up and this is how to log in.
    VmReady {
        stage: String,
        user: String,
        port: u16,
        key_path: PathBuf,
        ssh_command: String,
    },
    /// `strata test`: a check starts on the fresh guest of `stage`.
    CheckStarted {
        stage: String,
        name: String,
        /// `http`, `shell`, `service` or `port`.
        kind: String,
    },
    /// `strata test`: how a check went; `output` is the end of what its command printed.
    CheckFinished {
        stage: String,
        name: String,
        kind: String,
        passed: bool,
        seconds: f64,
        output: String,
    },
    /// `strata test`: every check of `stage` has run.
    ChecksFinished {
        stage: String,
        passed: usize,
        failed: usize,
        seconds: f64,
    },
    Warning {
        message: String,
    },
    BuildFinished {
        seconds: f64,
        log_dir: Option<PathBuf>,
    },
    Error {
        message: String,
    },
    /// A layer, source or restore point starts moving between the store and the shared cache.
    /// `kind` is `layer`, `source` or `restore`; `key` the layer key or the source's sha256.
    CacheTransferStarted {
        kind: String,
        stage: Option<String>,
        key: String,
        direction: CacheDirection,
        total_bytes: Option<u64>,
    },
    CacheTransferProgress {
        key: String,
        direction: CacheDirection,
        done_bytes: u64,
        total_bytes: Option<u64>,
    },
    /// `bytes` went over the wire (compressed); 0 when the registry had it all already.
    CacheTransferFinished {
        kind: String,
        stage: Option<String>,
        key: String,
        direction: CacheDirection,
        bytes: u64,
        seconds: f64,
    },
    /// The shared cache could not be used; the work goes on without it.
    CacheUnavailable {
        registry: String,
        message: String,
    },
    /// A pulled artifact was refused (DESIGN.md §9): nothing of it entered the store, and the
    /// stage is built locally (an error instead with `--cache-required`). `kind` is `layer`,
    /// `source`, `restore` or an attachment's suffix; `reason` is `unsigned`, `untrusted_key`,
    /// `bad_signature`, `other_manifest` or `malformed`; `signer` the key id the signature
    /// names, when it names one; `message` says it in a sentence.
    CacheRefused {
        kind: String,
        stage: Option<String>,
        key: String,
        reason: String,
        signer: Option<String>,
        message: String,
    },
    /// `--cache-unsigned`: what is pulled from `registry` is used without checking signatures.
    /// Emitted once per run.
    CacheUnsigned {
        registry: String,
    },
    /// `strata drift`: one server checked. `outcome` is `clean`, `drifted` or `failed`
    /// (then `error` says why); the findings themselves follow as `drift_finding` objects.
    DriftChecked {
        host: String,
        outcome: String,
        findings: usize,
        seconds: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// `strata drift`: every server checked.
    DriftFinished {
        hosts: usize,
        clean: usize,
        drifted: usize,
        failed: usize,
    },
    /// `strata export`: flattening a stage's layers into one image has begun.
    ExportStarted {
        path: PathBuf,
        format: String,
        virtual_bytes: u64,
    },
    /// `strata export`: how much of the image's virtual size is converted so far.
    ExportConvertProgress {
        path: PathBuf,
        done_bytes: u64,
        total_bytes: u64,
    },
    /// `strata publish`: the exported image `path` starts its way into `cloud`'s image service
    /// as `name`.
    PublishStarted {
        cloud: String,
        image: String,
        stage: String,
        name: String,
        path: PathBuf,
        format: String,
        bytes: u64,
    },
    /// `strata publish`: how much of the image's file has been sent.
    PublishProgress {
        name: String,
        done_bytes: u64,
        total_bytes: u64,
    },
    /// `strata publish`: an image was deleted from the cloud. `reason`: `leftover` (an earlier
    /// upload that never finished), `failed` (this run's, after an error or a stop signal),
    /// `rotation` (older than the `--keep` newest).
    PublishImageDeleted {
        cloud: String,
        id: String,
        name: String,
        reason: String,
    },
    /// `strata publish`: the image is active in the cloud and Glance's sha512 is the file's.
    /// `bytes` were sent by this run: 0 with `reused`, when an active image of the same layer
    /// key and sha256 was there already; `size` is the image's.
    Published {
        cloud: String,
        id: String,
        name: String,
        bytes: u64,
        size: u64,
        seconds: f64,
        reused: bool,
    },
}

impl Event {
    /// The stage an event belongs to, for displays that keep a line per stage.
    #[must_use]
    pub fn stage(&self) -> Option<&str> {
        match self {
            Event::StageCached { stage, .. }
            | Event::StageStarted { stage, .. }
            | Event::QemuStarted { stage, .. }
            | Event::Console { stage, .. }
            | Event::CommunicatorReady { stage, .. }
            | Event::CloudInitDone { stage, .. }
            | Event::StepStarted { stage, .. }
            | Event::StepOutput { stage, .. }
            | Event::StepFinished { stage, .. }
            | Event::Sysprep { stage }
            | Event::PoweringOff { stage }
            | Event::Committing { stage }
            | Event::LayerCommitted { stage, .. } => Some(stage),
            _ => None,
        }
    }
}

/// An event with when it happened and the schema version: what JSON lines and events.jsonl hold.
#[derive(Debug, Clone, Serialize)]
pub struct Stamped<'a> {
    pub version: u32,
    /// Seconds since the Unix epoch, with milliseconds.
    pub time: f64,
    #[serde(flatten)]
    pub event: &'a Event,
}

impl<'a> Stamped<'a> {
    #[must_use]
    pub fn now(event: &'a Event) -> Self {
        let time = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |elapsed| elapsed.as_secs_f64());
        Stamped { version: SCHEMA_VERSION, time, event }
    }
}

/// Whatever wants to see events: a display, a log file, a test's recorder.
pub trait Observer: Send + Sync {
    fn observe(&self, event: &Event);
}

/// The handle the engine emits through. Cheap to clone; fans out to every observer.
#[derive(Clone, Default)]
pub struct Events {
    observers: Vec<Arc<dyn Observer>>,
}

impl Events {
    /// Events that go nowhere: for tests and library callers that do not care.
    #[must_use]
    pub fn none() -> Self {
        Events::default()
    }

    #[must_use]
    pub fn with(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }

    #[allow(clippy::needless_pass_by_value)] // emitting hands the event over, as a sender does
    pub fn emit(&self, event: Event) {
        for observer in &self.observers {
            observer.observe(&event);
        }
    }

    pub fn warn(&self, message: impl Into<String>) {
        self.emit(Event::Warning { message: message.into() });
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Events({} observers)", self.observers.len())
    }
}

/// Keeps every event: for tests that assert on what the engine said.
#[derive(Default)]
pub struct Recorder {
    events: std::sync::Mutex<Vec<Event>>,
}

impl Recorder {
    #[must_use]
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|events| events.clone()).unwrap_or_default()
    }
}

impl Observer for Recorder {
    fn observe(&self, event: &Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_version_time_and_tag() {
        let event = Event::StageCached { stage: "base".into(), key: "abc".into() };
        let line = serde_json::to_string(&Stamped::now(&event)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["version"], SCHEMA_VERSION);
        assert_eq!(value["event"], "stage_cached");
        assert_eq!(value["stage"], "base");
        assert!(value["time"].as_f64().unwrap() > 1.0e9);
    }

    #[test]
    fn events_fan_out_to_every_observer() {
        let first = Arc::new(Recorder::default());
        let second = Arc::new(Recorder::default());
        let events = Events::none().with(first.clone()).with(second.clone());
        events.warn("careful");
        assert_eq!(first.events().len(), 1);
        assert_eq!(second.events(), first.events());
    }
}

/// A line of a step's output as a terminal would leave it, safe to print anywhere: what follows
/// the last carriage return (progress bars redraw that way), without escape sequences (colours,
/// cursor moves) and control characters; tabs become spaces.
#[must_use]
pub fn printable(line: &str) -> String {
    let line = line.trim_end_matches('\r');
    let line = line.rsplit('\r').find(|part| !part.is_empty()).unwrap_or("");
    let mut clean = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\t' => clean.push(' '),
            c if c.is_control() => {}
            c => clean.push(c),
        }
    }
    clean
}

/// An error and its causes, one per line, as the JSON `error` event and warnings carry it.
#[must_use]
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        message.push_str(&format!("\n  caused by: {inner}"));
        cause = inner.source();
    }
    message
}

#[cfg(test)]
mod printable_tests {
    use super::printable;

    #[test]
    fn printable_lines_keep_text_and_drop_escapes() {
        assert_eq!(printable("plain text"), "plain text");
        assert_eq!(printable("\u{1b}[0;32mOK\u{1b}[0m done"), "OK done");
        assert_eq!(printable(" 10%\r 50%\r100% done\r"), "100% done");
        assert_eq!(printable("\u{1b}]0;title\u{7}after"), "after");
        assert_eq!(printable("a\tb\u{8}c"), "a bc");
    }
}
