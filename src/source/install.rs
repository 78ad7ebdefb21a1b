//! The install step both policy sources share (the folder and the ConfigMaps): when a
//! new good set may go live, installing it into the one [`PolicyStore`] (which records
//! every version in the history), and the metrics and log line of each install. The
//! sources keep what differs: how they read, report errors and settle.

use std::collections::BTreeMap;
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

/// At most this many bytes of policy names go into one log line: containerd splits a
/// container's log lines longer than 16 KiB into pieces that a JSON log pipeline cannot
/// parse, and 10,000 policies' names are ~190 KB. The rest go into continuation lines.
pub(crate) const NAMES_PER_LINE: usize = 8 * 1024;
/// At most this many bytes of `changes` in the install's log line.
const CHANGES_BYTES: usize = 2 * 1024;
/// At most this many bytes of a list of policies in an Event's note: the API server refuses
/// notes over 1 KiB (they are cut there), and what follows the list must survive the cut.
pub(crate) const LIST_IN_NOTE: usize = 768;

#[derive(Debug)]
pub struct Installer {
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    /// Where the policies come from, for the log line (`folder policies`, `ConfigMaps in ns`).
    origin: String,
    /// Good content changed since the last install (starts true: nothing installed yet).
    pending: bool,
    /// What the last install served (name -> `name@version`), to log what the next changed.
    served: Option<BTreeMap<String, String>>,
}

impl Installer {
    pub fn new(store: Arc<PolicyStore>, metrics: Arc<Metrics>, origin: impl Into<String>) -> Self {
        Self {
            store,
            metrics,
            origin: origin.into(),
            pending: true,
            served: None,
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
        let served: BTreeMap<String, String> = set
            .policies()
            .iter()
            .map(|p| (p.name.clone(), p.tag.clone()))
            .collect();
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
        let changes = match &self.served {
            None => "first set served by this replica".to_owned(),
            Some(before) => bounded(&changes(before, &served), CHANGES_BYTES),
        };
        let lines = name_lines(&names, NAMES_PER_LINE);
        tracing::info!(
            source = self.origin.as_str(),
            policies = n,
            changes = changes.as_str(),
            names = lines.first().map_or("", String::as_str),
            name_lines = lines.len(),
            rejected = errors,
            "policies loaded"
        );
        for (i, line) in lines.iter().enumerate().skip(1) {
            tracing::info!(
                source = self.origin.as_str(),
                line = i + 1,
                of = lines.len(),
                names = line.as_str(),
                "policies loaded (names continued)"
            );
        }
        self.served = Some(served);
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

/// What changed from `before` to `after` (name -> `name@version`): `added a@1`, `updated
/// b@2`, `removed c`, in name order.
fn changes(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, tag) in after {
        match before.get(name) {
            None => out.push(format!("added {tag}")),
            Some(old) if old != tag => out.push(format!("updated {tag}")),
            Some(_) => {}
        }
    }
    out.extend(
        before
            .keys()
            .filter(|name| !after.contains_key(*name))
            .map(|name| format!("removed {name}")),
    );
    out
}

/// `items` joined with `, ` up to about `max` bytes, then how many were left out; `none`
/// when there are none.
pub(crate) fn bounded(items: &[String], max: usize) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if !out.is_empty() && out.len() + 2 + item.len() > max {
            out.push_str(&format!(", … and {} more", items.len() - i));
            return out;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(item);
    }
    if out.is_empty() {
        out.push_str("none");
    }
    out
}

/// The names joined with `,` into lines of at most `max` bytes each (a name longer than
/// that, which policy names cannot be, gets a line of its own). Always at least one line.
fn name_lines(names: &[String], max: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for name in names {
        let last = lines.len() - 1;
        let line = &mut lines[last];
        if !line.is_empty() && line.len() + 1 + name.len() > max {
            lines.push(name.clone());
        } else {
            if !line.is_empty() {
                line.push(',');
            }
            line.push_str(name);
        }
    }
    lines
}

/// `serving N policies: tag, tag` and, when some documents were rejected, how many.
fn serving_line(tags: &[String], rejected: usize) -> String {
    let list = bounded(tags, LIST_IN_NOTE);
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

    /// The replica's `PolicyLoaded` Event is cut at 1 KiB: with a thousand policies the
    /// rejected count, which comes last, must still be in it.
    #[test]
    fn a_long_serving_line_keeps_its_rejected_count_within_an_events_note() {
        let tags: Vec<String> = (0..1000)
            .map(|i| format!("policy-{i:04}@0123456789"))
            .collect();
        let line = serving_line(&tags, 2);
        assert!(line.len() <= 1024, "{}", line.len());
        assert!(
            line.starts_with("serving 1000 policies: policy-0000@0123456789, "),
            "{line}"
        );
        assert!(line.contains(" more (2 rejected document(s)"), "{line}");
    }

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect()
    }

    #[test]
    fn changes_name_what_was_added_updated_and_removed() {
        let before = map(&[("a", "a@1"), ("b", "b@1"), ("c", "c@1")]);
        let after = map(&[("a", "a@1"), ("b", "b@2"), ("d", "d@1")]);
        assert_eq!(
            changes(&before, &after),
            ["updated b@2", "added d@1", "removed c"]
        );
        assert!(changes(&after, &after).is_empty());
        assert_eq!(bounded(&changes(&after, &after), 100), "none");
    }

    #[test]
    fn a_long_change_list_is_cut_with_how_many_were_left_out() {
        let items: Vec<String> = (0..1000)
            .map(|i| format!("added p-{i:04}@abcdef0123"))
            .collect();
        let line = bounded(&items, CHANGES_BYTES);
        assert!(line.len() <= CHANGES_BYTES + 30, "{}", line.len());
        let kept = line.matches("added ").count();
        assert!(kept > 50, "{kept}");
        assert!(
            line.ends_with(&format!(", … and {} more", 1000 - kept)),
            "{line}"
        );
        assert_eq!(
            bounded(&items[..2], CHANGES_BYTES),
            "added p-0000@abcdef0123, added p-0001@abcdef0123"
        );
    }

    #[test]
    fn names_are_spread_over_lines_of_bounded_size_and_none_is_lost() {
        let names: Vec<String> = (0..10_000)
            .map(|i| format!("policy-{i:05}@0123456789"))
            .collect();
        let lines = name_lines(&names, NAMES_PER_LINE);
        assert!(lines.len() > 1);
        assert!(lines
            .iter()
            .all(|l| !l.is_empty() && l.len() <= NAMES_PER_LINE));
        let back: Vec<&str> = lines.iter().flat_map(|l| l.split(',')).collect();
        assert_eq!(back, names.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(name_lines(&[], NAMES_PER_LINE), [""]);
        assert_eq!(
            name_lines(&names[..2], NAMES_PER_LINE),
            ["policy-00000@0123456789,policy-00001@0123456789"]
        );
    }
}
