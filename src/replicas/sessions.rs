//! `session.store = "redis"`: the session lives in Redis, sealed with a key only its
//! cookie holds; the cookie carries the session id and that key, nothing else. A Redis
//! dump reveals no token (every value is sealed), a cookie alone reveals nothing (it has
//! no token in it), and deleting the record ends every copy of the cookie.
//!
//! Key: `session:<sha256(id)>`, expiring with the session. A refresh re-saves the session
//! under the same id and key, so copies of the pre-refresh cookie open the new tokens.
//! Each replica keeps the sessions it opened without asking Redis again (no round trip
//! per request): for [`FRESH`], or up to [`TRUSTED`] while it provably hears every change
//! the replicas announce over pub/sub (sign-out, revoke, refresh; `invalidate.rs`), so a
//! sign-out on another replica holds here at once, and within [`FRESH`] when the
//! announcements cannot be heard; when Redis cannot be asked, a session opened before keeps working while
//! its record here lasts ([`STALE_OK`]): a store outage is never a logout.
//!
//! Index: `user:<sha256(sub)>`, a hash with one field per session (`<sha256(id)>`: when
//! and where it started, and its key sealed under the gateway's session secrets) and its
//! last-seen time (`<sha256(id)>:seen`, written at most once a minute per replica), so an
//! operator can list a user's sessions and end them all (reading their refresh tokens to
//! revoke them); a Redis dump alone still opens nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::invalidate::Invalidations;
use super::Redis;
use crate::session::revoked::digest;
use crate::session::{Keyring, Purpose, Session, SessionStore, SessionSummary, StoreError};

/// How long an opened session is used without asking Redis again, at least.
pub(crate) const FRESH: Duration = Duration::from_millis(500);
/// How long, at most, while the replica provably hears every announced change
/// (`invalidate.rs`).
pub(crate) const TRUSTED: Duration = Duration::from_secs(30);
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

/// How often a replica records that a session is still in use.
const SEEN_EVERY: u64 = 60;

/// Adds a session to its user's index and makes the index outlive it.
const INDEX: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], ARGV[1] .. ':seen', ARGV[4])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1";

/// Records a last-seen time, unless the index is gone (revoked, expired).
const SEEN: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1";

#[derive(Clone)]
struct Opened {
    session: Session,
    at: Instant,
    /// When this replica last recorded the session as seen (unix seconds).
    seen: u64,
}

/// A session's entry in its user's index.
#[derive(Serialize, Deserialize)]
struct Entry {
    /// School.
    k: String,
    c: u64,
    x: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ua: Option<String>,
    /// The session's own key, sealed under the gateway's secrets.
    key: String,
}

pub(crate) struct RedisSessionStore {
    redis: Redis,
    opened: moka::sync::Cache<[u8; 32], Opened>,
    /// Seals each session's key in the index (from `session.secrets`).
    index_keys: Keyring,
    /// Changes announced by the replicas (this one included).
    changes: Arc<Invalidations>,
    /// `loopgate_session_cache_total` by result, resolved once (this is the hot path).
    cache_hits: prometheus::IntCounter,
    cache_misses: prometheus::IntCounter,
    cache_stale: prometheus::IntCounter,
}

impl RedisSessionStore {
    pub(crate) fn new(
        redis: Redis,
        secrets: &[Vec<u8>],
        changes: Arc<Invalidations>,
    ) -> RedisSessionStore {
        RedisSessionStore {
            opened: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(STALE_OK)
                .build(),
            index_keys: Keyring::new(Purpose::SessionIndex, secrets),
            changes,
            cache_hits: redis.metrics().session_cache.with_label_values(&["hit"]),
            cache_misses: redis.metrics().session_cache.with_label_values(&["miss"]),
            cache_stale: redis.metrics().session_cache.with_label_values(&["stale"]),
            redis,
        }
    }

    /// Whether a copy opened at `o.at` may be used without asking Redis.
    fn usable(&self, d: &[u8; 32], o: &Opened) -> bool {
        let age = o.at.elapsed();
        !self.changes.changed_since(d, o.at)
            && (age < FRESH || (age < TRUSTED && self.changes.current(d, o.at)))
    }

