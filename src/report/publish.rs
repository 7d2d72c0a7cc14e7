//! What `strata publish` shows: one line per event for the displays, and the closing lines:
//! the image's ID on stdout (for scripts: `id=$(strata publish …)`), what was done on stderr.
//! In JSON, the `published` event is the result.

use std::io::Write;

use super::LogFormat;
use crate::events::Event;
use crate::publish::Published;
use crate::units::ByteSize;

/// The line for a publish event; `None` for other events and for progress.
pub(super) fn line(event: &Event) -> Option<String> {
    let text = match event {
        Event::PublishStarted { cloud, name, path, format, bytes, .. } => format!(
            "publishing {} ({format}, {}) to cloud `{cloud}` as {name}",
            path.display(),
            ByteSize(*bytes)
        ),
        Event::PublishImageDeleted { cloud, id, name, reason } => {
            let why = match reason.as_str() {
                "leftover" => "left by an upload that did not finish",
                "failed" => "this run's, after it failed",
                "rotation" => "older than the --keep newest",
                other => other,
            };
            format!("deleted image {id} ({name}) from cloud `{cloud}`: {why}")
        }
        Event::Published { cloud, id, name, bytes, size, seconds, reused } => {
            if *reused {
                format!(
                    "cloud `{cloud}` has this image already: {id} ({name}, {}); nothing uploaded",
                    ByteSize(*size)
                )
            } else {
                let rate = *bytes as f64 / seconds.max(0.001) / f64::from(1 << 20);
                format!(
                    "published {id} ({name}, {}) to cloud `{cloud}` in {seconds:.1}s ({rate:.0} MiB/s overall)",
                    ByteSize(*bytes)
                )
            }
        }
        _ => return None,
    };
    Some(text)
}

/// The closing output: the ID on stdout, and in human form the properties on stderr with -v.
pub fn published(format: LogFormat, quiet: bool, published: &Published) {
    if format == LogFormat::Json {
        return;
    }
    let _ = writeln!(std::io::stdout().lock(), "{}", published.id);
    if !quiet {
        let mut lines = vec![format!(
            "image {} in cloud `{}`: `openstack --os-cloud {} image show {}`",
            published.id, published.cloud, published.cloud, published.id
        )];
        if !published.kept_protected.is_empty() {
            lines.push(format!(
                "kept {} older protected image(s): {}",
                published.kept_protected.len(),
                published.kept_protected.join(", ")
            ));
        }
        super::note(format, quiet, &lines.join("\n"));
    }
}
