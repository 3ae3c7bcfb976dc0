//! `{prefix}/callback`: the end of a login. Checks the state (sealed cookie, single use),
//! exchanges the code, asks who the user is and stores the session. Every way it can
//! fail is a [`LoginFailure`], which gives the page, the status and the metrics label.

use super::{Gateway, RequestView};
use crate::gateway::reply::Reply;
use crate::html::escape;
use crate::login::state::{self, StateError};
use crate::oauth::LoopwiseError;
use crate::session::{cookies, Session};

/// Why a callback did not sign the user in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LoginFailure {
    /// The state cookie is absent, tampered with, expired or of another login.
    BadState(StateError),
    /// The replay guard cannot be asked: refused (without it a replay could pass).
    GuardDown,
    /// The state was used already (a replayed or double-submitted callback).
    Replayed,
    /// The school refused the sign-in (`error=access_denied`: the user declined, or the
    /// school's policy refused without asking).
    Declined {
        detail: String,
    },
    /// The callback's `iss` is not the school's (RFC 9207: a mix-up attack), or it is
    /// missing although the school says it sends one.
    WrongIssuer,
    /// The school answered something the protocol does not allow (a malformed token
    /// response, an ID token that does not verify, a userinfo of another user).
    Unexpected {
        what: String,
    },
    /// Loopwise sent the user back with another `error`.
    ProviderError {
        detail: String,
    },
    NoCode,
    /// Loopwise answered the code exchange or userinfo with an OAuth error.
    Refused {
        code: String,
    },
    /// Loopwise did not answer (or not sensibly).
    Unavailable,
    /// The session could not be stored.
    StoreFailed,
    /// The session store cannot be reached (Redis down).
    StoreUnavailable,
    /// The school did not know the gateway's client (`invalid_client`) and the gateway
    /// registered again: this login's code belongs to the old client, sign in again.
    Reregistered,
}

impl LoginFailure {
    pub(super) fn status(&self) -> u16 {
        match self {
            LoginFailure::Declined { .. } => 403,
            LoginFailure::Unexpected { .. } => 502,
            LoginFailure::Reregistered => 503,
            LoginFailure::WrongIssuer => 400,
            LoginFailure::GuardDown
            | LoginFailure::Unavailable
            | LoginFailure::StoreUnavailable => 503,
            LoginFailure::StoreFailed => 500,
            LoginFailure::BadState(_)
            | LoginFailure::Replayed
            | LoginFailure::ProviderError { .. }
            | LoginFailure::NoCode
            | LoginFailure::Refused { .. } => 400,
        }
    }

    /// The `result` label of `loopgate_logins_total` (a success is `ok`).
    pub(super) fn label(&self) -> &'static str {
        match self {
            LoginFailure::Declined { .. } => "denied",
            LoginFailure::Unavailable => "loopwise_unreachable",
            LoginFailure::Unexpected { .. } => "unexpected_answer",
            LoginFailure::Reregistered => "reregistered",
            LoginFailure::WrongIssuer => "refused",
            LoginFailure::GuardDown
            | LoginFailure::StoreFailed
            | LoginFailure::StoreUnavailable => "error",
            LoginFailure::BadState(_)
            | LoginFailure::Replayed
            | LoginFailure::ProviderError { .. }
            | LoginFailure::NoCode
            | LoginFailure::Refused { .. } => "refused",
        }
    }

    fn headline(&self) -> &'static str {
        match self {
            LoginFailure::Declined { .. } => "Your school refused the sign-in",
            LoginFailure::WrongIssuer => "Sign-in could not be completed",
            LoginFailure::Reregistered => "Please sign in again",
            LoginFailure::Unexpected { .. } => "The school's server answered something unexpected",
            LoginFailure::ProviderError { .. } => "Loopwise could not sign you in",
            LoginFailure::Refused { .. } => "Loopwise refused the sign-in",
            LoginFailure::Unavailable => "Loopwise is unreachable",
            LoginFailure::GuardDown | LoginFailure::StoreUnavailable => {
                "Sign-in is unavailable right now"
            }
            LoginFailure::BadState(_)
            | LoginFailure::Replayed
            | LoginFailure::NoCode
            | LoginFailure::StoreFailed => "Sign-in could not be completed",
        }
    }

    fn detail(&self) -> String {
        match self {
            LoginFailure::BadState(e) => e.to_string(),
            LoginFailure::Replayed => StateError::Replayed.to_string(),
            LoginFailure::GuardDown => "Please try again in a moment.".into(),
            LoginFailure::Declined { detail } | LoginFailure::ProviderError { detail } => {
                detail.clone()
            }
            LoginFailure::NoCode => "the callback has no code".into(),
            LoginFailure::Reregistered => {
                "The school no longer knew this gateway; it has registered again.".into()
            }
            LoginFailure::WrongIssuer => {
                "the answer does not come from the school the sign-in started at".into()
            }
            LoginFailure::Unexpected { what } => {
                format!("{what}. Please try again; if it persists, tell your school's IT team.")
            }
            LoginFailure::Refused { code } if code == "invalid_grant" => {
                format!("{code} — the sign-in link may have expired or been used already")
            }
            LoginFailure::Refused { code } => {
                format!("{code} — the school's server refused the request")
            }
            LoginFailure::Unavailable => {
                "The sign-in service did not answer. Please try again in a moment.".into()
            }
            LoginFailure::StoreFailed => "the session could not be stored".into(),
            LoginFailure::StoreUnavailable => {
                "The session store is unavailable. Please try again in a moment.".into()
            }
        }
    }
}

