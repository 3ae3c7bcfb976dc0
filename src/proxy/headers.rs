//! Header hygiene for requests sent upstream (DESIGN §4 item 7). Pure: each function
//! decides from an `http::HeaderMap`; the pingora glue applies the result.

use http::HeaderMap;

use crate::session::Identity;

/// Headers the gateway sets from the session; a client's copies are always removed.
pub const IDENTITY_HEADERS: &[&str] = &[
    "x-loopwise-user",
    "x-loopwise-email",
    "x-loopwise-name",
    "x-loopwise-roles",
    "x-loopwise-school",
    "x-loopwise-scope",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-forwarded-access-token",
];

/// Prefixes of identity-looking headers also removed (oauth2-proxy's `X-Auth-Request-*`,
/// and anything the gateway may add under `X-Loopwise-` later).
const IDENTITY_PREFIXES: &[&str] = &["x-loopwise-", "x-auth-request-"];

/// Always hop-by-hop (RFC 9110 §7.6.1), plus legacy ones proxies still see.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
];

/// Headers a `Connection` field may not remove: message framing and routing.
const NEVER_NOMINATED: &[&str] = &["host", "content-length", "transfer-encoding", "upgrade"];

/// Lower-case with `_` read as `-`, the way many upstream frameworks read header names.
pub fn canonical(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

fn is_identity(canon: &str) -> bool {
    IDENTITY_HEADERS.contains(&canon) || IDENTITY_PREFIXES.iter().any(|p| canon.starts_with(p))
}

/// Names (as sent) of every request header to drop before forwarding.
/// `strip_authorization` is set on session routes, where the gateway's Bearer replaces it.
pub fn to_remove(headers: &HeaderMap, strip_authorization: bool) -> Vec<String> {
    let nominated: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| canonical(t.trim()))
        .filter(|t| !t.is_empty() && !NEVER_NOMINATED.contains(&t.as_str()))
        .collect();
    let mut out = Vec::new();
    for name in headers.keys() {
        let canon = canonical(name.as_str());
        let drop = HOP_BY_HOP.contains(&canon.as_str())
            || nominated.contains(&canon)
            || is_identity(&canon)
            || (strip_authorization && canon == "authorization");
        if drop && !out.iter().any(|n: &String| n == name.as_str()) {
            out.push(name.as_str().to_string());
        }
    }
    out
}

/// Whether this request asks for a protocol upgrade (WebSocket); its `Connection: upgrade`
/// and `Upgrade` must survive.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::UPGRADE)
        && headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The `Cookie` value to forward with the gateway's own cookies removed (`None`: drop
/// the header). `is_ours` decides by cookie name.
pub fn filtered_cookie(headers: &HeaderMap, is_ours: &dyn Fn(&str) -> bool) -> Option<String> {
    let kept: Vec<&str> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("").trim();
            !is_ours(name)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// A header-safe rendering of a value from Loopwise: control characters removed.
pub fn sanitize(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}

/// The identity headers to inject, in order.
pub fn identity_headers(id: &Identity, scope: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-loopwise-user", sanitize(&id.sub)),
        ("x-loopwise-email", sanitize(&id.email)),
        ("x-loopwise-name", sanitize(&id.name)),
        ("x-loopwise-roles", sanitize(&id.roles.join(","))),
        ("x-loopwise-school", sanitize(&id.school)),
        ("x-loopwise-scope", sanitize(scope)),
        ("x-forwarded-user", sanitize(&id.sub)),
        ("x-forwarded-email", sanitize(&id.email)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn spoofed_identity_is_removed_case_and_underscore_insensitively() {
        let h = map(&[
            ("X-Loopwise-User", "admin"),
            ("x_loopwise_roles", "school_admin"),
            ("X_Forwarded_Email", "a@b"),
            ("x-auth-request-user", "x"),
            ("authorization", "Bearer forged"),
            ("accept", "*/*"),
        ]);
        let mut r = to_remove(&h, true);
        r.sort();
        assert_eq!(
            r,
            [
                "authorization",
                "x-auth-request-user",
                "x-loopwise-user",
                "x_forwarded_email",
                "x_loopwise_roles"
            ]
        );
        assert!(!to_remove(&h, false).contains(&"authorization".to_string()));
    }

    #[test]
    fn connection_nominated_headers_go_but_framing_stays() {
        let h = map(&[
            ("connection", "keep-alive, X-Secret, content-length, Host"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("content-length", "0"),
            ("te", "trailers"),
        ]);
        let mut r = to_remove(&h, false);
        r.sort();
        assert_eq!(r, ["connection", "keep-alive", "te", "x-secret"]);
    }

    #[test]
    fn only_gateway_cookies_are_filtered() {
        let h = map(&[
            ("cookie", "a=1; lg=sealed; lg_0=x"),
            ("cookie", "b=2; lg_login_ab=y"),
        ]);
        let ours = |n: &str| n == "lg" || n.starts_with("lg_");
        assert_eq!(filtered_cookie(&h, &ours).as_deref(), Some("a=1; b=2"));
        let h = map(&[("cookie", "lg=1")]);
        assert_eq!(filtered_cookie(&h, &ours), None);
    }

    #[test]
    fn injected_values_cannot_split_headers() {
        let id = Identity {
            sub: "ada\r\nX-Evil: 1".into(),
            ..Default::default()
        };
        let h = identity_headers(&id, "read");
        assert_eq!(h[0].1, "adaX-Evil: 1");
    }

    #[test]
    fn upgrade_detection() {
        assert!(is_upgrade(&map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket")
        ])));
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
    }
}
