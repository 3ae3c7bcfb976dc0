//! The generation serving now: the gateway's decisions and the backend pools of its
//! routes, built from one config. A reload builds a new [`Generation`] and swaps it in;
//! each request takes one snapshot and keeps it, so a request never sees two configs.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::meters::Meters;
use super::pools::Pools;
use crate::gateway::Gateway;

/// One config's gateway, the pools its routes proxy to and their metric handles.
pub struct Generation {
    pub gateway: Arc<Gateway>,
    pub pools: Pools,
    pub(crate) meters: Meters,
}

impl Generation {
    pub fn new(gateway: Arc<Gateway>, pools: Pools) -> Generation {
        let meters = Meters::new(&gateway.shared.metrics, &gateway.routes);
        Generation {
            gateway,
            pools,
            meters,
        }
    }
}

/// Shared by the reloader (which swaps) and the listeners (which read).
pub struct Current(ArcSwap<Generation>);

impl Current {
    pub fn new(generation: Generation) -> Current {
        Current(ArcSwap::from_pointee(generation))
    }

    /// A snapshot of the generation serving now.
    pub fn load(&self) -> Arc<Generation> {
        self.0.load_full()
    }

    pub fn store(&self, generation: Generation) {
        self.0.store(Arc::new(generation));
    }
}
