//! The gateway's request logic, independent of pingora: who is this browser, what to do
//! with a request for a gateway endpoint, how a login starts and ends.
//! `proxy::service` translates between pingora and this module.

mod clock;
mod endpoints;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method};

pub use clock::Clock;

use crate::config::Config;
use crate::login::state::{self, LoginState, LOGIN_TTL};
use crate::oauth::{pkce, LoopwiseClient};
use crate::proxy::respond::Reply;
use crate::proxy::routes::RouteTable;
use crate::session::{cookies, Keyring, Purpose, Session, SessionStore};

/// What a request looks like to the decision code.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// Normalised path (see `proxy::path`).
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

pub struct Gateway {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    pub loopwise: LoopwiseClient,
    pub clock: Clock,
    session_keys: Keyring,
    login_keys: Keyring,
    store: Arc<dyn SessionStore>,
    /// States already used on this replica, for `LOGIN_TTL` (a copied login cookie
    /// cannot complete a second login).
    consumed_states: moka::sync::Cache<[u8; 32], ()>,
    /// The session cookie's name without `__Host-` (login cookies derive from it).
    cookie_base: String,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("loopwise", &self.loopwise)
            .field("store", &self.store.kind())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    pub fn new(
        config: Arc<Config>,
        routes: RouteTable,
        loopwise: LoopwiseClient,
        store: Arc<dyn SessionStore>,
    ) -> Gateway {
        let secrets = &config.session.secrets;
        let cookie_base = config
            .session
            .cookie_name
            .trim_start_matches("__Host-")
            .to_string();
        Gateway {
            session_keys: Keyring::new(Purpose::SessionCookie, secrets),
            login_keys: Keyring::new(Purpose::LoginState, secrets),
            consumed_states: moka::sync::Cache::builder()
                .time_to_live(Duration::from_secs(LOGIN_TTL))
                .max_capacity(1_000_000)
                .build(),
            routes,
            loopwise,
            store,
            cookie_base,
            clock: Clock::default(),
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
                .is_some_and(|rest| rest.starts_with('_'))
    }

    /// The session a request's cookie carries, if any. Every failure (absent, tampered,
    /// foreign key, expired, store error) is "no session".
    pub async fn session(&self, headers: &HeaderMap, now: u64) -> Option<Session> {
        let fields = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let jar = cookies::parse(fields);
        let name = &self.config.session.cookie_name;
        let sealed = cookies::read_chunked(&jar, name)?;
        let payload = self.session_keys.open(name, &sealed).ok()?;
        match self.store.load(&payload, now).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "session store unavailable; treating as no session");
                None
            }
        }
    }

    /// `Set-Cookie` values that store `session`, replacing whatever the browser has.
    pub async fn session_cookies(
        &self,
        session: &Session,
        headers: &HeaderMap,
        now: u64,
    ) -> Result<Vec<String>, String> {
        let payload = self.store.save(session).await.map_err(|e| e.to_string())?;
        let name = &self.config.session.cookie_name;
        let sealed = self.session_keys.seal(name, &payload);
        let existing = self.existing_session_cookie_names(headers);
        let max_age = session.expires_at.saturating_sub(now);
        cookies::set_chunked(name, &sealed, &self.session_attrs(), max_age, &existing)
            .ok_or_else(|| "the session is too large for cookies".to_string())
    }

    fn existing_session_cookie_names(&self, headers: &HeaderMap) -> Vec<String> {
        let fields = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let jar = cookies::parse(fields);
        cookies::present_names(&jar, &self.config.session.cookie_name)
    }

    /// A 302 to Loopwise's authorize endpoint, with this login's sealed state cookie.
    pub fn start_login(&self, target: &str, now: u64) -> Reply {
        let target = crate::login::target::safe_target(target, &self.config.server.prefix)
            .unwrap_or_else(|| crate::login::target::DEFAULT_TARGET.to_string());
        let state_value = crate::random::token();
        let verifier = pkce::Verifier::generate();
        let url = self.loopwise.authorize_url(
            &state_value,
            &verifier.challenge(),
            &self.config.loopwise.scopes,
        );
        let name = state::cookie_name(&self.login_cookie_base(), &state_value);
        let sealed = state::seal(
            &self.login_keys,
            &name,
            &LoginState {
                state: state_value,
                verifier: verifier.secret().to_string(),
                target,
                created_at: now,
            },
        );
        let cookie = format!("{name}={sealed}; {}", self.login_attrs().render(LOGIN_TTL));
        Reply::redirect(302, &url).cookies([cookie])
    }

    /// What an unauthenticated request gets: a login for navigations, 401 otherwise.
    pub fn challenge(&self, view: &RequestView<'_>, now: u64) -> Reply {
        if view.is_navigation() {
            self.start_login(&view.target(), now)
        } else {
            Reply::unauthorized("authentication required: sign in through the gateway")
        }
    }

    /// Handles a request under the gateway prefix.
    pub async fn endpoint(&self, view: &RequestView<'_>, now: u64) -> Reply {
        endpoints::handle(self, view, now).await
    }
}
