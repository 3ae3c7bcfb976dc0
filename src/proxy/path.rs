//! Request-path normalisation, done once: the path policy matches is the path sent
//! upstream (DESIGN §4 item 9).
//!
//! Unreserved percent-escapes are decoded, dot-segments removed and repeated slashes
//! merged. Anything an upstream might read differently from us is refused instead of
//! guessed at: encoded slashes and backslashes, backslashes, `..;` segments (Tomcat-style
//! path parameters), malformed escapes and control characters.

/// The normalised form of `raw` (a path without query), or `None` when the path must be
/// refused with 400.
pub fn normalize(raw: &str) -> Option<String> {
    if !raw.starts_with('/') {
        return None;
    }
    let decoded = decode_unreserved(raw)?;
    if decoded.contains('\\') {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        let bare = seg.split(';').next().unwrap_or("");
        if seg.contains(';') && (bare == "." || bare == "..") {
            return None;
        }
        match *seg {
            "" => trailing_slash = i == last,
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for s in &out {
        path.push('/');
        path.push_str(s);
    }
    if out.is_empty() || trailing_slash {
        path.push('/');
    }
    Some(path)
}

/// Decodes `%XX` for unreserved characters only; other escapes stay (upper-cased), except
/// the ones that would change the path's structure, which make the path invalid.
fn decode_unreserved(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(hex, 16).ok()?;
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                out.push(v as char);
            } else if matches!(v, b'/' | b'\\') || v < 0x20 || v == 0x7f {
                return None;
            } else {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
        } else if b.is_ascii_graphic() {
            out.push(b as char);
            i += 1;
        } else {
            return None;
        }
    }
    Some(out)
}

/// Whether `path` falls under the route or endpoint prefix `prefix`, segment-wise:
/// `/app` covers `/app` and `/app/x` but not `/apple`; `/app/` covers `/app` too.
pub fn under_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let base = prefix.trim_end_matches('/');
    path == base
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `path` with the route prefix removed, keeping a leading slash (`strip_prefix`).
pub fn strip(path: &str, prefix: &str) -> String {
    let base = prefix.trim_end_matches('/');
    match path.strip_prefix(base) {
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        Some("") => "/".to_string(),
        _ => path.to_string(),
    }
}

/// `path` with the route prefix replaced by `replacement` (`rewrite`): with prefix
/// `/old/` and replacement `/new/`, `/old/x` becomes `/new/x` and `/old` becomes `/new/`.
pub fn rewrite(path: &str, prefix: &str, replacement: &str) -> String {
    let rest = strip(path, prefix);
    let base = replacement.trim_end_matches('/');
    if rest == "/" {
        if replacement.ends_with('/') || base.is_empty() {
            format!("{base}/")
        } else {
            base.to_string()
        }
    } else {
        format!("{base}{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_vectors() {
        let cases = [
            ("/", Some("/")),
            ("/a/b", Some("/a/b")),
            ("/a/b/", Some("/a/b/")),
            ("/a/./b", Some("/a/b")),
            ("/a/../b", Some("/b")),
            ("/../../b", Some("/b")),
            ("/a/b/..", Some("/a/")),
            ("//admin", Some("/admin")),
            ("/a//b", Some("/a/b")),
            ("/%61dmin", Some("/admin")),
            ("/a/%2e%2e/admin", Some("/admin")),
            ("/a/%2E%2E/admin", Some("/admin")),
            ("/a%20b", Some("/a%20b")),
            ("/a%3bb", Some("/a%3Bb")),
            ("/a;jsessionid=1", Some("/a;jsessionid=1")),
            ("/public%2F..%2Fadmin", None),
            ("/public%2fadmin", None),
            ("/public\\..\\admin", None),
            ("/public%5c..%5cadmin", None),
            ("/public/..;/admin", None),
            ("/public/.;x/admin", None),
            ("/a%zz", None),
            ("/a%2", None),
            ("/a%00b", None),
            ("/a b", None),
            ("relative", None),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize(input).as_deref(), expected, "{input}");
        }
    }

    #[test]
    fn normalisation_is_idempotent() {
        for p in ["/a/../b/./c//d/", "/%7euser/x", "/x%20y/"] {
            let once = normalize(p).unwrap();
            assert_eq!(normalize(&once).unwrap(), once);
        }
    }

    #[test]
    fn prefixes_are_segment_wise() {
        assert!(under_prefix("/app", "/app"));
        assert!(under_prefix("/app/x", "/app"));
        assert!(!under_prefix("/apple", "/app"));
        assert!(under_prefix("/app", "/app/"));
        assert!(under_prefix("/anything", "/"));
        assert_eq!(strip("/loopwise/api/v1/me", "/loopwise/"), "/api/v1/me");
        assert_eq!(strip("/loopwise", "/loopwise/"), "/");
        assert_eq!(strip("/x", "/"), "/x");
        assert_eq!(rewrite("/old/x/y", "/old/", "/new/"), "/new/x/y");
        assert_eq!(rewrite("/old", "/old/", "/new/"), "/new/");
        assert_eq!(rewrite("/old/x", "/old", "/"), "/x");
        assert_eq!(rewrite("/old", "/old", "/v2"), "/v2");
    }
}
