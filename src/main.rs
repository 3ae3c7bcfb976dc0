//! Thin entry point: parse the command line and hand over to the library (which sets up
//! logging once it knows the configured format).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: per-request allocations are many and small, and
/// glibc spent ~15 % of a proxied request in malloc/free (bench/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    loopgate::cli::run(loopgate::cli::Cli::parse())
}