/// A failed callback: why, where "Sign in again" leads, and the login cookie to delete.
struct Failed {
    failure: LoginFailure,
    target: String,
    clear: Option<String>,
    /// The school the login started at (`unknown` before the state opens).
    school: String,
}

/// The `school` label of a login whose state did not open.
const UNKNOWN_SCHOOL: &str = "unknown";

/// Handles the callback and counts it in `loopgate_logins_total`.
pub(super) async fn callback(gw: &Gateway, view: &RequestView<'_>, now: u64) -> Reply {
    let (reply, label, school) = match complete(gw, view, now).await {
        Ok((reply, school)) => (reply, "ok", school),
        Err(f) => {
            tracing::info!(result = f.failure.label(), school = %f.school, reason = ?f.failure, "login callback refused");
            let reply = login_failed(gw, &f.failure, &f.target).cookies(f.clear);
            (reply, f.failure.label(), f.school)
        }
    };
    gw.shared
        .metrics
        .logins
        .with_label_values(&[label, &school])
        .inc();
    // Callback pages never leak the URL (it holds the code).
    reply.header("referrer-policy", "no-referrer")
}

fn login_failed(gw: &Gateway, failure: &LoginFailure, target: &str) -> Reply {
    let retry = format!(
        "{}/start?rd={}",
        gw.config.server.prefix,
        form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>()
    );
    let headline = failure.headline();
    Reply::html(
        failure.status(),
        headline,
        &format!(
            "<h1>{}</h1><p id=\"detail\">{}</p><p><a id=\"retry\" href=\"{}\">Sign in again</a></p>",
            escape(headline),
            escape(&failure.detail()),
            escape(&retry)
        ),
    )
}

