//! Strict parsing of `application/x-www-form-urlencoded` queries and bodies.
//!
//! RFC 6749 §3.1: parameters must not be repeated, and a parameter sent without a value
//! is treated as omitted. Oversized values are refused rather than stored, as Loopwise's
//! front servers refuse them before the application sees them.

use std::collections::BTreeMap;

use super::error::OAuthError;

/// Longest name or value (after percent-decoding) accepted for any single parameter.
pub(super) const MAX_PARAM_LEN: usize = 2048;

/// Longest query string accepted (raw bytes); longer URLs get 414.
pub(super) const MAX_QUERY_LEN: usize = 8192;

/// Parsed parameters, remembering which names were repeated or oversized so that the
/// caller can decide how to report them (error page vs. redirect).
#[derive(Debug, Default)]
pub(super) struct Params {
    values: BTreeMap<String, String>,
    repeated: Vec<String>,
    oversized: Vec<String>,
}

impl Params {
    pub(super) fn parse(input: &[u8]) -> Params {
        let mut p = Params::default();
        for (k, v) in form_urlencoded::parse(input) {
            let k = k.into_owned();
            if v.len() > MAX_PARAM_LEN || k.len() > MAX_PARAM_LEN {
                let short = truncate(&k);
                if !p.oversized.contains(&short) {
                    p.oversized.push(short);
                }
                continue;
            }
            if v.is_empty() {
                continue;
            }
            if p.values.contains_key(&k) {
                if !p.repeated.contains(&k) {
                    p.repeated.push(k);
                }
                continue;
            }
            p.values.insert(k, v.into_owned());
        }
        p
    }

    /// Whether `name` was repeated or oversized (such a parameter has no usable value).
    pub(super) fn is_bad(&self, name: &str) -> bool {
        self.repeated.iter().any(|n| n == name) || self.oversized.iter().any(|n| n == name)
    }

    /// Refuses repeated or oversized parameters.
    pub(super) fn check(&self) -> Result<(), OAuthError> {
        if let Some(name) = self.repeated.first() {
            return Err(OAuthError::invalid_request(format!(
                "parameter `{name}` is repeated"
            )));
        }
        self.check_lengths()
    }

    /// Refuses oversized parameters only: the front servers' rule, applied to every
    /// query before any endpoint runs.
    pub(super) fn check_lengths(&self) -> Result<(), OAuthError> {
        match self.oversized.first() {
            Some(name) => Err(OAuthError::invalid_request(format!(
                "parameter `{name}` is too long (at most {MAX_PARAM_LEN} bytes)"
            ))),
            None => Ok(()),
        }
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        if self.is_bad(name) {
            return None;
        }
        self.values.get(name).map(String::as_str)
    }

    pub(super) fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter `{name}`")))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused() {
        let p = Params::parse(b"a=1&b=2&a=3");
        assert!(p.check().unwrap_err().description.contains("`a`"));
        assert_eq!(p.get("a"), None);
        assert_eq!(p.get("b"), Some("2"));
    }

    #[test]
    fn empty_values_count_as_omitted() {
        let p = Params::parse(b"a=&b=2");
        assert!(p.check().is_ok());
        assert!(p.require("a").is_err());
    }

    #[test]
    fn oversized_values_are_refused() {
        let big = format!("a={}", "x".repeat(MAX_PARAM_LEN + 1));
        let p = Params::parse(big.as_bytes());
        assert!(p.check().is_err());
        assert!(p.check_lengths().is_err());
        assert_eq!(p.get("a"), None);
        let at_limit = format!("a={}", "x".repeat(MAX_PARAM_LEN));
        assert!(Params::parse(at_limit.as_bytes()).check().is_ok());
        // Measured after decoding: 2049 `%41`s are 2049 bytes, not 6147.
        let encoded = format!("a={}", "%41".repeat(MAX_PARAM_LEN + 1));
        assert!(Params::parse(encoded.as_bytes()).check_lengths().is_err());
        let long_name = format!("{}=1&{0}=2", "k".repeat(MAX_PARAM_LEN + 100));
        let p = Params::parse(long_name.as_bytes());
        assert!(p
            .check_lengths()
            .unwrap_err()
            .description
            .contains("too long"));
        assert_eq!(p.oversized.len(), 1, "reported once, by a short name");
    }

    #[test]
    fn repeats_alone_pass_the_length_check() {
        assert!(Params::parse(b"a=1&a=2").check_lengths().is_ok());
    }

    #[test]
    fn percent_decoding_and_garbage_survive() {
        let p = Params::parse(b"a=%41%zz&%ff=1&&=&b+c=d+e");
        assert_eq!(p.get("a"), Some("A%zz"));
        assert_eq!(p.get("b c"), Some("d e"));
    }
}
