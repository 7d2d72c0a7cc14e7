//! The terminal display: a bar for downloads, one line per stage with a spinner, its elapsed
//! time and what it does now; warnings and (with -v) step output scroll above the bars.
//! Used only when stderr is a terminal; pipes and CI logs get `plain`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::events::{Event, Observer};
use crate::units::ByteSize;

pub struct Human {
    multi: MultiProgress,
    verbose: u8,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    stages: HashMap<String, ProgressBar>,
    /// Stages whose communicator is up: console lines no longer replace the message.
    ready: HashMap<String, bool>,
    /// The byte bar: a download, or an export's conversion.
    download: Option<ProgressBar>,
}

impl Human {
    pub fn new(verbose: u8) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
        Human { multi, verbose, state: Mutex::new(State::default()) }
    }

    fn stage_bar(&self, state: &mut State, stage: &str) -> ProgressBar {
        if let Some(bar) = state.stages.get(stage) {
            return bar.clone();
        }
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(spinner_style());
        bar.set_prefix(stage.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        state.stages.insert(stage.to_owned(), bar.clone());
        bar
    }

    fn download_bar(&self, state: &mut State, total: Option<u64>) -> ProgressBar {
        if let Some(bar) = &state.download {
            return bar.clone();
        }
        let bar = self.multi.add(ProgressBar::new(total.unwrap_or(0)));
        let style = ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix("download");
        state.download = Some(bar.clone());
        bar
    }

    fn println(&self, line: &str) {
        let _ = self.multi.println(line);
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:>12} {elapsed:>4} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn finished_style() -> ProgressStyle {
    ProgressStyle::with_template("  {prefix:>12} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn short(key: &str) -> &str {
    key.get(..12).unwrap_or(key)
}

impl Observer for Human {
    #[allow(clippy::too_many_lines)]
    fn observe(&self, event: &Event) {
        let Ok(mut state) = self.state.lock() else { return };
        match event {
            Event::DownloadStarted { url, total_bytes, resumed_from } => {
                let bar = self.download_bar(&mut state, *total_bytes);
                bar.set_position(*resumed_from);
                bar.set_message(url.clone());
            }
            Event::DownloadProgress { done_bytes, total_bytes, .. } => {
                let bar = self.download_bar(&mut state, *total_bytes);
                if let Some(total) = total_bytes {
                    bar.set_length(*total);
                }
                bar.set_position(*done_bytes);
            }
            Event::DownloadFinished { url, bytes, seconds, .. } => {
                if let Some(bar) = state.download.take() {
                    bar.finish_and_clear();
                }
                self.println(&format!("downloaded {url}: {} in {seconds:.1}s", ByteSize(*bytes)));
            }
            Event::StageCached { stage, key } => {
                let bar = self.stage_bar(&mut state, stage);
                bar.set_style(finished_style());
                bar.finish_with_message(format!("cached {}", short(key)));
            }
            Event::StageStarted { stage, key } => {
                let bar = self.stage_bar(&mut state, stage);
                bar.set_message(format!("building {}", short(key)));
            }
            Event::QemuStarted { stage, accel, .. } => {
                self.stage_bar(&mut state, stage).set_message(format!("booting ({accel})"));
            }
            Event::Console { stage, line } if !state.ready.get(stage).copied().unwrap_or(false) => {
                self.stage_bar(&mut state, stage).set_message(format!("booting · console: {line}"));
            }
            Event::CommunicatorReady { stage, .. } => {
                state.ready.insert(stage.clone(), true);
                self.stage_bar(&mut state, stage).set_message("waiting for cloud-init");
            }
            Event::StepStarted { stage, index, total, description } => {
                let bar = self.stage_bar(&mut state, stage);
                bar.set_message(format!("step {}/{total} {description}", index + 1));
            }
            Event::StepOutput { stage, line, .. } if self.verbose > 0 => {
                self.println(&format!("{stage:>12} | {}", crate::events::printable(line)));
            }
            Event::Sysprep { stage } => self.stage_bar(&mut state, stage).set_message("sysprep"),
            Event::PoweringOff { stage } => {
                self.stage_bar(&mut state, stage).set_message("powering off");
            }
            Event::Committing { stage } => {
                self.stage_bar(&mut state, stage).set_message("committing");
            }
            Event::LayerCommitted { stage, key, allocated_bytes, seconds, .. } => {
                state.ready.remove(stage);
                let bar = self.stage_bar(&mut state, stage);
                bar.set_style(finished_style());
                bar.finish_with_message(format!(
                    "built {} in {} ({})",
                    short(key),
                    crate::units::format_duration(Duration::from_secs_f64(*seconds)),
                    ByteSize(*allocated_bytes)
                ));
            }
            Event::RestoreResumed { stage, seconds, .. } => {
                state.ready.insert(stage.clone(), true);
                let bar = self.stage_bar(&mut state, stage);
                bar.set_message(format!("resumed a saved guest in {seconds:.1}s"));
            }
            Event::Warning { message } => self.println(&format!("warning: {message}")),
            Event::ExportStarted { path, virtual_bytes, .. } => {
                let bar = self.download_bar(&mut state, Some(*virtual_bytes));
                bar.set_prefix("export");
                bar.set_position(0);
                bar.set_message(path.display().to_string());
            }
            Event::ExportConvertProgress { done_bytes, total_bytes, .. } => {
                let bar = self.download_bar(&mut state, Some(*total_bytes));
                bar.set_position(*done_bytes);
            }
            Event::ExportArtifact { path, bytes, .. } => {
                if let Some(bar) = state.download.take() {
                    bar.finish_and_clear();
                }
                self.println(&format!("exported {} ({})", path.display(), ByteSize(*bytes)));
            }
            Event::Error { message } => {
                let why = if message == "interrupted" { "interrupted" } else { "failed" };
                for bar in state.stages.values().filter(|bar| !bar.is_finished()) {
                    bar.set_style(finished_style());
                    bar.abandon_with_message(why);
                }
            }
            _ => {}
        }
    }
}

impl Drop for Human {
    fn drop(&mut self) {
        if let Ok(state) = self.state.lock() {
            for bar in state.stages.values().filter(|bar| !bar.is_finished()) {
                bar.abandon();
            }
        }
    }
}
