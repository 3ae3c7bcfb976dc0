//! One refresh per refresh token across replicas: a lease in Redis decides which replica
//! spends the token, and the outcome it stores answers every other replica.
//!
//! Keys (under `key_prefix`), both named by a hash of the refresh token:
//! - `refresh:<h>:lease`: `SET NX PX` with a random holder token; renewed while the call
//!   to Loopwise is in flight (a slow Loopwise never lets a second replica in), released
//!   by compare-and-delete. A replica killed while holding it only delays the others
//!   until it expires.
//! - `refresh:<h>`: the outcome, kept for `session.refresh_grace` (a transient failure
//!   for its backoff), sealed with a key derived from the refresh token itself: only a
//!   holder of that token can read the new tokens, so a Redis dump reveals none.
//!
//! Within a replica, requests are first coalesced by the local [`Refresher`], so one
//! request per replica talks to Redis. Redis unreachable: this replica's single-flight
//! alone (logged and counted), never a logout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Redis, RedisError};
use crate::metrics::Metrics;
use crate::oauth::LoopwiseClient;
use crate::session::{Keyring, Purpose, Session};
use crate::token::refresh::{Attempt, RefreshCoordinator, RefreshOutcome, Refresher};

/// How long a lease lasts unless renewed; renewed every third of it.
const LEASE: Duration = Duration::from_secs(2);

/// Compare-and-delete: releases the lease only if this replica still holds it.
const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
/// Compare-and-extend: renews the lease only if this replica still holds it.
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

/// An outcome as stored in Redis (inside the seal).
#[derive(Serialize, Deserialize)]
#[serde(tag = "o")]
enum Stored {
    #[serde(rename = "r")]
    Refreshed { s: Box<Session> },
    #[serde(rename = "e")]
    Ended,
    #[serde(rename = "u")]
    Unavailable { ms: u64 },
}

/// The refresh coordinator shared by every replica on one Redis.
pub(crate) struct RedisRefresher {
    redis: Redis,
    local: Refresher,
    grace: Duration,
    /// How long a replica waits for another's outcome before giving up for now
    /// (`loopwise.timeout` plus a margin).
    wait: Duration,
    metrics: Arc<Metrics>,
}

