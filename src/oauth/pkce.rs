//! PKCE (RFC 7636) with the S256 method, the only one Loopwise accepts.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A code verifier. Deliberately neither `Clone` nor `Display`, and its `Debug` is
/// redacted, so that it cannot wander into URLs or logs by accident.
pub struct Verifier(String);

impl Verifier {
    /// 32 bytes (256 bits) of OS randomness, base64url: 43 characters.
    pub fn generate() -> Verifier {
        Verifier(crate::random::token())
    }

    /// Rebuilds a verifier from its stored form (e.g. an encrypted login-state cookie).
    pub fn from_secret(s: String) -> Verifier {
        Verifier(s)
    }

    pub fn secret(&self) -> &str {
        &self.0
    }

    pub fn challenge(&self) -> String {
        challenge_s256(&self.0)
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(<redacted>)")
    }
}

/// `BASE64URL(SHA256(ASCII(verifier)))`, RFC 7636 §4.2.
pub fn challenge_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// RFC 7636 §4.1: 43–128 characters from the unreserved set.
pub fn is_valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
}

/// An S256 challenge is the base64url of a SHA-256 digest: exactly 43 characters.
pub fn is_valid_s256_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Constant-time check that `verifier` answers `challenge`.
pub fn verify_s256(verifier: &str, challenge: &str) -> bool {
    challenge_s256(verifier)
        .as_bytes()
        .ct_eq(challenge.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_vector() {
        let v = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            challenge_s256(v),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(verify_s256(
            v,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!verify_s256(
            v,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"
        ));
    }

    #[test]
    fn generated_verifiers_are_valid_and_redacted() {
        let v = Verifier::generate();
        assert!(is_valid_verifier(v.secret()));
        assert!(is_valid_s256_challenge(&v.challenge()));
        assert!(!format!("{v:?}").contains(v.secret()));
    }

    #[test]
    fn verifier_shape_is_enforced() {
        assert!(!is_valid_verifier(&"a".repeat(42)));
        assert!(is_valid_verifier(&"a".repeat(128)));
        assert!(!is_valid_verifier(&"a".repeat(129)));
        assert!(!is_valid_verifier(&format!("{}+", "a".repeat(43))));
    }
}
