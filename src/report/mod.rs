//! Everything strata prints: progress for people (indicatif on a terminal, plain lines
//! otherwise), JSON lines, and errors with their whole chain. The engine never prints.

pub mod buildlog;
pub mod diagnostic;
mod human;
mod plain;

use std::error::Error as _;
use std::io::{IsTerminal, Write};
use std::sync::Arc;

use crate::cli::LogFormat;
use crate::error::Error;
use crate::events::{Event, Observer, Stamped};

/// The observer that renders events for the user.
#[must_use]
pub fn observer(format: LogFormat, verbose: u8, quiet: bool) -> Arc<dyn Observer> {
    match format {
        LogFormat::Json => Arc::new(JsonLines),
        LogFormat::Human if !quiet && std::io::stderr().is_terminal() => {
            Arc::new(human::Human::new(verbose))
        }
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

/// An error and its causes on one line each, as the JSON `error` event carries it.
#[must_use]
pub fn error_chain(error: &Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        message.push_str(&format!("\n  caused by: {inner}"));
        cause = inner.source();
    }
    message
}

/// Prints an error and every cause below it to stderr.
pub fn print_error(error: &Error) {
    if let Error::Definition(definition) = error {
        diagnostic::print(definition);
        return;
    }
    let _ = writeln!(std::io::stderr(), "error: {}", error_chain(error));
}

/// One row of the closing table.
#[derive(Debug, Clone)]
pub struct SummaryRow {
    pub stage: String,
    pub cached: bool,
    pub seconds: f64,
    pub bytes: u64,
}

/// The closing table of a build, for people (JSON consumers have `build_finished`).
pub fn print_summary(format: LogFormat, quiet: bool, rows: &[SummaryRow], total_seconds: f64) {
    if format == LogFormat::Json || quiet {
        return;
    }
    let mut table = format!("{:<16} {:<7} {:>8} {:>10}\n", "stage", "", "time", "layer");
    for row in rows {
        let state = if row.cached { "cached" } else { "built" };
        let time = crate::units::format_duration(std::time::Duration::from_secs_f64(row.seconds));
        let size = crate::units::ByteSize(row.bytes).to_string();
        table.push_str(&format!("{:<16} {state:<7} {time:>8} {size:>10}\n", row.stage));
    }
    let total = crate::units::format_duration(std::time::Duration::from_secs_f64(total_seconds));
    table.push_str(&format!("{:<16} {:<7} {total:>8}", "total", ""));
    let _ = writeln!(std::io::stderr(), "{table}");
}

/// A line for the user outside the event stream (e.g. where the logs are, how to ssh in).
pub fn note(format: LogFormat, quiet: bool, line: &str) {
    if format == LogFormat::Human && !quiet {
        let _ = writeln!(std::io::stderr(), "{line}");
    }
}

/// A table on stdout for people, or its JSON form for `--log-format json`.
pub fn table<const N: usize>(format: LogFormat, rows: &[[String; N]], json: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    if format == LogFormat::Json {
        let _ = writeln!(out, "{json}");
        return;
    }
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let cells: Vec<String> =
            row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
}
