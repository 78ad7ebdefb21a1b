//! The current policy snapshot, swapped whole on reload; readers never lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::matching::PolicySet;

#[derive(Debug, Default)]
pub struct PolicyStore {
    current: ArcSwap<PolicySet>,
    /// Set once the first complete policy state has been installed.
    loaded: AtomicBool,
}

impl PolicyStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The snapshot to use for one request.
    pub fn snapshot(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Installs a new snapshot; in-flight requests keep the one they took.
    pub fn install(&self, set: PolicySet) {
        self.current.store(Arc::new(set));
        self.loaded.store(true, Ordering::Release);
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }
}
