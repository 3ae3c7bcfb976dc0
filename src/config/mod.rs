//! Configuration: TOML → [`RawConfig`](raw::RawConfig) → validated [`Config`].
//!
//! Parsing and validation are separate steps. Validation collects every problem with its
//! key path (`routes[1].upstream: ...`) so an operator fixes them all in one go, and
//! unknown keys are errors (a typo must not silently fall back to a default).

mod raw;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::secret::{Secret, SecretSource};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;

use crate::policy::authz::Requirements;
use crate::wire::forwarded::{Cidr, Trusted};
use crate::wire::host::HostPattern;

use crate::oauth::scope;

/// Default for `server.max_connections`: far above what one replica serves, low enough
/// that a connection flood cannot exhaust memory (each idle connection costs ~45 KB).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Minimum decoded length of a session secret.
pub const MIN_SESSION_SECRET_BYTES: usize = 32;

/// One problem, at one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// One line per error, whatever the file held: control characters in a key or a
    /// quoted value (a newline, an ANSI escape) are escaped so that a config cannot forge
    /// extra lines in `loopgate check`'s output or in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, &self.key)?;
        f.write_str(": ")?;
        write_escaped(f, &self.message)
    }
}

fn write_escaped(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    for c in s.chars() {
        if c.is_control() {
            write!(f, "{}", c.escape_default())?;
        } else {
            write!(f, "{c}")?;
        }
    }
    Ok(())
}

/// Every problem found in a config, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// Whether some error is about `key` (tests and tooling).
    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|e| e.key == key)
    }
}

/// How a route authenticates its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// Browser sessions: anonymous navigations are sent to Loopwise to log in.
    Login,
    /// No authentication; spoofed identity headers are still stripped.
    Public,
    /// API clients with their own Loopwise token (`Authorization: Bearer`); never redirects.
    Api,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Origin browsers use, without a trailing slash.
    pub public_url: String,
    /// Whether `public_url` is https (cookies get `Secure` and `__Host-`).
    pub secure: bool,
    pub prefix: String,
    pub threads: usize,
    pub shutdown_grace: Duration,
    /// On SIGTERM, how long `/readyz` says 503 while the listeners still accept, so load
    /// balancers stop sending before they are closed.
    pub shutdown_delay: Duration,
    /// The Unix socket a graceful binary upgrade hands the listening sockets over.
    pub upgrade_sock: PathBuf,
    /// Written by `loopgate run --daemon` (systemd `Type=forking` + `PIDFile=`).
    pub pid_file: PathBuf,
    /// Proxies whose `X-Forwarded-*` headers are believed (none by default).
    pub trusted_proxies: Trusted,
    /// TLS (and HTTP/2) on the proxy listener.
    pub tls: Option<TlsConfig>,
    /// The admin listener: /metrics, /healthz, /readyz.
    pub admin_listen: SocketAddr,
    /// Deadline for receiving a request's whole header, from the moment the gateway waits
    /// for it (slowloris: a per-read timeout alone lets a client trickle for ever).
    pub header_timeout: Duration,
    /// Cap on concurrent downstream connections; further ones are refused at once.
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Active HTTP health checks of a route's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: usize,
    pub unhealthy_threshold: usize,
}

