//! One line per shared-cache event, for the plain and the human display alike.

use crate::events::Event;
use crate::units::ByteSize;

/// The line for a cache event; `None` for other events and for progress.
pub(super) fn line(event: &Event) -> Option<String> {
    let text = match event {
        Event::CacheTransferStarted { kind, stage, key, direction, .. } => {
            format!("cache: {}ing {}", direction.as_str(), what(kind, stage.as_deref(), key))
        }
        Event::CacheTransferFinished { kind, stage, key, direction, bytes, seconds } => format!(
            "cache: {} {}: {} in {seconds:.1}s",
            match direction {
                crate::events::CacheDirection::Push => "pushed",
                crate::events::CacheDirection::Pull => "pulled",
            },
            what(kind, stage.as_deref(), key),
            ByteSize(*bytes)
        ),
        Event::CacheUnavailable { registry, message } => {
            format!("warning: the shared cache {registry} is not used: {message}")
        }
        Event::CacheRefused { kind, stage, key, message, .. } => format!(
            "warning: the shared cache's {} is refused, nothing of it is used: {message}",
            what(kind, stage.as_deref(), key)
        ),
        Event::CacheUnsigned { registry } => format!(
            "warning: --cache-unsigned: what comes from {registry} is used without checking \
             its signatures; anyone who can push there decides what this runner builds"
        ),
        _ => return None,
    };
    Some(text)
}

fn what(kind: &str, stage: Option<&str>, key: &str) -> String {
    let short = key.get(..12).unwrap_or(key);
    match stage {
        Some(stage) => format!("{kind} {stage} ({short})"),
        None => format!("{kind} {short}"),
    }
}
