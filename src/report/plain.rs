//! Plain lines for people: what a pipe or a CI log gets. No escape codes, no redraws.

use std::io::Write;

use crate::events::{Event, Observer};

pub struct Plain {
    verbose: u8,
    quiet: bool,
}

impl Plain {
    pub fn new(verbose: u8, quiet: bool) -> Self {
        Plain { verbose, quiet }
    }

    fn line(event: &Event, verbose: u8) -> Option<String> {
        let text = match event {
            Event::Warning { message } => format!("warning: {message}"),
            Event::DownloadStarted { url, resumed_from, .. } if *resumed_from > 0 => {
                format!("downloading {url} (resuming at {resumed_from} bytes)")
            }
            Event::DownloadStarted { url, .. } => format!("downloading {url}"),
            Event::DownloadFinished { url, bytes, seconds, .. } => {
                format!("downloaded {url}: {} in {seconds:.1}s", crate::units::ByteSize(*bytes))
            }
            Event::SourceCached { url, .. } => format!("source cached: {url}"),
            Event::StageCached { stage, key } => format!("{stage}: cached ({})", short(key)),
            Event::StageStarted { stage, key } => format!("{stage}: building ({})", short(key)),
            Event::QemuStarted { stage, accel, .. } => format!("{stage}: booting ({accel})"),
            Event::CommunicatorReady { stage, seconds } => {
                format!("{stage}: guest ready after {seconds:.1}s")
            }
            Event::StepStarted { stage, index, total, description } => {
                format!("{stage}: step {}/{total} {description}", index + 1)
            }
            Event::StepOutput { stage, line, .. } if verbose > 0 => {
                format!("{stage}  | {}", crate::events::printable(line))
            }
            Event::StepFinished { stage, index, exit_code, seconds } => {
                format!("{stage}: step {} exited {exit_code} after {seconds:.1}s", index + 1)
            }
            Event::Sysprep { stage } => format!("{stage}: sysprep"),
            Event::PoweringOff { stage } => format!("{stage}: powering off"),
            Event::LayerCommitted { stage, key, allocated_bytes, .. } => {
                format!(
                    "{stage}: layer {} committed, {} on disk",
                    short(key),
                    crate::units::ByteSize(*allocated_bytes)
                )
            }
            Event::ExportStarted { path, format, virtual_bytes } => format!(
                "exporting {} ({format}, {} virtual)",
                path.display(),
                crate::units::ByteSize(*virtual_bytes)
            ),
            Event::ExportArtifact { path, bytes, .. } => {
                format!("exported {} ({})", path.display(), crate::units::ByteSize(*bytes))
            }
            Event::BuildFinished { seconds, .. } => format!("done in {seconds:.1}s"),
            Event::CheckStarted { stage, name, kind } => {
                format!("{stage}: check \"{name}\" ({kind})")
            }
            Event::CheckFinished { .. } | Event::ChecksFinished { .. } => {
                super::check_line(event).unwrap_or_default()
            }
            Event::DriftChecked { .. } | Event::DriftFinished { .. } => {
                super::drift_line(event).unwrap_or_default()
            }
            Event::RestoreSaved { stage, bytes, seconds, first_boot } => format!(
                "{stage}: saved the running guest as a restore point{} ({}, {seconds:.1}s)",
                if *first_boot { " of the source's first boot" } else { "" },
                crate::units::ByteSize(*bytes)
            ),
            Event::RestoreResumed { stage, seconds, .. } => {
                format!("{stage}: resumed a saved guest instead of booting ({seconds:.1}s)")
            }
            Event::RestorePointRemoved { .. } => super::restore_removed_line(event)?,
            Event::PublishStarted { .. }
            | Event::PublishImageDeleted { .. }
            | Event::Published { .. } => super::publish::line(event)?,
            _ => return super::cache::line(event),
        };
        Some(text)
    }
}

fn short(key: &str) -> &str {
    key.get(..12).unwrap_or(key)
}

impl Observer for Plain {
    fn observe(&self, event: &Event) {
        let is_warning = matches!(
            event,
            Event::Warning { .. }
                | Event::CacheUnavailable { .. }
                | Event::CacheRefused { .. }
                | Event::CacheUnsigned { .. }
        );
        if self.quiet && !is_warning {
            return;
        }
        if let Some(line) = Self::line(event, self.verbose) {
            let stamp = crate::units::format_utc(std::time::SystemTime::now());
            let clock = stamp.get(11..19).unwrap_or(&stamp);
            let _ = writeln!(std::io::stderr(), "{clock} {line}");
        }
    }
}
