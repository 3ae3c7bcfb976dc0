//! Transparent refresh, single-flight per session.
//!
//! Loopwise rotates refresh tokens strictly: spending one twice revokes the whole grant.
//! So for one session (`sid`) and one refresh token, exactly one refresh may reach
//! Loopwise however many requests race. Results are remembered for `refresh_grace`,
//! keyed by the *old* refresh token, so requests still carrying the pre-refresh cookie
//! get the new tokens from memory instead of spending the old token again.
//!
//! [`RefreshCoordinator`] is the seam: [`Refresher`] coordinates the requests of this
//! replica; a coordinator shared by replicas (a Redis lease plus the stored outcome)
//! implements the same trait and runs the same [`contract`](tests::contract).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::oauth::{LoopwiseClient, LoopwiseError};
use crate::session::Session;

/// Whether `s` should be refreshed at `now`: within [`refresh_threshold`] of its access
/// token's expiry (by the gateway's own clock at receipt + `expires_in`), or after it.
pub(crate) fn needs_refresh(s: &Session, now: u64, before: Duration) -> bool {
    s.refresh_token.is_some()
        && now.saturating_add(refresh_threshold(s, before)) >= s.access_expires_at
}

/// How long before expiry a refresh starts: `before`, but at most half the token's
/// lifetime, so that a token living no longer than `before` is not "due" the moment it
/// arrives (which refreshed on every request).
pub(crate) fn refresh_threshold(s: &Session, before: Duration) -> u64 {
    let before = before.as_secs();
    match s.access_expires_at.checked_sub(s.access_issued_at) {
        Some(lifetime) if s.access_issued_at > 0 => before.min(lifetime / 2),
        _ => before,
    }
}

/// What a refresh attempt came to; shared by every request that waited on it.
#[derive(Debug, Clone)]
pub enum RefreshOutcome {
    /// New tokens (the session with them).
    Refreshed(Box<Session>),
    /// Loopwise said the grant is dead (`invalid_grant`): log in again.
    Ended,
    /// Loopwise does not know the client (`invalid_client`, e.g. it forgot a dynamic
    /// registration): log in again, after the client registers again.
    ClientUnknown,
    /// Loopwise could not be asked (network, 5xx, garbage). Try again after `backoff`;
    /// meanwhile the current access token is used while it is still valid.
    Unavailable { backoff: Duration },
}

/// The session after a successful refresh at `now`.
pub(crate) fn apply(old: &Session, tokens: crate::oauth::TokenSet, now: u64) -> Session {
    Session {
        access_expires_at: now + tokens.expires_in.unwrap_or(3600),
        access_issued_at: now,
        access_token: tokens.access_token,
        // Loopwise always rotates; keep the old one only if a server does not.
        refresh_token: tokens.refresh_token.or_else(|| old.refresh_token.clone()),
        scope: tokens.scope.unwrap_or_else(|| old.scope.clone()),
        ..old.clone()
    }
}

/// Backoff after `failures` consecutive transient failures: 1 s, 2 s, 4 s … 60 s.
pub(crate) fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

struct OutcomeExpiry {
    grace: Duration,
}

impl moka::Expiry<[u8; 32], Arc<RefreshOutcome>> for OutcomeExpiry {
    fn expire_after_create(
        &self,
        _k: &[u8; 32],
        v: &Arc<RefreshOutcome>,
        _at: Instant,
    ) -> Option<Duration> {
        Some(match v.as_ref() {
            RefreshOutcome::Unavailable { backoff } => *backoff,
            _ => self.grace,
        })
    }
}

/// Spends a session's refresh token at most once, for every request that needs it.
#[async_trait]
pub trait RefreshCoordinator: Send + Sync {
    /// Refreshes `session` once for everyone asking with the same refresh token: one
    /// request's call reaches Loopwise (`performed`), every other gets its outcome, both
    /// while the call is in flight and for `session.refresh_grace` after it.
    async fn refresh(&self, loopwise: &LoopwiseClient, session: &Session, now: u64) -> Attempt;

