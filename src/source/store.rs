//! The current policy snapshot, swapped whole on reload; readers never lock. Every set
//! installed here (by the folder or the ConfigMap source) is also recorded in the version
//! history, so that pinned executors find their driver's versions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::history::{now_secs, PolicyHistory};
use crate::matching::PolicySet;
use crate::pinning::{self, Claim, PinCheck, Pinned, Resolution};

#[derive(Debug, Default)]
pub struct PolicyStore {
    current: ArcSwap<PolicySet>,
    /// Set once the first complete policy state has been installed.
    loaded: AtomicBool,
    history: Arc<PolicyHistory>,
}

impl PolicyStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store recording into `history`.
    pub fn with_history(history: Arc<PolicyHistory>) -> Self {
        Self {
            history,
            ..Self::default()
        }
    }

    /// The snapshot to use for one request.
    pub fn snapshot(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Installs a new snapshot; in-flight requests keep the one they took.
    pub fn install(&self, set: PolicySet) {
        self.history.record_install(&set, now_secs());
        self.current.store(Arc::new(set));
        self.loaded.store(true, Ordering::Release);
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub fn history(&self) -> &Arc<PolicyHistory> {
        &self.history
    }

    /// The versions a verified pin names (from `current` or the history), and the tags
    /// not found.
    pub fn pinned(&self, current: &PolicySet, tags: &[&str]) -> Pinned {
        pinning::resolve(current, tags, |tag| self.history.lookup(tag))
    }

    /// How a pod's pin claim resolves, given the check of it against its stored driver.
    pub fn resolve_pin(
        &self,
        current: &PolicySet,
        claim: &Claim<'_>,
        check: PinCheck,
    ) -> Resolution {
        Resolution::of(current, claim, check, |tag| self.history.lookup(tag))
    }
}
