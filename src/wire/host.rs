//! Host matching for routes: exact (`app.example.com`), wildcard (`*.example.com`, any
//! depth below the apex, not the apex itself) or any host.

/// A route's host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Any,
    Exact(String),
    /// The suffix with its leading dot, e.g. `.example.com`.
    Wildcard(String),
}

impl HostPattern {
    /// Parses a config value; `None` means any host.
    pub fn parse(raw: Option<&str>) -> Result<HostPattern, String> {
        let Some(raw) = raw else {
            return Ok(HostPattern::Any);
        };
        let s = raw.trim().to_ascii_lowercase();
        if s == "*" {
            return Ok(HostPattern::Any);
        }
        let (wild, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, s.clone()),
        };
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || !name.split('.').all(valid_label) {
            return Err(
                "expected a host name like app.example.com or *.example.com (no port, no scheme)"
                    .into(),
            );
        }
        Ok(if wild {
            HostPattern::Wildcard(format!(".{name}"))
        } else {
            HostPattern::Exact(name)
        })
    }

    /// Whether a normalised host (`Authority::host`, see [`parse_authority`]) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }

    /// Higher is more specific: exact beats wildcard beats any; a longer suffix beats a
    /// shorter one.
    pub fn specificity(&self) -> (u8, usize) {
        match self {
            HostPattern::Any => (0, 0),
            HostPattern::Wildcard(s) => (1, s.len()),
            HostPattern::Exact(h) => (2, h.len()),
        }
    }
}

/// A request's authority (`Host`, `:authority`, an absolute-form target or
/// `X-Forwarded-Host`), validated and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authority {
    /// Lower-case, trailing dot removed, IPv6 in canonical form without brackets.
    pub host: String,
    pub port: Option<u16>,
}

impl Authority {
    /// `host[:port]` as forwarded upstream (IPv6 in brackets).
    pub(crate) fn to_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }
}

/// Why a request's authority is refused (each is a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostError {
    #[error("invalid host")]
    Invalid,
    #[error("more than one Host header")]
    Several,
    #[error("HTTP/1.1 request without Host")]
    Missing,
    #[error("Host disagrees with the request target")]
    Mismatch,
}

/// Longest authority accepted (a DNS name is at most 253 bytes, plus a port).
const MAX_AUTHORITY: usize = 255;

/// Strict RFC 3986 authority for `Host` / `:authority` / `X-Forwarded-Host`: a reg-name of
/// letters, digits, `-`, `.`, `_` with non-empty labels (one optional trailing dot), or
/// IPv4, or `[IPv6]` (std parser, so no zone id); an optional `:` port of 1-5 digits
/// <= 65535 (an empty port is refused); no userinfo, no other character; at most 255 bytes.
///
/// Lenient parsing is what lets `a.edu,b.edu` or `admin.edu:abc` route one way here and
/// another way upstream. A name whose last label looks numeric (`127.1`, `1.2.3.0x4`) but
/// is not a dotted-quad IPv4 is refused too: resolvers and URL parsers read those as IPs.
pub(crate) fn parse_authority(raw: &str) -> Result<Authority, HostError> {
    if raw.is_empty() || raw.len() > MAX_AUTHORITY || !raw.is_ascii() {
        return Err(HostError::Invalid);
    }
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(HostError::Invalid)?;
        let ip: std::net::Ipv6Addr = v6.parse().map_err(|_| HostError::Invalid)?;
        let port = match after {
            "" => None,
            p => Some(parse_port(p.strip_prefix(':').ok_or(HostError::Invalid)?)?),
        };
        (ip.to_string(), port)
    } else {
        let (name, port) = match raw.split_once(':') {
            Some((name, p)) => (name, Some(parse_port(p)?)),
            None => (raw, None),
        };
        (reg_name_or_ipv4(name)?, port)
    };
    Ok(Authority { host, port })
}

/// 1-5 ASCII digits, at most 65535.
fn parse_port(p: &str) -> Result<u16, HostError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::Invalid);
    }
    p.parse().map_err(|_| HostError::Invalid)
}

fn reg_name_or_ipv4(name: &str) -> Result<String, HostError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if let Ok(v4) = name.parse::<std::net::Ipv4Addr>() {
        return Ok(v4.to_string());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !name.split('.').all(label_ok) {
        return Err(HostError::Invalid);
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    let hex = last
        .strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    if hex || last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::Invalid);
    }
    Ok(name.to_ascii_lowercase())
}

