//! Strict parsing of `application/x-www-form-urlencoded` queries and bodies.
//!
//! RFC 6749 §3.1: parameters must not be repeated, and a parameter sent without a value
//! is treated as omitted. Oversized values are refused rather than stored.

use std::collections::BTreeMap;

use super::error::OAuthError;

/// Longest value accepted for any single parameter.
pub const MAX_PARAM_LEN: usize = 4096;

/// Parsed parameters, remembering which names were repeated or oversized so that the
/// caller can decide how to report them (error page vs. redirect).
#[derive(Debug, Default)]
pub struct Params {
    values: BTreeMap<String, String>,
    repeated: Vec<String>,
    oversized: Vec<String>,
}

impl Params {
    pub fn parse(input: &[u8]) -> Params {
        let mut p = Params::default();
        for (k, v) in form_urlencoded::parse(input) {
            let k = k.into_owned();
            if v.len() > MAX_PARAM_LEN || k.len() > MAX_PARAM_LEN {
                if !p.oversized.contains(&k) {
                    p.oversized.push(truncate(&k));
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
    pub fn is_bad(&self, name: &str) -> bool {
        self.repeated.iter().any(|n| n == name) || self.oversized.iter().any(|n| n == name)
    }

    /// Refuses repeated or oversized parameters.
    pub fn check(&self) -> Result<(), OAuthError> {
        if let Some(name) = self.repeated.first() {
            return Err(OAuthError::invalid_request(format!(
                "parameter `{name}` is repeated"
            )));
        }
        if let Some(name) = self.oversized.first() {
            return Err(OAuthError::invalid_request(format!(
                "parameter `{name}` is too long (at most {MAX_PARAM_LEN} bytes)"
            )));
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        if self.is_bad(name) {
            return None;
        }
        self.values.get(name).map(String::as_str)
    }

    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
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
        assert_eq!(p.get("a"), None);
    }

    #[test]
    fn percent_decoding_and_garbage_survive() {
        let p = Params::parse(b"a=%41%zz&%ff=1&&=&b+c=d+e");
        assert_eq!(p.get("a"), Some("A%zz"));
        assert_eq!(p.get("b c"), Some("d e"));
    }
}
