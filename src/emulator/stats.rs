//! Counters that tests read to assert what reached the emulator
//! (e.g. "exactly one refresh happened").

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// A snapshot of the counters, as served by `GET /__emulator/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests per endpoint (`metadata`, `register`, `authorize`, `login`, `consent`,
    /// `token`, `revoke`, `userinfo`, `api_me`, `api_courses`, and with `--openid`
    /// `openid_configuration`, `jwks`).
    pub endpoints: BTreeMap<String, u64>,
    /// Token requests per grant type, then per outcome (`ok` or an error code).
    pub grants: BTreeMap<String, BTreeMap<String, u64>>,
    /// Error responses per RFC 6749 error code, across all endpoints.
    pub errors: BTreeMap<String, u64>,
    /// Events: `code_issued`, `id_token_issued`, `family_revoked`, `token_revoked`,
    /// `client_registered`.
    pub events: BTreeMap<String, u64>,
}

impl Stats {
    pub fn endpoint(&self, name: &str) -> u64 {
        self.endpoints.get(name).copied().unwrap_or(0)
    }

    pub fn grant(&self, grant_type: &str, outcome: &str) -> u64 {
        self.grants
            .get(grant_type)
            .and_then(|m| m.get(outcome))
            .copied()
            .unwrap_or(0)
    }

    pub fn error(&self, code: &str) -> u64 {
        self.errors.get(code).copied().unwrap_or(0)
    }

    pub fn event(&self, name: &str) -> u64 {
        self.events.get(name).copied().unwrap_or(0)
    }
}

/// The live counters behind a mutex; every update is a few map operations.
#[derive(Debug, Default)]
pub(super) struct Counters(Mutex<Stats>);

impl Counters {
    fn with(&self, f: impl FnOnce(&mut Stats)) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
    }

    pub(super) fn endpoint(&self, name: &str) {
        self.with(|s| *s.endpoints.entry(name.to_string()).or_default() += 1);
    }

    pub(super) fn grant(&self, grant_type: &str, outcome: &str) {
        self.with(|s| {
            *s.grants
                .entry(grant_type.to_string())
                .or_default()
                .entry(outcome.to_string())
                .or_default() += 1
        });
    }

    pub(super) fn error(&self, code: &str) {
        self.with(|s| *s.errors.entry(code.to_string()).or_default() += 1);
    }

    pub(super) fn event(&self, name: &str, n: u64) {
        if n > 0 {
            self.with(|s| *s.events.entry(name.to_string()).or_default() += n);
        }
    }

    pub(super) fn snapshot(&self) -> Stats {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn reset(&self) {
        self.with(|s| *s = Stats::default());
    }
}
