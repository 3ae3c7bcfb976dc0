//! The validated configuration the rest of the gateway reads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::secret::{Secret, SecretSource};

use crate::policy::authz::Requirements;
use crate::wire::forwarded::Trusted;
use crate::wire::host::HostPattern;

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
    /// The admin listener: /metrics, /healthz, /readyz, and (with `admin_token`) the
    /// operator's `/sessions` endpoints.
    pub admin_listen: SocketAddr,
    /// The Bearer token `/sessions` on the admin listener wants; without it they are off.
    pub admin_token: Option<crate::secret::Secret>,
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

impl Config {
    /// The school named `name`.
    pub fn school(&self, name: &str) -> Option<&LoopwiseConfig> {
        self.schools.iter().find(|s| s.name == name)
    }
}

impl ServerConfig {
    /// The OAuth redirect URI: byte-identical in authorize and token requests.
    pub fn callback_url(&self) -> String {
        format!("{}{}/callback", self.public_url, self.prefix)
    }
}

/// One school: a `[loopwise]` table, or one of several `[[loopwise]]` tables.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopwiseConfig {
    /// The school's name (`[A-Za-z0-9_-]`): routes, logs, metrics labels and its session
    /// cookie's name use it. A single `[loopwise]` table without one is
    /// [`DEFAULT_SCHOOL`](crate::oauth::DEFAULT_SCHOOL).
    pub name: String,
    /// How the school chooser shows it (defaults to `name`).
    pub display_name: String,
    pub issuer: String,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub scopes: Vec<String>,
    pub registration_file: PathBuf,
    pub client_name: String,
    /// How often a client that registered itself asks the school whether it still knows
    /// it (RFC 7592 read), and registers again when it does not; zero: never.
    pub registration_check: Duration,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
    /// HS256 secret for validating Bearer tokens locally (no call to Loopwise).
    pub jwt_secret: Option<Secret>,
    /// When set, Bearer tokens must belong to this school (sessions are not checked:
    /// a route's `schools` restricts them).
    pub school_id: Option<String>,
    /// When not empty, a presented Bearer must name one of these in `aud` (or be issued
    /// to one, `client_id`/`azp`); a token that names none (or cannot be read) is refused.
    pub audience: Vec<String>,
    /// Accept Bearer tokens that are not JWTs (opaque reference tokens); off, anything
    /// not shaped like a JWT is refused before any call.
    pub opaque_tokens: bool,
    /// The claims that name email, name, roles and school.
    pub claims: crate::oauth::claims::ClaimNames,
    /// Extra authorize parameters (`prompt = "consent"`, `resource = …`).
    pub authorize_params: Vec<(String, String)>,
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
    /// Where sessions live (`session.store`).
    pub store: SessionStoreKind,
}

/// `session.store`: the whole session sealed in the cookie, or in Redis with the cookie
/// carrying only its id and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStoreKind {
    Cookie,
    Redis,
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
    /// The schools (by name) whose sessions and tokens the route accepts, in the order
    /// a chooser shows them; empty only on `public` routes.
    pub loopwise: Vec<String>,
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
    /// The schools users sign in at, in the order written (never empty, names unique).
    pub schools: Vec<LoopwiseConfig>,
    pub session: SessionConfig,
    pub cache: CacheConfig,
    /// `[redis]`, when replicas share state.
    pub redis: Option<RedisConfig>,
    pub routes: Vec<RouteConfig>,
}

/// `[redis]`: the Redis (or Valkey) the replicas share: one server, a Sentinel-watched
/// master, or a Cluster.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Where it is.
    pub target: RedisTarget,
    /// Overrides a password in the URL.
    pub password: Option<Secret>,
    /// CA bundle (PEM) that verifies a `rediss://` server instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Prepended to every key, so one Redis can serve several gateways.
    pub key_prefix: String,
    /// Per command: a slower answer counts as Redis being unavailable.
    pub timeout: Duration,
}

/// Exactly one of `redis.url`, `redis.sentinel`, `redis.cluster`. Every url is
/// `redis://` or `rediss://` (TLS); user and password may be in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server.
    Url(String),
    /// The master Sentinel names `master`, found by asking `nodes` (Sentinel urls); asked
    /// again after a failover.
    Sentinel { master: String, nodes: Vec<String> },
    /// Seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// Whether the data nodes speak TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        match self {
            RedisTarget::Url(u) => u.starts_with("rediss://"),
            RedisTarget::Sentinel { nodes, .. } | RedisTarget::Cluster(nodes) => {
                nodes.iter().any(|u| u.starts_with("rediss://"))
            }
        }
    }
}