impl RedisRefresher {
    pub(crate) fn new(
        redis: Redis,
        grace: Duration,
        loopwise_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> RedisRefresher {
        RedisRefresher {
            redis,
            local: Refresher::new(grace),
            grace,
            wait: loopwise_timeout + LEASE,
            metrics,
        }
    }

    /// The cross-replica part, run by one request per replica.
    /// The outcome, and whether this replica called Loopwise for it.
    async fn across(
        &self,
        loopwise: &LoopwiseClient,
        session: &Session,
        now: u64,
    ) -> (RefreshOutcome, bool) {
        let Some(rt) = session.refresh_token.as_deref() else {
            return (RefreshOutcome::Ended, false);
        };
        let outcome_key = self.redis.hashed_key("refresh", &refresh_id(rt));
        let lease_key = format!("{outcome_key}:lease");
        let keys = Keyring::new(Purpose::RefreshOutcome, &[rt.as_bytes().to_vec()]);
        let deadline = Instant::now() + self.wait;
        let mut waited = WaitTimer {
            since: None,
            metrics: &self.metrics,
        };
        let mut pause = Duration::from_millis(10);
        loop {
            match self.stored(&keys, &outcome_key).await {
                Ok(Some(outcome)) => {
                    self.metrics
                        .refresh_shared
                        .with_label_values(&["remote"])
                        .inc();
                    return (outcome, false);
                }
                Ok(None) => {}
                Err(e) => return (self.fallback(loopwise, session, now, e).await, true),
            }
            let holder = crate::random::token();
            let mut set = redis::cmd("SET");
            set.arg(&lease_key)
                .arg(&holder)
                .arg("NX")
                .arg("PX")
                .arg(LEASE.as_millis() as u64);
            match self.redis.query::<Option<String>>("lease", &set).await {
                Ok(Some(_)) => {
                    return self
                        .lead(
                            loopwise,
                            session,
                            now,
                            &keys,
                            &outcome_key,
                            &lease_key,
                            &holder,
                        )
                        .await
                }
                Ok(None) => {}
                Err(e) => return (self.fallback(loopwise, session, now, e).await, true),
            }
            if waited.since.is_none() {
                waited.since = Some(Instant::now());
                self.metrics
                    .refresh_shared
                    .with_label_values(&["lease_wait"])
                    .inc();
            }
            if Instant::now() >= deadline {
                tracing::warn!("no refresh outcome from the replica holding the lease in time; keeping the session");
                let backoff = Duration::from_secs(1);
                return (RefreshOutcome::Unavailable { backoff }, false);
            }
            // Another replica holds the lease: its outcome is due within its call.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// This replica holds the lease: call Loopwise (renewing the lease meanwhile), store
    /// the outcome for the others, release.
    #[allow(clippy::too_many_arguments)]
    async fn lead(
        &self,
        loopwise: &LoopwiseClient,
        session: &Session,
        now: u64,
        keys: &Keyring,
        outcome_key: &str,
        lease_key: &str,
        holder: &str,
    ) -> (RefreshOutcome, bool) {
        // An outcome stored between our read and our lease (the previous holder just
        // released): use it, never present the token again.
        if let Ok(Some(outcome)) = self.stored(keys, outcome_key).await {
            self.release(lease_key, holder).await;
            return (outcome, false);
        }
        let renew = async {
            loop {
                tokio::time::sleep(LEASE / 3).await;
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(RENEW)
                    .arg(1)
                    .arg(lease_key)
                    .arg(holder)
                    .arg(LEASE.as_millis() as u64);
                if let Err(e) = self.redis.query::<i64>("lease_renew", &cmd).await {
                    tracing::warn!(error = %e, "cannot renew the refresh lease");
                }
            }
        };
        let outcome = tokio::select! {
            o = self.local.call(loopwise, session, now) => o,
            () = renew => unreachable!("the renewal loop never ends"),
        };
        let (stored, ttl) = match &outcome {
            RefreshOutcome::Refreshed(s) => (Stored::Refreshed { s: s.clone() }, self.grace),
            // Only the replica that was told re-registers; the others just end the session.
            RefreshOutcome::Ended | RefreshOutcome::ClientUnknown => (Stored::Ended, self.grace),
            RefreshOutcome::Unavailable { backoff } => (
                Stored::Unavailable {
                    ms: backoff.as_millis() as u64,
                },
                *backoff,
            ),
        };
        let json = serde_json::to_vec(&stored).expect("an outcome always serialises");
        let mut set = redis::cmd("SET");
        set.arg(outcome_key)
            .arg(keys.seal(outcome_key, &json))
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        if let Err(e) = self.redis.query::<()>("outcome_set", &set).await {
            tracing::warn!(error = %e, "cannot share a refresh outcome; other replicas may refresh again");
        }
        self.release(lease_key, holder).await;
        self.metrics
            .refresh_shared
            .with_label_values(&["leader"])
            .inc();
        (outcome, true)
    }

    async fn release(&self, lease_key: &str, holder: &str) {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RELEASE).arg(1).arg(lease_key).arg(holder);
        if let Err(e) = self.redis.query::<i64>("lease_release", &cmd).await {
            tracing::warn!(error = %e, "cannot release the refresh lease; it expires by itself");
        }
    }

    /// The outcome stored for this refresh token, if any. A value that does not open
    /// (not sealed under this token) is no outcome.
    async fn stored(
        &self,
        keys: &Keyring,
        key: &str,
    ) -> Result<Option<RefreshOutcome>, RedisError> {
        let mut get = redis::cmd("GET");
        get.arg(key);
        let Some(sealed) = self
            .redis
            .query::<Option<String>>("outcome_get", &get)
            .await?
        else {
            return Ok(None);
        };
        let Ok(json) = keys.open(key, &sealed) else {
            return Ok(None);
        };
        Ok(match serde_json::from_slice::<Stored>(&json) {
            Ok(Stored::Refreshed { s }) => Some(RefreshOutcome::Refreshed(s)),
            Ok(Stored::Ended) => Some(RefreshOutcome::Ended),
            Ok(Stored::Unavailable { ms }) => Some(RefreshOutcome::Unavailable {
                backoff: Duration::from_millis(ms),
            }),
            Err(_) => None,
        })
    }

    /// Redis cannot be asked: this replica's single-flight alone.
    async fn fallback(
        &self,
        loopwise: &LoopwiseClient,
        session: &Session,
        now: u64,
        e: RedisError,
    ) -> RefreshOutcome {
        tracing::warn!(error = %e, "redis unavailable: refreshing with this replica's single-flight only");
        self.metrics
            .refresh_shared
            .with_label_values(&["fallback"])
            .inc();
        self.local.call(loopwise, session, now).await
    }
}

#[async_trait]
impl RefreshCoordinator for RedisRefresher {
    async fn refresh(&self, loopwise: &LoopwiseClient, session: &Session, now: u64) -> Attempt {
        self.local
            .coalesce(session, self.across(loopwise, session, now))
            .await
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// The Redis name of a refresh token: a hash, never the token.
fn refresh_id(rt: &str) -> [u8; 32] {
    Sha256::digest([b"loopgate refresh id\0".as_slice(), rt.as_bytes()].concat()).into()
}

/// Records how long a request waited on another replica's lease, however it ends.
struct WaitTimer<'a> {
    since: Option<Instant>,
    metrics: &'a Metrics,
}

impl Drop for WaitTimer<'_> {
    fn drop(&mut self) {
        if let Some(since) = self.since {
            self.metrics
                .refresh_lease_wait
                .observe(since.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::replicas::test_server::TestRedis;
    use crate::session::Identity;
    use crate::token::refresh::tests::{contract, contract_support};

    fn coordinator(server: &TestRedis, prefix: &str) -> RedisRefresher {
        let mut cfg = server.config();
        cfg.key_prefix = prefix.to_string();
        let metrics = Arc::new(Metrics::new());
        let redis = Redis::new(&cfg, metrics.clone()).unwrap();
        RedisRefresher::new(
            redis,
            Duration::from_secs(30),
            Duration::from_secs(3),
            metrics,
        )
    }

    fn session(rt: &str) -> Session {
        Session {
            sid: crate::random::token(),
            issuer_id: "default".into(),
            identity: Identity::default(),
            scope: "read".into(),
            access_token: "old-at".into(),
            refresh_token: Some(rt.into()),
            access_expires_at: 1000,
            access_issued_at: 0,
            created_at: 0,
            expires_at: 100_000,
            origin: None,
            id_token: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_redis_refresher_meets_the_contract() {
        let server = TestRedis::start().await;
        contract(Arc::new(coordinator(&server, "c:"))).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_redis_refresher_meets_the_contract_on_a_cluster_and_behind_sentinel() {
        for server in [TestRedis::cluster().await, TestRedis::sentinel().await] {
            contract(Arc::new(coordinator(&server, "c:"))).await;
        }
    }

    /// `replicas` coordinators on one Redis, `per` racing requests on each: the grants
    /// the token endpoint saw, and the access tokens handed out.
    async fn storm(
        server: &TestRedis,
        replicas: usize,
        per: usize,
        delay_ms: u64,
    ) -> (usize, std::collections::BTreeSet<String>) {
        let prefix = format!("storm{}:", crate::random::token());
        let (loopwise, endpoint) = contract_support::loopwise(delay_ms);
        let loopwise = Arc::new(loopwise);
        let s = session(&format!("rt-{}", crate::random::token()));
        let coordinators: Vec<Arc<RedisRefresher>> = (0..replicas)
            .map(|_| Arc::new(coordinator(server, &prefix)))
            .collect();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..replicas * per {
            let (c, lw, s) = (
                coordinators[i % replicas].clone(),
                loopwise.clone(),
                s.clone(),
            );
            tasks.spawn(async move { c.refresh(&lw, &s, 990).await });
        }
        let mut tokens = std::collections::BTreeSet::new();
        while let Some(a) = tasks.join_next().await {
            match a.unwrap().outcome.as_ref() {
                RefreshOutcome::Refreshed(new) => {
                    tokens.insert(new.access_token.clone());
                }
                other => panic!("{other:?}"),
            }
        }
        (endpoint.grants.load(Ordering::SeqCst), tokens)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_racing_on_one_refresh_token_spend_it_once() {
        let server = TestRedis::start().await;
        for replicas in [2, 3] {
            let (grants, tokens) = storm(&server, replicas, 17, 50).await;
            assert_eq!(grants, 1, "{replicas} replicas: one grant");
            assert_eq!(
                tokens.len(),
                1,
                "{replicas} replicas: the same new tokens for all"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_loopwise_slower_than_the_lease_still_gets_one_grant() {
        let server = TestRedis::start().await;
        let slow = LEASE.as_millis() as u64 + 1500;
        let (grants, tokens) = storm(&server, 2, 5, slow).await;
        assert_eq!(grants, 1, "the lease was renewed while Loopwise answered");
        assert_eq!(tokens.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_lease_holder_delays_but_never_blocks() {
        let server = TestRedis::start().await;
        let c = coordinator(&server, "dead:");
        let rt = format!("rt-{}", crate::random::token());
        // A replica took the lease and was killed: the lease stays until it expires.
        let lease_key = format!("{}:lease", c.redis.hashed_key("refresh", &refresh_id(&rt)));
        let mut set = redis::cmd("SET");
        set.arg(&lease_key).arg("killed-replica").arg("PX").arg(600);
        c.redis.query::<()>("test", &set).await.unwrap();
        let (loopwise, endpoint) = contract_support::loopwise(10);
        let started = Instant::now();
        let a = c.refresh(&loopwise, &session(&rt), 990).await;
        assert!(
            matches!(a.outcome.as_ref(), RefreshOutcome::Refreshed(_)),
            "{a:?}"
        );
        assert!(a.performed);
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "waited for the lease"
        );
        assert_eq!(endpoint.grants.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_stored_outcome_reveals_no_token() {
        let server = TestRedis::start().await;
        let c = coordinator(&server, "dump:");
        let rt = format!("rt-secret-{}", crate::random::token());
        let (loopwise, _) = contract_support::loopwise(1);
        let a = c.refresh(&loopwise, &session(&rt), 990).await;
        let RefreshOutcome::Refreshed(new) = a.outcome.as_ref() else {
            panic!("{a:?}");
        };
        let key = c.redis.hashed_key("refresh", &refresh_id(&rt));
        let mut get = redis::cmd("GET");
        get.arg(&key);
        let raw: String = c.redis.query("test", &get).await.unwrap();
        for secret in [
            rt.as_str(),
            &new.access_token,
            new.refresh_token.as_deref().unwrap(),
        ] {
            assert!(!raw.contains(secret), "{secret} in clear");
            assert!(!key.contains(secret));
        }
        // Another replica (a fresh coordinator) reads it with the token and asks no one.
        let other = coordinator(&server, "dump:");
        let (lw2, endpoint2) = contract_support::loopwise(1);
        let b = other.refresh(&lw2, &session(&rt), 991).await;
        assert!(!b.performed);
        assert!(
            matches!(b.outcome.as_ref(), RefreshOutcome::Refreshed(n) if n.access_token == new.access_token)
        );
        assert_eq!(endpoint2.grants.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_down_falls_back_to_this_replica() {
        let server = TestRedis::start().await;
        let c = coordinator(&server, "down:");
        drop(server);
        let (loopwise, endpoint) = contract_support::loopwise(1);
        let s = session(&format!("rt-{}", crate::random::token()));
        let a = c.refresh(&loopwise, &s, 990).await;
        assert!(
            matches!(a.outcome.as_ref(), RefreshOutcome::Refreshed(_)),
            "{a:?}"
        );
        let again = c.refresh(&loopwise, &s, 991).await;
        assert!(!again.performed, "still single-flight on this replica");
        assert_eq!(endpoint.grants.load(Ordering::SeqCst), 1);
        assert_eq!(
            c.metrics
                .refresh_shared
                .with_label_values(&["fallback"])
                .get(),
            1
        );
    }
}
