//! Everything strata prints: progress for people (indicatif on a terminal, plain lines
//! otherwise), JSON lines, and errors with their whole chain. The engine never prints.

pub mod buildlog;
mod plain;

use std::error::Error as _;
use std::io::Write;
use std::sync::Arc;

use crate::cli::LogFormat;
use crate::error::Error;
use crate::events::{Event, Observer, Stamped};

/// The observer that renders events for the user.
#[must_use]
pub fn observer(format: LogFormat, verbose: u8, quiet: bool) -> Arc<dyn Observer> {
    match format {
        LogFormat::Json => Arc::new(JsonLines),
        LogFormat::Human => Arc::new(plain::Plain::new(verbose, quiet)),
    }
}

/// One JSON object per event on stdout.
struct JsonLines;

impl Observer for JsonLines {
    fn observe(&self, event: &Event) {
        if let Ok(line) = serde_json::to_string(&Stamped::now(event)) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
        }
    }
}

/// Prints an error and every cause below it to stderr.
pub fn print_error(error: &Error) {
    let mut message = format!("error: {error}");
    let mut cause = error.source();
    while let Some(inner) = cause {
        message.push_str(&format!("\n  caused by: {inner}"));
        cause = inner.source();
    }
    eprintln!("{message}");
}
