//! Header hygiene for requests sent upstream. Pure: each function decides from an
//! `http::HeaderMap`; the pingora glue applies the result.

use http::HeaderMap;
use std::borrow::Cow;

use super::forwarded::FORWARDING_HEADERS;

/// Headers the gateway sets from the session; a client's copies are always removed.
pub(crate) const IDENTITY_HEADERS: &[&str] = &[
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
/// anything the gateway may add under `X-Loopwise-` later, Grafana's `X-WEBAUTH-*` and
/// Kubernetes' `X-Remote-User`/`-Group`/`-Extra-*`).
const IDENTITY_PREFIXES: &[&str] = &["x-loopwise-", "x-auth-request-", "x-webauth-", "x-remote-"];

/// Headers that SSO-aware upstreams (Apache `REMOTE_USER`, Grafana, Gitea, Jenkins...)
/// read as the signed-in user: a client could otherwise name itself.
pub(crate) const SSO_IDENTITY_HEADERS: &[&str] =
    &["remote-user", "x-remote-user", "x-user", "x-webauth-user"];

/// Headers some frameworks (IIS, Symfony, Zend) obey as the request's real path, which
/// would bypass the policy decided on the path we route.
pub(crate) const URL_OVERRIDE_HEADERS: &[&str] = &["x-original-url", "x-rewrite-url"];

/// Set by the gateway on every proxied request; a client's copies (`_` variants too) go.
const GATEWAY_SET: &[&str] = &["x-request-id"];

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
/// Borrowed when the name already is (every `HeaderName` is lower-case, so only names
/// with `_` are copied): this runs for every header of every request.
pub(crate) fn canonical(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| b == b'_' || b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase().replace('_', "-"))
    } else {
        Cow::Borrowed(name)
    }
}

fn is_identity(canon: &str) -> bool {
    IDENTITY_HEADERS.contains(&canon)
        || SSO_IDENTITY_HEADERS.contains(&canon)
        || IDENTITY_PREFIXES.iter().any(|p| canon.starts_with(p))
}

/// Whether a client may never send this (canonical) header upstream: identity, URL
/// override, forwarding (set again by `forwarded::forwarding`) or gateway-set.
fn is_client_forbidden(canon: &str) -> bool {
    is_identity(canon)
        || URL_OVERRIDE_HEADERS.contains(&canon)
        || FORWARDING_HEADERS.contains(&canon)
        || GATEWAY_SET.contains(&canon)
}

/// Names (as sent) of every request header to drop before forwarding: hop-by-hop and
/// `Connection`-nominated ones, identity (gateway and SSO), URL-override, forwarding
/// ([`FORWARDING_HEADERS`]) and `X-Request-Id`, compared case-insensitively with `_` read
/// as `-`. Compute `forwarded::forwarding` from the headers *before* removing these.
/// `strip_authorization` also drops `Authorization`: on session routes the gateway's
/// Bearer replaces it, on public ones unless the route passes it on.
pub(crate) fn to_remove(headers: &HeaderMap, strip_authorization: bool) -> Vec<String> {
    let nominated: Vec<Cow<'_, str>> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| canonical(t.trim()))
        .filter(|t| !t.is_empty() && !NEVER_NOMINATED.contains(&t.as_ref()))
        .collect();
    let mut out = Vec::new();
    for name in headers.keys() {
        let canon = canonical(name.as_str());
        let drop = HOP_BY_HOP.contains(&canon.as_ref())
            || nominated.contains(&canon)
            || is_client_forbidden(&canon)
            || (strip_authorization && canon == "authorization");
        if drop && !out.iter().any(|n: &String| n == name.as_str()) {
            out.push(name.as_str().to_string());
        }
    }
    out
}

