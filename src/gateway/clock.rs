//! The gateway's clock: real time plus an offset tests can advance (token expiry without
//! sleeping). Decisions take `now` as a value read once per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Default)]
pub struct Clock {
    offset: AtomicU64,
}

impl Clock {
    /// Unix seconds.
    pub fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + self.offset.load(Ordering::Relaxed)
    }

    pub fn advance(&self, secs: u64) {
        self.offset.fetch_add(secs, Ordering::Relaxed);
    }
}
