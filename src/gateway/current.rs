//! The gateway serving now. A reload builds a new [`Gateway`] and swaps it in; each
//! request takes one snapshot and keeps it, so a request never sees two configs.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Gateway;

/// Shared by the reloader (which swaps) and the listeners (which read).
pub struct Current(ArcSwap<Gateway>);

impl Current {
    pub fn new(gateway: Gateway) -> Current {
        Current(ArcSwap::from_pointee(gateway))
    }

    /// A snapshot of the gateway serving now.
    pub fn load(&self) -> Arc<Gateway> {
        self.0.load_full()
    }

    pub fn store(&self, gateway: Gateway) {
        self.0.store(Arc::new(gateway));
    }
}
