//! `[redis]`: the server replicas share (login states, refresh leases, sessions).

use super::super::raw;
use super::Validator;
use crate::config::RedisConfig;

impl Validator<'_> {
    pub(super) fn redis(&mut self, raw: raw::RawRedis) -> Option<RedisConfig> {
        let url = match raw.url {
            None => {
                self.err(
                    "redis.url",
                    "is required, e.g. \"redis://127.0.0.1:6379/0\" (or rediss:// for TLS)",
                );
                return None;
            }
            Some(u) => u,
        };
        let parsed = match url::Url::parse(&url) {
            Ok(u) => u,
            Err(e) => {
                self.invalid("redis.url", &redact(&url), e);
                return None;
            }
        };
        let tls = match parsed.scheme() {
            "redis" => false,
            "rediss" => true,
            other => {
                self.invalid(
                    "redis.url",
                    &redact(&url),
                    format!("the scheme is `{other}`; expected redis:// or rediss://"),
                );
                return None;
            }
        };
        if parsed.host_str().is_none_or(str::is_empty) {
            self.invalid("redis.url", &redact(&url), "it names no host");
        }
        let db = parsed.path().trim_start_matches('/');
        if !db.is_empty() && db.parse::<u32>().is_err() {
            self.invalid(
                "redis.url",
                &redact(&url),
                "the path must be a database number (`/0`)",
            );
        }
        let password = match raw.password {
            None => None,
            Some(src) => match src.resolve(self.env, self.base_dir) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.err("redis.password", e.to_string());
                    None
                }
            },
        };
        let ca_file = self.path("redis.ca_file", raw.ca_file.as_deref(), true);
        if ca_file.is_some() && !tls {
            self.err("redis.ca_file", "only applies to a rediss:// (TLS) url");
        }
        let key_prefix = raw.key_prefix.unwrap_or_else(|| "loopgate:".into());
        if key_prefix
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ')
        {
            self.invalid(
                "redis.key_prefix",
                &key_prefix,
                "no spaces or control characters",
            );
        }
        let timeout = self.duration("redis.timeout", raw.timeout.as_deref(), "500ms");
        Some(RedisConfig {
            url,
            password,
            ca_file,
            key_prefix,
            timeout,
        })
    }
}

/// `url` with any password replaced, for error messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => url.to_string(),
        // Unparsable: hide whatever sits between the scheme and an `@`.
        Err(_) => match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s + 3 => format!("{}***{}", &url[..s + 3], &url[at..]),
            _ => url.to_string(),
        },
    }
}
