//! Loopgate: a reverse-proxy authentication gateway for Loopwise schools, on pingora.
//!
//! Everything lives in this library so that tests run the real servers in-process;
//! `main.rs` only parses the command line.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod duration;
pub mod emulator;
pub mod gateway;
pub mod html;
pub mod lifecycle;
pub mod logging;
pub mod login;
pub mod metrics;
pub mod oauth;
pub mod policy;
pub mod proxy;
pub mod random;
pub mod reload;
pub mod server;
pub mod session;
pub mod token;