impl ServerConfig {
    /// The OAuth redirect URI: byte-identical in authorize and token requests.
    pub fn callback_url(&self) -> String {
        format!("{}{}/callback", self.public_url, self.prefix)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoopwiseConfig {
    pub issuer: String,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub scopes: Vec<String>,
    pub registration_file: PathBuf,
    pub client_name: String,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
    /// HS256 secret for validating Bearer tokens locally (no call to Loopwise).
    pub jwt_secret: Option<Secret>,
    /// When set, Bearer tokens must belong to this school (sessions are not checked:
    /// a route's `schools` restricts them).
    pub school_id: Option<String>,
    /// When set, locally validated tokens must name it in `aud`.
    pub audience: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Decoded secrets; the first seals, all open.
    pub secrets: Vec<Vec<u8>>,
    /// The full cookie name, `__Host-` prefixed when served over https.
    pub cookie_name: String,
    pub lifetime: Duration,
    /// Refresh when the access token expires within this long.
    pub refresh_before: Duration,
    /// How long a refresh's result is remembered for requests still carrying the
    /// pre-refresh cookie (served the new tokens, no second refresh).
    pub refresh_grace: Duration,
}

/// The validated-token cache in front of Bearer validation.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Upper bound on how long a validation is trusted (a revoked token keeps working
    /// this long at most).
    pub ttl: Duration,
    /// How long an invalid token is remembered as invalid.
    pub negative_ttl: Duration,
    pub max_entries: u64,
}

/// An upstream URL split into what a connection needs; resolved to addresses at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Upstream {
    /// The `Host` header value for this upstream (port omitted when default).
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub host: HostPattern,
    pub path: String,
    /// Backends, balanced round-robin. Empty: a policy-only route for forward-auth.
    pub upstreams: Vec<Upstream>,
    /// Replaces the route's path prefix upstream (e.g. `/v2/`).
    pub rewrite: Option<String>,
    pub requirements: Requirements,
    /// Methods proxied without authentication (e.g. CORS preflight `OPTIONS`).
    pub skip_auth_methods: Vec<http::Method>,
    pub health_check: Option<HealthCheckConfig>,
    pub auth: AuthKind,
    pub strip_prefix: bool,
    pub preserve_host: bool,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// On a `login` route, also accept a client's own Bearer token.
    pub accept_bearer: bool,
    /// Accept `;params` in path segments (`;jsessionid=`); policy matches the path without
    /// them. Off: such paths are refused, as application servers read them differently.
    pub allow_path_params: bool,
    /// Match the route's path prefix ignoring ASCII case, for upstreams that ignore case.
    pub case_insensitive: bool,
    /// On a `public` route, forward the client's `Authorization` (removed otherwise).
    pub pass_authorization: bool,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: crate::logging::LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `loopgate=debug,info`.
    pub level: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub log: LogConfig,
    pub server: ServerConfig,
    pub loopwise: LoopwiseConfig,
    pub session: SessionConfig,
    pub cache: CacheConfig,
    pub routes: Vec<RouteConfig>,
}

/// Reads and validates the config file at `path`, with secrets from the process env.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            key: path.display().to_string(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse(&text, &base, &|k| std::env::var(k).ok())
}

/// Parses and validates config text. `base_dir` anchors relative paths; `env` looks up
/// environment variables (injected so that tests stay pure).
pub fn parse(
    text: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let de = toml::Deserializer::new(text);
    let raw: raw::RawConfig = match serde_ignored::deserialize(de, |path| {
        errors.push(ConfigError {
            key: key_path(&path),
            message: "unknown key".into(),
        })
    }) {
        Ok(raw) => raw,
        Err(e) => {
            errors.push(ConfigError {
                key: "(syntax)".into(),
                message: e.to_string().trim().replace('\n', " "),
            });
            return Err(ConfigErrors(errors));
        }
    };
    let mut v = Validator {
        errors,
        env,
        base_dir,
    };
    let config = v.config(raw);
    if v.errors.is_empty() {
        Ok(config.expect("no errors means a complete config"))
    } else {
        Err(ConfigErrors(v.errors))
    }
}

struct Validator<'a> {
    errors: Vec<ConfigError>,
    env: &'a dyn Fn(&str) -> Option<String>,
    base_dir: &'a Path,
}

