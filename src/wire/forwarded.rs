//! `X-Forwarded-*`, `Forwarded` and `X-Real-IP`: believed only from configured proxy
//! CIDRs; from anyone else they are replaced with what the gateway saw, so an upstream
//! can trust them as the gateway set them.

use std::net::IpAddr;

use http::HeaderMap;

use crate::wire::host::parse_authority;

/// An IP network, e.g. `10.0.0.0/8` or `::1/128` (a bare address is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{a}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("`/{p}` is not a prefix length for this address family"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The configured trusted proxies (empty: trust nobody, the default).
#[derive(Debug, Clone, Default)]
pub struct Trusted(pub Vec<Cidr>);

impl Trusted {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client address: the peer, or — when the peer is a trusted proxy — the
    /// right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client_ip<'a>(&self, peer: IpAddr, xff: impl IntoIterator<Item = &'a str>) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = xff
            .into_iter()
            .flat_map(|v| v.split(','))
            .filter_map(|h| h.trim().parse().ok())
            .collect();
        hops.iter()
            .rev()
            .find(|ip| !self.contains(**ip))
            .copied()
            .unwrap_or(peer)
    }
}

/// Every request header about the client's connection. All are removed from the client's
/// request (see `headers::to_remove`, `_` variants included) and set again from
/// [`forwarding`]. The first five the gateway always sets; the rest
/// ([`PROXY_ONLY_HEADERS`]) are passed on only from a trusted proxy.
pub(crate) const FORWARDING_HEADERS: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
    // Set by front proxies and read by common frameworks as the client's scheme, port,
    // path prefix, original URI or address.
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-forwarded-protocol",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-url-scheme",
    "front-end-https",
    "x-original-uri",
    "x-original-method",
    "x-original-forwarded-for",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "client-ip",
];

/// The part of [`FORWARDING_HEADERS`] the gateway does not compute: a trusted proxy's
/// copies are passed on, anyone else's dropped.
pub(crate) const PROXY_ONLY_HEADERS: &[&str] = FORWARDING_HEADERS.split_at(5).1;

/// What to set on the upstream request, after removing every [`FORWARDING_HEADERS`] name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Forwarding {
    pub x_forwarded_for: Option<String>,
    pub x_forwarded_proto: String,
    pub x_forwarded_host: Option<String>,
    /// RFC 7239; always has at least the gateway's own element.
    pub forwarded: String,
    pub x_real_ip: Option<String>,
    /// A trusted proxy's [`PROXY_ONLY_HEADERS`] fields, in order (empty otherwise).
    pub passed: Vec<(&'static str, String)>,
}

impl Forwarding {
    /// Every `(name, value)` to append upstream.
    pub(crate) fn headers(self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(5 + self.passed.len());
        if let Some(v) = self.x_forwarded_for {
            out.push(("x-forwarded-for", v));
        }
        out.push(("x-forwarded-proto", self.x_forwarded_proto));
        if let Some(v) = self.x_forwarded_host {
            out.push(("x-forwarded-host", v));
        }
        out.push(("forwarded", self.forwarded));
        if let Some(v) = self.x_real_ip {
            out.push(("x-real-ip", v));
        }
        out.extend(self.passed);
        out
    }
}

