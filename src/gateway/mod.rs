//! The gateway's request logic, independent of pingora: who is this browser, what to do
//! with a request for a gateway endpoint, how a login starts and ends.
//! `proxy::service` translates between pingora and this module.

pub(crate) mod admission;
mod authorize;
mod callback;
mod clock;
mod denial;
mod endpoints;
pub(crate) mod identity;
mod operator;
mod render;
pub(crate) mod reply;
mod shared;
pub(crate) mod upstream;

pub(crate) use denial::{Audience, Authenticated, Decision, Denial, Malformed};

use std::sync::Arc;

use http::{HeaderMap, Method};

pub(crate) use clock::Clock;
pub(crate) use shared::Shared;

use crate::config::Config;
use crate::gateway::reply::Reply;
use crate::login::state::{self, LoginState, LOGIN_TTL};
use crate::oauth::{pkce, LoopwiseClient, Schools};
use crate::routes::RouteTable;
use crate::session::{cookies, Keyring, Purpose, Session};
use crate::token::cache::{Lookup, TokenCache};
use crate::token::refresh::{needs_refresh, RefreshOutcome};
use crate::token::validate::{self, Mode, TokenInfo, Verdict};

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
        info: TokenInfo,
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
    /// The schools sessions and tokens belong to (today one).
    pub schools: Schools,
    pub shared: Arc<Shared>,
    session_keys: Keyring,
    login_keys: Keyring,
    /// The session cookie's name without `__Host-` (login cookies derive from it).
    cookie_base: String,
    token_cache: Arc<TokenCache>,
    validation: Mode,
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
        loopwise: LoopwiseClient,
    ) -> Gateway {
        let secrets = &config.session.secrets;
        let cookie_base = config
            .session
            .cookie_name
            .trim_start_matches("__Host-")
            .to_string();
        let validation = match &config.loopwise.jwt_secret {
            Some(secret) => Mode::Local {
                key: jsonwebtoken::DecodingKey::from_secret(secret.expose().as_bytes()),
                issuer: loopwise.issuer().to_string(),
                audience: config.loopwise.audience.clone(),
            },
            None => Mode::Remote,
        };
        let cache = &config.cache;
        Gateway {
            shared,
            token_cache: Arc::new(TokenCache::new(
                cache.ttl,
                cache.negative_ttl,
                cache.max_entries,
            )),
            validation,
            session_keys: Keyring::new(Purpose::SessionCookie, secrets),
            login_keys: Keyring::new(Purpose::LoginState, secrets),
            routes,
            schools: Schools::single(loopwise),
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
                .is_some_and(|rest| rest.starts_with('_'))
    }

    /// The session a request's cookie carries, if any. Every failure (absent, tampered,
    /// ambiguous, foreign key, expired, ended, store error) is "no session".
    pub async fn session(&self, headers: &HeaderMap, now: u64) -> Option<Session> {
        match self.lookup_session(headers, now).await {
            Found::Session(s, _) => Some(*s),
            Found::Nothing | Found::StoreDown => None,
        }
    }

    /// Ends the request's session, if it has one (sign-out): removed from the store and
    /// recorded as ended, so every copy of its cookie is "no session" from now on.
    pub async fn end_session(&self, headers: &HeaderMap, now: u64) -> Option<Session> {
        let Found::Session(session, payload) = self.lookup_session(headers, now).await else {
            return None;
        };
        self.shared
            .revoked
            .end(&session.sid, session.expires_at, now)
            .await;
        if let Err(e) = self.shared.store.remove(&payload).await {
            tracing::warn!(error = %e, "sign-out could not remove the session from the store");
        }
        Some(*session)
    }

    /// The store payload the request's session cookie carries, if it opens.
    fn current_payload(&self, headers: &HeaderMap) -> Option<Vec<u8>> {
        let fields = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let jar = cookies::parse(fields);
        let name = &self.config.session.cookie_name;
        let sealed = cookies::read_chunked(&jar, name)?;
        self.session_keys.open(name, &sealed).ok()
    }

    async fn lookup_session(&self, headers: &HeaderMap, now: u64) -> Found {
        let Some(payload) = self.current_payload(headers) else {
            return Found::Nothing;
        };
        match self.shared.store.load(&payload, now).await {
            // A session of a school this gateway does not serve is no session here.
            Ok(Some(s))
                if self.schools.get(&s.issuer_id).is_some()
                    && !self.shared.revoked.is_ended(&s.sid, now).await =>
            {
                Found::Session(Box::new(s), payload)
            }
            Ok(_) => Found::Nothing,
            Err(e) => {
                tracing::warn!(error = %e, "session store unavailable; treating as no session");
                Found::StoreDown
            }
        }
    }

    /// The session of a request, refreshed first when its access token is (nearly) expired.
    /// One refresh per session and refresh token, however many requests race.
    pub async fn authenticate_session(&self, headers: &HeaderMap, now: u64) -> SessionAuth {
        let mut session = match self.lookup_session(headers, now).await {
            Found::Session(s, _) => *s,
            Found::StoreDown => return SessionAuth::StoreDown,
            Found::Nothing => {
                let attrs = self.session_attrs();
                let clear = self
                    .existing_session_cookie_names(headers)
                    .iter()
                    .map(|n| cookies::clear(n, &attrs))
                    .collect();
                return SessionAuth::Anonymous { clear };
            }
        };
        let Some(school) = self.schools.get(&session.issuer_id) else {
            return SessionAuth::Anonymous { clear: Vec::new() };
        };
        let client = &school.client;
        let before = self.config.session.refresh_before;
        // A remembered refresh result can itself be due (a very late pre-refresh cookie):
        // follow the chain a couple of steps at most, but call Loopwise once at most.
        let mut refreshed = false;
        for _ in 0..3 {
            if !needs_refresh(&session, now, before) {
                break;
            }
            let attempt = self.shared.refresh.refresh(client, &session, now).await;
            if attempt.performed {
                let outcome = outcome_name(&attempt.outcome);
                self.shared
                    .metrics
                    .refresh
                    .with_label_values(&[outcome])
                    .inc();
                tracing::info!(sub = %crate::wire::headers::sanitize(&session.identity.sub), outcome, "refresh");
            } else {
                self.shared.metrics.refresh_coalesced.inc();
            }
            match attempt.outcome.as_ref() {
                RefreshOutcome::Refreshed(new) => {
                    session = new.as_ref().clone();
                    refreshed = true;
                    if attempt.performed {
                        break;
                    }
                }
                RefreshOutcome::Ended => {
                    return SessionAuth::Ended {
                        clear: self.clear_session_cookies(headers),
                    }
                }
                RefreshOutcome::Unavailable { .. } => break,
            }
        }
        if session.access_expires_at <= now {
            return if session.refresh_token.is_some() {
                SessionAuth::LoopwiseDown
            } else {
                SessionAuth::Ended {
                    clear: self.clear_session_cookies(headers),
                }
            };
        }
        let set_cookies = if refreshed {
            match self.session_cookies(&session, headers, now).await {
                Ok(c) => c,
                // Signed out or revoked while the refresh was in flight.
                Err(SaveError::Store(crate::session::StoreError::Ended)) => {
                    return SessionAuth::Ended {
                        clear: self.clear_session_cookies(headers),
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot store the refreshed session");
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        SessionAuth::Active {
            session: Box::new(session),
            set_cookies,
        }
    }

    /// Validates a client's Bearer token (cached; one validation per token at a time).
    pub async fn authenticate_bearer(&self, headers: &HeaderMap, now: u64) -> BearerAuth {
        let token = match crate::wire::bearer::bearer_token(headers) {
            Ok(None) => return BearerAuth::Missing,
            Err(_) => return BearerAuth::Invalid,
            Ok(Some(t)) => t,
        };
        // Not even shaped like a Loopwise token (a JWT of sane size): refused before the
        // cache, so junk neither costs a call to Loopwise nor fills the negative cache.
        if !validate::plausible(token) {
            return BearerAuth::Invalid;
        }
        let result = self
            .token_cache
            .get(
                &self.schools.only().id,
                token,
                now,
                validate::validate(&self.validation, self.loopwise(), token, now),
            )
            .await;
        let lookup_label = match &result {
            Ok((_, Lookup::Hit)) => "hit",
            Ok((_, Lookup::NegativeHit)) => "negative_hit",
            Ok((_, Lookup::Miss)) => "miss",
            Err(_) => "error",
        };
        self.shared
            .metrics
            .token_cache_requests
            .with_label_values(&[lookup_label])
            .inc();
        match result {
            Ok((Verdict::Valid(info), lookup)) => {
                let school_ok = self
                    .config
                    .loopwise
                    .school_id
                    .as_ref()
                    .is_none_or(|s| *s == info.identity.school);
                if school_ok {
                    BearerAuth::Valid {
                        info,
                        token: token.to_string(),
                        lookup,
                    }
                } else {
                    BearerAuth::Invalid
                }
            }
            Ok((Verdict::Invalid, _)) => BearerAuth::Invalid,
            Err(e) => {
                tracing::warn!(error = %e, mode = self.validation.name(self.loopwise()), "cannot validate a Bearer token: Loopwise unavailable");
                BearerAuth::Unavailable
            }
        }
    }

    /// The client of the only school (start-up, readiness, logins while there is one).
    pub fn loopwise(&self) -> &LoopwiseClient {
        &self.schools.only().client
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.shared.admin_addr()
    }

    /// The validated-token cache (metrics, tests).
    pub fn token_cache(&self) -> &TokenCache {
        &self.token_cache
    }

    /// Which validation mode Bearer tokens use.
    pub fn validation_mode(&self) -> &'static str {
        self.validation.name(self.loopwise())
    }

    fn clear_session_cookies(&self, headers: &HeaderMap) -> Vec<String> {
        let attrs = self.session_attrs();
        let existing = self.existing_session_cookie_names(headers);
        if existing.is_empty() {
            vec![cookies::clear(&self.config.session.cookie_name, &attrs)]
        } else {
            existing.iter().map(|n| cookies::clear(n, &attrs)).collect()
        }
    }

    /// `Set-Cookie` values that store `session`, replacing whatever the browser has.
    pub async fn session_cookies(
        &self,
        session: &Session,
        headers: &HeaderMap,
        now: u64,
    ) -> Result<Vec<String>, SaveError> {
        let previous = self.current_payload(headers);
        let payload = self.shared.store.save(session, previous.as_deref()).await?;
        let name = &self.config.session.cookie_name;
        let sealed = self.session_keys.seal(name, &payload);
        let existing = self.existing_session_cookie_names(headers);
        let max_age = session.expires_at.saturating_sub(now);
        cookies::set_chunked(name, &sealed, &self.session_attrs(), max_age, &existing)
            .ok_or(SaveError::TooLarge)
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
        let url = match self.loopwise().authorize_url(
            &state_value,
            &verifier.challenge(),
            &self.config.loopwise.scopes,
        ) {
            Ok(url) => url,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a login");
                return render::loopwise_down(true);
            }
        };
        let name = state::cookie_name(&self.login_cookie_base(), &state_value);
        let sealed = state::seal(
            &self.login_keys,
            &name,
            &LoginState {
                state: state_value,
                verifier: verifier.secret().to_string(),
                target,
                created_at: now,
                issuer_id: self.schools.only().id.clone(),
            },
        );
        let cookie = format!("{name}={sealed}; {}", self.login_attrs().render(LOGIN_TTL));
        Reply::redirect(302, &url).cookies([cookie])
    }

    /// Handles a request under the gateway prefix.
    pub async fn endpoint(&self, view: &RequestView<'_>, now: u64) -> Reply {
        endpoints::handle(self, view, now).await
    }
}

/// Why a session could not be handed to the browser.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("the session store refused it: {0}")]
    Store(#[from] crate::session::store::StoreError),
    #[error("the session is too large for cookies")]
    TooLarge,
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

fn outcome_name(o: &RefreshOutcome) -> &'static str {
    match o {
        RefreshOutcome::Refreshed(_) => "ok",
        RefreshOutcome::Ended => "invalid_grant",
        RefreshOutcome::Unavailable { .. } => "transient_error",
    }
}

#[cfg(test)]
mod tests;
