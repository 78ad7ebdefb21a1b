//! The install step both policy sources share (the folder and the ConfigMaps): when a
//! new good set may go live, installing it into the one [`PolicyStore`] (which records
//! every version in the history), and the metrics and log line of each install. The
//! sources keep what differs: how they read, report errors and settle.

use std::sync::Arc;

use crate::matching::PolicySet;
use crate::metrics::{Metrics, ReloadResult};
use crate::source::history::now_secs;
use crate::source::PolicyStore;

/// What the source should do with its current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Install the current good set.
    Install,
    /// Nothing new, or the source is not settled (a relist in progress).
    Wait,
    /// The first install waits for a set without errors: a typo at startup keeps the
    /// server unready instead of silently serving without that policy.
    Unready,
}

#[derive(Debug)]
pub struct Installer {
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    /// Where the policies come from, for the log line (`folder policies`, `ConfigMaps in ns`).
    origin: String,
    /// Good content changed since the last install (starts true: nothing installed yet).
    pending: bool,
}

impl Installer {
    pub fn new(store: Arc<PolicyStore>, metrics: Arc<Metrics>, origin: impl Into<String>) -> Self {
        Self {
            store,
            metrics,
            origin: origin.into(),
            pending: true,
        }
    }

    pub fn store(&self) -> &Arc<PolicyStore> {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Notes that the good content changed (or not) with the last read.
    pub fn changed(&mut self, changed: bool) {
        self.pending |= changed;
    }

    /// Whether to install now, given whether the source is settled and how many policy
    /// errors it has.
    pub fn gate(&self, settled: bool, errors: usize) -> Gate {
        if !(self.pending && settled) {
            Gate::Wait
        } else if errors > 0 && !self.store.is_loaded() {
            Gate::Unready
        } else {
            Gate::Install
        }
    }

    /// Installs `set`; `errors` broken documents are left out of it (their last good
    /// version, if any, is in the set). Returns what this replica now serves, in one line
    /// (`serving 2 policies: a@1ab7e61fa9, b@…`), for the `PolicyLoaded` Event.
    pub fn install(&mut self, set: PolicySet, errors: usize) -> String {
        let n = set.len();
        let names: Vec<String> = set.policies().iter().map(|p| p.tag.clone()).collect();
        self.store.install(set);
        self.pending = false;
        self.metrics.set_policies_loaded(n);
        self.metrics
            .set_policy_set_installed(i64::try_from(now_secs()).unwrap_or(i64::MAX));
        self.metrics.record_policy_reload(if errors == 0 {
            ReloadResult::Applied
        } else {
            ReloadResult::Partial
        });
        tracing::info!(
            source = self.origin.as_str(),
            policies = n,
            names = names.join(",").as_str(),
            rejected = errors,
            "policies loaded"
        );
        serving_line(&names, errors)
    }

    /// Notes that the good policies changed in the source just now (to be installed next;
    /// an alert compares it with the install time, across replicas too). What a replica
    /// reads before its first install is not a change: a replica started later would
    /// otherwise make every older one look stale.
    pub fn change_seen(&self) {
        if self.store.is_loaded() {
            self.metrics
                .set_policy_change_seen(i64::try_from(now_secs()).unwrap_or(i64::MAX));
        }
    }
}

/// `serving N policies: tag, tag` and, when some documents were rejected, how many.
fn serving_line(tags: &[String], rejected: usize) -> String {
    let list = if tags.is_empty() {
        "none".to_owned()
    } else {
        tags.join(", ")
    };
    let mut line = format!("serving {} policies: {list}", tags.len());
    if rejected > 0 {
        line.push_str(&format!(
            " ({rejected} rejected document(s) keep their last good version)"
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_waits_for_a_change_and_a_settled_source_and_the_first_install_for_no_errors() {
        let store = Arc::new(PolicyStore::new());
        let mut i = Installer::new(Arc::clone(&store), Arc::new(Metrics::new()), "test");
        assert_eq!(i.gate(false, 0), Gate::Wait, "not settled");
        assert_eq!(
            i.gate(true, 1),
            Gate::Unready,
            "errors before the first install"
        );
        assert_eq!(i.gate(true, 0), Gate::Install);
        i.install(PolicySet::default(), 0);
        assert!(store.is_loaded());
        assert_eq!(i.gate(true, 0), Gate::Wait, "nothing changed since");
        i.changed(true);
        assert_eq!(
            i.gate(true, 1),
            Gate::Install,
            "after the first install, errors keep their last good version and the rest goes live"
        );
    }

    #[test]
    fn an_install_says_what_is_served_and_stamps_the_time() {
        let metrics = Arc::new(Metrics::new());
        let mut i = Installer::new(Arc::new(PolicyStore::new()), Arc::clone(&metrics), "t");
        let before = i64::try_from(now_secs()).unwrap();
        assert_eq!(
            i.install(PolicySet::default(), 0),
            "serving 0 policies: none"
        );
        let text = metrics.encode().unwrap();
        let installed: i64 = text
            .lines()
            .find_map(|l| l.strip_prefix("spark_admission_policy_set_installed_timestamp_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(installed >= before, "{installed} < {before}");
        assert_eq!(
            serving_line(&["a@1".to_owned(), "b@2".to_owned()], 1),
            "serving 2 policies: a@1, b@2 (1 rejected document(s) keep their last good version)"
        );
    }
}
