//! What one gateway process keeps across reloads. A reload rebuilds everything that
//! derives from the config (routes, keys, the Loopwise client, the token cache, whose
//! validation settings may change) and hands the same [`Shared`] to the new generation,
//! so nothing that must survive depends on a hand-kept list of fields.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use super::Clock;
use crate::login::replay::{LocalReplayGuard, ReplayGuard};
use crate::metrics::Metrics;
use crate::session::{CookieStore, EndedSessions, Revocations, SessionStore};
use crate::token::refresh::{RefreshCoordinator, Refresher};

/// Process-wide state: one per process, shared by every generation of the gateway.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    /// The gateway's clock (tests move it forward).
    pub clock: Clock,
    /// Set when a graceful shutdown starts: `/readyz` turns 503.
    pub draining: AtomicBool,
    /// Set while `loopgate run` has not yet installed its signal handlers: pingora starts
    /// the listeners first, and a SIGTERM in that window would kill the process without a
    /// drain, so `/readyz` stays 503 until it is cleared.
    pub signals_pending: AtomicBool,
    pub store: Arc<dyn SessionStore>,
    /// So that no refresh token is ever spent twice, even across a reload.
    pub refresh: Arc<dyn RefreshCoordinator>,
    /// Login states already used (single use survives a reload).
    pub replay: Arc<dyn ReplayGuard>,
    /// Sessions ended by sign-out before their lifetime.
    pub revoked: Arc<dyn EndedSessions>,
    /// The admin listener, bound at start-up.
    admin_addr: OnceLock<SocketAddr>,
}

impl Shared {
    /// Today's single-replica implementations: sessions in cookies, refreshes and used
    /// login states coordinated in this process. `refresh_grace` is how long a refresh
    /// outcome is remembered (`session.refresh_grace`, read once at start-up).
    pub fn local(metrics: Arc<Metrics>, refresh_grace: std::time::Duration) -> Shared {
        Shared {
            metrics,
            clock: Clock::default(),
            draining: AtomicBool::new(false),
            signals_pending: AtomicBool::new(false),
            store: Arc::new(CookieStore),
            refresh: Arc::new(Refresher::new(refresh_grace)),
            replay: Arc::new(LocalReplayGuard::default()),
            revoked: Arc::new(Revocations::default()),
            admin_addr: OnceLock::new(),
        }
    }

    /// The same, with login states made single-use by `replay` (e.g. one shared by the
    /// replicas through Redis).
    pub(crate) fn with_replay(mut self, replay: Arc<dyn ReplayGuard>) -> Shared {
        self.replay = replay;
        self
    }

    /// The same, with refreshes coordinated by `refresh` (e.g. across the replicas).
    pub(crate) fn with_refresh(mut self, refresh: Arc<dyn RefreshCoordinator>) -> Shared {
        self.refresh = refresh;
        self
    }

    /// The same, with sessions kept in `store` (e.g. Redis).
    pub(crate) fn with_store(mut self, store: Arc<dyn SessionStore>) -> Shared {
        self.store = store;
        self
    }

    /// The same, with ended sessions recorded in `ended` (e.g. one shared by replicas).
    pub(crate) fn with_ended(mut self, ended: Arc<dyn EndedSessions>) -> Shared {
        self.revoked = ended;
        self
    }

    /// Records where the admin listener serves (tests and logs read it back).
    pub fn set_admin_addr(&self, addr: SocketAddr) {
        let _ = self.admin_addr.set(addr);
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr.get().copied()
    }
}