/// The forwarding headers for the upstream request. `headers` are the client's request
/// headers as received (before any removal); `peer` the TCP peer; `trusted` the configured
/// `server.trusted_proxies`; `proto` our listener's scheme (`https` or else `http`); `host`
/// the normalised request authority (`Authority::to_header()`; re-validated here).
///
/// From an untrusted peer every client value is ignored. From a trusted proxy: its
/// `X-Forwarded-For` chain is extended with the peer; its `X-Forwarded-Proto` (one field,
/// `http`/`https`) and `X-Forwarded-Host` (one field, a valid authority) are kept, else
/// ours; its `Forwarded` is extended with our element; its `X-Real-IP` is kept when it is
/// one IP address, else the client address from [`Trusted::client_ip`]; its
/// [`PROXY_ONLY_HEADERS`] are passed on. Values that are not visible ASCII are dropped.
pub(crate) fn forwarding(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    trusted: &Trusted,
    proto: &str,
    host: Option<&str>,
) -> Forwarding {
    let proto = if proto.eq_ignore_ascii_case("https") {
        "https"
    } else {
        "http"
    };
    let host = host
        .and_then(|h| parse_authority(h).ok())
        .map(|a| a.to_header());
    let ours = forwarded_element(peer, host.as_deref(), proto);
    let Some(peer) = peer.filter(|p| trusted.contains(*p)) else {
        let peer = peer.map(|p| p.to_string());
        return Forwarding {
            x_real_ip: peer.clone(),
            x_forwarded_for: peer,
            x_forwarded_proto: proto.to_string(),
            x_forwarded_host: host,
            forwarded: ours,
            passed: Vec::new(),
        };
    };
    let fields = |name: &str| -> Vec<&str> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.trim_matches([' ', '\t']))
            .filter(|v| !v.is_empty())
            .collect()
    };
    let single = |name: &str| match fields(name).as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    let append = |name: &str, last: String| {
        let mut all: Vec<String> = fields(name).into_iter().map(str::to_string).collect();
        all.push(last);
        all.join(", ")
    };
    let xff = fields("x-forwarded-for");
    Forwarding {
        x_forwarded_for: Some(append("x-forwarded-for", peer.to_string())),
        x_forwarded_proto: single("x-forwarded-proto")
            .filter(|p| p.eq_ignore_ascii_case("http") || p.eq_ignore_ascii_case("https"))
            .map_or_else(|| proto.to_string(), str::to_ascii_lowercase),
        x_forwarded_host: single("x-forwarded-host")
            .and_then(|h| parse_authority(h).ok())
            .map(|a| a.to_header())
            .or(host),
        forwarded: append("forwarded", ours),
        x_real_ip: Some(
            single("x-real-ip")
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .unwrap_or_else(|| trusted.client_ip(peer, xff.iter().copied()))
                .to_string(),
        ),
        passed: PROXY_ONLY_HEADERS
            .iter()
            .flat_map(|name| fields(name).into_iter().map(|v| (*name, v.to_string())))
            .collect(),
    }
}

/// Our RFC 7239 element: `for=<peer>;host=<host>;proto=<proto>`.
fn forwarded_element(peer: Option<IpAddr>, host: Option<&str>, proto: &str) -> String {
    let node = match peer {
        Some(IpAddr::V6(v6)) => format!("[{v6}]"),
        Some(v4) => v4.to_string(),
        None => "unknown".to_string(),
    };
    let mut out = format!("for={}", rfc7239_value(&node));
    if let Some(h) = host {
        out.push_str(";host=");
        out.push_str(&rfc7239_value(h));
    }
    out.push_str(";proto=");
    out.push_str(&rfc7239_value(proto));
    out
}

