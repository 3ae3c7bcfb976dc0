//! Space-delimited scope lists (RFC 6749 §3.3).

/// Every scope a Loopwise school knows; newer schools add OpenID ones.
pub const LOOPWISE_SCOPES: &[&str] = &[
    "read",
    "write",
    "courses:read",
    "courses:write",
    "students:read",
    "students:write",
    "analytics:read",
    "curriculum:read",
    "curriculum:write",
    "orders:read",
    "school:read",
    "openid",
    "profile",
    "email",
];

/// Splits a scope string into its distinct scopes, keeping first-seen order.
pub fn split(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in s.split(' ').filter(|p| !p.is_empty()) {
        if !out.iter().any(|o| o == part) {
            out.push(part.to_string());
        }
    }
    out
}

pub fn join(scopes: &[String]) -> String {
    scopes.join(" ")
}

/// RFC 6749 §3.3 scope-token: printable ASCII except space, `"` and `\`.
pub fn is_valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c == 0x21 || (0x23..=0x5b).contains(&c) || (0x5d..=0x7e).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_dedups_and_skips_blanks() {
        assert_eq!(split(" read  read courses:read "), ["read", "courses:read"]);
        assert_eq!(join(&split("a b")), "a b");
    }

    #[test]
    fn token_syntax() {
        assert!(is_valid_token("courses:read"));
        assert!(!is_valid_token("a\"b"));
        assert!(!is_valid_token("a\\b"));
        assert!(!is_valid_token(""));
    }
}
