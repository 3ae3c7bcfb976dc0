//! What the upstream is sent, what the client gets back from it, and what happens when
//! it fails: pure plans the pingora adapter (`proxy/service.rs`) applies as they are.

use std::net::IpAddr;

use http::HeaderMap;

use super::identity::identity_headers;
use super::reply::Reply;
use super::Authenticated;
use crate::config::{AuthKind, RouteConfig};
use crate::wire::forwarded::{forwarding, Trusted};
use crate::wire::headers;
use crate::wire::host::Authority;

/// What the gateway knows when it builds the upstream request.
pub(crate) struct Outbound<'a> {
    /// The client's request headers as received (nothing removed yet).
    pub headers: &'a HeaderMap,
    pub route: &'a RouteConfig,
    /// The credential to send upstream, when the route authenticated one.
    pub auth: Option<&'a Authenticated>,
    pub request_id: &'a str,
    /// The request's checked authority (`None`: HTTP/1.0 without `Host`).
    pub client_authority: Option<&'a Authority>,
    /// The chosen backend's own `Host`.
    pub upstream_authority: Option<&'a str>,
    pub peer: Option<IpAddr>,
    /// Whether the gateway's listener is reached over HTTPS (`server.secure`).
    pub secure: bool,
    pub trusted: &'a Trusted,
    /// Whether a cookie name is one of the gateway's own (never sent upstream).
    pub is_ours: &'a dyn Fn(&str) -> bool,
}

/// Edits to the upstream request, applied in this order: remove `remove` (names as
/// sent), then `set` each (replacing), then `append` each.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RequestPlan {
    pub remove: Vec<String>,
    pub set: Vec<(&'static str, String)>,
    pub append: Vec<(&'static str, String)>,
}

/// The upstream request's header edits: every client header the gateway owns or that
/// would mislead the upstream goes (see [`headers::to_remove`]); the request id, the
/// Bearer and identity of the authenticated user, the routed `Host` and the forwarding
/// headers are set from what the gateway decided, never from what the client sent.
pub(crate) fn request_plan(o: &Outbound<'_>) -> RequestPlan {
    // The client's `Authorization` is replaced on login and api routes, and removed on
    // public ones unless the route passes it on.
    let strip_authorization = o.route.auth != AuthKind::Public || !o.route.pass_authorization;
    let upgrade = headers::is_upgrade(o.headers);
    let mut remove: Vec<String> = headers::to_remove(o.headers, strip_authorization)
        .into_iter()
        // A WebSocket upgrade needs its `Connection: upgrade` to reach the upstream.
        .filter(|n| !(upgrade && n.eq_ignore_ascii_case("connection")))
        .collect();
    if o.headers.contains_key(http::header::COOKIE) {
        remove.push("cookie".to_string());
    }
    let mut set = vec![("x-request-id", o.request_id.to_string())];
    if let Some(c) = headers::filtered_cookie(o.headers, o.is_ours) {
        set.push(("cookie", c));
    }
    if let Some(a) = o.auth {
        set.push(("authorization", format!("Bearer {}", a.token)));
        set.extend(identity_headers(&a.identity, &a.scope));
    }
    let client_host = o.client_authority.map(Authority::to_header);
    // The routed host, normalised (never the raw field), or the upstream's own.
    match (&client_host, o.route.preserve_host, o.upstream_authority) {
        (Some(h), true, _) => set.push(("host", h.clone())),
        (_, _, Some(a)) => set.push(("host", a.to_string())),
        _ => {}
    }
    let proto = if o.secure { "https" } else { "http" };
    // From the headers as received: `remove` takes every forwarding header (any spelling).
    let append = forwarding(o.headers, o.peer, o.trusted, proto, client_host.as_deref()).headers();
    RequestPlan {
        remove,
        set,
        append,
    }
}

/// The upstream's `Set-Cookie` values to keep when some would set one of the gateway's
/// own cookies (`None`: none does, leave the response as it is). An upstream must not be
/// able to overwrite or clear the gateway's session.
pub(crate) fn upstream_set_cookies(
    response: &HeaderMap,
    is_ours: &dyn Fn(&str) -> bool,
) -> Option<Vec<String>> {
    let all: Vec<&str> = response
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let ours = |c: &&str| is_ours(c.split('=').next().unwrap_or("").trim());
    all.iter().any(ours).then(|| {
        all.iter()
            .filter(|c| !ours(c))
            .map(|c| c.to_string())
            .collect()
    })
}

/// Whether a request whose connection to a backend failed goes to another backend: once,
/// when there is another, and only for methods safe to send twice.
pub(crate) fn may_retry(method: &http::Method, already_retried: bool, backends: usize) -> bool {
    !already_retried && backends > 1 && idempotent(method)
}

/// Methods safe to send to a second backend after a connection failure.
fn idempotent(m: &http::Method) -> bool {
    matches!(
        *m,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
    )
}

/// Why proxying failed, as the adapter reads it from pingora's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyFailure {
    /// A phase asked for this status explicitly.
    Status(u16),
    /// The backend could not be reached, timed out or answered badly.
    Upstream,
    /// The client went away (read, write or connection closed): nothing to answer.
    ClientGone,
    /// The client's request could not be read as HTTP.
    ClientMalformed,
    /// Anything else: the gateway's own fault.
    Internal,
}

