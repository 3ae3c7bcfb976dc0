//! `[server]` and `[cache]`: listeners, TLS, limits, trusted proxies, the cache sizes.

use std::net::SocketAddr;

use super::super::raw;
use super::Validator;
use crate::config::{CacheConfig, ServerConfig, TlsConfig, DEFAULT_MAX_CONNECTIONS};
use crate::wire::forwarded::{Cidr, Trusted};

impl Validator<'_> {
    pub(super) fn cache(&mut self, raw: raw::RawCache) -> CacheConfig {
        let ttl = self.duration("cache.ttl", raw.ttl.as_deref(), "60s");
        let negative_ttl = self.duration("cache.negative_ttl", raw.negative_ttl.as_deref(), "10s");
        let max_entries = match raw.max_entries {
            None => 100_000,
            Some(n) if n >= 1 => n as u64,
            Some(n) => {
                self.invalid("cache.max_entries", &n.to_string(), "must be at least 1");
                1
            }
        };
        CacheConfig {
            ttl,
            negative_ttl,
            max_entries,
        }
    }

    pub(super) fn server(&mut self, raw: raw::RawServer) -> Option<ServerConfig> {
        let listen_s = raw.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = match listen_s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.invalid(
                    "server.listen",
                    &listen_s,
                    "expected IP:PORT, e.g. 0.0.0.0:8080",
                );
                None
            }
        };
        let public_url = match (raw.public_url, listen) {
            (Some(u), _) => self.origin("server.public_url", &u),
            (None, Some(l)) => Some(format!("http://{l}")),
            (None, None) => None,
        };
        let prefix = raw.prefix.unwrap_or_else(|| "/oauth2".into());
        let prefix_ok = prefix.starts_with('/')
            && prefix.len() > 1
            && !prefix.ends_with('/')
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
            && !prefix.contains("//")
            && !prefix.split('/').any(|seg| seg == "." || seg == "..");
        if !prefix_ok {
            self.invalid(
                "server.prefix",
                &prefix,
                "must look like /oauth2: a leading slash, no trailing slash, plain characters",
            );
        }
        let threads = match raw.threads {
            None => std::thread::available_parallelism().map_or(2, |n| n.get()),
            Some(n) if (1..=256).contains(&n) => n as usize,
            Some(n) => {
                self.invalid(
                    "server.threads",
                    &n.to_string(),
                    "must be between 1 and 256",
                );
                1
            }
        };
        let shutdown_grace = self.duration(
            "server.shutdown_grace",
            raw.shutdown_grace.as_deref(),
            "20s",
        );
        let shutdown_delay =
            self.duration_or_zero("server.shutdown_delay", raw.shutdown_delay.as_deref(), "0s");
        // Under systemd with `RuntimeDirectory=`, the pid file and upgrade socket default
        // into that directory (writable under `ProtectSystem=strict`, readable by systemd).
        let runtime_dir = (self.env)("RUNTIME_DIRECTORY")
            .and_then(|d| d.split(':').next().map(str::to_string))
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "/tmp".into());
        let default_sock = format!("{runtime_dir}/loopgate-upgrade.sock");
        let default_pid = format!("{runtime_dir}/loopgate.pid");
        let upgrade_sock = self
            .path(
                "server.upgrade_sock",
                Some(raw.upgrade_sock.as_deref().unwrap_or(&default_sock)),
                false,
            )
            .unwrap_or_default();
        // sockaddr_un holds 108 bytes including the terminating NUL.
        if upgrade_sock.as_os_str().len() > 107 {
            self.invalid(
                "server.upgrade_sock",
                &upgrade_sock.display().to_string(),
                "a Unix socket path must be at most 107 bytes",
            );
        }
        let pid_file = self
            .path(
                "server.pid_file",
                Some(raw.pid_file.as_deref().unwrap_or(&default_pid)),
                false,
            )
            .unwrap_or_default();
        let admin_s = raw.admin_listen.unwrap_or_else(|| "127.0.0.1:9090".into());
        let admin_listen = match admin_s.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.invalid(
                    "server.admin_listen",
                    &admin_s,
                    "expected IP:PORT, e.g. 127.0.0.1:9090",
                );
                SocketAddr::from(([127, 0, 0, 1], 9090))
            }
        };
        let admin_token = self.secret(
            "server.admin_token",
            raw.admin_token.as_ref(),
            16,
            "is too short: at least 16 characters (e.g. `loopgate gen-secret`)",
        );
        let header_timeout = self.duration(
            "server.header_timeout",
            raw.header_timeout.as_deref(),
            "10s",
        );
        let max_connections = match raw.max_connections {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(n) if (1..=10_000_000).contains(&n) => n as usize,
            Some(n) => {
                self.invalid(
                    "server.max_connections",
                    &n.to_string(),
                    "must be between 1 and 10000000",
                );
                DEFAULT_MAX_CONNECTIONS
            }
        };
        let mut trusted = Vec::new();
        for (i, c) in raw.trusted_proxies.unwrap_or_default().iter().enumerate() {
            match c.parse::<Cidr>() {
                Ok(c) => trusted.push(c),
                Err(e) => self.invalid(&format!("server.trusted_proxies[{i}]"), c, e),
            }
        }
        let tls = match raw.tls {
            None => None,
            Some(t) => {
                let cert = t.cert_file.as_deref();
                let key = t.key_file.as_deref();
                if cert.is_none() {
                    self.err("server.tls.cert_file", "is required with [server.tls]");
                }
                if key.is_none() {
                    self.err("server.tls.key_file", "is required with [server.tls]");
                }
                let cert_file = self.path("server.tls.cert_file", cert, true);
                let key_file = self.path("server.tls.key_file", key, true);
                match (cert_file, key_file) {
                    (Some(cert_file), Some(key_file)) => Some(TlsConfig {
                        cert_file,
                        key_file,
                    }),
                    _ => None,
                }
            }
        };
        let public_url = public_url?;
        Some(ServerConfig {
            listen: listen?,
            secure: public_url.starts_with("https://"),
            public_url,
            prefix,
            threads,
            shutdown_grace,
            shutdown_delay,
            header_timeout,
            max_connections,
            upgrade_sock,
            pid_file,
            trusted_proxies: Trusted(trusted),
            tls,
            admin_listen,
            admin_token,
        })
    }

    /// An http(s) origin (scheme, host, port) with no path, query or fragment.
    pub(super) fn origin(&mut self, key: &str, value: &str) -> Option<String> {
        let u = match url::Url::parse(value) {
            Ok(u) => u,
            Err(e) => {
                self.invalid(key, value, e);
                return None;
            }
        };
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
            self.invalid(key, value, "must be an http:// or https:// URL with a host");
            return None;
        }
        if u.path() != "/" || u.query().is_some() || u.fragment().is_some() {
            self.invalid(
                key,
                value,
                "must be an origin only (no path, query or fragment)",
            );
            return None;
        }
        Some(value.trim_end_matches('/').to_string())
    }
}
