//! The Loopwise emulator: a strict, in-memory Loopwise school that tests,
//! the demo and developers integrating with Loopwise can run locally.
//!
//! Like Loopwise's front servers, it refuses over-long input before any endpoint runs: a
//! query string over 8192 bytes gets 414, any parameter (query or form) over 2048 bytes
//! 400 `invalid_request`.
//!
//! Start it in-process with [`Emulator::start`] (port 0 is fine), read its counters with
//! [`EmulatorHandle::stats`], move its clock with [`EmulatorHandle::advance_clock`].

mod error;
mod http;
mod pages;
mod params;
mod stats;
mod store;
mod users;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use error::{ErrorCode, OAuthError};
pub use stats::Stats;
pub use store::{AccessClaims, TokenResponse};
pub use users::{DemoUser, DEFAULT_AUTO_USER, USERS};

use http::{Clock, Shared};
use store::{Client, Settings, SigningKey, Store};

/// A pre-registered client, written `ID[:SECRET]=REDIRECT_URI` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSpec {
    pub id: String,
    pub secret: Option<String>,
    pub redirect_uri: String,
}

impl FromStr for ClientSpec {
    type Err = EmulatorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| EmulatorError::ClientSpec(why.to_string());
        let (who, uri) = s
            .split_once('=')
            .ok_or_else(|| bad("expected ID[:SECRET]=REDIRECT_URI"))?;
        let (id, secret) = match who.split_once(':') {
            Some((id, secret)) if !secret.is_empty() => (id, Some(secret.to_string())),
            Some(_) => return Err(bad("the secret after `:` is empty")),
            None => (who, None),
        };
        if id.is_empty() {
            return Err(bad("the client id is empty"));
        }
        let parsed = url::Url::parse(uri).map_err(|_| bad("the redirect URI is not absolute"))?;
        if !matches!(parsed.scheme(), "http" | "https") || uri.contains('#') {
            return Err(bad("the redirect URI must be http(s) without a fragment"));
        }
        Ok(ClientSpec {
            id: id.to_string(),
            secret,
            redirect_uri: uri.to_string(),
        })
    }
}

/// One of several emulated schools, written `NAME=ISSUER` on the command line
/// (`--school north=http://127.0.0.1:8082`): it listens on the issuer's address and
/// serves its endpoints at the root, so the issuer has no path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchoolSpec {
    /// The school's subdomain in token responses (`school_subdomain`).
    pub name: String,
    pub issuer: String,
    pub listen: SocketAddr,
}

impl FromStr for SchoolSpec {
    type Err = EmulatorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| EmulatorError::SchoolSpec(format!("`{s}`: {why}"));
        let (name, issuer) = s
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=ISSUER"))?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("the name must be letters, digits, `-` or `_`"));
        }
        let issuer =
            normalize_issuer(issuer).map_err(|_| bad("the issuer is not an http(s) URL"))?;
        let u = url::Url::parse(&issuer).map_err(|_| bad("the issuer is not an http(s) URL"))?;
        if u.path() != "/" {
            return Err(bad(
                "the issuer must not have a path (endpoints are served at the root)",
            ));
        }
        let port = u
            .port_or_known_default()
            .ok_or_else(|| bad("the issuer has no port"))?;
        let ip = match u.host() {
            Some(url::Host::Ipv4(ip)) => std::net::IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => std::net::IpAddr::V6(ip),
            Some(url::Host::Domain("localhost")) => std::net::IpAddr::from([127, 0, 0, 1]),
            _ => return Err(bad("the issuer's host must be an IP address or localhost (it is where the school listens)")),
        };
        Ok(SchoolSpec {
            name: name.to_string(),
            issuer,
            listen: SocketAddr::new(ip, port),
        })
    }
}