    fn key(&self, d: &[u8; 32]) -> String {
        self.redis.hashed_key("session", d)
    }

    fn user_key(&self, sub: &str) -> String {
        self.redis.hashed_key(
            "user",
            &<sha2::Sha256 as sha2::Digest>::digest(sub.as_bytes()),
        )
    }

    /// Keeps `session`, read (or written) from Redis at `at`.
    fn remember(&self, d: [u8; 32], session: &Session, at: Instant, seen: u64) {
        self.opened.insert(
            d,
            Opened {
                session: session.clone(),
                at,
                seen,
            },
        );
    }

    /// Adds a new session to its user's index.
    async fn index(
        &self,
        session: &Session,
        d: &[u8; 32],
        secret: &[u8],
    ) -> Result<(), StoreError> {
        let field = crate::hex::encode(d);
        let origin = session.origin.clone().unwrap_or_default();
        let entry = Entry {
            k: session.issuer_id.clone(),
            c: session.created_at,
            x: session.expires_at,
            ip: origin.client_ip,
            ua: origin.user_agent,
            key: self.index_keys.seal(&field, secret),
        };
        let ttl_ms = session.expires_at.saturating_sub(unix_now()).max(1) * 1000;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(INDEX)
            .arg(1)
            .arg(self.user_key(&session.identity.sub))
            .arg(&field)
            .arg(serde_json::to_string(&entry).expect("an entry always serialises"))
            .arg(ttl_ms)
            .arg(unix_now());
        self.redis
            .query::<i64>("session_index", &cmd)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// The index of `sub`: each session's digest (hex), entry and last-seen time.
    async fn entries(&self, sub: &str) -> Result<Vec<(String, Entry, u64)>, StoreError> {
        let mut all = redis::cmd("HGETALL");
        all.arg(self.user_key(sub));
        let map: std::collections::HashMap<String, String> = self
            .redis
            .query("session_index_get", &all)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut out: Vec<(String, Entry, u64)> = map
            .iter()
            .filter(|(f, _)| !f.ends_with(":seen"))
            .filter_map(|(f, v)| {
                let entry: Entry = serde_json::from_str(v).ok()?;
                let seen = map
                    .get(&format!("{f}:seen"))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(entry.c);
                Some((f.clone(), entry, seen))
            })
            .collect();
        out.sort_by_key(|(_, e, _)| e.c);
        Ok(out)
    }

    /// Forgets index fields of sessions that no longer exist.
    async fn prune(&self, sub: &str, fields: &[String]) {
        if fields.is_empty() {
            return;
        }
        let mut del = redis::cmd("HDEL");
        del.arg(self.user_key(sub));
        for f in fields {
            del.arg(f).arg(format!("{f}:seen"));
        }
        if let Err(e) = self.redis.query::<i64>("session_index_prune", &del).await {
            tracing::debug!(error = %e, "could not prune a session index");
        }
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
        let kept = previous
            .and_then(Self::ticket)
            .filter(|(t, _)| t.i == session.sid)
            .map(|(_, k)| k);
        let again = kept.is_some();
        let secret = kept.unwrap_or_else(|| crate::random::bytes::<32>().to_vec());
        let d = digest(&session.sid);
        let key = self.key(&d);
        let json = serde_json::to_vec(session).expect("a session always serialises");
        let sealed =
            Keyring::new(Purpose::StoredSession, std::slice::from_ref(&secret)).seal(&key, &json);
        let ttl_ms = session.expires_at.saturating_sub(unix_now()).max(1) * 1000;
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(sealed).arg("PX").arg(ttl_ms);
        if again {
            // Only over itself: a session ended meanwhile (signed out, revoked by an
            // operator) must not come back with a refresh that was in flight.
            set.arg("XX");
        }
        let stored: Option<String> = self
            .redis
            .query("session_set", &set)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        if stored.is_none() {
            self.opened.invalidate(&d);
            return Err(StoreError::Ended);
        }
        if again {
            // Other replicas' copies hold the old tokens.
            self.changes.announce(&d).await;
        } else {
            self.index(session, &d, &secret).await?;
        }
        self.remember(d, session, Instant::now(), unix_now());
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
        self.changes.listen();
        if let Some(o) = cached.as_ref().filter(|o| self.usable(&d, o)) {
            self.cache_hits.inc();
            return Ok(Some(o.session.clone()).filter(|s| s.is_live(now)));
        }
        let key = self.key(&d);
        let mut get = redis::cmd("GET");
        get.arg(&key);
        let read_at = Instant::now();
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
                        self.cache_stale.inc();
                        tracing::debug!(error = %e, "redis unavailable; using the session opened before");
                        Ok(Some(o.session).filter(|s| s.is_live(now)))
                    }
                    None => Err(StoreError::Unavailable(e.to_string())),
                };
            }
        };
        self.cache_misses.inc();
        let Some(session) = open(&key, &sealed, secret).filter(|s| s.sid == ticket.i) else {
            return Ok(None);
        };
        let mut seen = cached.map_or(0, |o| o.seen);
        let wall = unix_now();
        if wall >= seen + SEEN_EVERY {
            let field = crate::hex::encode(&d);
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(SEEN)
                .arg(1)
                .arg(self.user_key(&session.identity.sub))
                .arg(format!("{field}:seen"))
                .arg(wall);
            match self.redis.query::<i64>("session_seen", &cmd).await {
                Ok(_) => seen = wall,
                Err(e) => tracing::debug!(error = %e, "could not record a session as seen"),
            }
        }
        self.remember(d, &session, read_at, seen);
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
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        self.changes.announce(&d).await;
        Ok(())
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

    async fn sessions_of(&self, sub: &str, now: u64) -> Result<Vec<SessionSummary>, StoreError> {
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (field, e, seen) in self.entries(sub).await? {
            let Some(d) = crate::hex::decode32(&field) else {
                continue;
            };
            let mut exists = redis::cmd("EXISTS");
            exists.arg(self.key(&d));
            let there: i64 = self
                .redis
                .query("session_exists", &exists)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            if there == 0 || e.x <= now {
                gone.push(field);
                continue;
            }
            live.push(SessionSummary {
                school: e.k,
                created_at: e.c,
                last_seen: seen,
                expires_at: e.x,
                client_ip: e.ip,
                user_agent: e.ua,
            });
        }
        self.prune(sub, &gone).await;
        Ok(live)
    }

    async fn end_sessions_of(&self, sub: &str, now: u64) -> Result<Vec<Session>, StoreError> {
        let unavailable = |e: super::RedisError| StoreError::Unavailable(e.to_string());
        let mut ended = Vec::new();
        for (field, e, _) in self.entries(sub).await? {
            let Some(d) = crate::hex::decode32(&field) else {
                continue;
            };
            let key = self.key(&d);
            let mut get = redis::cmd("GET");
            get.arg(&key);
            let sealed: Option<String> = self
                .redis
                .query("session_get", &get)
                .await
                .map_err(unavailable)?;
            let mut del = redis::cmd("DEL");
            del.arg(&key);
            self.redis
                .query::<i64>("session_del", &del)
                .await
                .map_err(unavailable)?;
            self.opened.invalidate(&d);
            self.changes.announce(&d).await;
            let session = sealed.and_then(|v| {
                let secret = self.index_keys.open(&field, &e.key).ok()?;
                open(&key, &v, secret)
            });
            match session {
                Some(s) if s.is_live(now) => ended.push(s),
                Some(_) => {}
                None => tracing::debug!("a revoked session was already gone or unreadable"),
            }
        }
        let mut del = redis::cmd("DEL");
        del.arg(self.user_key(sub));
        self.redis
            .query::<i64>("session_index_del", &del)
            .await
            .map_err(unavailable)?;
        Ok(ended)
    }
}