/// Ports a missing port may stand for when `Host` and the target are compared.
const DEFAULT_PORTS: &[u16] = &[80, 443];

fn same_port(a: Option<u16>, b: Option<u16>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        (None, Some(p)) | (Some(p), None) => DEFAULT_PORTS.contains(&p),
        (None, None) => true,
    }
}

/// The request's authority. `host_fields` are all raw `Host` field values (surrounding
/// SP/HTAB ignored, as field values exclude them); `target_authority` is the authority of
/// an absolute-form request target, or HTTP/2's `:authority`; `http11` is true for
/// HTTP/1.1 (false for HTTP/1.0 and for HTTP/2).
///
/// More than one `Host` is [`HostError::Several`]; any invalid value (an empty `Host`
/// included: every http(s) target has an authority) is [`HostError::Invalid`]. The target's
/// authority wins over `Host`, as RFC 9112 says, but a `Host` naming another host or port
/// is [`HostError::Mismatch`] so the upstream cannot be shown a different one. A missing
/// port on one side equals the other side's port only when that is 80 or 443 (we do not
/// know the scheme here, and either default is harmless). HTTP/1.1 with neither is
/// [`HostError::Missing`]; HTTP/1.0 or HTTP/2 with neither is `Ok(None)`.
pub(crate) fn request_authority(
    host_fields: &[&[u8]],
    target_authority: Option<&str>,
    http11: bool,
) -> Result<Option<Authority>, HostError> {
    let host = match host_fields {
        [] => None,
        [one] => {
            let s = std::str::from_utf8(one).map_err(|_| HostError::Invalid)?;
            Some(parse_authority(s.trim_matches([' ', '\t']))?)
        }
        _ => return Err(HostError::Several),
    };
    let target = target_authority.map(parse_authority).transpose()?;
    match (target, host) {
        (Some(t), Some(h)) if t.host != h.host || !same_port(t.port, h.port) => {
            Err(HostError::Mismatch)
        }
        (Some(t), _) => Ok(Some(t)),
        (None, Some(h)) => Ok(Some(h)),
        (None, None) if http11 => Err(HostError::Missing),
        (None, None) => Ok(None),
    }
}

/// The host of a `Host` header (or `:authority`): lower-cased, without port or trailing
/// dot; `None` unless [`parse_authority`] accepts it (the tests' shorthand for
/// `parse_authority(raw).host`).
#[cfg(test)]
pub(crate) fn normalize_host(raw: &str) -> Option<String> {
    parse_authority(raw).ok().map(|a| a.host)
}

