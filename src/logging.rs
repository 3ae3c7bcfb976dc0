//! Logging set-up: one structured line per event on stderr, text (logfmt-like) or JSON.
//! `RUST_LOG` overrides the configured level. Tokens, cookies, codes and secrets are
//! never passed to the logger in the first place.

use std::str::FromStr;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("`{other}` is not a log format (text or json)")),
        }
    }
}

/// The filter for `level` (or `RUST_LOG`), with pingora's own logging capped at `info`:
/// at `debug` it prints whole request headers, `Authorization` and `Cookie` included.
pub fn filter(level: &str) -> tracing_subscriber::EnvFilter {
    let base = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string());
    let mut f = tracing_subscriber::EnvFilter::try_new(&base)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if base.contains("debug") || base.contains("trace") {
        for target in [
            "pingora_proxy",
            "pingora_core",
            "pingora_load_balancing",
            "pingora_cache",
        ] {
            if let Ok(d) = format!("{target}=info").parse() {
                f = f.add_directive(d);
            }
        }
    }
    f
}

/// Installs the global subscriber (once; later calls are ignored).
pub fn init(format: LogFormat, level: &str) {
    let filter = filter(level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}
