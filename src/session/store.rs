//! Where sessions live. The sealed cookie always carries a *payload*; the store decides
//! what that payload is: the whole session (cookie store, stateless) or, for server-side
//! stores that come later (memory, Redis), a session id.

use async_trait::async_trait;

use super::model::Session;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing store could not be reached; the request should fail softly.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The session was ended (signed out, revoked) while it was being saved again.
    #[error("the session was ended")]
    Ended,
    /// This store keeps no index of a user's sessions (the cookie store).
    #[error("listing or ending a user's sessions needs session.store = \"redis\" (this gateway keeps sessions in cookies only)")]
    NotIndexed,
}

/// One of a user's sessions as an operator sees it: where and when, never a token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionSummary {
    pub school: String,
    pub created_at: u64,
    /// The last time a replica fetched it from the store (to the minute).
    pub last_seen: u64,
    pub expires_at: u64,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Persists `session` and returns the payload the cookie will carry. `previous` is
    /// the payload of the cookie the request carried, if any (a refresh re-saves the
    /// same session under it, so that copies of the old cookie keep opening it).
    async fn save(&self, session: &Session, previous: Option<&[u8]>)
        -> Result<Vec<u8>, StoreError>;

    /// The session a payload stands for, if it exists and is still live at `now`.
    /// Unreadable payloads are `Ok(None)`: a bad cookie means "log in again".
    async fn load(&self, payload: &[u8], now: u64) -> Result<Option<Session>, StoreError>;

    /// Forgets the session (sign-out): on a server-side store, every copy of its cookie
    /// is dead at once.
    async fn remove(&self, payload: &[u8]) -> Result<(), StoreError>;

    /// Whether the store can be used now; `/readyz` reports it.
    async fn health(&self) -> Result<(), StoreError>;

    /// Short name for logs and readiness (`cookie`, `memory`, `redis`).
    fn kind(&self) -> &'static str;

    /// Whether the payload only refers to a session kept by the store, so that
    /// [`remove`](Self::remove) kills every copy of the cookie at once.
    fn server_side(&self) -> bool;

    /// The live sessions of user `sub`, oldest first.
    async fn sessions_of(&self, _sub: &str, _now: u64) -> Result<Vec<SessionSummary>, StoreError> {
        Err(StoreError::NotIndexed)
    }

    /// Ends every session of user `sub` at once (every copy of their cookies, on every
    /// replica) and returns them, so that their refresh tokens can be revoked.
    async fn end_sessions_of(&self, _sub: &str, _now: u64) -> Result<Vec<Session>, StoreError> {
        Err(StoreError::NotIndexed)
    }
}

/// The stateless store: the session itself is the payload, sealed into the cookie.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CookieStore;

#[async_trait]
impl SessionStore for CookieStore {
    async fn save(
        &self,
        session: &Session,
        _previous: Option<&[u8]>,
    ) -> Result<Vec<u8>, StoreError> {
        Ok(serde_json::to_vec(session).expect("a session always serialises"))
    }

    async fn load(&self, payload: &[u8], now: u64) -> Result<Option<Session>, StoreError> {
        Ok(serde_json::from_slice::<Session>(payload)
            .ok()
            .filter(|s| s.is_live(now)))
    }

    async fn remove(&self, _payload: &[u8]) -> Result<(), StoreError> {
        // Nothing is kept server-side; clearing the cookie is the whole job.
        Ok(())
    }

    async fn health(&self) -> Result<(), StoreError> {
        // Nothing to reach: the browser holds the sessions.
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "cookie"
    }

    fn server_side(&self) -> bool {
        false
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::session::model::Identity;

    pub(crate) fn session(expires_at: u64) -> Session {
        Session {
            sid: crate::random::token(),
            issuer_id: "default".into(),
            identity: Identity {
                sub: "ada".into(),
                ..Default::default()
            },
            scope: "read".into(),
            access_token: "at".into(),
            refresh_token: None,
            access_expires_at: 50,
            access_issued_at: 0,
            created_at: 0,
            expires_at,
            origin: None,
            id_token: None,
        }
    }

    /// The contract every store must meet; later stores run the same checks.
    pub(crate) async fn contract(store: &dyn SessionStore) {
        let s = session(100);
        let payload = store.save(&s, None).await.unwrap();
        assert_eq!(store.load(&payload, 10).await.unwrap(), Some(s.clone()));
        assert_eq!(store.load(&payload, 100).await.unwrap(), None, "expired");
        assert_eq!(store.load(b"garbage", 10).await.unwrap(), None);
        assert_eq!(store.load(b"", 10).await.unwrap(), None);
        store.health().await.unwrap();
        store.remove(&payload).await.unwrap();
        // A removed session is gone on a server-side store; a cookie store keeps nothing
        // to remove (sign-out also records the session as ended, see `Revocations`).
        if store.server_side() {
            assert_eq!(store.load(&payload, 10).await.unwrap(), None, "removed");
        }
        assert!(!store.kind().is_empty());
        // Re-saved under its own payload (a refresh): the old payload opens the new one.
        let s2 = session(200);
        let p2 = store.save(&s2, None).await.unwrap();
        let mut refreshed = s2.clone();
        refreshed.access_token = "at-2".into();
        let p3 = store.save(&refreshed, Some(&p2)).await.unwrap();
        assert_eq!(store.load(&p3, 10).await.unwrap(), Some(refreshed.clone()));
        if store.server_side() {
            assert_eq!(
                store.load(&p2, 10).await.unwrap(),
                Some(refreshed),
                "old copy"
            );
        }
    }

    #[tokio::test]
    async fn cookie_store_meets_the_contract() {
        contract(&CookieStore).await;
        assert!(matches!(
            CookieStore.sessions_of("ada", 10).await,
            Err(StoreError::NotIndexed)
        ));
        let e = CookieStore.end_sessions_of("ada", 10).await.unwrap_err();
        assert!(e.to_string().contains("session.store = \"redis\""), "{e}");
    }
}
