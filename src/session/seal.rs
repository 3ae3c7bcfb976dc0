//! AEAD sealing of cookie values (AES-256-GCM) with key rotation.
//!
//! Each configured secret yields one key per purpose via HKDF-SHA256, so a secret is never
//! used raw and never for two purposes. A sealed value names its key (`kid`): the first
//! key seals, every key opens, which is how secrets rotate without logging anyone out.
//! Format: `v1.<kid>.<base64url(nonce ‖ ciphertext ‖ tag)>`; the cookie's name is the
//! associated data, so a value cannot be replayed under another cookie name.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

/// What a key is for; each purpose gets its own derived keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    SessionCookie,
    LoginState,
}

impl Purpose {
    fn info(self) -> &'static [u8] {
        match self {
            Purpose::SessionCookie => b"loopgate session cookie v1",
            Purpose::LoginState => b"loopgate login state v1",
        }
    }
}

/// Why a sealed value did not open. All of them mean "no session" to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the value is not in the sealed format")]
    Malformed,
    #[error("the value was sealed with a key this gateway does not have")]
    UnknownKey,
    #[error("the value was tampered with or sealed for another cookie")]
    Forged,
}

struct Key {
    kid: String,
    cipher: Aes256Gcm,
}

/// The keys for one purpose: the first seals, all open.
pub struct Keyring {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("Keyring").field("kids", &kids).finish()
    }
}

impl Keyring {
    /// Derives the keys for `purpose` from `secrets` (current first). Panics on an empty
    /// list: config validation guarantees at least one secret.
    pub fn new(purpose: Purpose, secrets: &[Vec<u8>]) -> Keyring {
        assert!(!secrets.is_empty(), "at least one secret");
        let keys = secrets
            .iter()
            .map(|secret| {
                let hk = Hkdf::<Sha256>::new(Some(b"loopgate"), secret);
                let mut okm = [0u8; 32];
                hk.expand(purpose.info(), &mut okm)
                    .expect("32 bytes is a valid HKDF-SHA256 length");
                let kid_hash = Sha256::digest([b"kid".as_slice(), &okm].concat());
                Key {
                    kid: URL_SAFE_NO_PAD.encode(&kid_hash[..6]),
                    cipher: Aes256Gcm::new(&okm.into()),
                }
            })
            .collect();
        Keyring { keys }
    }

    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> String {
        let key = &self.keys[0];
        let nonce_bytes = crate::random::bytes::<12>();
        let ct = key
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce_bytes),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut blob = Vec::with_capacity(12 + ct.len());
        blob.extend_from_slice(&nonce_bytes);
        blob.extend_from_slice(&ct);
        format!("v1.{}.{}", key.kid, URL_SAFE_NO_PAD.encode(blob))
    }

    pub fn open(&self, aad: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some("v1"), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SealError::Malformed);
        };
        let blob = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SealError::Malformed)?;
        if blob.len() < 12 + 16 {
            return Err(SealError::Malformed);
        }
        let (nonce, ct) = blob.split_at(12);
        let mut known = false;
        for key in self.keys.iter().filter(|k| k.kid == kid) {
            known = true;
            if let Ok(pt) = key.cipher.decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            ) {
                return Ok(pt);
            }
        }
        Err(if known {
            SealError::Forged
        } else {
            SealError::UnknownKey
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(secrets: &[&[u8]]) -> Keyring {
        let s: Vec<Vec<u8>> = secrets.iter().map(|s| s.to_vec()).collect();
        Keyring::new(Purpose::SessionCookie, &s)
    }

    #[test]
    fn round_trip_and_rotation() {
        let old = ring(&[b"old-secret-old-secret-old-secret"]);
        let sealed_old = old.seal("c", b"hello");
        let rotated = ring(&[
            b"new-secret-new-secret-new-secret",
            b"old-secret-old-secret-old-secret",
        ]);
        assert_eq!(rotated.open("c", &sealed_old).unwrap(), b"hello");
        let sealed_new = rotated.seal("c", b"hi");
        assert_ne!(sealed_new.split('.').nth(1), sealed_old.split('.').nth(1));
        assert_eq!(old.open("c", &sealed_new), Err(SealError::UnknownKey));
    }

    #[test]
    fn tampering_truncation_and_other_names_fail_cleanly() {
        let r = ring(&[b"0123456789abcdef0123456789abcdef"]);
        let sealed = r.seal("name", b"payload");
        assert_eq!(r.open("other", &sealed), Err(SealError::Forged));
        let mut chars: Vec<char> = sealed.chars().collect();
        let last = chars.len() - 5;
        chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
        let tampered: String = chars.into_iter().collect();
        assert!(r.open("name", &tampered).is_err());
        assert!(r.open("name", &sealed[..sealed.len() - 10]).is_err());
        for garbage in [
            "",
            "v1",
            "v1..",
            "v2.x.y",
            "v1.abc.!!!",
            "\u{0}\u{1}",
            "v1.x.AAAA",
        ] {
            assert!(r.open("name", garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn purposes_use_different_keys() {
        let s = vec![b"0123456789abcdef0123456789abcdef".to_vec()];
        let a = Keyring::new(Purpose::SessionCookie, &s);
        let b = Keyring::new(Purpose::LoginState, &s);
        let sealed = a.seal("n", b"x");
        assert!(b.open("n", &sealed).is_err());
    }
}
