//! What an operator does to a user's sessions (the admin listener's `/sessions`): list
//! them, or end them all at once and revoke their refresh tokens at their schools.

use serde::Serialize;

use super::Gateway;
use crate::session::{SessionSummary, StoreError};

/// What `POST /sessions/revoke` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revoked {
    pub sub: String,
    /// Sessions ended (every copy of their cookies is dead on every replica).
    pub ended: usize,
    /// Refresh tokens Loopwise confirmed revoked.
    pub refresh_tokens_revoked: usize,
    /// Refresh tokens Loopwise could not be told about (they die with their grant's
    /// lifetime; the sessions are ended either way).
    pub refresh_token_errors: usize,
}

impl Gateway {
    /// The live sessions of `sub`, oldest first: where and when, never a token.
    pub async fn user_sessions(
        &self,
        sub: &str,
        now: u64,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        self.shared.store.sessions_of(sub, now).await
    }

    /// Ends every session of `sub`, then revokes their refresh tokens, each at its own
    /// school.
    pub async fn revoke_user(&self, sub: &str, now: u64) -> Result<Revoked, StoreError> {
        let sessions = self.shared.store.end_sessions_of(sub, now).await?;
        self.shared
            .metrics
            .sessions_revoked
            .inc_by(sessions.len() as u64);
        let mut done = Revoked {
            sub: sub.to_string(),
            ended: sessions.len(),
            refresh_tokens_revoked: 0,
            refresh_token_errors: 0,
        };
        for s in &sessions {
            let (Some(rt), Some(school)) = (&s.refresh_token, self.schools.get(&s.issuer_id))
            else {
                continue;
            };
            match school.client.revoke(rt, "refresh_token").await {
                Ok(()) => done.refresh_tokens_revoked += 1,
                Err(e) => {
                    done.refresh_token_errors += 1;
                    tracing::warn!(error = %e, "an operator's revoke could not revoke a refresh token at Loopwise");
                }
            }
        }
        tracing::info!(
            sub = %crate::wire::headers::sanitize(sub),
            ended = done.ended,
            refresh_tokens_revoked = done.refresh_tokens_revoked,
            "an operator ended a user's sessions"
        );
        Ok(done)
    }
}
