//! Post-login redirect targets: only same-origin relative paths (no open redirect).
//!
//! Checked on the value as received *and* after percent-decoding (repeatedly, since
//! browsers and upstreams differ in how often they decode): it must start with one `/`,
//! contain no `//`, no backslash, no control or non-ASCII characters, no dot-segments,
//! no segment that ends in `.` or a space once decoded (IIS and Windows servers trim
//! those, so `/oauth2.` would read as `/oauth2`), and must not point back into the
//! gateway's own endpoints, even with `;params` dropped as Tomcat does.

use crate::wire::path::under_prefix;

/// Where to go when no (acceptable) target was given.
pub const DEFAULT_TARGET: &str = "/";

/// `raw` if it is a safe same-origin target, else `None`.
pub fn safe_target(raw: &str, gateway_prefix: &str) -> Option<String> {
    if raw.len() > 2048 || !is_safe_form(raw, false) {
        return None;
    }
    let mut current = raw.to_string();
    for _ in 0..4 {
        let decoded = percent_encoding::percent_decode_str(&current)
            .decode_utf8()
            .ok()?
            .into_owned();
        // Once decoded, a space is just a space (`/My%20File`); controls never are.
        if !is_safe_form(&decoded, true) {
            return None;
        }
        if decoded == current {
            break;
        }
        current = decoded;
    }
    let path = current.split(['?', '#']).next().unwrap_or("");
    let bare = without_params(path);
    let trimmed_or_dot = |p: &str| {
        p.split('/')
            .skip(1)
            .any(|seg| seg == "." || seg == ".." || seg.ends_with(['.', ' ']))
    };
    if bare.contains("//")
        || trimmed_or_dot(path)
        || trimmed_or_dot(&bare)
        || under_prefix(path, gateway_prefix)
        || under_prefix(&bare, gateway_prefix)
    {
        return None;
    }
    Some(raw.to_string())
}

/// `path` with every segment's `;params` removed (`/a;x/b` → `/a/b`).
fn without_params(path: &str) -> String {
    path.split('/')
        .map(|seg| seg.split(';').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("/")
}

fn is_safe_form(s: &str, space_ok: bool) -> bool {
    let bytes = s.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let lowest = if space_ok { 0x20 } else { 0x21 };
    if bytes
        .iter()
        .any(|&b| !(lowest..0x7f).contains(&b) || b == b'\\')
    {
        return false;
    }
    if s.contains("//") {
        return false;
    }
    let path = s.split(['?', '#']).next().unwrap_or("");
    !path.split('/').any(|seg| seg == "." || seg == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_paths_are_kept() {
        for ok in [
            "/",
            "/app",
            "/app/page?x=1&y=two",
            "/a-b_c~d/e.html#top",
            "/%7Euser",
            "/My%20File",
        ] {
            assert_eq!(safe_target(ok, "/oauth2").as_deref(), Some(ok), "{ok}");
        }
    }

    #[test]
    fn dangerous_targets_are_refused() {
        for bad in [
            "",
            "app",
            "//evil.com",
            "/\\evil.com",
            "/\\/evil.com",
            "https://evil.com",
            "/%2f%2fevil.com",
            "/%252f%252fevil.com",
            "/%5cevil.com",
            "/%09/evil.com",
            "/a/../..//evil.com",
            "/a/%2e%2e/b",
            "/x?next=//evil.com",
            "/\u{3035}evil",
            "/oauth2/start",
            "/oauth2",
            "/a b",
            "/oauth2.",
            "/oauth2%2e/start",
            "/oauth2%20",
            "/oauth2;x/start",
            "/oauth2%3bx",
            "/app%20",
            "/;%2fevil.com",
        ] {
            assert_eq!(safe_target(bad, "/oauth2"), None, "{bad:?}");
        }
    }

    use crate::testing::proptest_cases as cases;
    use proptest::prelude::*;

    /// How the most lenient reader of a `Location` might read a target: decoded until it
    /// stops changing, `\` as `/`, `;params` dropped, trailing dots and spaces trimmed
    /// from each segment, dot-segments resolved. `None` when a `..` climbs above `/`.
    fn lenient(target: &str) -> Option<String> {
        let mut s = target.to_string();
        for _ in 0..8 {
            let d = percent_encoding::percent_decode_str(&s)
                .decode_utf8_lossy()
                .into_owned();
            if d == s {
                break;
            }
            s = d;
        }
        let s = s.replace('\\', "/");
        let path = s.split(['?', '#']).next().unwrap_or("");
        let mut out: Vec<&str> = Vec::new();
        for seg in path.split('/').skip(1) {
            let seg = seg.split(';').next().unwrap_or("");
            let seg = seg.trim_end_matches(['.', ' ']);
            match seg {
                ".." => {
                    out.pop()?;
                }
                "." => {}
                s => out.push(s),
            }
        }
        Some(format!("/{}", out.join("/")))
    }

    fn target() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_string()),
            Just("\\".to_string()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%2e".to_string()),
            Just("%2f".to_string()),
            Just("%5c".to_string()),
            Just("%25".to_string()),
            Just("%20".to_string()),
            Just(" ".to_string()),
            Just(";".to_string()),
            Just("%3b".to_string()),
            Just("?".to_string()),
            Just("#".to_string()),
            Just("%3f".to_string()),
            Just("%23".to_string()),
            Just("oauth2".to_string()),
            Just("app".to_string()),
            Just("evil.com".to_string()),
            Just("https:".to_string()),
            Just("@".to_string()),
            Just("%c0%ae".to_string()),
            Just("\t".to_string()),
            Just("é".to_string()),
            "[a-z0-9]{1,3}".prop_map(String::from),
        ];
        (any::<bool>(), proptest::collection::vec(piece, 0..10)).prop_map(|(slash, parts)| {
            let body: String = parts.concat();
            if slash {
                format!("/{body}")
            } else {
                body
            }
        })
    }

    proptest! {
        #![proptest_config(cases())]

        /// An accepted target is returned unchanged, stays on the gateway's origin for a
        /// URL parser, and even a lenient reader sees one leading slash, no climb out
        /// and no gateway endpoint.
        #[test]
        fn accepted_targets_stay_same_origin_and_out_of_the_gateway(t in target()) {
            if let Some(ok) = safe_target(&t, "/oauth2") {
                prop_assert_eq!(&ok, &t);
                let base = url::Url::parse("https://gw.example/app/").unwrap();
                let joined = base.join(&ok).unwrap();
                prop_assert_eq!(joined.host_str(), Some("gw.example"), "{}", ok);
                prop_assert!(!joined.path().starts_with("/oauth2/") && joined.path() != "/oauth2");
                let l = lenient(&ok);
                prop_assert!(l.is_some(), "{} climbs above / for a lenient reader", ok);
                let l = l.unwrap();
                prop_assert!(!l.starts_with("//"), "{} reads as {}", ok, l);
                prop_assert!(!under_prefix(&l, "/oauth2"), "{} reads as {}", ok, l);
            }
        }

        /// Any string at all: never a panic, never something that does not start with `/`.
        #[test]
        fn arbitrary_strings_never_escape(t in "\\PC{0,40}") {
            if let Some(ok) = safe_target(&t, "/oauth2") {
                prop_assert!(ok.starts_with('/') && !ok.starts_with("//"));
            }
        }
    }
}
