//! Everything strata prints: progress for people (indicatif on a terminal, plain lines
//! otherwise), JSON lines, and errors with their whole chain. The engine never prints.

pub mod buildlog;
mod cache;
pub mod diagnostic;
mod human;
mod plain;
pub mod publish;

use std::io::{IsTerminal, Write};
use std::sync::Arc;

pub use crate::events::error_chain;
use crate::events::{Event, Observer, Stamped};

/// How progress is shown: for people, or one JSON object per line (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// The `-v` count from which strata's debug log is on.
const DEBUG: u8 = 2;

/// Turns on strata's debug log on stderr (timings, QMP traffic) with `-vv`, or with
/// `STRATA_LOG` set to a `tracing` filter (`STRATA_LOG=strata=debug`), for whatever `-v` says.
pub fn init_debug_log(verbose: u8) {
    let filter = match std::env::var("STRATA_LOG") {
        Ok(filter) => tracing_subscriber::EnvFilter::new(filter),
        Err(_) if verbose >= DEBUG => tracing_subscriber::EnvFilter::new("strata=debug"),
        Err(_) => return,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The observer that renders events for the user.
#[must_use]
pub fn observer(format: LogFormat, verbose: u8, quiet: bool) -> Arc<dyn Observer> {
    match format {
        LogFormat::Json => Arc::new(JsonLines),
        // Debug lines go straight to stderr, which progress bars would overwrite.
        LogFormat::Human if !quiet && verbose < DEBUG && std::io::stderr().is_terminal() => {
            Arc::new(human::Human::new(verbose))
        }
        LogFormat::Human => Arc::new(plain::Plain::new(verbose, quiet)),
    }
}

/// How many of a failed check's last output lines are shown.
const CHECK_OUTPUT_LINES: usize = 20;

/// How a check's result reads, the same for bars and plain lines: a mark, the name, the time,
/// and for a failure the end of its output, indented.
fn check_line(event: &Event) -> Option<String> {
    match event {
        Event::CheckFinished { stage, name, kind, passed, seconds, output } => {
            let mark = if *passed { "pass" } else { "FAIL" };
            let mut line = format!("{stage}: {mark} {name} ({kind}, {seconds:.1}s)");
            if !passed {
                let lines: Vec<&str> = output.lines().collect();
                let start = lines.len().saturating_sub(CHECK_OUTPUT_LINES);
                for text in &lines[start..] {
                    line.push_str(&format!("\n    | {}", crate::events::printable(text)));
                }
            }
            Some(line)
        }
        Event::ChecksFinished { stage, passed, failed, seconds } => {
            Some(format!("{stage}: {passed} of {} checks passed in {seconds:.1}s", passed + failed))
        }
        _ => None,
    }
}

/// How a `strata drift` event reads, the same for bars and plain lines.
fn drift_line(event: &Event) -> Option<String> {
    match event {
        Event::DriftChecked { host, outcome, findings, seconds, error } => Some(match error {
            Some(error) => format!("{host}: could not check ({seconds:.1}s): {error}"),
            None if *findings == 0 => format!("{host}: {outcome} ({seconds:.1}s)"),
            None => format!("{host}: {outcome}, {findings} finding(s) ({seconds:.1}s)"),
        }),
        Event::DriftFinished { hosts, clean, drifted, failed } => Some(format!(
            "{hosts} host(s): {clean} clean, {drifted} drifted, {failed} could not be checked"
        )),
        _ => None,
    }
}

/// How a removed restore point reads, the same for bars and plain lines.
fn restore_removed_line(event: &Event) -> Option<String> {
    let Event::RestorePointRemoved { stage, key, bytes, max_bytes } = event else { return None };
    Some(format!(
        "removed the restore point of {stage}'s layer {} ({}): restore points are capped at {} \
         (--max-restore-size), the oldest go first",
        key.get(..12).unwrap_or(key),
        crate::units::ByteSize(*bytes),
        crate::units::ByteSize(*max_bytes)
    ))
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
pub fn print_error(error: &dyn std::error::Error) {
    let _ = writeln!(std::io::stderr(), "error: {}", error_chain(error));
}

/// One JSON object on a line of stdout (a command's result in `--log-format json`).
pub fn json_line(json: &serde_json::Value) {
    let _ = writeln!(std::io::stdout().lock(), "{json}");
}

/// An error as the JSON `error` event `build` emits, on stdout.
pub fn json_error(error: &dyn std::error::Error) {
    JsonLines.observe(&Event::Error { message: error_chain(error) });
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
    let _ = writeln!(std::io::stderr(), "{}", summary_table(rows, total_seconds));
}

/// The closing table, its columns as wide as their widest cell, so that it fits narrow
/// terminals: stage, cached or built, time, layer size; then the total time.
fn summary_table(rows: &[SummaryRow], total_seconds: f64) -> String {
    let duration = |seconds: f64| {
        crate::units::format_duration(std::time::Duration::from_secs_f64(seconds.max(0.0)))
    };
    let mut cells: Vec<[String; 4]> =
        vec![["stage".into(), String::new(), "time".into(), "layer".into()]];
    for row in rows {
        let state = if row.cached { "cached" } else { "built" };
        let size = crate::units::ByteSize(row.bytes).to_string();
        cells.push([row.stage.clone(), state.into(), duration(row.seconds), size]);
    }
    cells.push(["total".into(), String::new(), duration(total_seconds), String::new()]);
    let mut widths = [0usize; 4];
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let [stage, state, time, size] = widths;
    let lines: Vec<String> = cells
        .iter()
        .map(|[a, b, c, d]| {
            format!("{a:<stage$}  {b:<state$}  {c:>time$}  {d:>size$}").trim_end().to_owned()
        })
        .collect();
    lines.join("\n")
}

/// A line for the user outside the event stream (e.g. where the logs are, how to ssh in).
pub fn note(format: LogFormat, quiet: bool, line: &str) {
    if format == LogFormat::Human && !quiet {
        let _ = writeln!(std::io::stderr(), "{line}");
    }
}

/// What a command did: lines for people on stderr, or one JSON object on stdout.
pub fn outcome(format: LogFormat, quiet: bool, lines: &str, json: &serde_json::Value) {
    match format {
        LogFormat::Json => {
            let _ = writeln!(std::io::stdout().lock(), "{json}");
        }
        LogFormat::Human => note(format, quiet, lines),
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

/// Findings (`strata diff`; `strata sbom --package`, one row per stage): a table on a
/// terminal, or one JSON object per line per finding; a line saying there are none when
/// `objects` is empty.
pub fn findings<const N: usize>(
    format: LogFormat,
    rows: &[[String; N]],
    objects: &[serde_json::Value],
) {
    if format == LogFormat::Json {
        json_lines(objects);
        return;
    }
    if objects.is_empty() {
        note(format, false, "no differences");
        return;
    }
    table(format, rows, &serde_json::Value::Null);
}

/// A document (an SBOM) on stdout, as it is.
pub fn document(bytes: &[u8]) {
    let _ = std::io::stdout().lock().write_all(bytes);
}

/// One JSON object per line on stdout.
fn json_lines(objects: &[serde_json::Value]) {
    let mut out = std::io::stdout().lock();
    for object in objects {
        let _ = writeln!(out, "{object}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closing_table_is_as_wide_as_its_cells() {
        let rows = [
            SummaryRow { stage: "base".into(), cached: true, seconds: 0.0, bytes: 14 << 20 },
            SummaryRow { stage: "app".into(), cached: false, seconds: 75.0, bytes: 3 << 20 },
        ];
        let table = summary_table(&rows, 75.4);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("stage") && lines[0].ends_with("layer"), "{table}");
        assert!(lines[1].starts_with("base   cached") && lines[1].ends_with("MiB"), "{table}");
        assert!(lines[2].starts_with("app    built") && lines[2].contains("1m15s"), "{table}");
        assert!(lines[3].starts_with("total") && lines[3].ends_with("1m15s"), "{table}");
        assert!(lines.iter().all(|line| line.chars().count() <= 40), "{table}");
    }
}
