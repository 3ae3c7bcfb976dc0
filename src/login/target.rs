//! Post-login redirect targets: only same-origin relative paths (DESIGN §4 item 3).
//!
//! Checked on the value as received *and* after percent-decoding (repeatedly, since
//! browsers and upstreams differ in how often they decode): it must start with one `/`,
//! contain no `//`, no backslash, no control or non-ASCII characters, no dot-segments,
//! and must not point back into the gateway's own endpoints.

use crate::proxy::path::under_prefix;

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
    if under_prefix(path, gateway_prefix) {
        return None;
    }
    Some(raw.to_string())
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
        ] {
            assert_eq!(safe_target(bad, "/oauth2"), None, "{bad:?}");
        }
    }
}
