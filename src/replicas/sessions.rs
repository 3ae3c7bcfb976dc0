//! `session.store = "redis"`: the session lives in Redis, sealed with a key only its
//! cookie holds; the cookie carries the session id and that key, nothing else. A Redis
//! dump reveals no token (every value is sealed), a cookie alone reveals nothing (it has
//! no token in it), and deleting the record ends every copy of the cookie.
//!
//! Key: `session:<sha256(id)>`, expiring with the session. A refresh re-saves the session
//! under the same id and key, so copies of the pre-refresh cookie open the new tokens.
//! Each replica keeps the sessions it opened for [`FRESH`] without asking Redis again
//! (no round trip per request), so a sign-out on another replica holds here within
//! [`FRESH`]; when Redis cannot be asked, a session opened before keeps working while
//! its record here lasts ([`STALE_OK`]): a store outage is never a logout.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::Redis;
use crate::session::revoked::digest;
use crate::session::{Keyring, Purpose, Session, SessionStore, StoreError};

/// How long an opened session is used without asking Redis again.
pub(crate) const FRESH: Duration = Duration::from_millis(500);
/// How long an opened session may stand in while Redis cannot be asked.
pub(crate) const STALE_OK: Duration = Duration::from_secs(3600);

/// What the cookie carries.
#[derive(Serialize, Deserialize)]
struct Ticket {
    /// The session id.
    i: String,
    /// The session's own key, base64url (32 random bytes).
    k: String,
}

#[derive(Clone)]
struct Opened {
    session: Session,
    at: Instant,
}

pub(crate) struct RedisSessionStore {
    redis: Redis,
    opened: moka::sync::Cache<[u8; 32], Opened>,
}

impl RedisSessionStore {
    pub(crate) fn new(redis: Redis) -> RedisSessionStore {
        RedisSessionStore {
            redis,
            opened: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(STALE_OK)
                .build(),
        }
    }

    fn key(&self, d: &[u8; 32]) -> String {
        self.redis.hashed_key("session", d)
    }