async fn complete(
    gw: &Gateway,
    view: &RequestView<'_>,
    now: u64,
) -> Result<(Reply, String), Failed> {
    let Some(state_value) = view.query_param("state") else {
        return Err(Failed {
            failure: LoginFailure::BadState(StateError::Missing),
            target: "/".into(),
            clear: None,
            school: UNKNOWN_SCHOOL.into(),
        });
    };
    let name = state::cookie_name(&gw.login_cookie_base(), &state_value);
    let jar = cookies::parse(
        view.headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let sealed = jar.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let clear_login = cookies::clear(&name, &gw.login_attrs());
    let login =
        state::open(&gw.login_keys, &name, sealed, &state_value, now).map_err(|e| Failed {
            failure: LoginFailure::BadState(e),
            target: "/".into(),
            clear: sealed.map(|_| clear_login.clone()),
            school: UNKNOWN_SCHOOL.into(),
        })?;
    // The code is exchanged at the school the login started at, never another.
    let Some(school) = gw.schools.get(&login.issuer_id) else {
        return Err(Failed {
            failure: LoginFailure::BadState(StateError::Foreign),
            target: "/".into(),
            clear: Some(clear_login),
            school: UNKNOWN_SCHOOL.into(),
        });
    };
    let fail = |failure| Failed {
        failure,
        target: login.target.clone(),
        clear: Some(clear_login.clone()),
        school: school.id.clone(),
    };
    let fp = state::fingerprint(&login.state);
    match gw.shared.replay.first_use(&fp, now).await {
        Ok(true) => {}
        Ok(false) => return Err(fail(LoginFailure::Replayed)),
        Err(e) => {
            tracing::warn!(error = %e, "login callback refused: replay guard unavailable");
            return Err(fail(LoginFailure::GuardDown));
        }
    }

    // RFC 9207: an authorization response names its issuer; a wrong one is a mix-up.
    let advertised = school
        .client
        .metadata()
        .is_some_and(|m| m.authorization_response_iss_parameter_supported);
    match view.query_param("iss") {
        Some(iss) if iss != school.client.issuer() => {
            tracing::warn!(school = %school.id, iss = %crate::wire::headers::sanitize(&iss), "login callback refused: iss is not the school's issuer");
            return Err(fail(LoginFailure::WrongIssuer));
        }
        None if advertised => {
            tracing::warn!(school = %school.id, "login callback refused: no iss although the school advertises it");
            return Err(fail(LoginFailure::WrongIssuer));
        }
        _ => {}
    }

    if let Some(error) = view.query_param("error") {
        let description = view.query_param("error_description").unwrap_or_default();
        tracing::info!(error = %crate::wire::headers::sanitize(&error), "login refused by Loopwise");
        let declined = error == "access_denied";
        let detail = if description.is_empty() {
            error
        } else {
            format!("{error}: {description}")
        };
        return Err(fail(if declined {
            LoginFailure::Declined { detail }
        } else {
            LoginFailure::ProviderError { detail }
        }));
    }
    let Some(code) = view.query_param("code") else {
        return Err(fail(LoginFailure::NoCode));
    };

    let tokens = match school.client.exchange_code(&code, &login.verifier).await {
        Ok(t) => t,
        Err(e) if e.is_client_unknown() => {
            return Err(fail(heal(gw, school, now).await));
        }
        Err(e) => return Err(fail(loopwise_failure(&e))),
    };
    let identity = if login.nonce.is_empty() {
        school
            .client
            .userinfo(&tokens.access_token)
            .await
            .map_err(|e| fail(loopwise_failure(&e)))?
    } else {
        oidc_identity(school, &tokens, &login.nonce, now)
            .await
            .map_err(fail)?
    };
    let lifetime = gw.config.session.lifetime.as_secs();
    // Kept only where sign-out will need it as `id_token_hint` (cookies are small).
    let logs_out = school
        .client
        .metadata()
        .is_some_and(|m| m.end_session_endpoint.is_some());
    let id_token = (logs_out && !login.nonce.is_empty())
        .then(|| tokens.id_token.clone())
        .flatten();
    let session = Session {
        id_token,
        sid: crate::random::token(),
        issuer_id: school.id.clone(),
        scope: tokens.scope.clone().unwrap_or_else(|| {
            gw.config
                .school(&school.id)
                .map(|c| c.scopes.join(" "))
                .unwrap_or_default()
        }),
        access_expires_at: now + tokens.expires_in.unwrap_or(3600),
        access_issued_at: now,
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        created_at: now,
        expires_at: now + lifetime,
        identity,
        // Only a server-side store keeps it (an operator lists a user's sessions there).
        origin: gw.shared.store.server_side().then(|| {
            let xff = view
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok());
            let ip = view
                .peer
                .map(|peer| gw.config.server.trusted_proxies.client_ip(peer, xff));
            let ua = view
                .headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok());
            crate::session::model::Origin::new(ip, ua)
        }),
    };
    let mut set = gw
        .session_cookies(&session, view.headers, now)
        .await
        .map_err(|e| match e {
            crate::gateway::SaveError::Store(e) => {
                tracing::warn!(error = %e, "cannot store the new session: the store is unavailable");
                fail(LoginFailure::StoreUnavailable)
            }
            e => {
                tracing::error!(error = %e, "cannot store the new session");
                fail(LoginFailure::StoreFailed)
            }
        })?;
    set.push(clear_login.clone());
    tracing::info!(result = "ok", school = %school.id, sub = %crate::wire::headers::sanitize(&session.identity.sub), "login completed");
    Ok((
        Reply::redirect(302, &login.target).cookies(set),
        school.id.clone(),
    ))
}

