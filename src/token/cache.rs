//! The validated-token cache (moka): key = SHA-256 of the token (never the token), value =
//! the verdict. A valid entry lives `min(cache.ttl, exp − now)`, an invalid one
//! `cache.negative_ttl`; concurrent first uses of one token share one validation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::validate::Verdict;
use crate::oauth::LoopwiseError;

#[derive(Debug)]
pub(crate) struct Cached {
    pub verdict: Verdict,
    ttl: Duration,
}

struct CachedExpiry;

impl moka::Expiry<[u8; 32], Arc<Cached>> for CachedExpiry {
    fn expire_after_create(
        &self,
        _k: &[u8; 32],
        v: &Arc<Cached>,
        _at: Instant,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

/// How a lookup was served (for metrics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    NegativeHit,
    Miss,
}

pub struct TokenCache {
    cache: moka::future::Cache<[u8; 32], Arc<Cached>>,
    ttl: Duration,
    negative_ttl: Duration,
}

/// The cache key for a token presented for a school (`oauth::Schools` id): a verdict of
/// one school never answers for another. The id is length-prefixed, so no id/token split
/// can collide with another.
pub(crate) fn key(school: &str, token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((school.len() as u64).to_be_bytes());
    h.update(school.as_bytes());
    h.update(token.as_bytes());
    h.finalize().into()
}

/// How long a verdict may be trusted at `now`.
pub(crate) fn entry_ttl(
    verdict: &Verdict,
    now: u64,
    ttl: Duration,
    negative_ttl: Duration,
) -> Duration {
    match verdict {
        Verdict::Invalid => negative_ttl,
        Verdict::Valid(info) => match info.expires_at {
            Some(exp) => ttl.min(Duration::from_secs(exp.saturating_sub(now))),
            None => ttl,
        },
    }
}

impl TokenCache {
    pub fn new(ttl: Duration, negative_ttl: Duration, max_entries: u64) -> TokenCache {
        TokenCache {
            cache: moka::future::Cache::builder()
                .max_capacity(max_entries)
                .expire_after(CachedExpiry)
                .build(),
            ttl,
            negative_ttl,
        }
    }

    /// The cached verdict for `token` at `school`, or `validate`'s (run once however many
    /// ask at once). Transient errors are returned to every waiter and not cached.
    pub async fn get<F>(
        &self,
        school: &str,
        token: &str,
        now: u64,
        validate: F,
    ) -> Result<(Verdict, Lookup), LoopwiseError>
    where
        F: std::future::Future<Output = Result<Verdict, LoopwiseError>>,
    {
        let k = key(school, token);
        let (ttl, negative_ttl) = (self.ttl, self.negative_ttl);
        let entry = self
            .cache
            .entry(k)
            .or_try_insert_with(async move {
                let verdict = validate.await?;
                let ttl = entry_ttl(&verdict, now, ttl, negative_ttl);
                Ok::<_, LoopwiseError>(Arc::new(Cached { verdict, ttl }))
            })
            .await
            .map_err(|e: Arc<LoopwiseError>| (*e).clone())?;
        let fresh = entry.is_fresh();
        let cached = entry.into_value();
        // Belt and braces: an entry never outlives the token, even by the gateway's clock.
        if let Verdict::Valid(info) = &cached.verdict {
            if info.expires_at.is_some_and(|exp| exp <= now) {
                self.cache.invalidate(&k).await;
                return Ok((
                    Verdict::Invalid,
                    if fresh {
                        Lookup::Miss
                    } else {
                        Lookup::NegativeHit
                    },
                ));
            }
        }
        let lookup = match (fresh, &cached.verdict) {
            (true, _) => Lookup::Miss,
            (false, Verdict::Valid(_)) => Lookup::Hit,
            (false, Verdict::Invalid) => Lookup::NegativeHit,
        };
        Ok((cached.verdict.clone(), lookup))
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Lets pending evictions and counts settle (tests, metrics).
    pub async fn sync(&self) {
        self.cache.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Identity;
    use crate::token::validate::TokenInfo;

    fn valid(exp: Option<u64>) -> Verdict {
        Verdict::Valid(TokenInfo {
            identity: Identity::default(),
            scope: String::new(),
            expires_at: exp,
            audiences: Vec::new(),
        })
    }

    #[test]
    fn ttl_never_outlives_the_token() {
        let (ttl, neg) = (Duration::from_secs(60), Duration::from_secs(10));
        assert_eq!(
            entry_ttl(&valid(Some(1030)), 1000, ttl, neg),
            Duration::from_secs(30)
        );
        assert_eq!(entry_ttl(&valid(Some(5000)), 1000, ttl, neg), ttl);
        assert_eq!(entry_ttl(&valid(None), 1000, ttl, neg), ttl);
        assert_eq!(entry_ttl(&valid(Some(900)), 1000, ttl, neg), Duration::ZERO);
        assert_eq!(entry_ttl(&Verdict::Invalid, 1000, ttl, neg), neg);
    }

    #[tokio::test]
    async fn hits_misses_and_negative_hits() {
        let c = TokenCache::new(Duration::from_secs(60), Duration::from_secs(10), 100);
        let (_, l) = c
            .get("default", "t1", 1000, async { Ok(valid(Some(2000))) })
            .await
            .unwrap();
        assert_eq!(l, Lookup::Miss);
        let (v, l) = c
            .get("default", "t1", 1000, async { panic!("must be cached") })
            .await
            .unwrap();
        assert_eq!((l, matches!(v, Verdict::Valid(_))), (Lookup::Hit, true));
        c.get("default", "bad", 1000, async { Ok(Verdict::Invalid) })
            .await
            .unwrap();
        let (_, l) = c
            .get("default", "bad", 1000, async {
                panic!("negatively cached")
            })
            .await
            .unwrap();
        assert_eq!(l, Lookup::NegativeHit);
        // Past the token's exp by the caller's clock: invalid even though cached.
        let (v, _) = c
            .get("default", "t1", 2000, async { panic!("no revalidation") })
            .await
            .unwrap();
        assert_eq!(v, Verdict::Invalid);
        // Transient errors are not cached.
        assert!(c
            .get("default", "t2", 1000, async {
                Err(LoopwiseError::Unavailable(503))
            })
            .await
            .is_err());
        let (_, l) = c
            .get("default", "t2", 1000, async { Ok(valid(None)) })
            .await
            .unwrap();
        assert_eq!(l, Lookup::Miss);
    }

    #[tokio::test]
    async fn one_school_verdict_never_answers_for_another() {
        assert_ne!(key("north", "t"), key("south", "t"));
        assert_ne!(key("a", "bc"), key("ab", "c"));
        let c = TokenCache::new(Duration::from_secs(60), Duration::from_secs(5), 100);
        c.get("north", "t1", 1000, async { Ok(valid(Some(2000))) })
            .await
            .unwrap();
        let (v, l) = c
            .get("south", "t1", 1000, async { Ok(Verdict::Invalid) })
            .await
            .unwrap();
        assert!(matches!(v, Verdict::Invalid));
        assert_eq!(l, Lookup::Miss);
    }
}
