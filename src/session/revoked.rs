//! Sessions that ended before their lifetime (sign-out, operator revoke).
//!
//! A session cookie is self-contained, so deleting it in one browser does not stop a copy
//! of it. Each session therefore has an id, and an ended one is remembered here until its
//! own lifetime would have ended anyway; a remembered session is "no session" at once.
//! Ids are kept as SHA-256 digests (a memory dump does not reveal live ids) in a bounded
//! cache whose entries expire with the sessions they name, so the check on the hot path is
//! one hash and one lookup.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

/// Where ended sessions are recorded: [`Revocations`] on this replica; an
/// implementation shared by replicas (Redis) makes a sign-out hold on all of them.
#[async_trait]
pub trait EndedSessions: Send + Sync {
    /// Records session `sid` as ended until `until` (its lifetime's end).
    async fn end(&self, sid: &str, until: u64, now: u64);

    /// Whether session `sid` has ended at `now`. Never fails: a record that cannot be
    /// read counts as "not ended" (a store outage is not a logout).
    async fn is_ended(&self, sid: &str, now: u64) -> bool;
}

/// How many ended sessions are remembered at most. Past this, the oldest-used records are
/// evicted first (their sessions would work again): far above what sign-outs within one
/// session lifetime reach, and ~100 bytes each.
pub(crate) const MAX_REVOKED: u64 = 1_000_000;

/// A record: until when (gateway clock, seconds) the session counts as ended, and the
/// clock at the time it was recorded (which sets the cache entry's time to live).
#[derive(Debug, Clone, Copy)]
struct Until {
    until: u64,
    recorded_at: u64,
}

struct UntilExpiry;

impl moka::Expiry<[u8; 32], Until> for UntilExpiry {
    fn expire_after_create(&self, _k: &[u8; 32], v: &Until, _at: Instant) -> Option<Duration> {
        Some(Duration::from_secs(v.until.saturating_sub(v.recorded_at)))
    }
}

/// The set of ended sessions on this replica.
pub(crate) struct Revocations {
    ended: moka::sync::Cache<[u8; 32], Until>,
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations::new(MAX_REVOKED)
    }
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("entries", &self.ended.entry_count())
            .finish()
    }
}

/// The form a session id is recorded in (its SHA-256).
pub(crate) fn digest(sid: &str) -> [u8; 32] {
    Sha256::digest(sid.as_bytes()).into()
}

impl Revocations {
    pub(crate) fn new(max_entries: u64) -> Revocations {
        Revocations {
            ended: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .expire_after(UntilExpiry)
                .build(),
        }
    }

    /// Records session `sid` as ended until `until` (its lifetime's end). An empty id
    /// (a session sealed before ids existed) cannot be told apart from others: ignored.
    pub(crate) fn revoke(&self, sid: &str, until: u64, now: u64) {
        if sid.is_empty() || until <= now {
            return;
        }
        self.ended.insert(
            digest(sid),
            Until {
                until,
                recorded_at: now,
            },
        );
    }

    /// Records an ended session by its [`digest`] (as learned from another replica).
    pub(crate) fn revoke_digest(&self, d: [u8; 32], until: u64, now: u64) {
        if until > now {
            self.ended.insert(
                d,
                Until {
                    until,
                    recorded_at: now,
                },
            );
        }
    }

    /// Whether session `sid` has ended at `now`.
    pub(crate) fn is_revoked(&self, sid: &str, now: u64) -> bool {
        !sid.is_empty() && self.ended.get(&digest(sid)).is_some_and(|u| now < u.until)
    }

    /// How many records are held (tests); approximate while writes settle.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.ended.run_pending_tasks();
        self.ended.entry_count()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl EndedSessions for Revocations {
    async fn end(&self, sid: &str, until: u64, now: u64) {
        self.revoke(sid, until, now);
    }

    async fn is_ended(&self, sid: &str, now: u64) -> bool {
        self.is_revoked(sid, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_session_ends_at_once_and_only_until_its_lifetime() {
        let r = Revocations::default();
        assert!(!r.is_revoked("s1", 100));
        r.revoke("s1", 1_000, 100);
        assert!(r.is_revoked("s1", 100));
        assert!(r.is_revoked("s1", 999));
        assert!(
            !r.is_revoked("s1", 1_000),
            "the session has ended by itself by then"
        );
        assert!(!r.is_revoked("s2", 100), "other sessions are untouched");
    }

    #[test]
    fn empty_ids_and_past_lifetimes_are_not_recorded() {
        let r = Revocations::default();
        r.revoke("", 1_000, 100);
        r.revoke("old", 50, 100);
        assert!(!r.is_revoked("", 100));
        assert!(r.is_empty());
    }

    #[test]
    fn the_record_is_bounded() {
        let r = Revocations::new(100);
        for i in 0..1_000 {
            r.revoke(&format!("s{i}"), 10_000, 0);
        }
        assert!(r.len() <= 100, "{} records", r.len());
    }

    #[test]
    fn ids_are_stored_as_digests() {
        let r = Revocations::default();
        r.revoke("secret-session-id", 1_000, 0);
        let dump = format!("{r:?}");
        assert!(!dump.contains("secret-session-id"));
    }
}