/// The session sealed at `key` under its own `secret`.
fn open(key: &str, sealed: &str, secret: Vec<u8>) -> Option<Session> {
    Keyring::new(Purpose::StoredSession, &[secret])
        .open(key, sealed)
        .ok()
        .and_then(|json| serde_json::from_slice::<Session>(&json).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicas::test_server::TestRedis;

    /// A replica's store on `redis`.
    fn store_on(redis: Redis) -> RedisSessionStore {
        let changes = Arc::new(Invalidations::new(redis.clone()));
        RedisSessionStore::new(redis, &[b"test secret".to_vec()], changes)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_redis_store_meets_the_contract() {
        let server = TestRedis::start().await;
        let store = store_on(server.client());
        crate::session::store::tests::contract(&store).await;
    }

    /// What an operator sees and ends, on one server and on a Cluster (the index and the
    /// sessions live in different slots there).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_users_sessions_are_listed_without_tokens_and_ended_together() {
        for server in [TestRedis::start().await, TestRedis::cluster().await] {
            let cfg = server.config();
            let replica = || {
                let redis =
                    Redis::new(&cfg, std::sync::Arc::new(crate::metrics::Metrics::new())).unwrap();
                store_on(redis)
            };
            let (store, other_replica) = (replica(), replica());
            let now = unix_now();
            let mut a1 = crate::session::store::tests::session(now + 3600);
            a1.refresh_token = Some(format!("rt-{}", crate::random::token()));
            a1.access_token = format!("at-{}", crate::random::token());
            a1.created_at = now - 10;
            a1.origin = Some(crate::session::model::Origin::new(
                Some("203.0.113.7".parse().unwrap()),
                Some("Firefox/140"),
            ));
            let mut a2 = crate::session::store::tests::session(now + 3600);
            a2.refresh_token = Some(format!("rt-{}", crate::random::token()));
            a2.created_at = now - 5;
            let mut g = crate::session::store::tests::session(now + 3600);
            g.identity.sub = "grace".into();
            let p1 = store.save(&a1, None).await.unwrap();
            let p2 = store.save(&a2, None).await.unwrap();
            let pg = store.save(&g, None).await.unwrap();
            // Opened on another replica too (it will have to notice the end).
            assert!(
                other_replica.load(&p1, now).await.unwrap().is_some(),
                "{:?}",
                server.config().target
            );

            let list = store.sessions_of("ada", now).await.unwrap();
            assert_eq!(list.len(), 2);
            assert_eq!(list[0].created_at, now - 10, "oldest first");
            assert_eq!(list[0].client_ip.as_deref(), Some("203.0.113.7"));
            assert_eq!(list[0].user_agent.as_deref(), Some("Firefox/140"));
            assert_eq!(list[1].client_ip, None);
            assert!(list[0].last_seen >= now);
            let shown = serde_json::to_string(&list).unwrap();
            for secret in [
                &a1.access_token,
                a1.refresh_token.as_ref().unwrap(),
                &a1.sid,
            ] {
                assert!(!shown.contains(secret.as_str()), "{shown}");
            }
            assert!(store.sessions_of("nobody", now).await.unwrap().is_empty());

            // A signed-out session drops out of the list.
            store.remove(&p2).await.unwrap();
            assert_eq!(store.sessions_of("ada", now).await.unwrap().len(), 1);

            let ended = store.end_sessions_of("ada", now).await.unwrap();
            assert_eq!(ended.len(), 1);
            assert_eq!(
                ended[0].refresh_token, a1.refresh_token,
                "to revoke at Loopwise"
            );
            assert_eq!(store.load(&p1, now).await.unwrap(), None);
            assert!(store.sessions_of("ada", now).await.unwrap().is_empty());
            assert!(
                store.load(&pg, now).await.unwrap().is_some(),
                "grace keeps hers"
            );
            // A refresh that was in flight does not bring the session back.
            let mut late = a1.clone();
            late.access_token = "at-late".into();
            assert!(matches!(
                other_replica.save(&late, Some(&p1)).await,
                Err(StoreError::Ended)
            ));
            // The other replica's cached copy dies within FRESH.
            let t = Instant::now();
            while other_replica.load(&p1, now).await.unwrap().is_some() {
                assert!(t.elapsed() < FRESH * 2, "still open on the other replica");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Replica B keeps using its copy without asking Redis while it hears the
    /// announcements; a sign-out on A is heard at once, well within FRESH.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sign_out_elsewhere_is_heard_at_once_and_copies_last_while_heard() {
        for server in [TestRedis::start().await, TestRedis::cluster().await] {
            let cfg = server.config();
            let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
            let replica =
                |m: std::sync::Arc<crate::metrics::Metrics>| store_on(Redis::new(&cfg, m).unwrap());
            let a = replica(std::sync::Arc::new(crate::metrics::Metrics::new()));
            let b = replica(metrics.clone());
            let now = unix_now();
            let s = crate::session::store::tests::session(now + 3600);
            let payload = a.save(&s, None).await.unwrap();
            assert!(b.load(&payload, now).await.unwrap().is_some());
            let d = digest(&s.sid);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !b.usable(&d, &b.opened.get(&d).unwrap())
                || !b.changes.current(&d, b.opened.get(&d).unwrap().at)
            {
                assert!(Instant::now() < deadline, "B never heard its own heartbeat");
                tokio::time::sleep(Duration::from_millis(20)).await;
                // Re-read so the copy postdates the subscription.
                b.opened.invalidate(&d);
                assert!(b.load(&payload, now).await.unwrap().is_some());
            }
            let gets = || {
                metrics
                    .redis_commands
                    .with_label_values(&["session_get", "ok"])
                    .get()
            };
            let before = gets();
            let held = Instant::now();
            while held.elapsed() < FRESH * 3 {
                assert!(b.load(&payload, now).await.unwrap().is_some());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(
                gets(),
                before,
                "no Redis read while the copy is provably current"
            );

            a.remove(&payload).await.unwrap();
            let ended = Instant::now();
            while b.load(&payload, now).await.unwrap().is_some() {
                assert!(
                    ended.elapsed() < FRESH / 2,
                    "B still uses its copy {:?} after the sign-out",
                    ended.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_redis_store_meets_the_contract_on_a_cluster_and_behind_sentinel() {
        for server in [TestRedis::cluster().await, TestRedis::sentinel().await] {
            let store = store_on(server.client());
            crate::session::store::tests::contract(&store).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn neither_the_cookie_nor_redis_holds_a_token_in_clear() {
        let server = TestRedis::start().await;
        let cfg = server.config();
        let redis = Redis::new(&cfg, std::sync::Arc::new(crate::metrics::Metrics::new())).unwrap();
        let store = store_on(redis.clone());
        let mut s = crate::session::store::tests::session(unix_now() + 3600);
        s.access_token = format!("at-secret-{}", crate::random::token());
        s.refresh_token = Some(format!("rt-secret-{}", crate::random::token()));
        let payload = store.save(&s, None).await.unwrap();
        let cookie = String::from_utf8(payload.clone()).unwrap();
        let mut scan = redis::cmd("KEYS");
        scan.arg(format!("{}*", cfg.key_prefix));
        let keys: Vec<String> = redis.query("test", &scan).await.unwrap();
        assert_eq!(keys.len(), 2, "the session and its user's index: {keys:?}");
        let mut dump = String::new();
        for k in &keys {
            let mut ty = redis::cmd("TYPE");
            ty.arg(k);
            let kind: String = redis.query("test", &ty).await.unwrap();
            let mut read = redis::cmd(if kind == "hash" { "HGETALL" } else { "GET" });
            read.arg(k);
            let value: redis::Value = redis.query("test", &read).await.unwrap();
            dump.push_str(&format!("{k} {value:?}\n"));
        }
        for secret in [s.access_token.as_str(), s.refresh_token.as_deref().unwrap()] {
            assert!(!cookie.contains(secret) && !dump.contains(secret), "{dump}");
        }
        assert!(!dump.contains(&s.sid), "keys name a hash of the id: {dump}");
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
        let store = store_on(server.client());
        let s = crate::session::store::tests::session(unix_now() + 3600);
        let payload = store.save(&s, None).await.unwrap();
        let mut unseen = s.clone();
        unseen.sid = crate::random::token();
        let other = store_on(server.client());
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