/// The client's `X-Request-Id` when there is exactly one and it is 1 to 128 of
/// `[A-Za-z0-9._-]`; else `None` (the caller makes one). Anything wider lets a client
/// forge log fields or smuggle separators into the upstream's logs.
pub(crate) fn client_request_id(headers: &HeaderMap) -> Option<&str> {
    let mut all = headers.get_all("x-request-id").iter();
    let (Some(one), None) = (all.next(), all.next()) else {
        return None;
    };
    let v = one.to_str().ok()?;
    let ok = (1..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then_some(v)
}

/// Whether this request asks for a protocol upgrade (WebSocket); its `Connection: upgrade`
/// and `Upgrade` must survive.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
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
pub(crate) fn filtered_cookie(
    headers: &HeaderMap,
    is_ours: &dyn Fn(&str) -> bool,
) -> Option<String> {
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
pub(crate) fn sanitize(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
    fn upgrade_detection() {
        assert!(is_upgrade(&map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket")
        ])));
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
    }

    #[test]
    fn url_override_sso_and_forwarding_headers_are_removed() {
        let h = map(&[
            ("X-Original-URL", "/admin"),
            ("x_rewrite_url", "/admin"),
            ("Remote-User", "admin"),
            ("remote_user", "admin"),
            ("X-Remote-User", "admin"),
            ("x-remote-group", "system:masters"),
            ("X-User", "admin"),
            ("X-WEBAUTH-USER", "admin"),
            ("x_webauth_email", "a@b"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("x_forwarded_for", "6.6.6.6"),
            ("X_Real_IP", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-prefix", "/admin"),
            ("X_Request_Id", "forged"),
            ("x-user-agent", "kept"),
            ("x-original-url-note", "kept"),
            ("authorization", "Basic eA=="),
        ]);
        let r = to_remove(&h, false);
        let mut kept: Vec<&str> = h
            .keys()
            .map(|k| k.as_str())
            .filter(|k| !r.iter().any(|n| n == k))
            .collect();
        kept.sort();
        assert_eq!(
            kept,
            ["authorization", "x-original-url-note", "x-user-agent"]
        );
        assert!(to_remove(&h, true).contains(&"authorization".to_string()));
    }

    #[test]
    fn request_id_only_when_single_and_plain() {
        let id = |pairs: &[(&str, &str)]| client_request_id(&map(pairs)).map(str::to_string);
        assert_eq!(
            id(&[("x-request-id", "abc-123_X.9")]).as_deref(),
            Some("abc-123_X.9")
        );
        assert_eq!(
            id(&[("X-Request-Id", &"a".repeat(128))]),
            Some("a".repeat(128))
        );
        assert_eq!(id(&[]), None);
        assert_eq!(id(&[("x-request-id", &"a".repeat(129))]), None);
        for bad in [
            "", "a b", "a\"b", "a=b", "a,b", "id\tx", "a;b", "a/b", "{}", "a\\nb",
        ] {
            assert_eq!(id(&[("x-request-id", bad)]), None, "{bad:?}");
        }
        assert_eq!(id(&[("x-request-id", "a"), ("x-request-id", "a")]), None);
        let obs = {
            let mut m = HeaderMap::new();
            m.insert(
                "x-request-id",
                http::HeaderValue::from_bytes(b"a\xffb").unwrap(),
            );
            m
        };
        assert_eq!(client_request_id(&obs), None);
    }

    use crate::testing::proptest_cases as cases;

    /// A protected name with random case and random `-`/`_`, or an arbitrary name.
    fn header_name() -> impl Strategy<Value = String> {
        let protected: Vec<&'static str> = IDENTITY_HEADERS
            .iter()
            .chain(SSO_IDENTITY_HEADERS)
            .chain(URL_OVERRIDE_HEADERS)
            .chain(FORWARDING_HEADERS)
            .chain(["x-auth-request-email", "x-loopwise-new", "x-webauth-role"].iter())
            .copied()
            .collect();
        prop_oneof![
            (proptest::sample::select(protected), any::<u64>()).prop_map(|(n, bits)| {
                n.chars()
                    .enumerate()
                    .map(|(i, c)| {
                        let flip = bits >> (i % 64) & 1 == 1;
                        match c {
                            '-' if flip => '_',
                            c if flip => c.to_ascii_uppercase(),
                            c => c,
                        }
                    })
                    .collect()
            }),
            "[A-Za-z0-9_-]{1,24}",
        ]
    }

    proptest! {
        #![proptest_config(cases())]

        #[test]
        fn no_protected_header_survives(
            pairs in proptest::collection::vec((header_name(), "[ -~]{0,16}"), 0..12),
            strip in any::<bool>(),
        ) {
            let mut h = HeaderMap::new();
            for (k, v) in &pairs {
                h.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(v).unwrap(),
                );
            }
            let removed = to_remove(&h, strip);
            for name in h.keys() {
                let canon = canonical(name.as_str());
                let forbidden = IDENTITY_HEADERS.contains(&canon.as_ref())
                    || SSO_IDENTITY_HEADERS.contains(&canon.as_ref())
                    || URL_OVERRIDE_HEADERS.contains(&canon.as_ref())
                    || FORWARDING_HEADERS.contains(&canon.as_ref())
                    || canon.starts_with("x-loopwise-")
                    || canon.starts_with("x-auth-request-")
                    || (strip && canon == "authorization");
                let gone = removed.iter().any(|n| n == name.as_str());
                prop_assert!(!forbidden || gone, "{} survived", name);
            }
            // Each name once, and only names present.
            let mut uniq = removed.clone();
            uniq.sort();
            uniq.dedup();
            prop_assert_eq!(uniq.len(), removed.len());
            prop_assert!(removed.iter().all(|n| h.contains_key(n.as_str())));
        }
    }
}
