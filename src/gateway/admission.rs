//! What a request must be before any route or session is looked at, and where it goes:
//! unambiguous framing, a valid authority, a path normalised once; then a gateway
//! endpoint, a route (with the path and query to send upstream), or a typed denial.
//! Pure: the pingora adapter hands in the parsed head and the raw head bytes.

use std::sync::Arc;

use http::{HeaderMap, Uri, Version};

use super::denial::{Denial, Malformed};
use crate::routes::{Route, RouteTable};
use crate::wire::framing::{self, Framing, FramingError};
use crate::wire::host::{self, Authority, HostError};
use crate::wire::path::{self, NormalPath, PathError};

/// A request head as the adapter sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head<'a> {
    pub version: Version,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// The HTTP/1 head as received (empty for HTTP/2): what pingora's parsed form hides.
    pub raw: &'a [u8],
}

/// A request that may be looked at further.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// The checked authority (`None`: an HTTP/1.0 request without `Host`).
    pub authority: Option<Authority>,
    pub path: NormalPath,
}

/// Why a request was refused at the door.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("ambiguous framing: {0}")]
    Framing(#[from] FramingError),
    #[error("bad host: {0}")]
    Host(#[from] HostError),
    #[error("bad path: {0}")]
    Path(#[from] PathError),
}

impl Refused {
    pub(crate) fn malformed(&self) -> Malformed {
        match self {
            Refused::Framing(_) => Malformed::Framing,
            Refused::Host(_) => Malformed::Host,
            Refused::Path(_) => Malformed::Path,
        }
    }
}

/// Checks framing first (when it is ambiguous nothing after this request can be trusted),
/// then the authority, then the path.
pub(crate) fn admit(head: Head<'_>) -> Result<Admitted, Refused> {
    let f = framing::request_framing(head.headers)?;
    // pingora has already dropped a `Content-Length` sent with `chunked`: look at the raw.
    if f == Framing::Chunked && framing::raw_head_has_content_length(head.raw) {
        return Err(FramingError::LengthAndChunked.into());
    }
    let fields: Vec<&[u8]> = head
        .headers
        .get_all(http::header::HOST)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    // An origin-form target has no authority; absolute-form and HTTP/2 carry one.
    let target = if head.version == Version::HTTP_2 {
        head.uri.authority().map(|a| a.as_str())
    } else {
        host::absolute_form_authority(head.raw)
    };
    let authority = host::request_authority(&fields, target, head.version == Version::HTTP_11)?;
    let path = path::normalize(head.uri.path())?;
    Ok(Admitted { authority, path })
}

/// Where an admitted request goes.
#[derive(Debug)]
pub(crate) enum Plan {
    /// A gateway endpoint under `server.prefix`.
    Endpoint,
    /// A route, with the path and query to send upstream.
    Route {
        route: Arc<Route>,
        upstream_uri: String,
    },
    Deny(Denial),
}

/// Routes an admitted request: the prefix is the gateway's; `;params` only where the
/// route opts in (policy then ignores them); the query goes upstream as it came.
pub(crate) fn plan(
    prefix: &str,
    routes: &RouteTable,
    host: Option<&str>,
    norm: &NormalPath,
    query: Option<&str>,
) -> Plan {
    if path::under_prefix(&norm.path, prefix) {
        return if norm.has_params {
            Plan::Deny(Denial::BadRequest(Malformed::Path))
        } else {
            Plan::Endpoint
        };
    }
    let Some(route) = routes.find(host, &norm.path) else {
        return Plan::Deny(Denial::NoRoute);
    };
    if norm.has_params && !route.config.allow_path_params {
        return Plan::Deny(Denial::BadRequest(Malformed::Path));
    }
    let upstream_path = route.upstream_path(norm);
    let upstream_uri = match query {
        Some(q) => format!("{upstream_path}?{q}"),
        None => upstream_path,
    };
    Plan::Route {
        route: route.clone(),
        upstream_uri,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::fixture::route_config;

    fn head_of(raw: &'static [u8]) -> (HeaderMap, Uri) {
        // A tiny parser for the test heads: request line, then `name: value` lines.
        let text = std::str::from_utf8(raw).unwrap();
        let mut lines = text.split("\r\n");
        let target = lines.next().unwrap().split(' ').nth(1).unwrap();
        let mut headers = HeaderMap::new();
        for l in lines.take_while(|l| !l.is_empty()) {
            let (k, v) = l.split_once(':').unwrap();
            headers.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.trim().parse().unwrap(),
            );
        }
        (headers, target.parse().unwrap())
    }

    fn admit_raw(raw: &'static [u8]) -> Result<Admitted, Refused> {
        let (headers, uri) = head_of(raw);
        admit(Head {
            version: Version::HTTP_11,
            uri: &uri,
            headers: &headers,
            raw,
        })
    }

    #[test]
    fn admits_a_plain_request() {
        let a = admit_raw(b"GET /a/./b/../c HTTP/1.1\r\nHost: Example.COM:8080\r\n\r\n").unwrap();
        assert_eq!(a.path.path, "/a/c");
        let auth = a.authority.unwrap();
        assert_eq!(auth.host, "example.com");
        assert_eq!(auth.to_header(), "example.com:8080");
    }

    #[test]
    fn framing_is_checked_first() {
        let r = admit_raw(
            b"POST /%2561 HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        )
        .unwrap_err();
        assert_eq!(r.malformed(), Malformed::Framing);
        let r =
            admit_raw(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n").unwrap_err();
        assert_eq!(r.malformed(), Malformed::Framing);
    }

    #[test]
    fn host_then_path() {
        let r = admit_raw(b"GET /%2561 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").unwrap_err();
        assert_eq!(r.malformed(), Malformed::Host);
        let r = admit_raw(b"GET /%2561dmin HTTP/1.1\r\nHost: a\r\n\r\n").unwrap_err();
        assert_eq!(r.malformed(), Malformed::Path);
        let r = admit_raw(b"GET http://b/x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap_err();
        assert_eq!(r.malformed(), Malformed::Host);
    }

    #[test]
    fn plans_endpoint_route_or_denial() {
        let mut strip = route_config("app", None, "/app", &[8080]);
        strip.strip_prefix = true;
        let mut policy = route_config("policy", None, "/policy", &[]);
        policy.allow_path_params = true;
        let table = RouteTable::new(&[strip, policy]);
        let norm = |p| path::normalize(p).unwrap();
        assert!(matches!(
            plan("/oauth2", &table, None, &norm("/oauth2/start"), None),
            Plan::Endpoint
        ));
        assert!(matches!(
            plan("/oauth2", &table, None, &norm("/oauth2/start;x"), None),
            Plan::Deny(Denial::BadRequest(Malformed::Path))
        ));
        assert!(matches!(
            plan("/oauth2", &table, None, &norm("/elsewhere"), None),
            Plan::Deny(Denial::NoRoute)
        ));
        assert!(matches!(
            plan("/oauth2", &table, None, &norm("/app/x;p"), None),
            Plan::Deny(Denial::BadRequest(Malformed::Path))
        ));
        match plan("/oauth2", &table, None, &norm("/app/x"), Some("q=1&r")) {
            Plan::Route {
                route,
                upstream_uri,
            } => {
                assert_eq!(route.config.name, "app");
                assert_eq!(upstream_uri, "/x?q=1&r");
            }
            other => panic!("{other:?}"),
        }
        match plan("/oauth2", &table, None, &norm("/policy/y;p"), None) {
            Plan::Route { route, .. } => assert!(route.is_policy_only()),
            other => panic!("{other:?}"),
        }
    }
}
