//! Definition errors for people: miette's graphical report (the file, line:col, the offending
//! text underlined, help), without colour when stderr is not a terminal or NO_COLOR is set;
//! and the "ok" line of `strata validate`. Prints; knows nothing of how definitions are checked.

use std::io::{IsTerminal, Write};
use std::path::Path;

use miette::{GraphicalReportHandler, GraphicalTheme};

use crate::definition::DefinitionError;

/// How many problems of one file are shown; the rest are counted. A file with thousands of
/// problems (a generated one, say) gets a readable report, not megabytes.
pub const SHOWN_PROBLEMS: usize = 50;

/// Renders a definition error as text, colour or not: the first `SHOWN_PROBLEMS` problems,
/// then how many more there are.
#[must_use]
pub fn render(error: &DefinitionError, color: bool) -> String {
    let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
    let handler = GraphicalReportHandler::new_themed(theme).with_links(false);
    let mut out = String::new();
    // The `Invalid` itself, whose message does not repeat the location miette shows anyway.
    // (Lines too long for miette to underline come without a snippet: see `Invalid`.)
    let shown;
    let (diagnostic, left_out): (&dyn miette::Diagnostic, usize) = match error {
        DefinitionError::Invalid(invalid) => {
            let left_out;
            (shown, left_out) = invalid.first(SHOWN_PROBLEMS);
            (&shown, left_out)
        }
        DefinitionError::Read { .. } => (error, 0),
    };
    if handler.render_report(&mut out, diagnostic).is_err() {
        // Rendering only fails on a broken writer or span; the message still gets out.
        out = format!("error: {error}\n");
    }
    if left_out > 0 {
        let noun = if left_out == 1 { "problem" } else { "problems" };
        out.push_str(&format!("\n... and {left_out} more {noun} in this file\n"));
    }
    out
}

/// Prints a definition error to stderr, with colour only on a terminal without NO_COLOR.
pub fn print(error: &DefinitionError) {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    let color = !no_color && std::io::stderr().is_terminal();
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{}", render(error, color));
}

/// `strata validate`'s line for a definition that passed.
pub fn validated(path: &Path, stages: usize) {
    let noun = if stages == 1 { "stage" } else { "stages" };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ok: {} ({stages} {noun})", path.display());
}
