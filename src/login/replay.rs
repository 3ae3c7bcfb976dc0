//! Login states are single use: a callback whose state was already used is refused, so a
//! copied login cookie or a replayed callback URL cannot complete a second login (and no
//! second code exchange happens).
//!
//! [`ReplayGuard`] is the seam: [`LocalReplayGuard`] remembers used states on this
//! replica; a store shared by replicas (Redis `SET NX`) implements the same trait and
//! runs the same [`contract`](tests::contract).

use std::time::Duration;

use async_trait::async_trait;

use super::state::LOGIN_TTL;

/// The guard's store could not be asked. The callback is refused (fail closed: a replay
/// must never pass because the store was down).
#[derive(Debug, thiserror::Error)]
#[error("login replay guard unavailable: {0}")]
pub struct GuardError(pub String);

#[async_trait]
pub trait ReplayGuard: Send + Sync {
    /// Marks a state (by its fingerprint, see [`super::state::fingerprint`]) used.
    /// `Ok(true)` for the first use within [`LOGIN_TTL`], `Ok(false)` for every later
    /// one, however many callbacks race.
    async fn first_use(&self, fingerprint: &[u8; 32], now: u64) -> Result<bool, GuardError>;

    /// Whether the guard can be asked now; `/readyz` reports it (logins fail without).
    async fn health(&self) -> Result<(), GuardError>;

    /// Short name for logs and readiness (`local`, `redis`).
    fn kind(&self) -> &'static str;
}

/// Used states on this replica, each kept for [`LOGIN_TTL`] (a state is dead after that
/// anyway), bounded so a flood of callbacks cannot exhaust memory.
pub struct LocalReplayGuard {
    used: moka::sync::Cache<[u8; 32], ()>,
}

impl Default for LocalReplayGuard {
    fn default() -> Self {
        LocalReplayGuard {
            used: moka::sync::Cache::builder()
                .time_to_live(Duration::from_secs(LOGIN_TTL))
                .max_capacity(1_000_000)
                .build(),
        }
    }
}

#[async_trait]
impl ReplayGuard for LocalReplayGuard {
    async fn first_use(&self, fingerprint: &[u8; 32], _now: u64) -> Result<bool, GuardError> {
        // One atomic insert-if-absent: a check followed by an insert let two racing
        // callbacks with one state both through.
        Ok(self.used.entry(*fingerprint).or_insert(()).is_fresh())
    }

    async fn health(&self) -> Result<(), GuardError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "local"
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;

    /// What every replay guard must do; a shared implementation runs it too.
    pub(crate) async fn contract(guard: Arc<dyn ReplayGuard>) {
        let a = crate::random::bytes::<32>();
        let b = crate::random::bytes::<32>();
        assert!(guard.first_use(&a, 1000).await.unwrap(), "first use");
        assert!(!guard.first_use(&a, 1001).await.unwrap(), "second use");
        assert!(!guard.first_use(&a, 1000 + LOGIN_TTL - 1).await.unwrap());
        assert!(guard.first_use(&b, 1001).await.unwrap(), "another state");
        // Racing callbacks with one state: exactly one wins.
        let c = crate::random::bytes::<32>();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let g = guard.clone();
            tasks.spawn(async move { g.first_use(&c, 2000).await.unwrap() });
        }
        let mut wins = 0;
        while let Some(won) = tasks.join_next().await {
            wins += usize::from(won.unwrap());
        }
        assert_eq!(wins, 1, "exactly one of 32 racing uses is the first");
        guard.health().await.unwrap();
        assert!(!guard.kind().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_local_guard_meets_the_contract() {
        contract(Arc::new(LocalReplayGuard::default())).await;
    }
}
