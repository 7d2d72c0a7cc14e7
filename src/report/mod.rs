//! Everything strata prints: progress for people (indicatif on a terminal, plain lines
//! otherwise), JSON lines, and errors with their whole chain. The engine never prints.

use std::error::Error as _;

use crate::error::Error;

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