/// Everything `loopgate emulator` can be told.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub listen: SocketAddr,
    /// Defaults to `http://<bound address>`.
    pub issuer: Option<String>,
    pub access_token_ttl: Duration,
    pub code_ttl: Duration,
    /// HS256 secret for access tokens; random per run when absent.
    pub jwt_secret: Option<String>,
    pub clients: Vec<ClientSpec>,
    pub auto_approve: bool,
    /// Which demo user `auto_approve` signs in (default: the school admin).
    pub auto_user: Option<String>,
    pub school_id: u64,
    pub school_subdomain: String,
    /// Bytes of an extra `padding` claim in every access token (0: none), for sessions
    /// as large as those of servers whose tokens carry many groups or roles: the
    /// benchmark's chunked session cookie.
    pub access_token_padding: usize,
    /// Speak OpenID Connect too: an ES256 `id_token` on code exchanges granted `openid`, a
    /// JWKS and `/.well-known/openid-configuration`. (Newer Loopwise schools grant
    /// `openid`/`profile`/`email` either way; without this they issue no ID token.)
    pub openid: bool,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            issuer: None,
            access_token_ttl: Duration::from_secs(7200),
            code_ttl: Duration::from_secs(60),
            jwt_secret: None,
            clients: Vec::new(),
            auto_approve: false,
            auto_user: None,
            school_id: 4242,
            school_subdomain: "demo".into(),
            access_token_padding: 0,
            openid: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("--client: {0}")]
    ClientSpec(String),
    #[error("--school: {0}")]
    SchoolSpec(String),
    #[error("--issuer: `{0}` must be an absolute http(s) URL without query or fragment")]
    Issuer(String),
    #[error("--auto-user: no demo user `{0}` (known: ada, grace, alan)")]
    AutoUser(String),
    #[error("--auto-user needs --auto-approve")]
    AutoUserWithoutAutoApprove,
    #[error("--access-token-ttl and --code-ttl must be at least one second")]
    ZeroTtl,
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct Emulator;

impl Emulator {
    /// Validates `config`, binds its listener and serves in the background.
    pub async fn start(config: EmulatorConfig) -> Result<EmulatorHandle, EmulatorError> {
        let auto_user = match (&config.auto_user, config.auto_approve) {
            (Some(_), false) => return Err(EmulatorError::AutoUserWithoutAutoApprove),
            (Some(sub), true) => {
                Some(users::find(sub).ok_or_else(|| EmulatorError::AutoUser(sub.clone()))?)
            }
            (None, true) => users::find(DEFAULT_AUTO_USER),
            (None, false) => None,
        };
        if config.access_token_ttl.as_secs() == 0 || config.code_ttl.as_secs() == 0 {
            return Err(EmulatorError::ZeroTtl);
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| EmulatorError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: config.listen,
                source,
            })?;
        let issuer = match &config.issuer {
            Some(i) => normalize_issuer(i)?,
            None => format!("http://{addr}"),
        };
        let jwt_secret = match &config.jwt_secret {
            Some(s) => s.as_bytes().to_vec(),
            None => crate::random::bytes::<32>().to_vec(),
        };
        let mut store = Store::new(Settings {
            issuer: issuer.clone(),
            jwt_secret,
            access_token_ttl: config.access_token_ttl.as_secs(),
            code_ttl: config.code_ttl.as_secs(),
            school_id: config.school_id,
            school_subdomain: config.school_subdomain.clone(),
            access_token_padding: config.access_token_padding,
            openid: config.openid.then(|| Arc::new(SigningKey::generate())),
        });
        for c in &config.clients {
            store.add_client(Client::preregistered(
                &c.id,
                c.secret.as_deref(),
                &c.redirect_uri,
            ));
        }
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            counters: Default::default(),
            clock: Clock::default(),
            auto_user,
            token_delay_ms: Default::default(),
        });
        let (tx, rx) = oneshot::channel::<()>();
        let app = http::router(shared.clone());
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "emulator server stopped");
            }
        });
        Ok(EmulatorHandle {
            url: issuer,
            addr,
            shared,
            shutdown: Some(tx),
            task,
        })
    }
}

