//! What the gateway decided about a request, as data: [`Decision`] (forward, as whom) or a
//! typed [`Denial`]. Rendering is elsewhere (`render.rs`), so callers never read a
//! decision back out of a status code, a cookie string or page text; metrics labels come
//! from here.

use crate::policy::authz::Missing;
use crate::session::Identity;

/// Who a request is, once authenticated: what gets injected upstream.
#[derive(Clone)]
pub struct Authenticated {
    pub identity: Identity,
    pub scope: String,
    /// The Bearer token sent upstream: the session's, or the API client's own.
    pub token: String,
}

/// Never prints the token (a `Debug` of a request context must be safe to log).
impl std::fmt::Debug for Authenticated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticated")
            .field("sub", &self.identity.sub)
            .field("scope", &self.scope)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The outcome of authenticating and authorizing a request for a route.
#[derive(Debug)]
pub enum Decision {
    /// Forward it, as `auth` (`None`: public route or a method that skips auth).
    Allow {
        auth: Option<Authenticated>,
        /// Cookies for the response (a refreshed session).
        set_cookies: Vec<String>,
        granted: Granted,
    },
    /// Answer it here, rendered for `audience`.
    Deny { denial: Denial, audience: Audience },
}

impl Decision {
    /// The `outcome` label of `loopgate_auth_decisions_total` and the access log.
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Allow { granted, .. } => granted.label(),
            Decision::Deny { denial, audience } => denial.label(*audience),
        }
    }
}

/// Why a request was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granted {
    Public,
    SkipAuth,
    Bearer,
    Session,
}

impl Granted {
    pub fn label(self) -> &'static str {
        match self {
            Granted::Public => "public",
            Granted::SkipAuth => "skip_auth",
            Granted::Bearer => "bearer",
            Granted::Session => "session",
        }
    }
}

/// Who reads a denial: a browser navigating (pages, redirects) or an API client (JSON,
/// `WWW-Authenticate`, never a redirect). A Bearer-authenticated request is always `Api`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Browser,
    Api,
}

impl Audience {
    pub fn of(navigation: bool) -> Audience {
        if navigation {
            Audience::Browser
        } else {
            Audience::Api
        }
    }
}

/// How a forbidden request was authenticated: it decides the answer's shape.
#[derive(Debug)]
pub enum Credential {
    /// An API client's Bearer token: RFC 6750 `insufficient_scope`.
    Bearer,
    /// A browser session: a page naming the user, with `set_cookies` (a refresh that
    /// happened on the way) still delivered.
    Session {
        identity: Box<Identity>,
        set_cookies: Vec<String>,
    },
}

/// What is wrong with a presented (or absent) Bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    Missing,
    /// Malformed, unknown, expired, of another school, or several `Authorization` fields.
    Invalid,
}

/// A request refused before any route decision: nothing about it can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Ambiguous framing: the connection is closed too (reading on could smuggle).
    Framing,
    Host,
    Path,
}

/// Why the gateway answers a request itself.
#[derive(Debug)]
pub enum Denial {
    /// No usable session (none, unreadable, ended, grant dead): sign in. `clear_cookies`
    /// deletes the session cookies the request carried; `schools` are where the route
    /// lets one sign in (a chooser when there are several).
    LoginRequired {
        clear_cookies: Vec<String>,
        schools: Vec<String>,
    },
    InvalidToken(TokenProblem),
    /// Authenticated, but the route needs what the credential lacks.
    Forbidden {
        missing: Missing,
        via: Credential,
    },
    /// Loopwise is needed (to validate a token or renew a session) and cannot be reached.
    LoopwiseUnavailable,
    BadRequest(Malformed),
    /// No route matches.
    NoRoute,
    /// The route only carries policy for forward-auth: nothing to proxy to.
    PolicyOnly,
    /// The session store cannot be asked about the request's session (Redis down).
    SessionStoreUnavailable,
}

impl Denial {
    /// The `outcome` label (stable: dashboards and alerts use these values).
    pub fn label(&self, audience: Audience) -> &'static str {
        match self {
            Denial::LoginRequired { .. } => match audience {
                Audience::Browser => "login_redirect",
                Audience::Api => "unauthorized",
            },
            Denial::InvalidToken(_) => "unauthorized",
            Denial::Forbidden { .. } => "forbidden",
            Denial::LoopwiseUnavailable => "loopwise_unavailable",
            Denial::BadRequest(Malformed::Framing) => "bad_framing",
            Denial::BadRequest(Malformed::Host) => "bad_host",
            Denial::BadRequest(Malformed::Path) => "bad_path",
            Denial::NoRoute => "no_route",
            Denial::PolicyOnly => "policy_only_route",
            Denial::SessionStoreUnavailable => "store_unavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_documented_ones() {
        let login = || Denial::LoginRequired {
            clear_cookies: Vec::new(),
            schools: vec!["default".into()],
        };
        assert_eq!(login().label(Audience::Browser), "login_redirect");
        assert_eq!(login().label(Audience::Api), "unauthorized");
        assert_eq!(
            Denial::InvalidToken(TokenProblem::Missing).label(Audience::Api),
            "unauthorized"
        );
        assert_eq!(
            Denial::LoopwiseUnavailable.label(Audience::Browser),
            "loopwise_unavailable"
        );
        assert_eq!(
            Denial::BadRequest(Malformed::Framing).label(Audience::Api),
            "bad_framing"
        );
        let allow = Decision::Allow {
            auth: None,
            set_cookies: Vec::new(),
            granted: Granted::SkipAuth,
        };
        assert_eq!(allow.label(), "skip_auth");
        assert_eq!(
            Denial::SessionStoreUnavailable.label(Audience::Browser),
            "store_unavailable"
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let a = Authenticated {
            identity: Identity {
                sub: "u1".into(),
                ..Identity::default()
            },
            scope: "read".into(),
            token: "secret-access-token".into(),
        };
        let printed = format!("{a:?}");
        assert!(!printed.contains("secret-access-token"), "{printed}");
        assert!(printed.contains("u1"));
    }
}
