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
    /// A refresh outcome shared through Redis, sealed under the refresh token it answers
    /// (only a holder of that token can open it).
    RefreshOutcome,
    /// A session kept in Redis, sealed under the key its cookie carries.
    StoredSession,
    /// A stored session's own key, in the per-user index an operator revokes through,
    /// sealed under the gateway's session secrets.
    SessionIndex,
}

impl Purpose {
    fn info(self) -> &'static [u8] {
        match self {
            Purpose::SessionCookie => b"loopgate session cookie v1",
            Purpose::LoginState => b"loopgate login state v1",
            Purpose::RefreshOutcome => b"loopgate refresh outcome v1",
            Purpose::StoredSession => b"loopgate stored session v1",
            Purpose::SessionIndex => b"loopgate session index v1",
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
    use proptest::prelude::*;

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

    use crate::testing::proptest_cases as cases;

    /// How a sealed value is damaged.
    #[derive(Debug, Clone)]
    enum Damage {
        /// Replace the byte at this position (modulo length) with another one.
        Replace(usize, u8),
        Truncate(usize),
        Insert(usize, u8),
        Append(String),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::Replace(i, b)),
            any::<usize>().prop_map(Damage::Truncate),
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::Insert(i, b)),
            "[A-Za-z0-9_.-]{1,8}".prop_map(Damage::Append),
        ]
    }

    fn apply(sealed: &str, d: &Damage) -> Option<String> {
        let mut b = sealed.as_bytes().to_vec();
        match d {
            Damage::Replace(i, byte) => {
                let i = i % b.len();
                if b[i] == *byte {
                    return None;
                }
                b[i] = *byte;
            }
            Damage::Truncate(n) => b.truncate(n % b.len()),
            Damage::Insert(i, byte) => b.insert(i % (b.len() + 1), *byte),
            Damage::Append(s) => b.extend_from_slice(s.as_bytes()),
        }
        // Cookie values are strings; keep only damage that still is one.
        String::from_utf8(b).ok()
    }

    proptest! {
        #![proptest_config(cases())]

        #[test]
        fn seal_then_open_round_trips(aad in "[a-z_]{1,16}", pt in proptest::collection::vec(any::<u8>(), 0..512)) {
            let r = ring(&[b"0123456789abcdef0123456789abcdef"]);
            prop_assert_eq!(r.open(&aad, &r.seal(&aad, &pt)), Ok(pt));
        }

        #[test]
        fn damaged_values_never_open(pt in proptest::collection::vec(any::<u8>(), 0..256), d in damage()) {
            let r = ring(&[b"0123456789abcdef0123456789abcdef"]);
            let sealed = r.seal("name", &pt);
            // Any change fails: AEAD covers the bytes, and the base64 engine refuses
            // non-canonical trailing bits, so no two strings decode alike.
            if let Some(bad) = apply(&sealed, &d) {
                prop_assert!(r.open("name", &bad).is_err(), "{:?} opened", d);
            }
        }

        #[test]
        fn garbage_never_opens(s in "\\PC*", body in "[A-Za-z0-9_-]{0,80}") {
            let r = ring(&[b"0123456789abcdef0123456789abcdef"]);
            prop_assert!(r.open("name", &s).is_err());
            let kid = r.seal("name", b"x").split('.').nth(1).unwrap().to_string();
            let forged = format!("v1.{kid}.{body}");
            prop_assert!(r.open("name", &forged).is_err());
        }
    }
}