/// The status to log (0: none, the client is gone) and the reply to write, if any. No
/// upstream detail reaches the client.
pub(crate) fn failure_reply(f: ProxyFailure, navigation: bool) -> (u16, Option<Reply>) {
    let code = match f {
        ProxyFailure::Status(c) => c,
        ProxyFailure::Upstream => 502,
        ProxyFailure::ClientGone => 0,
        ProxyFailure::ClientMalformed => 400,
        ProxyFailure::Internal => 500,
    };
    let reply = match code {
        0 => None,
        502 | 504 => Some(Reply::error(
            502,
            navigation,
            "bad_gateway",
            "The application behind the gateway is not responding",
        )),
        400 => Some(Reply::error(400, navigation, "bad_request", "Bad request")),
        c => Some(Reply::error(c, navigation, "error", "Something went wrong")),
    };
    (code, reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::fixture;
    use crate::session::Identity;
    use crate::wire::host::parse_authority;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    fn route_config(name: &str, path: &str, auth: AuthKind) -> RouteConfig {
        let mut r = fixture::route_config(name, None, path, &[8080]);
        r.auth = auth;
        r.preserve_host = false;
        r
    }

    fn ours(name: &str) -> bool {
        name.starts_with("_loopgate")
    }

    fn outbound<'a>(
        headers: &'a HeaderMap,
        route: &'a RouteConfig,
        auth: Option<&'a Authenticated>,
        authority: Option<&'a Authority>,
        trusted: &'a Trusted,
    ) -> Outbound<'a> {
        Outbound {
            headers,
            route,
            auth,
            request_id: "rid-1",
            client_authority: authority,
            upstream_authority: Some("backend:8080"),
            peer: Some("192.0.2.7".parse().unwrap()),
            secure: true,
            trusted,
            is_ours: &ours,
        }
    }

    fn value<'a>(plan: &'a RequestPlan, name: &str) -> Vec<&'a str> {
        plan.set
            .iter()
            .chain(plan.append.iter())
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn login_route_replaces_credentials_and_identity_with_the_sessions() {
        let headers = map(&[
            ("Authorization", "Bearer client-chosen"),
            ("X-Loopwise-User", "admin"),
            ("x_forwarded_for", "6.6.6.6"),
            ("X-Request-Id", "forged"),
            ("Cookie", "_loopgate_session=s; theme=dark"),
            ("Accept", "text/html"),
        ]);
        let route = route_config("app", "/", AuthKind::Login);
        let auth = Authenticated {
            identity: Identity {
                sub: "ada".into(),
                ..Default::default()
            },
            scope: "read".into(),
            token: "tok-1".into(),
        };
        let trusted = Trusted::default();
        let plan = request_plan(&outbound(&headers, &route, Some(&auth), None, &trusted));
        for gone in [
            "authorization",
            "x-loopwise-user",
            "x_forwarded_for",
            "x-request-id",
            "cookie",
        ] {
            assert!(plan.remove.iter().any(|n| n == gone), "{gone} removed");
        }
        assert!(!plan.remove.iter().any(|n| n == "accept"));
        assert_eq!(value(&plan, "authorization"), ["Bearer tok-1"]);
        assert_eq!(value(&plan, "x-loopwise-user"), ["ada"]);
        assert_eq!(value(&plan, "x-request-id"), ["rid-1"]);
        assert_eq!(
            value(&plan, "cookie"),
            ["theme=dark"],
            "our cookie stays here"
        );
        assert_eq!(
            value(&plan, "x-forwarded-for"),
            ["192.0.2.7"],
            "the peer, not 6.6.6.6"
        );
        assert_eq!(value(&plan, "x-forwarded-proto"), ["https"]);
        assert_eq!(value(&plan, "host"), ["backend:8080"]);
    }

    #[test]
    fn public_route_passes_authorization_only_when_configured() {
        let headers = map(&[("Authorization", "Basic dTpw")]);
        let trusted = Trusted::default();
        let mut route = route_config("pub", "/", AuthKind::Public);
        let plan = request_plan(&outbound(&headers, &route, None, None, &trusted));
        assert!(plan.remove.iter().any(|n| n == "authorization"));
        route.pass_authorization = true;
        let plan = request_plan(&outbound(&headers, &route, None, None, &trusted));
        assert!(!plan.remove.iter().any(|n| n == "authorization"));
        assert!(value(&plan, "authorization").is_empty(), "nothing injected");
    }

    #[test]
    fn only_our_cookies_means_no_cookie_header() {
        let headers = map(&[("Cookie", "_loopgate_session=s")]);
        let trusted = Trusted::default();
        let route = route_config("pub", "/", AuthKind::Public);
        let plan = request_plan(&outbound(&headers, &route, None, None, &trusted));
        assert!(plan.remove.iter().any(|n| n == "cookie"));
        assert!(value(&plan, "cookie").is_empty());
    }

    #[test]
    fn host_is_the_normalised_client_host_only_with_preserve_host() {
        let headers = map(&[("Host", "App.Example.COM.")]);
        let authority = parse_authority("App.Example.COM.").unwrap();
        let trusted = Trusted::default();
        let mut route = route_config("app", "/", AuthKind::Public);
        let plan = request_plan(&outbound(
            &headers,
            &route,
            None,
            Some(&authority),
            &trusted,
        ));
        assert_eq!(value(&plan, "host"), ["backend:8080"]);
        assert_eq!(value(&plan, "x-forwarded-host"), [authority.to_header()]);
        route.preserve_host = true;
        let plan = request_plan(&outbound(
            &headers,
            &route,
            None,
            Some(&authority),
            &trusted,
        ));
        assert_eq!(value(&plan, "host"), [authority.to_header()]);
    }

    #[test]
    fn upgrade_keeps_its_connection_header() {
        let headers = map(&[("Connection", "Upgrade"), ("Upgrade", "websocket")]);
        let trusted = Trusted::default();
        let route = route_config("ws", "/", AuthKind::Public);
        let plan = request_plan(&outbound(&headers, &route, None, None, &trusted));
        assert!(!plan.remove.iter().any(|n| n == "connection"));
        let plain = map(&[("Connection", "keep-alive, x-secret"), ("X-Secret", "1")]);
        let plan = request_plan(&outbound(&plain, &route, None, None, &trusted));
        assert!(plan.remove.iter().any(|n| n == "connection"));
        assert!(plan.remove.iter().any(|n| n == "x-secret"), "nominated");
    }

    #[test]
    fn trusted_proxy_chain_is_extended() {
        let headers = map(&[("X-Forwarded-For", "203.0.113.9")]);
        let trusted = Trusted(vec!["192.0.2.0/24".parse().unwrap()]);
        let route = route_config("app", "/", AuthKind::Public);
        let plan = request_plan(&outbound(&headers, &route, None, None, &trusted));
        assert_eq!(value(&plan, "x-forwarded-for"), ["203.0.113.9, 192.0.2.7"]);
        assert_eq!(value(&plan, "x-real-ip"), ["203.0.113.9"]);
    }

    #[test]
    fn upstream_cannot_set_our_cookies() {
        let resp = map(&[
            ("Set-Cookie", "a=1; Path=/"),
            ("Set-Cookie", "_loopgate_session=evil; Path=/"),
            ("Set-Cookie", " _loopgate_csrf =x"),
        ]);
        assert_eq!(
            upstream_set_cookies(&resp, &ours),
            Some(vec!["a=1; Path=/".into()])
        );
        let clean = map(&[("Set-Cookie", "a=1")]);
        assert_eq!(upstream_set_cookies(&clean, &ours), None, "left untouched");
    }

    #[test]
    fn retries_once_for_idempotent_methods_with_another_backend() {
        use http::Method;
        assert!(may_retry(&Method::GET, false, 2));
        assert!(may_retry(&Method::DELETE, false, 3));
        assert!(!may_retry(&Method::GET, true, 2), "only once");
        assert!(!may_retry(&Method::GET, false, 1), "no other backend");
        assert!(!may_retry(&Method::POST, false, 2), "not idempotent");
        assert!(!may_retry(&Method::PATCH, false, 2));
    }

    #[test]
    fn failures_map_to_statuses_without_detail() {
        assert_eq!(failure_reply(ProxyFailure::Upstream, false).0, 502);
        let (code, reply) = failure_reply(ProxyFailure::Status(504), true);
        assert_eq!((code, reply.unwrap().status), (504, 502));
        assert_eq!(failure_reply(ProxyFailure::ClientGone, false).0, 0);
        assert!(failure_reply(ProxyFailure::ClientGone, false).1.is_none());
        assert_eq!(failure_reply(ProxyFailure::ClientMalformed, false).0, 400);
        let (code, reply) = failure_reply(ProxyFailure::Internal, false);
        let reply = reply.unwrap();
        assert_eq!((code, reply.status), (500, 500));
        assert!(!String::from_utf8_lossy(&reply.body).contains("pingora"));
        assert_eq!(failure_reply(ProxyFailure::Status(413), false).0, 413);
    }
}
