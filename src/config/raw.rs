//! The TOML file as written: every key optional here, so that validation can report all
//! missing and bad keys at once instead of stopping at the first.

use serde::Deserialize;

use crate::secret::SecretSource;

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    /// `[loopwise]` (one school) or `[[loopwise]]` (several): read as a value and
    /// deserialized per table in validation, so unknown keys are still reported.
    pub loopwise: Option<toml::Value>,
    #[serde(default)]
    pub session: RawSession,
    #[serde(default)]
    pub cache: RawCache,
    pub redis: Option<RawRedis>,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawCache {
    pub ttl: Option<String>,
    pub negative_ttl: Option<String>,
    pub max_entries: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawServer {
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub prefix: Option<String>,
    pub threads: Option<i64>,
    pub shutdown_grace: Option<String>,
    pub shutdown_delay: Option<String>,
    pub upgrade_sock: Option<String>,
    pub pid_file: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub admin_listen: Option<String>,
    pub admin_token: Option<crate::secret::SecretSource>,
    pub tls: Option<RawTls>,
    pub header_timeout: Option<String>,
    pub max_connections: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawTls {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

/// `upstream = "url"` or `upstream = ["url", "url"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawUpstreams {
    One(String),
    Many(Vec<String>),
}

/// `loopwise = "north"` or `loopwise = ["north", "south"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawNames {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawHealthCheck {
    pub path: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy_threshold: Option<i64>,
    pub unhealthy_threshold: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawLoopwise {
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretSource>,
    pub scopes: Option<Vec<String>>,
    pub registration_file: Option<String>,
    pub client_name: Option<String>,
    pub registration_check: Option<String>,
    pub timeout: Option<String>,
    pub ca_file: Option<String>,
    pub allow_http: Option<bool>,
    pub jwt_secret: Option<SecretSource>,
    pub school_id: Option<toml::Value>,
    pub audience: Option<RawNames>,
    pub claims: Option<RawClaims>,
    pub opaque_tokens: Option<bool>,
    pub authorize_params: Option<std::collections::BTreeMap<String, String>>,
}

/// `claims = { roles = "…", school = "…", email = "…", name = "…" }`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawClaims {
    pub roles: Option<String>,
    pub school: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawSession {
    pub secrets: Option<Vec<SecretSource>>,
    pub cookie_name: Option<String>,
    pub lifetime: Option<String>,
    pub refresh_before: Option<String>,
    pub refresh_grace: Option<String>,
    pub store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRoute {
    pub name: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub upstream: Option<RawUpstreams>,
    pub rewrite: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub roles: Option<Vec<String>>,
    pub schools: Option<Vec<toml::Value>>,
    /// The school(s) whose users the route accepts, by `[[loopwise]]` name.
    pub loopwise: Option<RawNames>,
    pub skip_auth_methods: Option<Vec<String>>,
    pub health_check: Option<RawHealthCheck>,
    pub auth: Option<String>,
    pub strip_prefix: Option<bool>,
    pub preserve_host: Option<bool>,
    pub ca_file: Option<String>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub accept_bearer: Option<bool>,
    pub allow_path_params: Option<bool>,
    pub case_insensitive: Option<bool>,
    pub pass_authorization: Option<bool>,
}

/// `[redis]`: the store replicas share.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRedis {
    pub url: Option<String>,
    pub sentinel: Option<RawSentinel>,
    pub cluster: Option<Vec<String>>,
    pub password: Option<SecretSource>,
    pub ca_file: Option<String>,
    pub key_prefix: Option<String>,
    pub timeout: Option<String>,
}

/// `redis.sentinel`: the master's name and the Sentinels that know where it is.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawSentinel {
    pub master: Option<String>,
    #[serde(default)]
    pub nodes: Vec<String>,
}