/// A token as is, anything else as a quoted-string (RFC 7230 `quoted-string`, which
/// RFC 7239 uses): `"` and `\` escaped, control characters dropped.
fn rfc7239_value(v: &str) -> String {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !v.is_empty() && v.chars().all(tchar) {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars().filter(|c| c.is_ascii() && !c.is_ascii_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.1.2.3")) && !c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.0.0.1")), "v4-mapped v6");
        let h: Cidr = "127.0.0.1".parse().unwrap();
        assert!(h.contains(ip("127.0.0.1")) && !h.contains(ip("127.0.0.2")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "x", "::/129", "1.2.3.4/-1"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn client_ip_only_from_trusted_proxies() {
        let none = Trusted::default();
        assert_eq!(none.client_ip(ip("1.1.1.1"), ["6.6.6.6"]), ip("1.1.1.1"));
        let t = Trusted(vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(
            t.client_ip(ip("10.0.0.5"), ["6.6.6.6, 203.0.113.7, 10.0.0.9"]),
            ip("203.0.113.7")
        );
        assert_eq!(
            t.client_ip(ip("192.0.2.1"), ["6.6.6.6"]),
            ip("192.0.2.1"),
            "untrusted peer"
        );
        assert_eq!(t.client_ip(ip("10.0.0.5"), ["garbage"]), ip("10.0.0.5"));
    }

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

    fn proxies() -> Trusted {
        Trusted(vec![
            "10.0.0.0/8".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ])
    }

    fn spoofed() -> HeaderMap {
        map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "admin.example.edu"),
            ("forwarded", "for=6.6.6.6;host=admin.example.edu"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-prefix", "/admin"),
            ("x-forwarded-port", "443"),
            ("true-client-ip", "6.6.6.6"),
        ])
    }

    #[test]
    fn untrusted_peers_get_what_the_gateway_saw() {
        let f = forwarding(
            &spoofed(),
            Some(ip("203.0.113.9")),
            &proxies(),
            "http",
            Some("app.example.edu"),
        );
        assert_eq!(
            f,
            Forwarding {
                x_forwarded_for: Some("203.0.113.9".into()),
                x_forwarded_proto: "http".into(),
                x_forwarded_host: Some("app.example.edu".into()),
                forwarded: "for=203.0.113.9;host=app.example.edu;proto=http".into(),
                x_real_ip: Some("203.0.113.9".into()),
                passed: vec![],
            }
        );
        // Nobody is trusted by default, whatever the peer.
        let f = forwarding(
            &spoofed(),
            Some(ip("10.0.0.1")),
            &Trusted::default(),
            "https",
            None,
        );
        assert_eq!(f.x_forwarded_for.as_deref(), Some("10.0.0.1"));
        assert_eq!(f.x_forwarded_proto, "https");
        assert_eq!(f.x_forwarded_host, None);
        assert_eq!(f.forwarded, "for=10.0.0.1;proto=https");
        assert!(f.passed.is_empty());
    }

    #[test]
    fn forwarded_element_quoting() {
        let f = forwarding(
            &HeaderMap::new(),
            Some(ip("::1")),
            &Trusted::default(),
            "https",
            Some("[::1]:8443"),
        );
        assert_eq!(f.forwarded, r#"for="[::1]";host="[::1]:8443";proto=https"#);
        assert_eq!(f.x_forwarded_host.as_deref(), Some("[::1]:8443"));
        let f = forwarding(
            &HeaderMap::new(),
            None,
            &proxies(),
            "ftp",
            Some("App.Edu:8080"),
        );
        assert_eq!(f.forwarded, r#"for=unknown;host="app.edu:8080";proto=http"#);
        assert_eq!((f.x_forwarded_for, f.x_real_ip), (None, None));
        // A host the caller failed to normalise is not forwarded at all.
        let f = forwarding(&HeaderMap::new(), None, &proxies(), "http", Some("a\r\nb"));
        assert_eq!(f.x_forwarded_host, None);
        assert_eq!(f.forwarded, "for=unknown;proto=http");
        assert_eq!(rfc7239_value(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(rfc7239_value(""), r#""""#);
        assert_eq!(rfc7239_value("a\u{1}b"), r#""ab""#);
    }

    #[test]
    fn trusted_proxies_are_extended() {
        let f = forwarding(
            &map(&[
                ("x-forwarded-for", "198.51.100.1, 6.6.6.6"),
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "HTTPS"),
                ("x-forwarded-host", "App.Example.edu."),
                ("forwarded", "for=203.0.113.7;proto=https"),
                ("x-real-ip", "203.0.113.7"),
                ("x-forwarded-prefix", "/app"),
                ("X-Forwarded-Port", "443"),
            ]),
            Some(ip("10.0.0.5")),
            &proxies(),
            "http",
            Some("internal:8080"),
        );
        assert_eq!(
            f,
            Forwarding {
                x_forwarded_for: Some("198.51.100.1, 6.6.6.6, 203.0.113.7, 10.0.0.5".into()),
                x_forwarded_proto: "https".into(),
                x_forwarded_host: Some("app.example.edu".into()),
                forwarded:
                    r#"for=203.0.113.7;proto=https, for=10.0.0.5;host="internal:8080";proto=http"#
                        .into(),
                x_real_ip: Some("203.0.113.7".into()),
                passed: vec![
                    ("x-forwarded-port", "443".into()),
                    ("x-forwarded-prefix", "/app".into()),
                ],
            }
        );
        let headers = f.headers();
        assert_eq!(
            headers[..3],
            [
                (
                    "x-forwarded-for",
                    "198.51.100.1, 6.6.6.6, 203.0.113.7, 10.0.0.5".to_string()
                ),
                ("x-forwarded-proto", "https".to_string()),
                ("x-forwarded-host", "app.example.edu".to_string()),
            ]
        );
        assert_eq!(headers.len(), 7);
    }

    #[test]
    fn trusted_values_are_still_validated() {
        let f = forwarding(
            &map(&[
                ("x-forwarded-for", "203.0.113.7, 10.0.0.9"),
                ("x-forwarded-proto", "javascript"),
                ("x-forwarded-host", "a.edu,b.edu"),
                ("x-real-ip", "not-an-ip"),
            ]),
            Some(ip("10.0.0.5")),
            &proxies(),
            "https",
            Some("app.edu"),
        );
        assert_eq!(f.x_forwarded_proto, "https");
        assert_eq!(f.x_forwarded_host.as_deref(), Some("app.edu"));
        assert_eq!(
            f.x_real_ip.as_deref(),
            Some("203.0.113.7"),
            "right-most untrusted hop"
        );
        assert_eq!(f.forwarded, "for=10.0.0.5;host=app.edu;proto=https");
        // Several fields of a single-valued header are not believed either.
        let f = forwarding(
            &map(&[
                ("x-forwarded-proto", "http"),
                ("x-forwarded-proto", "https"),
                ("x-real-ip", "203.0.113.7"),
                ("x-real-ip", "203.0.113.8"),
            ]),
            Some(ip("fd00::1")),
            &proxies(),
            "https",
            None,
        );
        assert_eq!(f.x_forwarded_proto, "https");
        assert_eq!(f.x_real_ip.as_deref(), Some("fd00::1"));
        assert_eq!(f.x_forwarded_for.as_deref(), Some("fd00::1"));
        assert_eq!(f.forwarded, r#"for="[fd00::1]";proto=https"#);
    }

    #[test]
    fn header_lists() {
        assert_eq!(
            FORWARDING_HEADERS[..5],
            [
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "forwarded",
                "x-real-ip"
            ]
        );
        assert_eq!(PROXY_ONLY_HEADERS.len(), FORWARDING_HEADERS.len() - 5);
        for h in FORWARDING_HEADERS {
            assert!(
                http::HeaderName::from_static(h).as_str() == *h,
                "{h} lower-case"
            );
        }
    }

    use crate::testing::proptest_cases as cases;

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            (0u8..=255).prop_map(|b| IpAddr::from([10, 0, 0, b])),
            any::<[u8; 16]>().prop_map(IpAddr::from),
        ]
    }

    proptest! {
        #![proptest_config(cases())]

        #[test]
        fn outputs_are_valid_header_values(
            fields in proptest::collection::vec(
                (proptest::sample::select(FORWARDING_HEADERS.to_vec()), proptest::collection::vec(any::<u8>(), 0..40)),
                0..8,
            ),
            peer in proptest::option::of(any_ip()),
            trust_all in any::<bool>(),
            proto in any::<String>(),
            host in proptest::option::of(any::<String>()),
        ) {
            let mut m = HeaderMap::new();
            for (k, v) in &fields {
                if let Ok(v) = http::HeaderValue::from_bytes(v) {
                    m.append(*k, v);
                }
            }
            let trusted = if trust_all { Trusted(vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]) } else { proxies() };
            let f = forwarding(&m, peer, &trusted, &proto, host.as_deref());
            for (name, v) in f.clone().headers() {
                prop_assert!(FORWARDING_HEADERS.contains(&name));
                prop_assert!(!v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0), "{name}: {v:?}");
                prop_assert!(http::HeaderValue::from_str(&v).is_ok(), "{name}: {v:?}");
            }
            if !peer.is_some_and(|p| trusted.contains(p)) {
                // Nothing the client sent survives.
                prop_assert!(f.passed.is_empty());
                prop_assert_eq!(f.x_forwarded_for, peer.map(|p| p.to_string()));
                prop_assert_eq!(f.x_real_ip, peer.map(|p| p.to_string()));
                prop_assert!(f.x_forwarded_proto == "http" || f.x_forwarded_proto == "https");
                prop_assert!(!f.forwarded.contains(','));
            }
        }
    }
}
