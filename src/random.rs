//! Unguessable identifiers from the operating system's CSPRNG.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// `n` bytes of OS randomness.
///
/// Panics only if the OS has no entropy source at all, in which case nothing secure can run.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the operating system's random source is unavailable");
    buf
}

/// A URL-safe token carrying 256 bits of OS randomness (43 characters).
pub fn token() -> String {
    URL_SAFE_NO_PAD.encode(bytes::<32>())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_url_safe_and_distinct() {
        let a = super::token();
        let b = super::token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
