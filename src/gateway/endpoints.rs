//! The gateway's own endpoints under `server.prefix`: `start`, `callback`, `sign_out`,
//! `userinfo`.

use serde_json::json;
use subtle::ConstantTimeEq;

use super::{Gateway, RequestView};
use crate::gateway::reply::Reply;
use crate::html::escape;
use crate::login::state::{self, StateError};
use crate::oauth::LoopwiseError;
use crate::session::{cookies, Session};

pub async fn handle(gw: &Gateway, view: &RequestView<'_>, now: u64) -> Reply {
    let prefix = &gw.config.server.prefix;
    let sub = view.path.strip_prefix(prefix.as_str()).unwrap_or("");
    let get = *view.method == http::Method::GET || *view.method == http::Method::HEAD;
    let post = *view.method == http::Method::POST;
    match sub {
        "/start" if get => {
            let target = view.query_param("rd").unwrap_or_else(|| "/".into());
            gw.start_login(&target, now)
        }
        "/callback" if get => {
            let reply = callback(gw, view, now).await;
            let result = match reply.status {
                302 => "ok",
                403 => "denied",
                503 => "loopwise_unreachable",
                500 => "error",
                _ => "refused",
            };
            gw.shared.metrics.logins.with_label_values(&[result]).inc();
            reply
        }
        "/sign_out" if get => sign_out_page(gw),
        "/sign_out" if post => sign_out(gw, view, now).await,
        "/userinfo" if get => userinfo(gw, view, now).await,
        "/auth" if get => forward_auth(gw, view, now).await,
        "/start" | "/callback" | "/sign_out" | "/userinfo" | "/auth" => Reply::error(
            405,
            view.is_navigation(),
            "method_not_allowed",
            "Method not allowed",
        )
        .header(
            "allow",
            if sub == "/sign_out" {
                "GET, POST"
            } else {
                "GET, HEAD"
            },
        ),
        _ => Reply::error(404, view.is_navigation(), "not_found", "Not found"),
    }
}

/// Callback pages are never cached and never leak the URL (it holds the code).
fn callback_reply(r: Reply) -> Reply {
    r.header("referrer-policy", "no-referrer")
}

fn login_failed(gw: &Gateway, status: u16, headline: &str, detail: &str, target: &str) -> Reply {
    let retry = format!(
        "{}/start?rd={}",
        gw.config.server.prefix,
        form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>()
    );
    Reply::html(
        status,
        headline,
        &format!(
            "<h1>{}</h1><p id=\"detail\">{}</p><p><a id=\"retry\" href=\"{}\">Sign in again</a></p>",
            escape(headline),
            escape(detail),
            escape(&retry)
        ),
    )
}

