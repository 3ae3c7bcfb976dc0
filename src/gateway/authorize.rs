//! The per-request authentication and authorization decision for a matched route, shared
//! by the proxy path and forward-auth (`{prefix}/auth`).

use serde_json::json;

use super::{BearerAuth, Gateway, RequestView, SessionAuth};
use crate::config::AuthKind;
use crate::gateway::reply::Reply;
use crate::html::escape;
use crate::policy::authz::Missing;
use crate::routes::Route;
use crate::session::Identity;

/// Who a request is, once authenticated: what gets injected upstream.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub identity: Identity,
    pub scope: String,
    /// The Bearer token sent upstream: the session's, or the API client's own.
    pub token: String,
}

#[derive(Debug)]
pub enum Decision {
    /// Let the request through, as `auth` (`None`: public or skipped method).
    Allow {
        auth: Option<Authenticated>,
        set_cookies: Vec<String>,
        outcome: &'static str,
    },
    /// Answer it here (login redirect, 401, 403, 503).
    Deny { reply: Reply, outcome: &'static str },
}

/// 401 for a missing or bad Bearer token (RFC 6750 §3).
pub fn invalid_token(message: &str) -> Reply {
    Reply::json(
        401,
        json!({"error": "invalid_token", "error_description": message}),
    )
    .header(
        "www-authenticate",
        "Bearer realm=\"loopgate\", error=\"invalid_token\"",
    )
}

pub fn loopwise_down(navigation: bool) -> Reply {
    Reply::error(
        503,
        navigation,
        "loopwise_unreachable",
        "Loopwise is unreachable, so your sign-in cannot be checked or renewed right now. Please try again in a moment.",
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
fn forbidden_page(gw: &Gateway, identity: &Identity, missing: &Missing, navigation: bool) -> Reply {
    if !navigation {
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

impl Gateway {
    /// Authenticates and authorizes `view` for `route`.
    pub async fn authorize(&self, route: &Route, view: &RequestView<'_>, now: u64) -> Decision {
        let rc = &route.config;
        if rc.auth == AuthKind::Public {
            return allow(None, Vec::new(), "public");
        }
        if rc.skip_auth_methods.contains(view.method) {
            return allow(None, Vec::new(), "skip_auth");
        }
        let navigation = view.is_navigation();
        let use_bearer = rc.auth == AuthKind::Api
            || (rc.accept_bearer && view.headers.contains_key(http::header::AUTHORIZATION));
        if use_bearer {
            return match self.authenticate_bearer(view.headers, now).await {
                BearerAuth::Valid(info, _) => {
                    match rc.requirements.check(
                        &info.scope,
                        &info.identity.roles,
                        &info.identity.school,
                    ) {
                        Ok(()) => {
                            let token = super::bearer_token(view.headers)
                                .and_then(Result::ok)
                                .unwrap_or_default()
                                .to_string();
                            allow(
                                Some(Authenticated {
                                    identity: info.identity,
                                    scope: info.scope,
                                    token,
                                }),
                                Vec::new(),
                                "bearer",
                            )
                        }
                        Err(missing) => deny(insufficient_scope(&missing), "forbidden"),
                    }
                }
                BearerAuth::Missing => {
                    deny(invalid_token("a Bearer token is required"), "unauthorized")
                }
                BearerAuth::Invalid => deny(
                    invalid_token("the Bearer token is invalid or expired"),
                    "unauthorized",
                ),
                BearerAuth::Unavailable => deny(loopwise_down(false), "loopwise_unavailable"),
            };
        }
        let challenge_outcome = if navigation {
            "login_redirect"
        } else {
            "unauthorized"
        };
        match self.authenticate_session(view.headers, now).await {
            SessionAuth::Active {
                session,
                set_cookies,
            } => {
                let s = *session;
                match rc
                    .requirements
                    .check(&s.scope, &s.identity.roles, &s.identity.school)
                {
                    Ok(()) => allow(
                        Some(Authenticated {
                            identity: s.identity,
                            scope: s.scope,
                            token: s.access_token,
                        }),
                        set_cookies,
                        "session",
                    ),
                    Err(missing) => deny(
                        forbidden_page(self, &s.identity, &missing, navigation)
                            .cookies(set_cookies),
                        "forbidden",
                    ),
                }
            }
            SessionAuth::Anonymous { clear } => {
                deny(self.challenge(view, now).cookies(clear), challenge_outcome)
            }
            SessionAuth::Ended { clear } => {
                deny(self.challenge(view, now).cookies(clear), challenge_outcome)
            }
            SessionAuth::LoopwiseDown => deny(loopwise_down(navigation), "loopwise_unavailable"),
        }
    }
}

fn allow(auth: Option<Authenticated>, set_cookies: Vec<String>, outcome: &'static str) -> Decision {
    Decision::Allow {
        auth,
        set_cookies,
        outcome,
    }
}

fn deny(reply: Reply, outcome: &'static str) -> Decision {
    Decision::Deny { reply, outcome }
}