fn normalize_issuer(raw: &str) -> Result<String, EmulatorError> {
    let bad = || EmulatorError::Issuer(raw.to_string());
    let u = url::Url::parse(raw).map_err(|_| bad())?;
    if !matches!(u.scheme(), "http" | "https") || u.query().is_some() || u.fragment().is_some() {
        return Err(bad());
    }
    Ok(raw.trim_end_matches('/').to_string())
}

/// A running emulator. Dropping it stops the server too.
pub struct EmulatorHandle {
    url: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl EmulatorHandle {
    /// The issuer URL (also where it listens, unless `--issuer` says otherwise).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    pub fn reset_stats(&self) {
        self.shared.counters.reset();
    }

    /// Moves the emulator's clock forward: codes and tokens expire without sleeping.
    pub fn advance_clock(&self, by: Duration) {
        self.shared.clock.advance(by.as_secs());
    }

    /// Every refresh token this emulator has issued, rotated ones included (for tests
    /// that look for tokens where none may be).
    pub fn issued_refresh_tokens(&self) -> Vec<String> {
        self.shared.store().refresh_tokens()
    }

    /// Makes the token endpoint wait `by` before it looks at a request (zero: answer at
    /// once), as a slow or overloaded school would.
    pub fn set_token_delay(&self, by: Duration) {
        self.shared
            .token_delay_ms
            .store(by.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Revokes every grant of a demo user, as a school admin removing the app's access
    /// would; the user's refresh tokens then get `invalid_grant`.
    pub fn revoke_user(&self, sub: &str) -> u64 {
        let n = self.shared.store().revoke_user(sub);
        self.shared.counters.event("family_revoked", n);
        n
    }

    /// Registers a client as `--client` would.
    pub fn add_client(&self, spec: &ClientSpec) {
        self.shared.store().add_client(Client::preregistered(
            &spec.id,
            spec.secret.as_deref(),
            &spec.redirect_uri,
        ));
    }

    /// Stops accepting, finishes in-flight requests, and returns when the server is gone.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_specs_parse_strictly() {
        let c: ClientSpec = "app=http://127.0.0.1:8080/cb".parse().unwrap();
        assert_eq!(c.secret, None);
        let c: ClientSpec = "app:s3cret=https://a.test/cb?x=1".parse().unwrap();
        assert_eq!(c.secret.as_deref(), Some("s3cret"));
        assert_eq!(c.redirect_uri, "https://a.test/cb?x=1");
        assert!("app".parse::<ClientSpec>().is_err());
        assert!("app:=http://a/cb".parse::<ClientSpec>().is_err());
        assert!("=http://a/cb".parse::<ClientSpec>().is_err());
        assert!("app=/cb".parse::<ClientSpec>().is_err());
        assert!("app=http://a/cb#f".parse::<ClientSpec>().is_err());
    }

    #[test]
    fn school_specs_name_a_listen_address() {
        let s: SchoolSpec = "north=http://127.0.0.1:8082/".parse().unwrap();
        assert_eq!(s.name, "north");
        assert_eq!(s.issuer, "http://127.0.0.1:8082");
        assert_eq!(s.listen, "127.0.0.1:8082".parse().unwrap());
        let s: SchoolSpec = "south_2=http://localhost:9000".parse().unwrap();
        assert_eq!(s.listen, "127.0.0.1:9000".parse().unwrap());
        for bad in [
            "north",
            "=http://127.0.0.1:1",
            "no rth=http://127.0.0.1:1",
            "north=127.0.0.1:1",
            "north=http://127.0.0.1:1/realm",
            "north=http://school.example:1",
        ] {
            assert!(bad.parse::<SchoolSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn issuer_is_normalized() {
        assert_eq!(
            normalize_issuer("https://x.test/").unwrap(),
            "https://x.test"
        );
        assert!(normalize_issuer("x.test").is_err());
        assert!(normalize_issuer("https://x.test/?a").is_err());
    }
}
