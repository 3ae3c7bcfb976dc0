//! Every integration test but the fuzz run, in one binary: each `tests/<name>.rs` is a
//! module here (run one with `cargo test --test suite <name>::`). One binary links
//! pingora once instead of once per file. The fuzz run (`tests/fuzz.rs`) stays its own
//! process: it counts panics with a process-wide hook.

mod common;

#[path = "adversarial.rs"]
mod adversarial;
#[path = "browser.rs"]
mod browser;
#[path = "cli.rs"]
mod cli;
#[path = "deploy.rs"]
mod deploy;
#[path = "emulator.rs"]
mod emulator;
#[path = "gateway.rs"]
mod gateway;
#[path = "limits.rs"]
mod limits;
#[path = "logs.rs"]
mod logs;
#[path = "nginx.rs"]
mod nginx;
#[path = "oidc.rs"]
mod oidc;
#[path = "open_redirects.rs"]
mod open_redirects;
#[path = "ops.rs"]
mod ops;
#[path = "reload.rs"]
mod reload;
#[path = "replicas.rs"]
mod replicas;
#[path = "routing.rs"]
mod routing;
#[path = "schools.rs"]
mod schools;
#[path = "tokens.rs"]
mod tokens;
#[path = "upgrade.rs"]
mod upgrade;
#[path = "walkthrough.rs"]
mod walkthrough;
