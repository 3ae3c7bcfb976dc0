//! `[redis]`: the server replicas share (login states, refresh leases, sessions).

use super::super::raw;
use super::Validator;
use crate::config::{RedisConfig, RedisTarget};

impl Validator<'_> {
    pub(super) fn redis(&mut self, raw: raw::RawRedis) -> Option<RedisConfig> {
        let target = match (raw.url, raw.sentinel, raw.cluster) {
            (Some(url), None, None) => RedisTarget::Url(self.redis_url("redis.url", &url)?),
            (None, Some(s), None) => {
                let master = match s.master.filter(|m| !m.trim().is_empty()) {
                    Some(m) => m,
                    None => {
                        self.err(
                            "redis.sentinel.master",
                            "is required: the name the Sentinels watch the master under, e.g. \"mymaster\"",
                        );
                        String::new()
                    }
                };
                let nodes = self.redis_urls("redis.sentinel.nodes", s.nodes);
                RedisTarget::Sentinel { master, nodes }
            }
            (None, None, Some(seeds)) => {
                RedisTarget::Cluster(self.redis_urls("redis.cluster", seeds))
            }
            (None, None, None) => {
                self.err(
                    "redis.url",
                    "is required (or redis.sentinel, or redis.cluster), e.g. \"redis://127.0.0.1:6379/0\" (rediss:// for TLS)",
                );
                return None;
            }
            _ => {
                self.err("redis", "give exactly one of url, sentinel and cluster");
                return None;
            }
        };
        if let RedisTarget::Sentinel { nodes, .. } | RedisTarget::Cluster(nodes) = &target {
            let schemes: std::collections::BTreeSet<bool> =
                nodes.iter().map(|u| u.starts_with("rediss://")).collect();
            if schemes.len() > 1 {
                self.err(
                    "redis",
                    "mixes redis:// and rediss:// nodes; use one scheme for all",
                );
            }
        }
        let tls = target.tls();
        let password = self.secret("redis.password", raw.password.as_ref(), 0, "");
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
            target,
            password,
            ca_file,
            key_prefix,
            timeout,
        })
    }
}

impl Validator<'_> {
    /// A `redis://` or `rediss://` url naming a host, with a database number at most.
    fn redis_url(&mut self, key: &str, url: &str) -> Option<String> {
        let parsed = match url::Url::parse(url) {
            Ok(u) => u,
            Err(e) => {
                self.invalid(key, &redact(url), e);
                return None;
            }
        };
        if !matches!(parsed.scheme(), "redis" | "rediss") {
            self.invalid(
                key,
                &redact(url),
                format!(
                    "the scheme is `{}`; expected redis:// or rediss://",
                    parsed.scheme()
                ),
            );
            return None;
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            self.invalid(key, &redact(url), "it names no host");
            return None;
        }
        let db = parsed.path().trim_start_matches('/');
        if !db.is_empty() && db.parse::<u32>().is_err() {
            self.invalid(
                key,
                &redact(url),
                "the path must be a database number (`/0`)",
            );
            return None;
        }
        Some(url.to_string())
    }

    /// A non-empty list of urls (Sentinels or Cluster seeds).
    fn redis_urls(&mut self, key: &str, urls: Vec<String>) -> Vec<String> {
        if urls.is_empty() {
            self.err(
                key,
                "lists no node; give at least one, e.g. [\"redis://10.0.0.5:26379\"]",
            );
        }
        urls.iter()
            .enumerate()
            .filter_map(|(i, u)| self.redis_url(&format!("{key}[{i}]"), u))
            .collect()
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
