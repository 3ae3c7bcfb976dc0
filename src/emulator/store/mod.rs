//! The emulated authorization server's state and every decision it makes.
//!
//! Pure: no I/O, and the current time (`now`, Unix seconds) is always passed in, so each
//! strict rule is unit-testable and the in-process clock can be advanced by tests.

mod authorize;
mod clients;
mod openid;
mod tokens;

use std::collections::HashMap;

use authorize::CodeRecord;
pub(super) use authorize::{AuthorizeError, AuthzRequest};
pub(super) use clients::{grant_scopes, Client, RegistrationRequest};
pub(crate) use openid::SigningKey;
pub(crate) use tokens::TokenInfo;
pub use tokens::{AccessClaims, TokenResponse};
use tokens::{AccessRecord, Family, RefreshRecord};

/// How long a login/consent page stays usable.
pub(super) const AUTHZ_REQUEST_TTL: u64 = 600;

/// Fixed facts about the emulated school and its lifetimes.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub issuer: String,
    pub jwt_secret: Vec<u8>,
    pub access_token_ttl: u64,
    pub code_ttl: u64,
    pub school_id: u64,
    pub school_subdomain: String,
    /// Bytes of the `padding` claim in access tokens (0: no such claim).
    pub access_token_padding: usize,
    /// OpenID Connect on (`--openid`): the ID-token key; `None` is the Loopwise dialect only.
    pub openid: Option<std::sync::Arc<SigningKey>>,
}

/// Things that happened inside an operation, for the stats.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Effects {
    pub families_revoked: u64,
    pub tokens_revoked: u64,
}

pub(super) struct Store {
    settings: Settings,
    clients: HashMap<String, Client>,
    requests: HashMap<String, AuthzRequest>,
    codes: HashMap<String, CodeRecord>,
    families: HashMap<u64, Family>,
    next_family: u64,
    refresh: HashMap<String, RefreshRecord>,
    access: HashMap<String, AccessRecord>,
    inserts_since_gc: u32,
}

impl Store {
    pub(super) fn new(settings: Settings) -> Store {
        Store {
            settings,
            clients: HashMap::new(),
            requests: HashMap::new(),
            codes: HashMap::new(),
            families: HashMap::new(),
            next_family: 1,
            refresh: HashMap::new(),
            access: HashMap::new(),
            inserts_since_gc: 0,
        }
    }

    pub(super) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Every refresh token issued (rotated ones included).
    pub(super) fn refresh_tokens(&self) -> Vec<String> {
        self.refresh.keys().cloned().collect()
    }

    /// Forgets expired requests, codes and access tokens every few hundred inserts.
    /// Refresh tokens and families are kept for the process lifetime (about 100 bytes per
    /// login or refresh): a replay must be caught however late it comes.
    fn gc(&mut self, now: u64) {
        self.inserts_since_gc += 1;
        if self.inserts_since_gc < 256 {
            return;
        }
        self.inserts_since_gc = 0;
        let code_ttl = self.settings.code_ttl;
        self.requests
            .retain(|_, r| now < r.created_at + AUTHZ_REQUEST_TTL);
        // Keep used codes a while longer than their lifetime so replays are still detected.
        self.codes
            .retain(|_, c| now < c.issued_at + code_ttl.max(AUTHZ_REQUEST_TTL));
        self.access.retain(|_, a| now < a.exp);
    }
}

/// A short, printable excerpt of client input for error messages.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect::<String>()
}

#[cfg(test)]
mod tests;
