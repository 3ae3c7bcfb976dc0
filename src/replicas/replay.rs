//! Single-use login states across replicas: `SET key 1 NX PX ttl` is one atomic
//! first-use test on the server every replica asks.

use async_trait::async_trait;

use super::Redis;
use crate::login::replay::{GuardError, ReplayGuard};
use crate::login::state::LOGIN_TTL;

/// Used login states in Redis, each kept for [`LOGIN_TTL`] (the state is dead after).
pub(crate) struct RedisReplayGuard {
    redis: Redis,
}

impl RedisReplayGuard {
    pub(crate) fn new(redis: Redis) -> RedisReplayGuard {
        RedisReplayGuard { redis }
    }
}

#[async_trait]
impl ReplayGuard for RedisReplayGuard {
    async fn first_use(&self, fingerprint: &[u8; 32], _now: u64) -> Result<bool, GuardError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.redis.hashed_key("login", fingerprint))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(LOGIN_TTL * 1000);
        // `OK` when this call set it, nil when it was there already.
        let set: Option<String> = self
            .redis
            .query("set_nx", &cmd)
            .await
            .map_err(|e| GuardError(e.to_string()))?;
        Ok(set.is_some())
    }

    async fn health(&self) -> Result<(), GuardError> {
        self.redis
            .ping()
            .await
            .map_err(|e| GuardError(e.to_string()))
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::replicas::test_server::TestRedis;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_redis_guard_meets_the_contract() {
        let server = TestRedis::start().await;
        crate::login::replay::tests::contract(Arc::new(RedisReplayGuard::new(server.client())))
            .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_guard_meets_the_contract_on_a_cluster_and_behind_sentinel() {
        for server in [TestRedis::cluster().await, TestRedis::sentinel().await] {
            crate::login::replay::tests::contract(Arc::new(RedisReplayGuard::new(server.client())))
                .await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_down_fails_closed_and_comes_back_by_itself() {
        let mut server = TestRedis::start().await;
        let guard = RedisReplayGuard::new(server.client());
        let a = crate::random::bytes::<32>();
        assert!(guard.first_use(&a, 1).await.unwrap());
        let TestRedis::Single(s) = &mut server else {
            unreachable!()
        };
        s.stop();
        assert!(
            guard.first_use(&a, 2).await.is_err(),
            "down: an error, not a pass"
        );
        assert!(guard.health().await.is_err());
        // The same port again: the guard reconnects without being rebuilt.
        s.restart().await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while guard.health().await.is_err() {
            assert!(std::time::Instant::now() < deadline, "no reconnect");
        }
        let b = crate::random::bytes::<32>();
        assert!(guard.first_use(&b, 3).await.unwrap());
    }
}