/// The token endpoint says it does not know the client: a dynamically registered client
/// registers again and the user signs in again; a configured one is a refusal.
async fn heal(gw: &Gateway, school: &crate::oauth::School, now: u64) -> LoginFailure {
    if super::heal::reregister(gw, school, now).await {
        LoginFailure::Reregistered
    } else {
        LoginFailure::Refused {
            code: "invalid_client".into(),
        }
    }
}

/// OpenID Connect: identity from the verified ID token, completed by userinfo when the
/// school has it (a userinfo that fails keeps the ID token's identity; one naming
/// another user is refused).
async fn oidc_identity(
    school: &crate::oauth::School,
    tokens: &crate::oauth::TokenSet,
    nonce: &str,
    now: u64,
) -> Result<crate::session::Identity, LoginFailure> {
    let Some(raw) = tokens.id_token.as_deref() else {
        tracing::warn!(school = %school.id, field = "id_token", "the token response has no id_token although openid was asked");
        return Err(LoginFailure::Unexpected {
            what: "The token response has no ID token".into(),
        });
    };
    let claims = school
        .client
        .verify_id_token(raw, nonce, now)
        .await
        .map_err(|e| match e {
            crate::oauth::client::IdTokenFailure::Loopwise(e) => loopwise_failure(&e),
            crate::oauth::client::IdTokenFailure::Invalid(e) => {
                tracing::warn!(school = %school.id, error = %e, "login refused: the id_token is not valid");
                LoginFailure::Unexpected {
                    what: format!("The school's ID token was refused ({e})"),
                }
            }
        })?;
    let identity = school.client.claim_names().identity(&claims);
    let has_userinfo = school
        .client
        .metadata()
        .is_some_and(|m| m.userinfo_url().is_some());
    if !has_userinfo {
        return Ok(identity);
    }
    match school.client.userinfo(&tokens.access_token).await {
        Ok(more) if more.sub == identity.sub => Ok(crate::oauth::claims::merge(identity, more)),
        Ok(_) => {
            tracing::warn!(school = %school.id, field = "sub", "login refused: userinfo names another user than the id_token");
            Err(LoginFailure::Unexpected {
                what: "The school's userinfo names another user than its ID token".into(),
            })
        }
        Err(e) => {
            tracing::info!(school = %school.id, error = %e, "userinfo unavailable at login; using the id_token's identity");
            Ok(identity)
        }
    }
}

fn loopwise_failure(e: &LoopwiseError) -> LoginFailure {
    match e {
        LoopwiseError::Refused { code, .. } => {
            tracing::warn!(error = %code, "Loopwise refused the login");
            LoginFailure::Refused { code: code.clone() }
        }
        LoopwiseError::Malformed(what) => {
            tracing::error!(error = %what, "the school answered the login with something unexpected");
            LoginFailure::Unexpected {
                what: "The school's server answered something unexpected".into(),
            }
        }
        LoopwiseError::Unsupported(what) => {
            tracing::error!(missing = %what, "login impossible: the school's server offers no userinfo; add `openid` to the school's scopes so identity comes from the ID token");
            LoginFailure::Unexpected {
                what: format!("The school's server offers no {what} to say who signed in"),
            }
        }
        other => {
            tracing::error!(error = %other, "Loopwise unreachable during login");
            LoginFailure::Unavailable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_labels_follow_the_failure() {
        let declined = LoginFailure::Declined {
            detail: "access_denied".into(),
        };
        assert_eq!((declined.status(), declined.label()), (403, "denied"));
        assert_eq!(
            (
                LoginFailure::Unavailable.status(),
                LoginFailure::Unavailable.label()
            ),
            (503, "loopwise_unreachable")
        );
        assert_eq!(
            (
                LoginFailure::GuardDown.status(),
                LoginFailure::GuardDown.label()
            ),
            (503, "error")
        );
        assert_eq!(
            (
                LoginFailure::StoreFailed.status(),
                LoginFailure::StoreFailed.label()
            ),
            (500, "error")
        );
        let refused = LoginFailure::Refused {
            code: "invalid_grant".into(),
        };
        assert_eq!((refused.status(), refused.label()), (400, "refused"));
        assert!(refused.detail().starts_with("invalid_grant"));
        assert_eq!(LoginFailure::BadState(StateError::Missing).status(), 400);
        let down = LoginFailure::StoreUnavailable;
        assert_eq!((down.status(), down.label()), (503, "error"));
        assert!(down.detail().contains("session store"));
    }
}
