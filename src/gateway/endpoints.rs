//! The gateway's own endpoints under `server.prefix`: `start`, `callback`, `sign_out`,
//! `userinfo`.

use serde_json::json;
use subtle::ConstantTimeEq;

use super::{Gateway, RequestView};
use crate::gateway::reply::Reply;
use crate::html::escape;

pub(super) async fn handle(gw: &Gateway, view: &RequestView<'_>, now: u64) -> Reply {
    let prefix = &gw.config.server.prefix;
    let sub = view.path.strip_prefix(prefix.as_str()).unwrap_or("");
    let get = *view.method == http::Method::GET || *view.method == http::Method::HEAD;
    let post = *view.method == http::Method::POST;
    match sub {
        "/start" if get => start(gw, view, now),
        "/callback" if get => super::callback::callback(gw, view, now).await,
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
    // Every school's session the browser holds ends, each revoked at its own school; the
    // first whose school offers RP-initiated logout ends the provider's session too.
    let mut provider_logout = None;
    for session in gw.end_sessions(view.headers, now).await {
        if provider_logout.is_none() {
            if let (Some(id_token), Some(school)) =
                (&session.id_token, gw.schools.get(&session.issuer_id))
            {
                let back = format!("{}/", gw.config.server.public_url);
                provider_logout = school.client.end_session_url(id_token, &back);
            }
        }
        let school = gw.schools.get(&session.issuer_id);
        if let (Some(rt), Some(school)) = (&session.refresh_token, school) {
            match school.client.revoke(rt, "refresh_token").await {
                Ok(()) => {
                    tracing::info!(sub = %crate::wire::headers::sanitize(&session.identity.sub), school = %school.id, "signed out; refresh token revoked")
                }
                Err(e) => {
                    tracing::warn!(error = %e, school = %school.id, "sign-out could not revoke the refresh token at Loopwise")
                }
            }
        }
    }

    let clears = gw.clear_all_session_cookies(view.headers);
    let target = view
        .query_param("rd")
        .and_then(|t| crate::login::target::safe_target(&t, &gw.config.server.prefix))
        .unwrap_or_else(|| "/".into());
    Reply::redirect(303, provider_logout.as_deref().unwrap_or(&target)).cookies(clears)
}

/// `{prefix}/start`: `?school=` starts a login there; without it, the login at the only
/// school the target's route accepts, or the chooser for several.
fn start(gw: &Gateway, view: &RequestView<'_>, now: u64) -> Reply {
    let target = view.query_param("rd").unwrap_or_else(|| "/".into());
    if let Some(school) = view.query_param("school") {
        return gw.start_login(&school, &target, now);
    }
    let safe = crate::login::target::safe_target(&target, &gw.config.server.prefix)
        .unwrap_or_else(|| crate::login::target::DEFAULT_TARGET.to_string());
    let path = crate::wire::path::split_target(&safe).0;
    let route_schools = crate::wire::path::normalize(path)
        .ok()
        .and_then(|norm| gw.routes.find(view.host, &norm.path))
        .map(|r| r.config.loopwise.clone())
        .filter(|s| !s.is_empty());
    let schools =
        route_schools.unwrap_or_else(|| gw.schools.iter().map(|s| s.id.clone()).collect());
    gw.choose_school(&schools, &safe, now)
}

/// The browser's sessions: the first one's fields at the top (one school, as before
/// schools had names) and every school's in `sessions`.
async fn userinfo(gw: &Gateway, view: &RequestView<'_>, now: u64) -> Reply {
    let sessions = gw.sessions(view.headers, now).await;
    let describe = |s: &crate::session::Session| {
        json!({
            "sub": s.identity.sub,
            "name": s.identity.name,
            "email": s.identity.email,
            "roles": s.identity.roles,
            "school": s.identity.school,
            "loopwise": gw.schools.get(&s.issuer_id).map(|x| x.id.clone()),
            "scope": s.scope,
            "access_token_expires_at": s.access_expires_at,
            "session_expires_at": s.expires_at,
        })
    };
    let Some(first) = sessions.first() else {
        return Reply::unauthorized("no session");
    };
    let mut body = describe(first);
    body["sessions"] = sessions.iter().map(describe).collect();
    Reply::json(200, body)
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
        super::Decision::Deny { denial, audience } => {
            gw.render_for_forward_auth(denial, audience, &original, now)
        }
    }
}