    /// Short name for logs (`local`, `redis`).
    fn kind(&self) -> &'static str;
}

/// The per-replica single-flight coordinator.
pub(crate) struct Refresher {
    outcomes: moka::future::Cache<[u8; 32], Arc<RefreshOutcome>>,
    failures: moka::sync::Cache<String, u32>,
}

/// How a request took part in a refresh.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub outcome: Arc<RefreshOutcome>,
    /// True for the one request whose call reached Loopwise; false when it was served
    /// from the in-flight or remembered result (of this replica or another).
    pub performed: bool,
}

impl Refresher {
    pub(crate) fn new(grace: Duration) -> Refresher {
        Refresher {
            outcomes: moka::future::Cache::builder()
                .max_capacity(1_000_000)
                .expire_after(OutcomeExpiry { grace })
                .build(),
            failures: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
        }
    }

    fn key(s: &Session) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(s.sid.as_bytes());
        h.update([0]);
        h.update(s.refresh_token.as_deref().unwrap_or("").as_bytes());
        h.finalize().into()
    }
}

impl Refresher {
    /// Coalesces this replica's requests for `session`'s refresh onto one `perform`:
    /// the first request runs it, every other (in flight, or within the grace) gets its
    /// outcome. `perform` also says whether it called Loopwise itself (an outcome can
    /// come from elsewhere, e.g. another replica).
    pub(crate) async fn coalesce(
        &self,
        session: &Session,
        perform: impl std::future::Future<Output = (RefreshOutcome, bool)> + Send,
    ) -> Attempt {
        let called = std::sync::atomic::AtomicBool::new(false);
        let entry = self
            .outcomes
            .entry(Self::key(session))
            .or_insert_with(async {
                let (outcome, c) = perform.await;
                called.store(c, std::sync::atomic::Ordering::Relaxed);
                Arc::new(outcome)
            })
            .await;
        Attempt {
            performed: entry.is_fresh() && called.load(std::sync::atomic::Ordering::Relaxed),
            outcome: entry.into_value(),
        }
    }

    /// Spends `session`'s refresh token at Loopwise, once; transient failures back off
    /// per session.
    pub(crate) async fn call(
        &self,
        loopwise: &LoopwiseClient,
        session: &Session,
        now: u64,
    ) -> RefreshOutcome {
        let rt = session.refresh_token.as_deref().unwrap_or("");
        match loopwise.refresh(rt).await {
            Ok(tokens) => {
                self.failures.invalidate(&session.sid);
                RefreshOutcome::Refreshed(Box::new(apply(session, tokens, now)))
            }
            Err(e) if e.is_client_unknown() => RefreshOutcome::ClientUnknown,
            Err(e) if e.is_fatal() => RefreshOutcome::Ended,
            Err(e) => {
                let n = self.failures.get(&session.sid).unwrap_or(0) + 1;
                self.failures.insert(session.sid.clone(), n);
                log_transient(&e, n);
                RefreshOutcome::Unavailable {
                    backoff: backoff(n),
                }
            }
        }
    }
}

#[async_trait]
impl RefreshCoordinator for Refresher {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn refresh(&self, loopwise: &LoopwiseClient, session: &Session, now: u64) -> Attempt {
        self.coalesce(session, async {
            (self.call(loopwise, session, now).await, true)
        })
        .await
    }
}