/// The authority of an absolute-form request target (`GET http://host/x HTTP/1.1`), read
/// from the raw request line: pingora keeps only the path of such a target, but it is
/// what the request is addressed to (RFC 9112 §3.2.2). `None` for origin-form targets.
pub(crate) fn absolute_form_authority(head: &[u8]) -> Option<&str> {
    let line = head.split(|&b| b == b'\n').next()?;
    let mut parts = line.split(|&b| b == b' ');
    let _method = parts.next()?;
    let target = parts.next()?;
    let scheme_len = [&b"http://"[..], b"https://"]
        .iter()
        .find(|s| target.len() >= s.len() && target[..s.len()].eq_ignore_ascii_case(s))?
        .len();
    let rest = &target[scheme_len..];
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn absolute_form_targets_name_their_authority() {
        use super::absolute_form_authority as auth;
        assert_eq!(
            auth(b"GET http://admin.example.edu/x HTTP/1.1\r\n\r\n"),
            Some("admin.example.edu")
        );
        assert_eq!(
            auth(b"GET HTTPS://a.b:8443?q HTTP/1.1\r\n"),
            Some("a.b:8443")
        );
        assert_eq!(auth(b"GET http://a.b HTTP/1.1\r\n"), Some("a.b"));
        assert_eq!(auth(b"GET /x HTTP/1.1\r\nHost: http://evil/\r\n"), None);
        assert_eq!(auth(b"OPTIONS * HTTP/1.1\r\n"), None);
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn patterns() {
        let exact = HostPattern::parse(Some("App.Example.com")).unwrap();
        let wild = HostPattern::parse(Some("*.example.com")).unwrap();
        let any = HostPattern::parse(None).unwrap();
        assert!(exact.matches("app.example.com") && !exact.matches("x.app.example.com"));
        assert!(wild.matches("a.example.com") && wild.matches("a.b.example.com"));
        assert!(!wild.matches("example.com") && !wild.matches("evilexample.com"));
        assert!(any.matches("anything"));
        assert!(exact.specificity() > wild.specificity() && wild.specificity() > any.specificity());
        assert!(
            HostPattern::parse(Some("*.a.example.com"))
                .unwrap()
                .specificity()
                > wild.specificity()
        );
        for bad in [
            "http://x", "x:80", "*.", "a..b", "-a.com", "a b", "*x.com", "",
        ] {
            assert!(HostPattern::parse(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(HostPattern::parse(Some("*")).unwrap(), HostPattern::Any);
    }

    #[test]
    fn host_normalisation() {
        assert_eq!(
            normalize_host("App.Example.com:8443").as_deref(),
            Some("app.example.com")
        );
        assert_eq!(
            normalize_host("example.com.").as_deref(),
            Some("example.com")
        );
        assert_eq!(normalize_host("[::1]:8080").as_deref(), Some("::1"));
        assert_eq!(normalize_host("127.0.0.1:80").as_deref(), Some("127.0.0.1"));
        assert_eq!(normalize_host("a@b"), None);
        assert_eq!(normalize_host(""), None);
        // Formerly accepted and routed on a prefix of the value.
        for lenient in ["admin.example.edu:abc", ":80:80", "a.edu,b.edu", " a.edu"] {
            assert_eq!(normalize_host(lenient), None, "{lenient}");
        }
    }

    fn auth(host: &str, port: Option<u16>) -> Authority {
        Authority {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn authorities_accepted() {
        let ok = [
            ("example.com", auth("example.com", None)),
            ("Example.COM:443", auth("example.com", Some(443))),
            ("example.com.", auth("example.com", None)),
            ("example.com.:8080", auth("example.com", Some(8080))),
            ("a_b-c.example.edu", auth("a_b-c.example.edu", None)),
            ("localhost:00080", auth("localhost", Some(80))),
            ("x:0", auth("x", Some(0))),
            ("x:65535", auth("x", Some(65535))),
            ("192.0.2.1", auth("192.0.2.1", None)),
            ("192.0.2.1.:81", auth("192.0.2.1", Some(81))),
            ("[::1]", auth("::1", None)),
            ("[2001:DB8:0:0::1]:8443", auth("2001:db8::1", Some(8443))),
            ("[::ffff:192.0.2.1]", auth("::ffff:192.0.2.1", None)),
            ("1a.example", auth("1a.example", None)),
        ];
        for (raw, want) in ok {
            assert_eq!(parse_authority(raw), Ok(want), "{raw}");
        }
        assert_eq!(auth("::1", Some(80)).to_header(), "[::1]:80");
        assert_eq!(auth("example.com", None).to_header(), "example.com");
        assert_eq!(
            auth("example.com", Some(8080)).to_header(),
            "example.com:8080"
        );
    }

    #[test]
    fn authorities_refused() {
        let long = format!("{}.com", "a".repeat(252));
        let bad = [
            "",
            ".",
            "..",
            "a..b",
            ".a",
            "a.b..",
            "admin.example.edu:abc",
            "example.com:",
            ":80",
            ":80:80",
            "a:80:80",
            "example.com:65536",
            "example.com:123456",
            "example.com:+80",
            "example.com: 80",
            "a.edu,b.edu",
            "a.edu/x",
            "a.edu#x",
            "a.edu?x",
            "a.edu\\x",
            "a.edu;x",
            "a%2e.edu",
            "user@a.edu",
            "user:pw@a.edu",
            "a edu",
            " a.edu",
            "a.edu ",
            "a.edu\t",
            "a.edu\r\nx: y",
            "a\0",
            "bücher.example",
            "::1",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[::1]:99999",
            "[::1%eth0]",
            "[v1.x]",
            "[192.0.2.1]",
            "[]",
            "127.1",
            "0x7f.1",
            "1.2.3.0x4",
            "01.2.3.4",
            "1.2.3.256",
            "4294967295",
            "a.123",
            "*.example.com",
            &long,
        ];
        for raw in bad {
            assert_eq!(parse_authority(raw), Err(HostError::Invalid), "{raw:?}");
        }
        let max = format!("{}.com", "a".repeat(251));
        assert!(parse_authority(&max).is_ok(), "255 bytes is the limit");
    }

    #[test]
    fn request_authority_rules() {
        use HostError::*;
        let ex = Some(auth("example.com", None));
        assert_eq!(
            request_authority(&[b"Example.com"], None, true),
            Ok(ex.clone())
        );
        assert_eq!(
            request_authority(&[b" example.com\t"], None, true),
            Ok(ex.clone()),
            "surrounding OWS is not part of the value"
        );
        assert_eq!(request_authority(&[], None, true), Err(Missing));
        assert_eq!(request_authority(&[], None, false), Ok(None));
        assert_eq!(request_authority(&[b""], None, true), Err(Invalid));
        assert_eq!(request_authority(&[b"\xff.com"], None, true), Err(Invalid));
        assert_eq!(
            request_authority(&[b"a.com", b"a.com"], None, true),
            Err(Several),
            "even identical"
        );
        assert_eq!(
            request_authority(&[b"a.com", b"b.com"], Some("a.com"), false),
            Err(Several)
        );
        assert_eq!(
            request_authority(&[b"a.com,b.com"], None, true),
            Err(Invalid)
        );
        // Absolute form / :authority wins, and must agree with Host.
        assert_eq!(
            request_authority(&[], Some("example.com"), true),
            Ok(ex.clone())
        );
        assert_eq!(
            request_authority(&[b"example.com"], Some("EXAMPLE.com."), true),
            Ok(ex.clone())
        );
        assert_eq!(
            request_authority(&[b"admin.example.com"], Some("example.com"), true),
            Err(Mismatch)
        );
        assert_eq!(
            request_authority(&[b"example.com:8080"], Some("example.com:8081"), true),
            Err(Mismatch)
        );
        assert_eq!(
            request_authority(&[b"example.com:8080"], Some("example.com"), true),
            Err(Mismatch),
            "a missing port stands only for a default port"
        );
        assert_eq!(
            request_authority(&[b"example.com"], Some("example.com:8080"), false),
            Err(Mismatch)
        );
        assert_eq!(
            request_authority(&[b"example.com:443"], Some("example.com"), false),
            Ok(ex.clone()),
            "target wins, its (absent) port kept"
        );
        assert_eq!(
            request_authority(&[b"example.com"], Some("example.com:80"), true),
            Ok(Some(auth("example.com", Some(80))))
        );
        assert_eq!(
            request_authority(&[b"example.com"], Some("u@example.com"), true),
            Err(Invalid)
        );
        assert_eq!(
            request_authority(&[b"bad host"], Some("example.com"), true),
            Err(Invalid)
        );
    }

    use crate::testing::proptest_cases as cases;

    /// Strings made mostly of authority characters, so that many of them parse.
    fn authority_like() -> impl Strategy<Value = String> {
        proptest::string::string_regex(
            r"(\[[0-9a-fA-F:.]{0,20}\]|[a-zA-Z0-9._:-]{0,30})(:[0-9]{0,6})?",
        )
        .unwrap()
    }

    proptest! {
        #![proptest_config(cases())]

        #[test]
        fn parse_never_panics_and_round_trips(raw in prop_oneof![authority_like(), any::<String>()]) {
            if let Ok(a) = parse_authority(&raw) {
                prop_assert_eq!(parse_authority(&a.to_header()), Ok(a.clone()));
                prop_assert_eq!(normalize_host(&raw), Some(a.host.clone()));
                prop_assert!(a.host == a.host.to_ascii_lowercase() && !a.host.ends_with('.'));
            }
        }

        #[test]
        fn forbidden_characters_are_refused(
            pre in authority_like(),
            bad in prop_oneof![
                proptest::sample::select(vec![',', '/', '#', '?', '\\', ';', '%', '@', ' ', '\u{7f}']),
                (0u8..0x20).prop_map(char::from),
            ],
            post in authority_like(),
        ) {
            let raw = format!("{pre}{bad}{post}");
            prop_assert_eq!(parse_authority(&raw), Err(HostError::Invalid));
        }

        #[test]
        fn case_does_not_matter(raw in authority_like()) {
            let upper = parse_authority(&raw.to_ascii_uppercase());
            prop_assert_eq!(parse_authority(&raw.to_ascii_lowercase()), upper);
        }

        #[test]
        fn request_authority_never_panics(
            fields in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..3),
            target in proptest::option::of(authority_like()),
            http11 in any::<bool>(),
        ) {
            let f: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
            let r = request_authority(&f, target.as_deref(), http11);
            if fields.len() > 1 {
                prop_assert_eq!(r, Err(HostError::Several));
            } else if let Ok(Some(a)) = r {
                // Whatever wins was a valid authority on its own.
                prop_assert_eq!(parse_authority(&a.to_header()), Ok(a));
            }
        }
    }
}
