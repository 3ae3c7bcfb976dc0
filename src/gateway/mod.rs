//! The gateway's request logic, independent of pingora: who is this browser, what to do
//! with a request for a gateway endpoint, how a login starts and ends.
//! `proxy::service` translates between pingora and this module.

pub(crate) mod admission;
mod authorize;
mod bearer;
mod callback;
mod clock;
mod denial;
mod endpoints;
mod heal;
pub(crate) mod identity;
mod login;
mod operator;
mod render;
pub(crate) mod reply;
mod sessions;
mod shared;
pub(crate) mod upstream;

pub(crate) use denial::{Audience, Authenticated, Decision, Denial, Malformed};

use std::sync::Arc;

use http::{HeaderMap, Method};

pub(crate) use clock::Clock;
pub(crate) use shared::Shared;

use crate::config::Config;
use crate::gateway::reply::Reply;
use crate::oauth::{LoopwiseClient, Schools};
use crate::routes::RouteTable;
use crate::session::{cookies, Keyring, Purpose, Session};
use crate::token::cache::{Lookup, TokenCache};
use crate::token::refresh::RefreshOutcome;
use crate::token::validate::{Mode, TokenInfo};

/// Where a session-authenticated request stands.
#[derive(Debug)]
pub enum SessionAuth {
    /// No usable session: none, unreadable, ambiguous, ended, or past its lifetime.
    /// `clear` deletes the session cookies the request carried (unless the store could
    /// not be asked: a store outage is never a logout).
    Anonymous { clear: Vec<String> },
    /// Forward with this session; `set_cookies` carries a refreshed session, if any.
    Active {
        session: Box<Session>,
        set_cookies: Vec<String>,
    },
    /// The grant is dead (Loopwise refused the refresh): clear the cookies, log in again.
    Ended { clear: Vec<String> },
    /// The access token expired and Loopwise cannot be reached to refresh it.
    LoopwiseDown,
    /// The request carries a session cookie and the session store cannot be asked (a
    /// server-side store down): neither a session nor a logout.
    StoreDown,
}

/// Where a Bearer-authenticated request stands.
#[derive(Debug)]
pub enum BearerAuth {
    /// A valid token, as `token` (forwarded upstream as is); `lookup` says how the cache
    /// answered.
    Valid {
        info: Box<TokenInfo>,
        token: String,
        lookup: Lookup,
    },
    Missing,
    Invalid,
    /// Validation needs Loopwise and Loopwise cannot be reached.
    Unavailable,
}

/// What a request looks like to the decision code.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// Normalised host (`wire::host::Authority::host`), if the request named one.
    pub host: Option<&'a str>,
    /// The peer's address (the client, or a proxy in front of us).
    pub peer: Option<std::net::IpAddr>,
    /// Normalised path (see `wire::path`).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

impl RequestView<'_> {
    pub fn is_navigation(&self) -> bool {
        crate::policy::navigation::is_navigation(self.method, self.headers)
    }

    /// `path?query`, the target to come back to after a login.
    pub fn target(&self) -> String {
        match self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.to_string(),
        }
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.unwrap_or("").as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// One generation of the gateway: what derives from the config, over the process-wide
/// [`Shared`] state. A reload builds a new one over the same `shared`.
pub struct Gateway {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    /// The schools sessions and tokens belong to.
    pub schools: Schools,
    pub shared: Arc<Shared>,
    session_keys: Keyring,
    login_keys: Keyring,
    /// The session cookie's name without `__Host-` (login cookies derive from it).
    cookie_base: String,
    token_cache: Arc<TokenCache>,
    /// Per school, in the order of `schools`.
    tenants: Vec<Tenant>,
}