async fn callback(gw: &Gateway, view: &RequestView<'_>, now: u64) -> Reply {
    let Some(state_value) = view.query_param("state") else {
        tracing::info!(result = "missing_state", "login callback refused");
        return callback_reply(login_failed(
            gw,
            400,
            "Sign-in could not be completed",
            &StateError::Missing.to_string(),
            "/",
        ));
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
    let login = match state::open(&gw.login_keys, &name, sealed, &state_value, now) {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(result = ?e, "login callback refused");
            let mut r = login_failed(
                gw,
                400,
                "Sign-in could not be completed",
                &e.to_string(),
                "/",
            );
            if sealed.is_some() {
                r = r.cookies([clear_login]);
            }
            return callback_reply(r);
        }
    };
    let fp = state::fingerprint(&login.state);
    let first_use = match gw.shared.replay.first_use(&fp, now).await {
        Ok(first) => first,
        Err(e) => {
            // Fail closed: without the guard a replay could pass.
            tracing::warn!(error = %e, "login callback refused: replay guard unavailable");
            return callback_reply(
                login_failed(
                    gw,
                    503,
                    "Sign-in is unavailable right now",
                    "Please try again in a moment.",
                    &login.target,
                )
                .cookies([clear_login]),
            );
        }
    };
    if !first_use {
        tracing::info!(result = "replayed_state", "login callback refused");
        return callback_reply(
            login_failed(
                gw,
                400,
                "Sign-in could not be completed",
                &StateError::Replayed.to_string(),
                &login.target,
            )
            .cookies([clear_login]),
        );
    }

    if let Some(error) = view.query_param("error") {
        let description = view.query_param("error_description").unwrap_or_default();
        tracing::info!(result = "loopwise_error", error = %crate::wire::headers::sanitize(&error), "login refused by Loopwise");
        let headline = if error == "access_denied" {
            "You declined to sign in"
        } else {
            "Loopwise could not sign you in"
        };
        let detail = if description.is_empty() {
            error
        } else {
            format!("{error}: {description}")
        };
        let status = if headline.starts_with("You") {
            403
        } else {
            400
        };
        return callback_reply(
            login_failed(gw, status, headline, &detail, &login.target).cookies([clear_login]),
        );
    }
    let Some(code) = view.query_param("code") else {
        return callback_reply(
            login_failed(
                gw,
                400,
                "Sign-in could not be completed",
                "the callback has no code",
                &login.target,
            )
            .cookies([clear_login]),
        );
    };

    let tokens = match gw.loopwise.exchange_code(&code, &login.verifier).await {
        Ok(t) => t,
        Err(e) => {
            return callback_reply(loopwise_failure(gw, &e, &login.target).cookies([clear_login]))
        }
    };
    let identity = match gw.loopwise.userinfo(&tokens.access_token).await {
        Ok(i) => i,
        Err(e) => {
            return callback_reply(loopwise_failure(gw, &e, &login.target).cookies([clear_login]))
        }
    };
    let lifetime = gw.config.session.lifetime.as_secs();
    let session = Session {
        sid: crate::random::token(),
        scope: tokens
            .scope
            .clone()
            .unwrap_or_else(|| gw.config.loopwise.scopes.join(" ")),
        access_expires_at: now + tokens.expires_in.unwrap_or(3600),
        access_issued_at: now,
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        created_at: now,
        expires_at: now + lifetime,
        identity,
    };
    let mut set = match gw.session_cookies(&session, view.headers, now).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot store the new session");
            return callback_reply(
                login_failed(
                    gw,
                    500,
                    "Sign-in could not be completed",
                    "the session could not be stored",
                    &login.target,
                )
                .cookies([clear_login]),
            );
        }
    };
    set.push(clear_login);
    tracing::info!(result = "ok", sub = %crate::wire::headers::sanitize(&session.identity.sub), "login completed");
    callback_reply(Reply::redirect(302, &login.target).cookies(set))
}

fn loopwise_failure(gw: &Gateway, e: &LoopwiseError, target: &str) -> Reply {
    match e {
        LoopwiseError::Refused { code, .. } => {
            tracing::warn!(error = %code, "Loopwise refused the login");
            login_failed(
                gw,
                400,
                "Loopwise refused the sign-in",
                &format!("{code} — the sign-in link may have expired or been used already"),
                target,
            )
        }
        other => {
            tracing::error!(error = %other, "Loopwise unreachable during login");
            login_failed(
                gw,
                503,
                "Loopwise is unreachable",
                "The sign-in service did not answer. Please try again in a moment.",
                target,
            )
        }
    }
}

fn sign_out_page(gw: &Gateway) -> Reply {
    Reply::html(
        200,
        "Sign out",
        &format!(
            "<h1>Sign out?</h1><form method=\"post\" action=\"{}/sign_out\">\
<button type=\"submit\" id=\"sign-out\">Sign out</button></form>",
            escape(&gw.config.server.prefix)
        ),
    )
}

/// A cross-site POST must not sign anyone out (login CSRF's little sibling): browsers send
/// `Origin` and `Sec-Fetch-Site` on POSTs; when present they must say same-origin.
fn same_origin(gw: &Gateway, view: &RequestView<'_>) -> bool {
    let origin_ok = match view.headers.get("origin").and_then(|v| v.to_str().ok()) {
        None => true,
        Some(o) => bool::from(o.as_bytes().ct_eq(gw.config.server.public_url.as_bytes())),
    };
    let site_ok = match view
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
    {
        None => true,
        Some(s) => s == "same-origin" || s == "none",
    };
    origin_ok && site_ok
}

async fn sign_out(gw: &Gateway, view: &RequestView<'_>, now: u64) -> Reply {
    if !same_origin(gw, view) {
        return Reply::error(403, true, "cross_site", "Sign-out must come from this site");
    }
    if let Some(session) = gw.end_session(view.headers, now).await {
        if let Some(rt) = &session.refresh_token {
            match gw.loopwise.revoke(rt, "refresh_token").await {
                Ok(()) => {
                    tracing::info!(sub = %crate::wire::headers::sanitize(&session.identity.sub), "signed out; refresh token revoked")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sign-out could not revoke the refresh token at Loopwise")
                }
            }
        }
    }

    let clears = gw.clear_session_cookies(view.headers);
    let target = view
        .query_param("rd")
        .and_then(|t| crate::login::target::safe_target(&t, &gw.config.server.prefix))
        .unwrap_or_else(|| "/".into());
    Reply::redirect(303, &target).cookies(clears)
}

