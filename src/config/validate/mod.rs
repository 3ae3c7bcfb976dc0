//! Validation of the raw TOML into a [`Config`](super::Config): one method per section,
//! each in its own file, all collecting their problems with the key path.

mod loopwise;
mod redis;
mod routes;
mod server;
mod session;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw;
use crate::config::{Config, ConfigError, LogConfig};

pub use session::decode_session_secret;

pub(super) struct Validator<'a> {
    pub(super) errors: Vec<ConfigError>,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) base_dir: &'a Path,
}

impl Validator<'_> {
    /// The secret `key` reads from its source, if given: at least `min_len` bytes, else
    /// `too_short` is the error (the value itself is never repeated).
    pub(super) fn secret(
        &mut self,
        key: &str,
        src: Option<&crate::secret::SecretSource>,
        min_len: usize,
        too_short: &str,
    ) -> Option<crate::secret::Secret> {
        match src?.resolve(self.env, self.base_dir) {
            Ok(s) if s.expose().len() >= min_len => Some(s),
            Ok(_) => {
                self.err(key, too_short);
                None
            }
            Err(e) => {
                self.err(key, e.to_string());
                None
            }
        }
    }

    pub(super) fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            key: key.into(),
            message: message.into(),
        });
    }

    pub(super) fn invalid(&mut self, key: &str, value: &str, reason: impl fmt::Display) {
        self.err(key, format!("`{value}` is not valid: {reason}"));
    }

    pub(super) fn duration(&mut self, key: &str, value: Option<&str>, default: &str) -> Duration {
        let value = value.unwrap_or(default);
        match crate::duration::parse(value) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.invalid(key, value, "must be longer than zero");
                Duration::from_secs(1)
            }
            Err(e) => {
                self.err(key, e.to_string());
                Duration::from_secs(1)
            }
        }
    }

    /// Like [`duration`](Self::duration), where zero means "none".
    pub(super) fn duration_or_zero(
        &mut self,
        key: &str,
        value: Option<&str>,
        default: &str,
    ) -> Duration {
        let value = value.unwrap_or(default);
        crate::duration::parse(value).unwrap_or_else(|e| {
            self.err(key, e.to_string());
            Duration::ZERO
        })
    }

    pub(super) fn path(
        &mut self,
        key: &str,
        value: Option<&str>,
        must_exist: bool,
    ) -> Option<PathBuf> {
        let p = self.base_dir.join(value?);
        if must_exist && !p.is_file() {
            self.err(key, format!("file `{}` does not exist", p.display()));
        }
        Some(p)
    }

    pub(super) fn config(&mut self, raw: raw::RawConfig) -> Option<Config> {
        let server = self.server(raw.server);
        let schools = self.schools(raw.loopwise);
        let names: Vec<&str> = schools.iter().map(|s| s.name.as_str()).collect();
        let session = self.session(raw.session, server.as_ref().is_some_and(|s| s.secure));
        let routes = self.routes(
            raw.routes,
            server.as_ref().map(|s| s.prefix.as_str()),
            &names,
        );
        let cache = self.cache(raw.cache);
        let redis_table = raw.redis.is_some();
        let redis = raw.redis.and_then(|r| self.redis(r));
        if !redis_table
            && session
                .as_ref()
                .is_some_and(|s| s.store == crate::config::SessionStoreKind::Redis)
        {
            self.err(
                "session.store",
                "\"redis\" needs a [redis] section (the server the replicas share)",
            );
        }
        let format = match raw.log.format.as_deref().unwrap_or("text").parse() {
            Ok(f) => f,
            Err(e) => {
                self.err("log.format", e);
                crate::logging::LogFormat::Text
            }
        };
        let level = raw.log.level.unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.invalid(
                "log.level",
                &level,
                "expected a level like info, warn or loopgate=debug,info",
            );
        }
        Some(Config {
            log: LogConfig { format, level },
            server: server?,
            schools,
            session: session?,
            cache,
            redis,
            routes,
        })
    }
}
