//! The one place a [`Denial`] becomes a response: a page or a redirect for a browser,
//! JSON with `WWW-Authenticate` for an API client, a bare status with headers for
//! forward-auth.

use serde_json::json;

use super::denial::{Audience, Credential, Denial, Malformed, TokenProblem};
use super::{Gateway, RequestView};
use crate::gateway::reply::Reply;
use crate::html::escape;
use crate::policy::authz::Missing;
use crate::session::Identity;

const SIGN_IN_THROUGH_GATEWAY: &str = "authentication required: sign in through the gateway";

impl Gateway {
    /// The response for a request the gateway refuses. Only a browser's
    /// [`Denial::LoginRequired`] has an effect: it starts a login (a fresh state cookie).
    pub fn render(
        &self,
        denial: Denial,
        audience: Audience,
        view: &RequestView<'_>,
        now: u64,
    ) -> Reply {
        let browser = audience == Audience::Browser;
        match denial {
            Denial::LoginRequired {
                clear_cookies,
                schools,
            } => match audience {
                Audience::Browser => self.login_at(&schools, &view.target(), now),
                Audience::Api => Reply::unauthorized(SIGN_IN_THROUGH_GATEWAY),
            }
            .cookies(clear_cookies),
            Denial::InvalidToken(problem) => invalid_token(match problem {
                TokenProblem::Missing => "a Bearer token is required",
                TokenProblem::Invalid => "the Bearer token is invalid or expired",
            }),
            Denial::Forbidden {
                missing,
                via: Credential::Bearer,
            } => insufficient_scope(&missing),
            Denial::Forbidden {
                missing,
                via:
                    Credential::Session {
                        identity,
                        set_cookies,
                    },
            } => forbidden_page(self, &identity, &missing, browser).cookies(set_cookies),
            Denial::LoopwiseUnavailable => loopwise_down(browser),
            Denial::SessionStoreUnavailable => store_down(browser),
            Denial::BadRequest(m) => self.render_malformed(m, audience),
            Denial::NoRoute | Denial::PolicyOnly => {
                Reply::error(404, browser, "not_found", "Not found")
            }
        }
    }

    /// A request refused at admission (there is no view of it to render from): 400, and
    /// for ambiguous framing the connection is closed (reading on could smuggle).
    pub fn render_malformed(&self, m: Malformed, audience: Audience) -> Reply {
        let browser = audience == Audience::Browser;
        match m {
            Malformed::Framing => {
                Reply::error(400, browser, "bad_request", "This request is not valid").closing()
            }
            Malformed::Host => Reply::error(
                400,
                browser,
                "bad_request",
                "This request names no valid host",
            ),
            Malformed::Path => {
                Reply::error(400, browser, "bad_request", "This address is not valid")
            }
        }
    }

    /// A denial as forward-auth answers it: a front proxy cannot follow a login redirect
    /// (it turns our 401 into a login itself), so `LoginRequired` is always the API
    /// client's 401, with the dead session's cookie deletions and no login-state cookie.
    pub fn render_for_forward_auth(
        &self,
        denial: Denial,
        audience: Audience,
        view: &RequestView<'_>,
        now: u64,
    ) -> Reply {
        let audience = match denial {
            Denial::LoginRequired { .. } => Audience::Api,
            _ => audience,
        };
        self.render(denial, audience, view, now)
    }
}

/// 401 for a missing or bad Bearer token (RFC 6750 §3).
fn invalid_token(message: &str) -> Reply {
    Reply::json(
        401,
        json!({"error": "invalid_token", "error_description": message}),
    )
    .header(
        "www-authenticate",
        "Bearer realm=\"loopgate\", error=\"invalid_token\"",
    )
}

/// 503 while Loopwise cannot be asked; `Retry-After` so clients back off.
pub(super) fn loopwise_down(browser: bool) -> Reply {
    Reply::error(
        503,
        browser,
        "loopwise_unreachable",
        "Loopwise is unreachable, so your sign-in cannot be checked or renewed right now. Please try again in a moment.",
    )
    .header("retry-after", "5")
}

/// 503 while the session store cannot be asked; the cookie is kept (it may be fine).
pub(super) fn store_down(browser: bool) -> Reply {
    Reply::error(
        503,
        browser,
        "session_store_unavailable",
        "The session store is unavailable, so your sign-in cannot be checked right now. Please try again in a moment.",
    )
    .header("retry-after", "5")
}

/// 403 for an API client: RFC 6750 `insufficient_scope`.
fn insufficient_scope(missing: &Missing) -> Reply {
    let scope = missing.scopes.join(" ");
    Reply::json(
        403,
        json!({"error": "insufficient_scope", "error_description": format!("this route needs {}", missing.describe())}),
    )
    .header(
        "www-authenticate",
        format!("Bearer realm=\"loopgate\", error=\"insufficient_scope\", scope=\"{}\"", scope.replace('"', "")),
    )
}

/// 403 for a signed-in browser: says what is missing and offers to switch user —
/// never a redirect to log in again (that would loop).
fn forbidden_page(gw: &Gateway, identity: &Identity, missing: &Missing, browser: bool) -> Reply {
    if !browser {
        return Reply::json(
            403,
            json!({"error": "forbidden", "error_description": format!("this route needs {}", missing.describe())}),
        );
    }
    let who = if identity.name.is_empty() {
        identity.sub.clone()
    } else {
        format!("{} ({})", identity.name, identity.sub)
    };
    Reply::html(
        403,
        "Access denied",
        &format!(
            "<h1>Access denied</h1><p>You are signed in as <strong id=\"who\">{}</strong>, but this page needs \
<span id=\"missing\">{}</span>.</p><p class=\"muted\">Ask your school admin for access, or sign in as someone else.</p>\
<form method=\"post\" action=\"{}/sign_out\"><button type=\"submit\" id=\"sign-out\">Sign out</button></form>",
            escape(&who),
            escape(&missing.describe()),
            escape(&gw.config.server.prefix),
        ),
    )
}
