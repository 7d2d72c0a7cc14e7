//! The `strata` binary: parse the command line, run it, map the outcome to an exit code.
//! All logic lives in the library; this file must stay thin.

fn main() -> std::process::ExitCode {
    strata::cli::main()
}
