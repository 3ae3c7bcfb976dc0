//! Thin entry point: parse the command line and hand over to the library (which sets up
//! logging once it knows the configured format).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    loopgate::cli::run(loopgate::cli::Cli::parse())
}