/// What the gateway keeps per school besides its client.
struct Tenant {
    name: String,
    /// This school's session cookie (`session.cookie_name`, or `{cookie_name}.{name}`).
    cookie_name: String,
    validation: Mode,
    /// `school_id`: Bearer tokens must name this school id.
    school_id: Option<String>,
    /// `audience`: Bearer tokens must be for one of these (empty: any).
    audience: Vec<String>,
    /// `opaque_tokens`: Bearer tokens need not be JWTs.
    opaque_tokens: bool,
    scopes: Vec<String>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("schools", &self.schools)
            .field("store", &self.shared.store.kind())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A generation over `shared` (start-up, or a reload: the same `shared` again).
    pub fn new(
        shared: Arc<Shared>,
        config: Arc<Config>,
        routes: RouteTable,
        schools: Schools,
    ) -> Gateway {
        let secrets = &config.session.secrets;
        let cookie_base = config
            .session
            .cookie_name
            .trim_start_matches("__Host-")
            .to_string();
        for school in schools.iter() {
            shared.metrics.school_series(&school.id);
        }
        let tenants = schools
            .iter()
            .map(|school| {
                let lw = config.school(&school.id);
                let validation = match lw.and_then(|lw| lw.jwt_secret.as_ref()) {
                    Some(secret) => Mode::Local {
                        key: jsonwebtoken::DecodingKey::from_secret(secret.expose().as_bytes()),
                        issuer: school.client.issuer().to_string(),
                        audience: lw.map(|lw| lw.audience.clone()).unwrap_or_default(),
                    },
                    None => Mode::Remote,
                };
                Tenant {
                    name: school.id.clone(),
                    cookie_name: school_cookie_name(&config.session.cookie_name, &school.id),
                    validation,
                    school_id: lw.and_then(|lw| lw.school_id.clone()),
                    audience: lw.map(|lw| lw.audience.clone()).unwrap_or_default(),
                    opaque_tokens: lw.is_some_and(|lw| lw.opaque_tokens),
                    scopes: lw.map(|lw| lw.scopes.clone()).unwrap_or_default(),
                }
            })
            .collect();
        let cache = &config.cache;
        Gateway {
            shared,
            token_cache: Arc::new(TokenCache::new(
                cache.ttl,
                cache.negative_ttl,
                cache.max_entries,
            )),
            tenants,
            session_keys: Keyring::new(Purpose::SessionCookie, secrets),
            login_keys: Keyring::new(Purpose::LoginState, secrets),
            routes,
            schools,
            cookie_base,
            config,
        }
    }

    fn session_attrs(&self) -> cookies::Attributes {
        cookies::Attributes {
            path: "/".into(),
            secure: self.config.server.secure,
        }
    }

    fn login_attrs(&self) -> cookies::Attributes {
        cookies::Attributes {
            path: format!("{}/callback", self.config.server.prefix),
            secure: self.config.server.secure,
        }
    }

    /// Login cookies: `__Secure-` (not `__Host-`, which demands `Path=/`) over https.
    fn login_cookie_base(&self) -> String {
        if self.config.server.secure {
            format!("__Secure-{}", self.cookie_base)
        } else {
            self.cookie_base.clone()
        }
    }

    /// Whether a cookie name is one of the gateway's (never forwarded upstream).
    pub fn is_our_cookie(&self, name: &str) -> bool {
        let bare = name
            .trim_start_matches("__Host-")
            .trim_start_matches("__Secure-");
        bare == self.cookie_base
            || bare
                .strip_prefix(self.cookie_base.as_str())
                .is_some_and(|rest| rest.starts_with('_') || rest.starts_with('.'))
    }

    /// Handles a request under the gateway prefix.
    pub async fn endpoint(&self, view: &RequestView<'_>, now: u64) -> Reply {
        endpoints::handle(self, view, now).await
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.shared.admin_addr()
    }

    /// The validated-token cache (metrics, tests).
    pub fn token_cache(&self) -> &TokenCache {
        &self.token_cache
    }

    /// Which validation mode the first school's Bearer tokens use.
    pub fn validation_mode(&self) -> &'static str {
        let first = self.schools.first();
        self.tenant(&first.id)
            .map_or("pending", |t| t.validation.name(&first.client))
    }

    /// The first school's client (start-up logs, single-school tests).
    pub fn loopwise(&self) -> &LoopwiseClient {
        &self.schools.first().client
    }

    /// The per-school settings of the school named `school`.
    fn tenant(&self, school: &str) -> Option<&Tenant> {
        let school = if school.is_empty() {
            crate::oauth::DEFAULT_SCHOOL
        } else {
            school
        };
        self.tenants.iter().find(|t| t.name == school)
    }
}

/// Why a session could not be handed to the browser.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("the session store refused it: {0}")]
    Store(#[from] crate::session::store::StoreError),
    #[error("the session is too large for cookies")]
    TooLarge,
    #[error("the session's school is not configured")]
    UnknownSchool,
}

/// What a request's session cookie led to.
enum Found {
    /// A live session, and the payload its cookie carried (the store's handle on it).
    Session(Box<Session>, Vec<u8>),
    /// No cookie, or one that does not stand for a live session (clear it).
    Nothing,
    /// The store could not be asked: keep the cookie, it may be fine.
    StoreDown,
}

/// A school's session cookie: the configured name for [`crate::oauth::DEFAULT_SCHOOL`]
/// (so sessions made before schools had names stay valid), `{name}.{school}` otherwise.
fn school_cookie_name(cookie_name: &str, school: &str) -> String {
    if school == crate::oauth::DEFAULT_SCHOOL {
        cookie_name.to_string()
    } else {
        format!("{cookie_name}.{school}")
    }
}

fn outcome_name(o: &RefreshOutcome) -> &'static str {
    match o {
        RefreshOutcome::Refreshed(_) => "ok",
        RefreshOutcome::Ended => "invalid_grant",
        RefreshOutcome::ClientUnknown => "invalid_client",
        RefreshOutcome::Unavailable { .. } => "transient_error",
    }
}

#[cfg(test)]
mod tests;