async fn userinfo(gw: &Gateway, view: &RequestView<'_>, now: u64) -> Reply {
    match gw.session(view.headers, now).await {
        Some(s) => Reply::json(
            200,
            json!({
                "sub": s.identity.sub,
                "name": s.identity.name,
                "email": s.identity.email,
                "roles": s.identity.roles,
                "school": s.identity.school,
                "scope": s.scope,
                "access_token_expires_at": s.access_expires_at,
                "session_expires_at": s.expires_at,
            }),
        ),
        None => Reply::unauthorized("no session"),
    }
}

/// Forward-auth for nginx `auth_request`, Traefik `forwardAuth` and Caddy `forward_auth`:
/// 202 (with `Authorization` and identity headers to copy) when the original request is
/// allowed, 401 when not logged in, 403 when not allowed. The original request is read
/// from `X-Forwarded-Uri`/`X-Original-URI`, `X-Forwarded-Host` and `X-Forwarded-Method`.
/// Only peers in `server.trusted_proxies` get an answer (403 otherwise).
async fn forward_auth(gw: &Gateway, view: &RequestView<'_>, now: u64) -> Reply {
    // The 202 carries the access token for the front proxy to copy upstream: it must never
    // be answered to a browser (tokens never reach the browser), only to a configured
    // front proxy.
    let trusted = view
        .peer
        .is_some_and(|p| gw.config.server.trusted_proxies.contains(p));
    if !trusted {
        return Reply::json(
            403,
            json!({"error": "forbidden", "error_description": "forward-auth answers only the front proxies listed in server.trusted_proxies"}),
        );
    }
    let header = |n: &str| view.headers.get(n).and_then(|v| v.to_str().ok());
    let refuse = |what: &str| {
        Reply::json(
            403,
            json!({"error": "bad_request", "error_description": format!("the original {what} is not valid")}),
        )
    };
    let uri = header("x-forwarded-uri")
        .or_else(|| header("x-original-uri"))
        .unwrap_or("/");
    // The front proxy's idea of the host must be as strict as ours: a host we would refuse
    // must not be judged by the any-host route.
    let forwarded_host = match header("x-forwarded-host") {
        Some(h) => match crate::wire::host::parse_authority(h) {
            Ok(a) => Some(a.host),
            Err(_) => return refuse("host"),
        },
        None => None,
    };
    let host = forwarded_host.as_deref().or(view.host);
    let method = header("x-forwarded-method")
        .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or(http::Method::GET);
    // `$request_uri` may carry a fragment; it is never part of the path the app serves.
    let (raw_path, query) = crate::wire::path::split_target(uri);
    let Ok(norm) = crate::wire::path::normalize(raw_path) else {
        return refuse("URI");
    };
    let Some(route) = gw.routes.find(host, &norm.path) else {
        return Reply::json(
            403,
            json!({"error": "no_route", "error_description": "no route matches the original request"}),
        );
    };
    if norm.has_params && !route.config.allow_path_params {
        return refuse("URI");
    }
    let original = RequestView {
        method: &method,
        host,
        peer: view.peer,
        path: &norm.path,
        query,
        headers: view.headers,
    };
    match gw.authorize(route, &original, now).await {
        super::Decision::Allow {
            auth, set_cookies, ..
        } => {
            let mut r = Reply::new(202).cookies(set_cookies);
            if let Some(a) = auth {
                r = r.header("authorization", format!("Bearer {}", a.token));
                for (k, v) in crate::gateway::identity::identity_headers(&a.identity, &a.scope) {
                    r = r.header(k, v);
                }
            }
            r
        }
        super::Decision::Deny { reply, .. } if reply.status == 302 => {
            // A front proxy cannot follow our redirect; it turns 401 into a login itself.
            // Keep only cookie deletions (a dead session), not the login-state cookie.
            let clears: Vec<String> = reply
                .headers
                .iter()
                .filter(|(k, v)| *k == "set-cookie" && v.contains("Max-Age=0"))
                .map(|(_, v)| v.clone())
                .collect();
            Reply::unauthorized("authentication required: sign in through the gateway")
                .cookies(clears)
        }
        super::Decision::Deny { reply, .. } => reply,
    }
}