    fn ticket(payload: &[u8]) -> Option<(Ticket, Vec<u8>)> {
        let t: Ticket = serde_json::from_slice(payload).ok()?;
        let k = URL_SAFE_NO_PAD
            .decode(&t.k)
            .ok()
            .filter(|k| k.len() == 32)?;
        (!t.i.is_empty()).then_some((t, k))
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn save(
        &self,
        session: &Session,
        previous: Option<&[u8]>,
    ) -> Result<Vec<u8>, StoreError> {
        // The same session (a refresh) keeps its key; anything else gets a new one.
        let secret = previous
            .and_then(Self::ticket)
            .filter(|(t, _)| t.i == session.sid)
            .map(|(_, k)| k)
            .unwrap_or_else(|| crate::random::bytes::<32>().to_vec());
        let d = digest(&session.sid);
        let key = self.key(&d);
        let json = serde_json::to_vec(session).expect("a session always serialises");
        let sealed =
            Keyring::new(Purpose::StoredSession, std::slice::from_ref(&secret)).seal(&key, &json);
        let ttl_ms = session.expires_at.saturating_sub(unix_now()).max(1) * 1000;
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(sealed).arg("PX").arg(ttl_ms);
        self.redis
            .query::<()>("session_set", &set)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        self.opened.insert(
            d,
            Opened {
                session: session.clone(),
                at: Instant::now(),
            },
        );
        let ticket = Ticket {
            i: session.sid.clone(),
            k: URL_SAFE_NO_PAD.encode(&secret),
        };
        Ok(serde_json::to_vec(&ticket).expect("a ticket always serialises"))
    }

    async fn load(&self, payload: &[u8], now: u64) -> Result<Option<Session>, StoreError> {
        let Some((ticket, secret)) = Self::ticket(payload) else {
            return Ok(None);
        };
        let d = digest(&ticket.i);
        let cached = self.opened.get(&d).filter(|o| o.session.sid == ticket.i);
        if let Some(o) = cached.as_ref().filter(|o| o.at.elapsed() < FRESH) {
            return Ok(Some(o.session.clone()).filter(|s| s.is_live(now)));
        }
        let key = self.key(&d);
        let mut get = redis::cmd("GET");
        get.arg(&key);
        let sealed = match self
            .redis
            .query::<Option<String>>("session_get", &get)
            .await
        {
            Ok(Some(v)) => v,
            Ok(None) => {
                // Gone: signed out (here or on another replica) or expired.
                self.opened.invalidate(&d);
                return Ok(None);
            }
            Err(e) => {
                return match cached {
                    Some(o) => {
                        tracing::debug!(error = %e, "redis unavailable; using the session opened before");
                        Ok(Some(o.session).filter(|s| s.is_live(now)))
                    }
                    None => Err(StoreError::Unavailable(e.to_string())),
                };
            }
        };
        let keys = Keyring::new(Purpose::StoredSession, &[secret]);
        let Some(session) = keys
            .open(&key, &sealed)
            .ok()
            .and_then(|json| serde_json::from_slice::<Session>(&json).ok())
            .filter(|s| s.sid == ticket.i)
        else {
            return Ok(None);
        };
        self.opened.insert(
            d,
            Opened {
                session: session.clone(),
                at: Instant::now(),
            },
        );
        Ok(Some(session).filter(|s| s.is_live(now)))
    }

    async fn remove(&self, payload: &[u8]) -> Result<(), StoreError> {
        let Some((ticket, _)) = Self::ticket(payload) else {
            return Ok(());
        };
        let d = digest(&ticket.i);
        self.opened.invalidate(&d);
        let mut del = redis::cmd("DEL");
        del.arg(self.key(&d));
        self.redis
            .query::<i64>("session_del", &del)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.redis
            .ping()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn server_side(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicas::test_server::TestRedis;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_redis_store_meets_the_contract() {
        let server = TestRedis::start().await;
        let store = RedisSessionStore::new(server.client());
        crate::session::store::tests::contract(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_redis_store_meets_the_contract_on_a_cluster_and_behind_sentinel() {
        for server in [TestRedis::cluster().await, TestRedis::sentinel().await] {
            let store = RedisSessionStore::new(server.client());
            crate::session::store::tests::contract(&store).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn neither_the_cookie_nor_redis_holds_a_token_in_clear() {
        let server = TestRedis::start().await;
        let cfg = server.config();
        let redis = Redis::new(&cfg, std::sync::Arc::new(crate::metrics::Metrics::new())).unwrap();
        let store = RedisSessionStore::new(redis.clone());
        let mut s = crate::session::store::tests::session(unix_now() + 3600);
        s.access_token = format!("at-secret-{}", crate::random::token());
        s.refresh_token = Some(format!("rt-secret-{}", crate::random::token()));
        let payload = store.save(&s, None).await.unwrap();
        let cookie = String::from_utf8(payload.clone()).unwrap();
        let mut scan = redis::cmd("KEYS");
        scan.arg(format!("{}*", cfg.key_prefix));
        let keys: Vec<String> = redis.query("test", &scan).await.unwrap();
        assert_eq!(keys.len(), 1);
        let mut get = redis::cmd("GET");
        get.arg(&keys[0]);
        let value: String = redis.query("test", &get).await.unwrap();
        for secret in [s.access_token.as_str(), s.refresh_token.as_deref().unwrap()] {
            assert!(
                !cookie.contains(secret) && !value.contains(secret) && !keys[0].contains(secret)
            );
        }
        assert!(!keys[0].contains(&s.sid), "the key names a hash of the id");
        // A new login (another id) never reuses a previous cookie's key.
        let mut other = s.clone();
        other.sid = crate::random::token();
        let p2 = store.save(&other, Some(&payload)).await.unwrap();
        let (t1, k1) = RedisSessionStore::ticket(&payload).unwrap();
        let (t2, k2) = RedisSessionStore::ticket(&p2).unwrap();
        assert_ne!(t1.i, t2.i);
        assert_ne!(k1, k2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_down_keeps_opened_sessions_and_refuses_unknown_ones() {
        let server = TestRedis::start().await;
        let store = RedisSessionStore::new(server.client());
        let s = crate::session::store::tests::session(unix_now() + 3600);
        let payload = store.save(&s, None).await.unwrap();
        let mut unseen = s.clone();
        unseen.sid = crate::random::token();
        let other = RedisSessionStore::new(server.client());
        let unseen_payload = other.save(&unseen, None).await.unwrap();
        drop(server);
        assert_eq!(
            store.load(&payload, 10).await.unwrap(),
            Some(s),
            "opened before"
        );
        assert!(
            store.load(&unseen_payload, 10).await.is_err(),
            "unknown: unavailable, not gone"
        );
        assert!(store.health().await.is_err());
    }
}
