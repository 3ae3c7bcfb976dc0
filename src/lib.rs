//! Loopgate: a reverse-proxy authentication gateway for Loopwise schools, on pingora.
//!
//! Everything lives in this library so that tests run the real servers in-process;
//! `main.rs` only parses the command line.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod demo;
pub mod duration;
pub mod emulator;
pub mod gateway;
pub mod html;
pub mod logging;
pub mod login;
pub mod metrics;
pub mod oauth;
pub mod policy;
pub mod proxy;
pub mod random;
pub mod routes;
pub mod runtime;
pub mod secret;
pub mod server;
pub mod session;
pub mod token;
pub mod wire;

/// Shared by the unit tests' property tests.
#[cfg(test)]
pub(crate) mod testing {
    /// Cases per property test: `PROPTEST_CASES` (more in a long run), else 2000, enough
    /// for every `scripts/test` run to exercise the parsers without slowing CI.
    pub fn proptest_cases() -> proptest::test_runner::Config {
        proptest::test_runner::Config::with_cases(
            std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2000),
        )
    }
}
