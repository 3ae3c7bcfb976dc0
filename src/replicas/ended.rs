//! Sign-out holds on every replica: an ended session is recorded in Redis as well as
//! locally and announced to the other replicas (`invalidate.rs`). A replica asks Redis
//! about a session at most once per [`RECHECK`], or once per [`TRUSTED`] while it
//! provably hears the announcements, so the hot path makes no Redis round trip for a
//! session it has seen recently, and a sign-out on one replica ends the session on all
//! of them at once (within [`RECHECK`] when announcements cannot be heard).
//!
//! Key: `ended:<sha256(session id)>` (never the id) holding the end of the session's
//! lifetime, expiring with it. Redis unreachable: the local record alone (a sign-out on
//! another replica is then not seen until Redis is back; no session is ever ended by an
//! outage).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::invalidate::Invalidations;
use super::Redis;
use crate::session::revoked::digest;
use crate::session::{EndedSessions, Revocations};

/// How long "not ended" is believed without asking Redis again, at least.
pub(crate) const RECHECK: Duration = Duration::from_millis(500);
/// And at most, while every announcement is provably heard.
pub(crate) const TRUSTED: Duration = Duration::from_secs(30);

pub(crate) struct RedisEndedSessions {
    redis: Redis,
    local: Revocations,
    /// Sessions Redis said were not ended, and when the question was asked.
    recently_checked: moka::sync::Cache<[u8; 32], Instant>,
    changes: Arc<Invalidations>,
    /// After a failed lookup, Redis is not asked again until then: a hung Redis costs one
    /// request per [`RECHECK`] its timeout, not every request.
    skip_until: std::sync::Mutex<Option<std::time::Instant>>,
}

impl RedisEndedSessions {
    pub(crate) fn new(redis: Redis, changes: Arc<Invalidations>) -> RedisEndedSessions {
        RedisEndedSessions {
            redis,
            local: Revocations::default(),
            recently_checked: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(TRUSTED)
                .build(),
            changes,
            skip_until: std::sync::Mutex::new(None),
        }
    }

    fn redis_skipped(&self) -> bool {
        let guard = self.skip_until.lock().unwrap_or_else(|p| p.into_inner());
        guard.is_some_and(|t| std::time::Instant::now() < t)
    }

    fn key(&self, d: &[u8; 32]) -> String {
        self.redis.hashed_key("ended", d)
    }
}

#[async_trait]
impl EndedSessions for RedisEndedSessions {
    async fn end(&self, sid: &str, until: u64, now: u64) {
        if sid.is_empty() || until <= now {
            return;
        }
        self.local.revoke(sid, until, now);
        let d = digest(sid);
        self.recently_checked.invalidate(&d);
        let mut set = redis::cmd("SET");
        set.arg(self.key(&d))
            .arg(until)
            .arg("PX")
            .arg((until - now).saturating_mul(1000));
        match self.redis.query::<()>("ended_set", &set).await {
            Ok(()) => self.changes.announce(&d).await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot share a sign-out; other replicas see it once Redis is back only if signed out again")
            }
        }
    }

    async fn is_ended(&self, sid: &str, now: u64) -> bool {
        if sid.is_empty() {
            return false;
        }
        if self.local.is_revoked(sid, now) {
            return true;
        }
        let d = digest(sid);
        self.changes.listen();
        let believed = self.recently_checked.get(&d).is_some_and(|at| {
            !self.changes.changed_since(&d, at)
                && (at.elapsed() < RECHECK || self.changes.current(&d, at))
        });
        if believed || self.redis_skipped() {
            return false;
        }
        let mut get = redis::cmd("GET");
        get.arg(self.key(&d));
        let asked = Instant::now();
        match self.redis.query::<Option<u64>>("ended_get", &get).await {
            Ok(Some(until)) => {
                self.local.revoke_digest(d, until, now);
                now < until
            }
            Ok(None) => {
                self.recently_checked.insert(d, asked);
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot ask Redis about a session; the local record decides");
                *self.skip_until.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(std::time::Instant::now() + RECHECK);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicas::test_server::TestRedis;

    fn replica(redis: Redis) -> RedisEndedSessions {
        let changes = Arc::new(Invalidations::new(redis.clone()));
        RedisEndedSessions::new(redis, changes)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_end_on_one_replica_holds_on_another_within_the_recheck() {
        let server = TestRedis::start().await;
        let cfg = server.config();
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
        let a = replica(Redis::new(&cfg, metrics.clone()).unwrap());
        let b = replica(Redis::new(&cfg, metrics.clone()).unwrap());
        let sid = crate::random::token();
        assert!(!b.is_ended(&sid, 100).await, "B has seen it live (cached)");
        a.end(&sid, 1_000, 100).await;
        assert!(a.is_ended(&sid, 100).await);
        // B believes its recent check for at most RECHECK, then asks Redis.
        let started = std::time::Instant::now();
        while !b.is_ended(&sid, 101).await {
            assert!(started.elapsed() < RECHECK * 2, "not seen on B in time");
            tokio::task::yield_now().await;
        }
        assert!(
            !b.is_ended(&sid, 1_000).await,
            "only until its lifetime's end"
        );
        // The record names a hash, never the id.
        let mut keys = redis::cmd("KEYS");
        keys.arg(format!("{}*", cfg.key_prefix));
        let names: Vec<String> = a.redis.query("test", &keys).await.unwrap();
        assert_eq!(names.len(), 1);
        assert!(!names[0].contains(&sid));
        // One Redis lookup per RECHECK at most for a live session.
        let other = crate::random::token();
        let before = metrics
            .redis_commands
            .with_label_values(&["ended_get", "ok"])
            .get();
        for _ in 0..50 {
            assert!(!b.is_ended(&other, 100).await);
        }
        let after = metrics
            .redis_commands
            .with_label_values(&["ended_get", "ok"])
            .get();
        assert!(
            after - before <= 2,
            "{} lookups for 50 requests",
            after - before
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_down_ends_nothing_and_keeps_local_ends() {
        let server = TestRedis::start().await;
        let ended = replica(server.client());
        drop(server);
        let sid = crate::random::token();
        assert!(
            !ended.is_ended(&sid, 100).await,
            "an outage is not a logout"
        );
        ended.end(&sid, 1_000, 100).await;
        assert!(
            ended.is_ended(&sid, 100).await,
            "this replica's sign-out still holds"
        );
    }
}