impl Validator<'_> {
    fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            key: key.into(),
            message: message.into(),
        });
    }

    fn invalid(&mut self, key: &str, value: &str, reason: impl fmt::Display) {
        self.err(key, format!("`{value}` is not valid: {reason}"));
    }

    fn duration(&mut self, key: &str, value: Option<&str>, default: &str) -> Duration {
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
    fn duration_or_zero(&mut self, key: &str, value: Option<&str>, default: &str) -> Duration {
        let value = value.unwrap_or(default);
        crate::duration::parse(value).unwrap_or_else(|e| {
            self.err(key, e.to_string());
            Duration::ZERO
        })
    }

    fn path(&mut self, key: &str, value: Option<&str>, must_exist: bool) -> Option<PathBuf> {
        let p = self.base_dir.join(value?);
        if must_exist && !p.is_file() {
            self.err(key, format!("file `{}` does not exist", p.display()));
        }
        Some(p)
    }

    fn config(&mut self, raw: raw::RawConfig) -> Option<Config> {
        let server = self.server(raw.server);
        let loopwise = self.loopwise(raw.loopwise);
        let session = self.session(raw.session, server.as_ref().is_some_and(|s| s.secure));
        let routes = self.routes(raw.routes, server.as_ref().map(|s| s.prefix.as_str()));
        let cache = self.cache(raw.cache);
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
            loopwise: loopwise?,
            session: session?,
            cache,
            routes,
        })
    }

    fn cache(&mut self, raw: raw::RawCache) -> CacheConfig {
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

    fn server(&mut self, raw: raw::RawServer) -> Option<ServerConfig> {
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
        })
    }

    /// An http(s) origin (scheme, host, port) with no path, query or fragment.
    fn origin(&mut self, key: &str, value: &str) -> Option<String> {
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

    fn loopwise(&mut self, raw: raw::RawLoopwise) -> Option<LoopwiseConfig> {
        let issuer = match raw.issuer {
            None => {
                self.err(
                    "loopwise.issuer",
                    "is required (the school's origin, e.g. https://demo.loopwise.com)",
                );
                None
            }
            Some(i) => self.origin("loopwise.issuer", &i),
        };
        if let Some(i) = &issuer {
            let host = url::Url::parse(i)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default();
            let loopback = host == "localhost"
                || host
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if i.starts_with("http://") && !loopback && !raw.allow_http.unwrap_or(false) {
                self.invalid(
                    "loopwise.issuer",
                    i,
                    "must be https (http is allowed for loopback addresses, or set loopwise.allow_http = true)",
                );
            }
        }
        if let Some(id) = &raw.client_id {
            if id.is_empty() || id.chars().any(|c| c.is_control() || c == ' ') {
                self.invalid(
                    "loopwise.client_id",
                    id,
                    "must be a non-empty id without spaces",
                );
            }
        }
        let client_secret = match &raw.client_secret {
            None => None,
            Some(src) => {
                if raw.client_id.is_none() {
                    self.err(
                        "loopwise.client_secret",
                        "needs loopwise.client_id (dynamically registered clients are public)",
                    );
                }
                match src.resolve(self.env, self.base_dir) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        self.err("loopwise.client_secret", e);
                        None
                    }
                }
            }
        };
        let scopes = raw.scopes.unwrap_or_else(|| vec!["read".into()]);
        if scopes.is_empty() {
            self.err("loopwise.scopes", "must list at least one scope");
        }
        for (i, s) in scopes.iter().enumerate() {
            if !scope::is_valid_token(s) {
                self.invalid(&format!("loopwise.scopes[{i}]"), s, "not a scope token");
            }
        }
        let registration_file = self
            .path(
                "loopwise.registration_file",
                Some(
                    raw.registration_file
                        .as_deref()
                        .unwrap_or("loopgate-registration.json"),
                ),
                false,
            )
            .unwrap_or_default();
        let timeout = self.duration("loopwise.timeout", raw.timeout.as_deref(), "10s");
        let ca_file = self.path("loopwise.ca_file", raw.ca_file.as_deref(), true);
        let jwt_secret = match &raw.jwt_secret {
            None => None,
            Some(src) => match src.resolve(self.env, self.base_dir) {
                Ok(s) if s.expose().len() >= 16 => Some(s),
                Ok(_) => {
                    self.err(
                        "loopwise.jwt_secret",
                        "is too short to be an HS256 secret (at least 16 bytes)",
                    );
                    None
                }
                Err(e) => {
                    self.err("loopwise.jwt_secret", e);
                    None
                }
            },
        };
        let audience = match raw.audience {
            Some(a) if a.trim().is_empty() => {
                self.invalid("loopwise.audience", &a, "must not be empty");
                None
            }
            a => a,
        };
        let school_id = match raw.school_id {
            None => None,
            Some(toml::Value::String(s)) if !s.is_empty() => Some(s),
            Some(toml::Value::Integer(n)) => Some(n.to_string()),
            Some(other) => {
                self.invalid(
                    "loopwise.school_id",
                    &other.to_string(),
                    "expected the school id, e.g. 4242",
                );
                None
            }
        };
        Some(LoopwiseConfig {
            issuer: issuer?,
            client_id: raw.client_id,
            client_secret,
            scopes,
            registration_file,
            client_name: raw.client_name.unwrap_or_else(|| "Loopgate".into()),
            timeout,
            ca_file,
            jwt_secret,
            school_id,
            audience,
        })
    }

    fn session(&mut self, raw: raw::RawSession, secure: bool) -> Option<SessionConfig> {
        let mut secrets = Vec::new();
        match raw.secrets {
            None => self.err(
                "session.secrets",
                "is required: base64 of at least 32 random bytes, e.g. [{ env = \"LOOPGATE_SESSION_SECRET\" }] (generate with: head -c 32 /dev/urandom | base64)",
            ),
            Some(list) if list.is_empty() => self.err("session.secrets", "must list at least one secret"),
            Some(list) => {
                for (i, src) in list.iter().enumerate() {
                    let key = format!("session.secrets[{i}]");
                    match src.resolve(self.env, self.base_dir) {
                        Err(e) => self.err(&key, e),
                        Ok(s) => match decode_session_secret(s.expose()) {
                            Ok(bytes) => secrets.push(bytes),
                            Err(e) => self.err(&key, e),
                        },
                    }
                }
            }
        }
        let name = raw.cookie_name.unwrap_or_else(|| "loopgate_session".into());
        let name_ok = !name.is_empty()
            && !name.starts_with("__")
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            self.invalid(
                "session.cookie_name",
                &name,
                "letters, digits, `_` and `-` only, not starting with `__` (the __Host- prefix is added for https)",
            );
        }
        let lifetime = self.duration("session.lifetime", raw.lifetime.as_deref(), "7d");
        let refresh_before = self.duration(
            "session.refresh_before",
            raw.refresh_before.as_deref(),
            "60s",
        );
        let refresh_grace =
            self.duration("session.refresh_grace", raw.refresh_grace.as_deref(), "5m");
        let cookie_name = if secure {
            format!("__Host-{name}")
        } else {
            name
        };
        (!secrets.is_empty()).then_some(SessionConfig {
            secrets,
            cookie_name,
            lifetime,
            refresh_before,
            refresh_grace,
        })
    }

    fn routes(&mut self, raw: Vec<raw::RawRoute>, prefix: Option<&str>) -> Vec<RouteConfig> {
        if raw.is_empty() {
            self.err("routes", "at least one [[routes]] entry is required");
        }
        let mut out: Vec<RouteConfig> = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            let k = |f: &str| format!("routes[{i}].{f}");
            let name = match r.name {
                None => {
                    self.err(k("name"), "is required");
                    String::new()
                }
                Some(n) => {
                    let ok = !n.is_empty()
                        && n.len() <= 64
                        && n.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if !ok {
                        self.invalid(
                            &k("name"),
                            &n,
                            "letters, digits, `_` and `-` only (it becomes a metric label)",
                        );
                    } else if out.iter().any(|o| o.name == n) {
                        self.invalid(&k("name"), &n, "another route has this name");
                    }
                    n
                }
            };
            let host = match HostPattern::parse(r.host.as_deref()) {
                Ok(h) => h,
                Err(e) => {
                    self.invalid(&k("host"), r.host.as_deref().unwrap_or(""), e);
                    HostPattern::Any
                }
            };
            let path = match r.path {
                None => {
                    self.err(k("path"), "is required");
                    String::from("/")
                }
                Some(p) => {
                    if !p.starts_with('/')
                        || p.contains(['?', '#', '%', '\\'])
                        || p.bytes().any(|b| b.is_ascii_control() || b == b' ')
                    {
                        self.invalid(&k("path"), &p, "must be a plain path starting with `/` (no query, `%`, `\\` or spaces)");
                    } else if !crate::wire::path::is_normalized(&p) {
                        self.invalid(
                            &k("path"),
                            &p,
                            "must already be normalised (no `//`, `.` or `..` segments)",
                        );
                    } else if out.iter().any(|o| {
                        o.host == host && o.path.trim_end_matches('/') == p.trim_end_matches('/')
                    }) {
                        self.invalid(
                            &k("path"),
                            &p,
                            "another route has the same host and path (ties are ambiguous)",
                        );
                    }
                    if let Some(prefix) = prefix {
                        if crate::wire::path::under_prefix(&p, prefix) {
                            self.invalid(
                                &k("path"),
                                &p,
                                format!("overlaps the gateway's own endpoints under `{prefix}`"),
                            );
                        }
                    }
                    p
                }
            };
            let urls = match r.upstream {
                // No upstream: a policy-only route, answered by forward-auth (`{prefix}/auth`).
                None => Vec::new(),
                Some(raw::RawUpstreams::One(u)) => vec![(k("upstream"), u)],
                Some(raw::RawUpstreams::Many(list)) => {
                    if list.is_empty() {
                        self.err(k("upstream"), "the list is empty");
                    }
                    list.into_iter()
                        .enumerate()
                        .map(|(j, u)| (format!("routes[{i}].upstream[{j}]"), u))
                        .collect()
                }
            };
            let upstreams: Vec<Upstream> = urls
                .iter()
                .filter_map(|(key, u)| self.upstream(key, u))
                .collect();
            if upstreams.iter().any(|u| u.tls) && upstreams.iter().any(|u| !u.tls) {
                self.err(k("upstream"), "mixes http and https backends");
            }
            let rewrite = match r.rewrite {
                None => None,
                Some(rw) => {
                    if !rw.starts_with('/') || !crate::wire::path::is_normalized(&rw) {
                        self.invalid(
                            &k("rewrite"),
                            &rw,
                            "must be a normalised path starting with `/`, e.g. /v2/",
                        );
                    }
                    if r.strip_prefix.is_some() {
                        self.err(
                            k("rewrite"),
                            "replaces the prefix itself; do not combine it with strip_prefix",
                        );
                    }
                    Some(rw)
                }
            };
            let scopes = r.scopes.unwrap_or_default();
            for (j, sc) in scopes.iter().enumerate() {
                if !scope::is_valid_token(sc) {
                    self.invalid(&format!("routes[{i}].scopes[{j}]"), sc, "not a scope token");
                }
            }
            let roles = r.roles.unwrap_or_default();
            let schools: Vec<String> = r
                .schools
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .filter_map(|(j, v)| match v {
                    toml::Value::String(s) if !s.is_empty() => Some(s),
                    toml::Value::Integer(n) => Some(n.to_string()),
                    other => {
                        self.invalid(
                            &format!("routes[{i}].schools[{j}]"),
                            &other.to_string(),
                            "expected a school id",
                        );
                        None
                    }
                })
                .collect();
            let mut skip_auth_methods = Vec::new();
            for (j, m) in r.skip_auth_methods.unwrap_or_default().iter().enumerate() {
                match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                    Ok(method) if m.bytes().all(|b| b.is_ascii_alphabetic()) => {
                        skip_auth_methods.push(method)
                    }
                    _ => self.invalid(
                        &format!("routes[{i}].skip_auth_methods[{j}]"),
                        m,
                        "not an HTTP method",
                    ),
                }
            }
            let health_check = r.health_check.map(|h| {
                let hk = |f: &str| format!("routes[{i}].health_check.{f}");
                let path = h.path.unwrap_or_else(|| "/".into());
                if !path.starts_with('/') {
                    self.invalid(&hk("path"), &path, "must start with `/`");
                }
                let threshold = |v: &mut Self, f: &str, n: Option<i64>, d: usize| match n {
                    None => d,
                    Some(n) if (1..=100).contains(&n) => n as usize,
                    Some(n) => {
                        v.invalid(&hk(f), &n.to_string(), "must be between 1 and 100");
                        d
                    }
                };
                HealthCheckConfig {
                    interval: self.duration(&hk("interval"), h.interval.as_deref(), "5s"),
                    timeout: self.duration(&hk("timeout"), h.timeout.as_deref(), "2s"),
                    healthy_threshold: threshold(self, "healthy_threshold", h.healthy_threshold, 2),
                    unhealthy_threshold: threshold(
                        self,
                        "unhealthy_threshold",
                        h.unhealthy_threshold,
                        3,
                    ),
                    path,
                }
            });
            let auth = match r.auth.as_deref() {
                None | Some("login") => AuthKind::Login,
                Some("public") => AuthKind::Public,
                Some("api") => AuthKind::Api,
                Some(other) => {
                    self.invalid(&k("auth"), other, "expected `login`, `api` or `public`");
                    AuthKind::Login
                }
            };
            if r.pass_authorization.is_some() && auth != AuthKind::Public {
                self.err(k("pass_authorization"), "only applies to `auth = \"public\"` routes (`login` routes inject the session's token, `api` routes forward the client's)");
            }
            if r.accept_bearer.is_some() && auth != AuthKind::Login {
                self.err(k("accept_bearer"), "only applies to `auth = \"login\"` routes (`api` routes always take Bearer tokens)");
            }
            let ca_file = self.path(&k("ca_file"), r.ca_file.as_deref(), true);
            let connect_timeout =
                self.duration(&k("connect_timeout"), r.connect_timeout.as_deref(), "5s");
            let read_timeout = self.duration(&k("read_timeout"), r.read_timeout.as_deref(), "60s");
            if health_check.is_some() && urls.is_empty() {
                self.err(k("health_check"), "needs an upstream to check");
            }
            if urls.len() == upstreams.len() {
                if auth == AuthKind::Public
                    && !(scopes.is_empty() && roles.is_empty() && schools.is_empty())
                {
                    self.err(
                        k("auth"),
                        "a public route cannot require scopes, roles or schools",
                    );
                }
                out.push(RouteConfig {
                    name,
                    host,
                    path,
                    upstreams,
                    rewrite,
                    requirements: Requirements {
                        scopes,
                        roles,
                        schools,
                    },
                    skip_auth_methods,
                    health_check,
                    auth,
                    strip_prefix: r.strip_prefix.unwrap_or(false),
                    preserve_host: r.preserve_host.unwrap_or(true),
                    ca_file,
                    connect_timeout,
                    read_timeout,
                    accept_bearer: r.accept_bearer.unwrap_or(false),
                    allow_path_params: r.allow_path_params.unwrap_or(false),
                    case_insensitive: r.case_insensitive.unwrap_or(false),
                    pass_authorization: r.pass_authorization.unwrap_or(false),
                });
            }
        }
        out
    }

    fn upstream(&mut self, key: &str, value: &str) -> Option<Upstream> {
        let u = match url::Url::parse(value) {
            Ok(u) => u,
            Err(e) => {
                self.invalid(key, value, e);
                return None;
            }
        };
        let tls = match u.scheme() {
            "http" => false,
            "https" => true,
            _ => {
                self.invalid(key, value, "must be http:// or https://");
                return None;
            }
        };
        let Some(host) = u.host_str() else {
            self.invalid(key, value, "has no host");
            return None;
        };
        if u.path() != "/"
            || u.query().is_some()
            || u.fragment().is_some()
            || !u.username().is_empty()
        {
            self.invalid(
                key,
                value,
                "must be scheme://host[:port] only (no path, query or credentials)",
            );
            return None;
        }
        Some(Upstream {
            tls,
            host: host.trim_matches(['[', ']']).to_string(),
            port: u
                .port_or_known_default()
                .unwrap_or(if tls { 443 } else { 80 }),
        })
    }
}

/// The key path of an ignored (unknown) key, written as every other message writes it:
/// `routes[0].name`. Built from the path's structure rather than its dotted `Display`,
/// so a quoted key holding a dot or only digits (`"a.b"`, `"0"`) is not misread as
/// nesting or an index; such keys are shown quoted, as TOML would need them.
fn key_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => {
            let parent = key_path(parent);
            let bare = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            let key = if bare {
                key.clone()
            } else {
                format!("{key:?}")
            };
            if parent.is_empty() {
                key
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

/// A session secret is base64 (standard or URL-safe, padded or not) of ≥ 32 bytes.
pub fn decode_session_secret(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    let bytes = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(s).ok())
        .ok_or_else(|| {
            "is not base64 (generate one with: head -c 32 /dev/urandom | base64)".to_string()
        })?;
    if bytes.len() < MIN_SESSION_SECRET_BYTES {
        return Err(format!(
            "decodes to {} bytes; at least {MIN_SESSION_SECRET_BYTES} random bytes are required",
            bytes.len()
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
