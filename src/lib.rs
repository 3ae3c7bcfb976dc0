//! Loopgate: a reverse-proxy authentication gateway for Loopwise schools, on pingora.
//!
//! Everything lives in this library so that tests run the real servers in-process;
//! `main.rs` only parses the command line.
//!
//! The public modules are the surface the binary, the integration tests and the bench
//! use: `cli`, `config`, `demo`, `emulator`, `logging`, `server` (`GatewayHandle`), and
//! what tests mint tokens and check redirects with (`oauth`, `login`, `random`). Every
//! other module is private, and `unreachable_pub` keeps `pub` meaning "reachable from
//! that surface" (`pub(crate)` otherwise).
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod cli;
pub mod config;
pub mod demo;
mod duration;
pub mod emulator;
mod gateway;
mod hex;
mod html;
pub mod logging;
pub mod login;
mod metrics;
pub mod oauth;
mod policy;
mod proxy;
pub mod random;
mod replicas;
mod routes;
mod runtime;
mod secret;
pub mod server;
mod session;
mod token;
mod wire;

/// Shared by the unit tests' property tests.
#[cfg(test)]
pub(crate) mod testing {
    /// Cases per property test: `PROPTEST_CASES` (more in a long run), else 2000, enough
    /// for every `scripts/test` run to exercise the parsers without slowing CI.
    pub(crate) fn proptest_cases() -> proptest::test_runner::Config {
        proptest::test_runner::Config::with_cases(
            std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2000),
        )
    }
}