fn log_transient(e: &LoopwiseError, failures: u32) {
    tracing::warn!(error = %e, failures, retry_in_s = backoff(failures).as_secs(), "refresh failed; keeping the session");
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::session::Identity;

    fn session(exp: u64, rt: Option<&str>) -> Session {
        Session {
            sid: "s".into(),
            issuer_id: "default".into(),
            identity: Identity::default(),
            scope: "read".into(),
            access_token: "a".into(),
            refresh_token: rt.map(str::to_string),
            access_expires_at: exp,
            access_issued_at: 0,
            created_at: 0,
            expires_at: 10_000,
            origin: None,
            id_token: None,
        }
    }

    #[test]
    fn refresh_window() {
        let before = Duration::from_secs(60);
        assert!(!needs_refresh(&session(1000, Some("r")), 939, before));
        assert!(needs_refresh(&session(1000, Some("r")), 940, before));
        assert!(
            needs_refresh(&session(1000, Some("r")), 2000, before),
            "after expiry too"
        );
        assert!(
            !needs_refresh(&session(1000, None), 2000, before),
            "nothing to refresh with"
        );
    }

    #[test]
    fn short_lived_tokens_are_not_due_on_arrival() {
        let before = Duration::from_secs(60);
        for lifetime in [10, 20, 59, 60, 61, 120] {
            let mut s = session(1000 + lifetime, Some("r"));
            s.access_issued_at = 1000;
            assert!(
                !needs_refresh(&s, 1000, before),
                "a {lifetime}s token is not due when it arrives"
            );
            assert!(
                !needs_refresh(&s, 1000 + lifetime / 2 - 1, before),
                "{lifetime}s: not before half its lifetime"
            );
            assert!(
                needs_refresh(&s, 1000 + lifetime, before),
                "{lifetime}s: due at expiry"
            );
        }
        let mut long = session(1000 + 7200, Some("r"));
        long.access_issued_at = 1000;
        assert_eq!(
            refresh_threshold(&long, before),
            60,
            "long tokens keep refresh_before"
        );
        assert!(needs_refresh(&long, 1000 + 7200 - 60, before));
    }

    #[test]
    fn backoff_grows_and_caps() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn apply_keeps_identity_and_uses_the_gateway_clock() {
        let old = session(100, Some("r1"));
        let t = crate::oauth::TokenSet {
            access_token: "a2".into(),
            token_type: "Bearer".into(),
            expires_in: Some(7200),
            refresh_token: Some("r2".into()),
            scope: None,
            id_token: None,
        };
        let new = apply(&old, t, 5000);
        assert_eq!(new.access_expires_at, 12_200);
        assert_eq!(new.refresh_token.as_deref(), Some("r2"));
        assert_eq!((new.sid.as_str(), new.scope.as_str()), ("s", "read"));
        assert_ne!(Refresher::key(&old), Refresher::key(&new));
    }

    pub(crate) mod contract_support {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;

        use async_trait::async_trait;

        use crate::oauth::client::Metadata;
        use crate::oauth::http::{HttpClient, HttpRequest, HttpResponse, TransportError};
        use crate::oauth::LoopwiseClient;

        /// A token endpoint that counts grants and answers each after `delay`, with
        /// `invalid_grant` for refresh tokens starting with `dead` and `invalid_client`
        /// for those starting with `forgot`.
        pub(crate) struct TokenEndpoint {
            pub(crate) grants: AtomicUsize,
            pub(crate) delay: std::time::Duration,
        }

        #[async_trait]
        impl HttpClient for TokenEndpoint {
            async fn execute(&self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
                let n = self.grants.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(self.delay).await;
                let form: Vec<(String, String)> =
                    form_urlencoded::parse(&req.body).into_owned().collect();
                let rt = form
                    .iter()
                    .find(|(k, _)| k == "refresh_token")
                    .map(|(_, v)| v.as_str());
                let (status, body) = if rt.is_some_and(|t| t.starts_with("dead")) {
                    (400, r#"{"error":"invalid_grant"}"#.to_string())
                } else if rt.is_some_and(|t| t.starts_with("forgot")) {
                    (401, r#"{"error":"invalid_client"}"#.to_string())
                } else {
                    (
                        200,
                        format!(
                            r#"{{"access_token":"at-{n}","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-{n}"}}"#
                        ),
                    )
                };
                Ok(HttpResponse {
                    status,
                    body: body.into_bytes(),
                })
            }
        }

        pub(crate) fn loopwise(delay_ms: u64) -> (LoopwiseClient, Arc<TokenEndpoint>) {
            let http = Arc::new(TokenEndpoint {
                grants: AtomicUsize::new(0),
                delay: std::time::Duration::from_millis(delay_ms),
            });
            let metadata = Metadata::fixture();
            let client = LoopwiseClient::new(
                http.clone(),
                metadata,
                "cid".into(),
                None,
                "https://gw.test/oauth2/callback".into(),
            );
            (client, http)
        }
    }

    /// What every refresh coordinator must do (`grace` as it was built with, ≥ 30 s);
    /// a coordinator shared by replicas runs it too.
    pub(crate) async fn contract(coordinator: Arc<dyn RefreshCoordinator>) {
        use std::sync::atomic::Ordering;
        let (loopwise, endpoint) = contract_support::loopwise(50);
        let loopwise = Arc::new(loopwise);
        let mut s = session(1000, Some(&format!("rt-{}", crate::random::token())));
        s.sid = crate::random::token();
        // 32 requests race on one refresh token: one grant, one outcome for all.
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let (c, lw, s) = (coordinator.clone(), loopwise.clone(), s.clone());
            tasks.spawn(async move { c.refresh(&lw, &s, 990).await });
        }
        let mut performed = 0;
        let mut tokens = std::collections::BTreeSet::new();
        while let Some(a) = tasks.join_next().await {
            let a = a.unwrap();
            performed += usize::from(a.performed);
            match a.outcome.as_ref() {
                RefreshOutcome::Refreshed(new) => {
                    tokens.insert(new.access_token.clone());
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(endpoint.grants.load(Ordering::SeqCst), 1, "one grant");
        assert_eq!(performed, 1, "one request performed it");
        assert_eq!(tokens.len(), 1, "everyone got the same tokens");
        // A late request with the pre-refresh cookie, within the grace: no second grant.
        let late = coordinator.refresh(&loopwise, &s, 1005).await;
        assert!(!late.performed);
        assert!(
            matches!(late.outcome.as_ref(), RefreshOutcome::Refreshed(n) if tokens.contains(&n.access_token))
        );
        assert_eq!(endpoint.grants.load(Ordering::SeqCst), 1);
        // A dead grant ends the session for everyone, and is not presented again.
        let mut dead = s.clone();
        dead.refresh_token = Some(format!("dead-{}", crate::random::token()));
        let first = coordinator.refresh(&loopwise, &dead, 1010).await;
        assert!(first.performed && matches!(first.outcome.as_ref(), RefreshOutcome::Ended));
        let again = coordinator.refresh(&loopwise, &dead, 1011).await;
        assert!(!again.performed && matches!(again.outcome.as_ref(), RefreshOutcome::Ended));
        assert_eq!(endpoint.grants.load(Ordering::SeqCst), 2);
        // A client the school forgot: the one that asked is told so (it registers again),
        // everyone else just sees the session end.
        let mut forgot = s.clone();
        forgot.refresh_token = Some(format!("forgot-{}", crate::random::token()));
        let first = coordinator.refresh(&loopwise, &forgot, 1012).await;
        assert!(first.performed && matches!(first.outcome.as_ref(), RefreshOutcome::ClientUnknown));
        let again = coordinator.refresh(&loopwise, &forgot, 1013).await;
        assert!(
            !again.performed
                && matches!(
                    again.outcome.as_ref(),
                    RefreshOutcome::Ended | RefreshOutcome::ClientUnknown
                )
        );
        assert_eq!(endpoint.grants.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_local_refresher_meets_the_contract() {
        contract(Arc::new(Refresher::new(Duration::from_secs(30)))).await;
    }
}
