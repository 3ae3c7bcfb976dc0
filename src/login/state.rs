//! Login state: the `state`, PKCE verifier and return target of one login, kept in a
//! short-lived sealed cookie bound to the browser that started it.
//!
//! Each login has its own cookie (named after its state), so several tabs can log in at
//! once. The cookie's name is the sealing's associated data, so a value cannot be moved
//! to another state's name. Single use is enforced by clearing the cookie and by a
//! record of used states ([`super::replay::ReplayGuard`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::session::Keyring;

/// A login must complete within this many seconds.
pub const LOGIN_TTL: u64 = 600;

#[derive(Serialize, Deserialize)]
pub struct LoginState {
    #[serde(rename = "s")]
    pub state: String,
    #[serde(rename = "v")]
    pub verifier: String,
    #[serde(rename = "t")]
    pub target: String,
    #[serde(rename = "c")]
    pub created_at: u64,
    /// The school (`oauth::Schools` id) the login was started at: the code is exchanged
    /// there. Empty in states sealed before it was kept (the only school).
    #[serde(rename = "k", default, skip_serializing_if = "String::is_empty")]
    pub issuer_id: String,
    /// OpenID Connect: the `nonce` sent, which the ID token must carry back. Empty when
    /// the login did not ask for `openid`.
    #[serde(rename = "n", default, skip_serializing_if = "String::is_empty")]
    pub nonce: String,
}

impl std::fmt::Debug for LoginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginState")
            .field("target", &self.target)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// Why a callback's state was not accepted. Each is a 400 page asking to log in again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the callback has no state parameter")]
    Missing,
    #[error("this browser did not start that login (no matching login cookie)")]
    Foreign,
    #[error("the login took longer than 10 minutes")]
    Expired,
    #[error("this login was already completed")]
    Replayed,
}

/// The cookie holding the state of one login: `<base>_login_<first 16 of SHA-256(state)>`.
pub fn cookie_name(base: &str, state: &str) -> String {
    let h = Sha256::digest(state.as_bytes());
    format!("{base}_login_{}", crate::hex::encode(&h[..8]))
}

/// A stable, non-reversible id for a state (for the consumed-state record).
pub fn fingerprint(state: &str) -> [u8; 32] {
    Sha256::digest(state.as_bytes()).into()
}

pub fn seal(keys: &Keyring, name: &str, s: &LoginState) -> String {
    keys.seal(name, &serde_json::to_vec(s).expect("serialisable"))
}

/// Opens and checks the login cookie for `state` (taken from the callback URL).
pub fn open(
    keys: &Keyring,
    name: &str,
    sealed: Option<&str>,
    state: &str,
    now: u64,
) -> Result<LoginState, StateError> {
    let sealed = sealed.ok_or(StateError::Foreign)?;
    let bytes = keys.open(name, sealed).map_err(|_| StateError::Foreign)?;
    let s: LoginState = serde_json::from_slice(&bytes).map_err(|_| StateError::Foreign)?;
    if !bool::from(s.state.as_bytes().ct_eq(state.as_bytes())) {
        return Err(StateError::Foreign);
    }
    if now >= s.created_at.saturating_add(LOGIN_TTL) || now + 60 < s.created_at {
        return Err(StateError::Expired);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Purpose;

    fn keys() -> Keyring {
        Keyring::new(Purpose::LoginState, &[vec![7u8; 32]])
    }

    fn state(created_at: u64) -> LoginState {
        LoginState {
            state: "st-123".into(),
            verifier: "v".repeat(43),
            target: "/x".into(),
            created_at,
            issuer_id: "default".into(),
            nonce: String::new(),
        }
    }

    #[test]
    fn accepts_its_own_state_within_ten_minutes() {
        let k = keys();
        let name = cookie_name("lg", "st-123");
        let sealed = seal(&k, &name, &state(1000));
        assert_eq!(
            open(&k, &name, Some(&sealed), "st-123", 1599)
                .unwrap()
                .target,
            "/x"
        );
        assert_eq!(
            open(&k, &name, Some(&sealed), "st-123", 1600).unwrap_err(),
            StateError::Expired
        );
    }

    #[test]
    fn refuses_missing_foreign_and_swapped_cookies() {
        let k = keys();
        let name = cookie_name("lg", "st-123");
        let sealed = seal(&k, &name, &state(1000));
        assert_eq!(
            open(&k, &name, None, "st-123", 1001).unwrap_err(),
            StateError::Foreign
        );
        // The same cookie presented for a different state (its name would differ).
        let other = cookie_name("lg", "st-999");
        assert_eq!(
            open(&k, &other, Some(&sealed), "st-999", 1001).unwrap_err(),
            StateError::Foreign
        );
        assert_eq!(
            open(&k, &name, Some(&sealed), "st-124", 1001).unwrap_err(),
            StateError::Foreign
        );
        assert_eq!(
            open(&k, &name, Some("garbage"), "st-123", 1001).unwrap_err(),
            StateError::Foreign
        );
        assert!(!format!("{:?}", state(1)).contains("vvvv"));
    }
}
