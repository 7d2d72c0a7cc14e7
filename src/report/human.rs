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
        Human::drawing_to(ProgressDrawTarget::stderr_with_hz(8), verbose)
    }

    fn drawing_to(target: ProgressDrawTarget, verbose: u8) -> Self {
        Human {
            multi: MultiProgress::with_draw_target(target),
            verbose,
            state: Mutex::new(State::default()),
        }
    }

    /// Sets what `stage` does now, unless its line already ended (cached, built, failed): the
    /// guest of a one-boot build goes on writing to the console, and later events for a stage
    /// must not replace its final line.
    fn say(
        &self,
        state: &mut State,
        stage: &str,
        message: impl Into<std::borrow::Cow<'static, str>>,
    ) {
        let bar = self.stage_bar(state, stage);
        if !bar.is_finished() {
            bar.set_message(message);
        }
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
            Event::DownloadProgress { done_bytes, total_bytes, .. }
            | Event::CacheTransferProgress { done_bytes, total_bytes, .. } => {
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
                self.say(&mut state, stage, format!("building {}", short(key)));
            }
            Event::QemuStarted { stage, accel, .. } => {
                self.say(&mut state, stage, format!("booting ({accel})"));
            }
            Event::Console { stage, line } if !state.ready.get(stage).copied().unwrap_or(false) => {
                self.say(&mut state, stage, format!("booting · console: {line}"));
            }
            Event::CommunicatorReady { stage, .. } => {
                state.ready.insert(stage.clone(), true);
                self.say(&mut state, stage, "waiting for cloud-init");
            }
            Event::StepStarted { stage, index, total, description } => {
                self.say(&mut state, stage, format!("step {}/{total} {description}", index + 1));
            }
            Event::StepOutput { stage, line, .. } if self.verbose > 0 => {
                self.println(&format!("{stage:>12} | {}", crate::events::printable(line)));
            }
            Event::Sysprep { stage } => self.say(&mut state, stage, "sysprep"),
            Event::PoweringOff { stage } => {
                self.say(&mut state, stage, "powering off");
            }
            Event::Committing { stage } => {
                self.say(&mut state, stage, "committing");
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
                self.say(&mut state, stage, format!("resumed a saved guest in {seconds:.1}s"));
            }
            Event::Warning { message } => self.println(&format!("warning: {message}")),
            Event::RestorePointRemoved { .. } => {
                self.println(&super::restore_removed_line(event).unwrap_or_default());
            }
            Event::CheckStarted { stage, name, .. } => {
                self.say(&mut state, stage, format!("check {name}"));
            }
            Event::CheckFinished { .. } | Event::ChecksFinished { .. } => {
                self.println(&super::check_line(event).unwrap_or_default());
            }
            Event::DriftChecked { .. } | Event::DriftFinished { .. } => {
                self.println(&super::drift_line(event).unwrap_or_default());
            }
            Event::ExportStarted { path, virtual_bytes, .. } => {
                let bar = self.download_bar(&mut state, Some(*virtual_bytes));
                bar.set_prefix("export");
                bar.set_position(0);
                bar.set_message(path.display().to_string());
            }
            Event::ExportConvertProgress { done_bytes, total_bytes, .. }
            | Event::PublishProgress { done_bytes, total_bytes, .. } => {
                let bar = self.download_bar(&mut state, Some(*total_bytes));
                bar.set_position(*done_bytes);
            }
            Event::ExportArtifact { path, bytes, .. } => {
                if let Some(bar) = state.download.take() {
                    bar.finish_and_clear();
                }
                self.println(&format!("exported {} ({})", path.display(), ByteSize(*bytes)));
            }
            Event::CacheTransferStarted { direction, total_bytes, .. } => {
                let bar = self.download_bar(&mut state, *total_bytes);
                bar.set_prefix(direction.as_str());
                bar.set_position(0);
                bar.set_message(super::cache::line(event).unwrap_or_default());
            }
            Event::CacheTransferFinished { .. }
            | Event::CacheUnavailable { .. }
            | Event::CacheRefused { .. }
            | Event::CacheUnsigned { .. } => {
                if let Some(bar) = state.download.take() {
                    bar.finish_and_clear();
                }
                self.println(&super::cache::line(event).unwrap_or_default());
            }
            Event::PublishStarted { bytes, name, .. } => {
                self.println(&super::publish::line(event).unwrap_or_default());
                let bar = self.download_bar(&mut state, Some(*bytes));
                bar.set_prefix("upload");
                bar.set_position(0);
                bar.set_message(name.clone());
            }
            Event::PublishImageDeleted { .. } | Event::Published { .. } => {
                if let Some(bar) = state.download.take() {
                    bar.finish_and_clear();
                }
                self.println(&super::publish::line(event).unwrap_or_default());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn message(human: &Human, stage: &str) -> String {
        let state = human.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.stages.get(stage).map(|bar| bar.message().clone()).unwrap_or_default()
    }

    #[test]
    fn every_stage_line_ends_in_its_final_state_in_a_one_boot_build() {
        let human = Human::drawing_to(ProgressDrawTarget::hidden(), 0);
        let key = "a".repeat(64);
        let console = |stage: &str| Event::Console { stage: stage.into(), line: "journald".into() };
        human.observe(&Event::StageStarted { stage: "base".into(), key: key.clone() });
        human.observe(&console("base"));
        human.observe(&Event::LayerCommitted {
            stage: "base".into(),
            key: key.clone(),
            bytes: 1 << 20,
            allocated_bytes: 1 << 20,
            seconds: 40.0,
        });
        // The same guest goes on, for the next stage; its console still names the first.
        human.observe(&Event::StageStarted { stage: "app".into(), key: key.clone() });
        human.observe(&console("base"));
        human.observe(&Event::Sysprep { stage: "base".into() });
        assert!(
            message(&human, "base").starts_with("built aaaaaaaaaaaa in 40"),
            "{}",
            message(&human, "base")
        );
        human.observe(&Event::LayerCommitted {
            stage: "app".into(),
            key,
            bytes: 1 << 20,
            allocated_bytes: 1 << 20,
            seconds: 5.0,
        });
        assert!(message(&human, "app").starts_with("built"), "{}", message(&human, "app"));
    }
}
