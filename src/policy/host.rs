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

    /// Whether a normalised host (see [`normalize_host`]) matches.
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

/// The host of a `Host` header (or `:authority`): lower-cased, without port or trailing dot.
pub fn normalize_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // [v6]:port
        let end = rest.find(']')?;
        &rest[..end]
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
            Some(_) if raw.matches(':').count() > 1 => raw,
            _ => raw,
        }
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty()
        || host
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'/' || b == b'@')
    {
        return None;
    }
    Some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
