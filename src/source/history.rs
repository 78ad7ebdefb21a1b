//! The policy version history: every version the webhook installs, kept by its tag
//! (`name@hash`) so that a pinned executor gets its driver's versions (see
//! `spark_admission_core::pinning`).
//!
//! Reads (one per pinned executor) are one atomic load of a map of compiled versions.
//! Writes happen on install, off the request path. Durably, the history lives in one
//! ConfigMap in the webhook's namespace ([`HISTORY_CONFIGMAP`]): each replica merges what
//! it installed into what is stored and writes with the resourceVersion it read, retrying
//! on a conflict, so that replicas never lose each other's versions. A replica started
//! later loads it before serving (bounded wait). The folder source keeps it in memory only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use serde::{Deserialize, Serialize};

use crate::matching::PolicySet;
use crate::metrics::Metrics;
use crate::policy::{parse_documents, CompiledPolicy, PolicySource};

/// The ConfigMap holding the history, in the webhook's own namespace.
pub const HISTORY_CONFIGMAP: &str = "spark-admission-policy-history";
/// Versions retired longer than this are dropped.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The stored data is kept under this many bytes: the API server refuses objects over
/// 1 MiB, and metadata needs room too.
pub const DEFAULT_MAX_BYTES: usize = 900 * 1024;
/// The largest bound accepted: the data plus the object's metadata must stay under the
/// API server's 1 MiB.
pub const MAX_STORABLE_BYTES: usize = 1000 * 1024;
/// Conflicting writes retried in a row before giving up until the next change or tick.
const MAX_CONFLICTS: usize = 8;

/// One version as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub tag: String,
    /// Unix seconds since the version stopped being current; none while current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<u64>,
    /// The policy's canonical JSON (loads back to the same hash).
    pub policy: String,
}

impl Record {
    /// Bytes it takes in the ConfigMap's data: key + JSON value.
    pub fn size(&self) -> usize {
        let value = serde_json::to_string(self).map_or(self.policy.len() * 2, |v| v.len());
        data_key(&self.tag).len() + value
    }
}

/// The ConfigMap data key of a tag: keys allow only `[-._a-zA-Z0-9]`.
pub fn data_key(tag: &str) -> String {
    tag.chars()
        .map(|c| match c {
            '@' => '.',
            c if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') => c,
            _ => '_',
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("another replica changed the history first")]
    Conflict,
    #[error("cannot read or write ConfigMap {name}: {source}")]
    Kube {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the stored history could not be encoded")]
    Encode(#[source] serde_json::Error),
    #[error("cannot read or write the history file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the history file {path} is not a history: {source}")]
    Decode {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug, Default)]
struct State {
    records: BTreeMap<String, Record>,
    compiled: HashMap<String, Arc<CompiledPolicy>>,
    /// Tags of the set installed last (a set: reloads of 10,000 policies check each one).
    current: HashSet<String>,
}

/// The history of one webhook process.
#[derive(Debug)]
pub struct PolicyHistory {
    versions: ArcSwap<HashMap<String, Arc<CompiledPolicy>>>,
    state: Mutex<State>,
    max_age: Duration,
    max_bytes: usize,
    changed: tokio::sync::Notify,
    metrics: Option<Arc<Metrics>>,
}

impl Default for PolicyHistory {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES, None)
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl PolicyHistory {
    pub fn new(max_age: Duration, max_bytes: usize, metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            versions: ArcSwap::default(),
            state: Mutex::new(State::default()),
            max_age,
            max_bytes,
            changed: tokio::sync::Notify::new(),
            metrics,
        }
    }

    /// The compiled version with this tag, if kept. Lock-free.
    pub fn lookup(&self, tag: &str) -> Option<Arc<CompiledPolicy>> {
        self.versions.load().get(tag).cloned()
    }

    pub fn tags(&self) -> Vec<String> {
        let mut t: Vec<String> = self.versions.load().keys().cloned().collect();
        t.sort_unstable();
        t
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an installed set: its versions become current, the others retire now.
    pub fn record_install(&self, set: &PolicySet, now: u64) {
        let mut st = self.lock();
        st.current = set.policies().iter().map(|p| p.tag.clone()).collect();
        for p in set.policies() {
            // Most installs change one policy of many: known versions only become current.
            if let Some(r) = st.records.get_mut(&p.tag) {
                r.retired_at = None;
            } else {
                st.records.insert(
                    p.tag.clone(),
                    Record {
                        tag: p.tag.clone(),
                        retired_at: None,
                        policy: p.canonical.to_string(),
                    },
                );
            }
            st.compiled
                .entry(p.tag.clone())
                .or_insert_with(|| Arc::clone(p));
        }
        let State {
            records, current, ..
        } = &mut *st;
        for r in records.values_mut() {
            if r.retired_at.is_none() && !current.contains(&r.tag) {
                r.retired_at = Some(now);
            }
        }
        self.prune_and_publish(&mut st, now);
        drop(st);
        self.changed.notify_one();
    }

    /// Adds versions read from the stored history that this process does not have (a
    /// replica started later, or one that missed a short-lived version). Returns how many
    /// were added. A record that does not load back to its own tag is skipped.
    pub fn merge_stored(&self, stored: impl IntoIterator<Item = Record>, now: u64) -> usize {
        let mut guard = self.lock();
        let st = &mut *guard;
        let mut added = 0;
        for r in stored {
            if let Some(mine) = st.records.get_mut(&r.tag) {
                // Earliest known retirement wins, unless this process serves it now.
                if !st.current.contains(&r.tag) {
                    mine.retired_at = match (mine.retired_at, r.retired_at) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                continue;
            }
            match compile(&r) {
                Ok(p) => {
                    st.compiled.insert(r.tag.clone(), Arc::new(p));
                    // A version this process never installed is not current here.
                    let retired_at = r.retired_at.or(Some(now));
                    st.records.insert(r.tag.clone(), Record { retired_at, ..r });
                    added += 1;
                }
                Err(e) => tracing::warn!(
                    tag = r.tag.as_str(),
                    error = e.as_str(),
                    "stored policy version skipped"
                ),
            }
        }
        self.prune_and_publish(st, now);
        added
    }

    /// The records to store, keyed by ConfigMap data key, within the size bound: current
    /// versions first, then the most recently retired. (Only when the current versions
    /// alone exceed it are some left out of the ConfigMap; memory keeps them.)
    pub fn stored_form(&self) -> Result<BTreeMap<String, String>, HistoryError> {
        let st = self.lock();
        let mut order: Vec<&Record> = st.records.values().collect();
        order.sort_by_key(|r| std::cmp::Reverse(r.retired_at.unwrap_or(u64::MAX)));
        let mut out = BTreeMap::new();
        let mut size = 0;
        for r in order {
            let value = serde_json::to_string(r).map_err(HistoryError::Encode)?;
            let key = data_key(&r.tag);
            size += key.len() + value.len();
            if size > self.max_bytes {
                tracing::warn!(
                    tag = r.tag.as_str(),
                    "policy version left out of the stored history: over --policy-history-max-bytes"
                );
                break;
            }
            out.insert(key, value);
        }
        Ok(out)
    }

    fn prune_and_publish(&self, st: &mut State, now: u64) {
        prune(&mut st.records, now, self.max_age, self.max_bytes);
        let State {
            records, compiled, ..
        } = st;
        compiled.retain(|tag, _| records.contains_key(tag));
        self.versions.store(Arc::new(compiled.clone()));
        if let Some(m) = &self.metrics {
            m.set_history_versions(compiled.len());
        }
    }

    /// Resolves when a change has been recorded since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// Drops versions retired longer than `max_age`, then the oldest retired ones until the
/// records fit in `max_bytes`. Current versions are never dropped.
pub fn prune(
    records: &mut BTreeMap<String, Record>,
    now: u64,
    max_age: Duration,
    max_bytes: usize,
) {
    let max_age = max_age.as_secs();
    records.retain(|_, r| {
        r.retired_at
            .is_none_or(|t| now.saturating_sub(t) <= max_age)
    });
    let mut size: usize = records.values().map(Record::size).sum();
    if size <= max_bytes {
        return;
    }
    let mut retired: Vec<(u64, String)> = records
        .values()
        .filter_map(|r| r.retired_at.map(|t| (t, r.tag.clone())))
        .collect();
    retired.sort_unstable();
    for (_, tag) in retired {
        if size <= max_bytes {
            break;
        }
        if let Some(r) = records.remove(&tag) {
            size = size.saturating_sub(r.size());
        }
    }
}

fn compile(r: &Record) -> Result<CompiledPolicy, String> {
    let source = PolicySource(format!("{HISTORY_CONFIGMAP}/{}", data_key(&r.tag)));
    let mut docs = parse_documents(&source, &r.policy).map_err(|e| {
        e.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    if docs.len() != 1 {
        return Err(format!("{} documents, expected one", docs.len()));
    }
    let p = docs.remove(0);
    if p.tag != r.tag {
        return Err(format!("loads as {}, not as its tag", p.tag));
    }
    Ok(p)
}

/// Decodes a stored ConfigMap's data; entries that are not records are skipped.
pub fn decode(data: &BTreeMap<String, String>) -> Vec<Record> {
    data.iter()
        .filter_map(|(k, v)| match serde_json::from_str::<Record>(v) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(key = k.as_str(), error = %e, "unreadable policy history entry skipped");
                None
            }
        })
        .collect()
}

/// The stored history as read: its data and the resourceVersion to write against.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    pub resource_version: Option<String>,
    pub data: BTreeMap<String, String>,
}

/// Where the history is kept durably.
pub trait HistoryBackend: Send + Sync {
    /// The stored history, `None` when there is none yet.
    fn get(&self) -> impl Future<Output = Result<Option<Stored>, HistoryError>> + Send;
    /// Writes `data`: creates when `resource_version` is none, else replaces that version;
    /// [`HistoryError::Conflict`] when it is no longer the stored one.
    fn put(
        &self,
        resource_version: Option<String>,
        data: BTreeMap<String, String>,
    ) -> impl Future<Output = Result<(), HistoryError>> + Send;
}

/// The history ConfigMap in the webhook's namespace.
#[derive(Clone)]
pub struct ConfigMapBackend {
    api: Api<ConfigMap>,
}

impl std::fmt::Debug for ConfigMapBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigMapBackend")
    }
}

impl ConfigMapBackend {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
        }
    }
}

fn kube_error(source: kube::Error) -> HistoryError {
    match &source {
        kube::Error::Api(s) if s.is_conflict() || s.is_already_exists() => HistoryError::Conflict,
        _ => HistoryError::Kube {
            name: HISTORY_CONFIGMAP.to_owned(),
            source,
        },
    }
}

impl HistoryBackend for ConfigMapBackend {
    async fn get(&self) -> Result<Option<Stored>, HistoryError> {
        let cm = self
            .api
            .get_opt(HISTORY_CONFIGMAP)
            .await
            .map_err(kube_error)?;
        Ok(cm.map(|cm| Stored {
            resource_version: cm.metadata.resource_version,
            data: cm.data.unwrap_or_default(),
        }))
    }

    async fn put(
        &self,
        resource_version: Option<String>,
        data: BTreeMap<String, String>,
    ) -> Result<(), HistoryError> {
        let creating = resource_version.is_none();
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(HISTORY_CONFIGMAP.to_owned()),
                resource_version,
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/name".to_owned(),
                    "spark-admission".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        };
        let pp = PostParams::default();
        let result = if creating {
            self.api.create(&pp, &cm).await.map(drop)
        } else {
            self.api
                .replace(HISTORY_CONFIGMAP, &pp, &cm)
                .await
                .map(drop)
        };
        result.map_err(kube_error)
    }
}

/// The history as one JSON file in a folder (`--policy-history-dir`, folder source). The
/// "resourceVersion" is a hash of the content read, so two processes sharing the folder
/// do not overwrite each other's versions either.
#[derive(Debug, Clone)]
pub struct FileBackend {
    path: std::path::PathBuf,
}

impl FileBackend {
    pub fn new(dir: &std::path::Path) -> Self {
        Self {
            path: dir.join(format!("{HISTORY_CONFIGMAP}.json")),
        }
    }

    fn file_error(&self, source: std::io::Error) -> HistoryError {
        HistoryError::File {
            path: self.path.display().to_string(),
            source,
        }
    }

    // Small files, read and written off the request path (at start and after installs).
    fn read(&self) -> Result<Option<Stored>, HistoryError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.file_error(e)),
        };
        let data = serde_json::from_str(&text).map_err(|source| HistoryError::Decode {
            path: self.path.display().to_string(),
            source,
        })?;
        Ok(Some(Stored {
            resource_version: Some(content_version(&text)),
            data,
        }))
    }
}

fn content_version(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl HistoryBackend for FileBackend {
    async fn get(&self) -> Result<Option<Stored>, HistoryError> {
        self.read()
    }

    async fn put(
        &self,
        resource_version: Option<String>,
        data: BTreeMap<String, String>,
    ) -> Result<(), HistoryError> {
        if self.read()?.and_then(|s| s.resource_version) != resource_version {
            return Err(HistoryError::Conflict);
        }
        let text = serde_json::to_string_pretty(&data).map_err(HistoryError::Encode)?;
        let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.file_error(e))?;
        // A unique temporary file in the same folder, renamed into place: a reader never
        // sees half a file.
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| self.file_error(e))?;
        std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(|e| self.file_error(e))?;
        tmp.persist(&self.path)
            .map_err(|e| self.file_error(e.error))?;
        Ok(())
    }
}

/// Loads the stored history into `history`, waiting at most `wait`: readiness must not
/// hang on an API server that does not answer (then pins of older versions fall back to
/// the current ones until the next successful write merges the stored history in).
pub async fn load_initial(history: &PolicyHistory, backend: &impl HistoryBackend, wait: Duration) {
    match tokio::time::timeout(wait, backend.get()).await {
        Ok(Ok(Some(stored))) => {
            let added = history.merge_stored(decode(&stored.data), now_secs());
            tracing::info!(versions = added, "policy version history loaded");
        }
        Ok(Ok(None)) => tracing::info!("no policy version history stored yet"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot load the policy version history; serving without older versions")
        }
        Err(_) => {
            tracing::warn!(wait = ?wait, "the policy version history did not load in time; serving without older versions")
        }
    }
}

/// One merge-and-write: reads the stored history, merges it into `history`, and writes
/// the union back against the version read. Conflicts are retried a few times.
pub async fn persist_once(
    history: &PolicyHistory,
    backend: &impl HistoryBackend,
) -> Result<(), HistoryError> {
    let mut conflicts = 0;
    loop {
        let stored = backend.get().await?;
        let (rv, data) = match stored {
            Some(s) => (s.resource_version, s.data),
            None => (None, BTreeMap::new()),
        };
        history.merge_stored(decode(&data), now_secs());
        let wanted = history.stored_form()?;
        if wanted == data && rv.is_some() {
            return Ok(());
        }
        match backend.put(rv, wanted).await {
            Ok(()) => {
                record(history, "ok");
                return Ok(());
            }
            Err(HistoryError::Conflict) if conflicts < MAX_CONFLICTS => {
                record(history, "conflict");
                conflicts += 1;
            }
            Err(e) => {
                record(history, "error");
                return Err(e);
            }
        }
    }
}

fn record(history: &PolicyHistory, result: &'static str) {
    if let Some(m) = &history.metrics {
        m.record_history_write(result);
    }
}

/// Keeps the stored history in step: after every install, and every `tick` (a failed
/// write is retried, expired versions leave the ConfigMap).
pub async fn run_persister(
    history: Arc<PolicyHistory>,
    backend: impl HistoryBackend,
    tick: Duration,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = history.changed() => {}
            () = tokio::time::sleep(tick) => {}
        }
        if let Err(e) = persist_once(&history, &backend).await {
            tracing::warn!(error = %e, "cannot write the policy version history; retried later");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, value: &str) -> Arc<CompiledPolicy> {
        let text = format!(
            "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {{name: {name}}}\nspec:\n  namespaces: [jobs]\n  all: {{labels: {{v: \"{value}\"}}, overwrite: false}}\n"
        );
        let mut docs = parse_documents(&PolicySource(format!("{name}.yaml")), &text)
            .unwrap_or_else(|e| panic!("{e:?}"));
        Arc::new(docs.remove(0))
    }

    const DAY: u64 = 24 * 3600;

    #[test]
    fn a_version_stays_until_max_age_after_it_stopped_being_current() {
        let h = PolicyHistory::new(Duration::from_secs(7 * DAY), DEFAULT_MAX_BYTES, None);
        let (v1, v2) = (policy("team", "1"), policy("team", "2"));
        h.record_install(&PolicySet::new([Arc::clone(&v1)]), 0);
        // Current for a long time: never expires while current.
        h.record_install(&PolicySet::new([Arc::clone(&v1)]), 30 * DAY);
        assert!(h.lookup(&v1.tag).is_some());
        h.record_install(&PolicySet::new([Arc::clone(&v2)]), 31 * DAY);
        h.record_install(&PolicySet::new([Arc::clone(&v2)]), 38 * DAY);
        assert!(
            h.lookup(&v1.tag).is_some(),
            "retired exactly 7 days ago: kept"
        );
        h.record_install(&PolicySet::new([Arc::clone(&v2)]), 38 * DAY + 1);
        assert!(
            h.lookup(&v1.tag).is_none(),
            "retired over 7 days ago: dropped"
        );
        assert!(h.lookup(&v2.tag).is_some());
    }

    #[test]
    fn the_size_bound_drops_the_oldest_retired_versions_never_current_ones() {
        let versions: Vec<_> = (0..10).map(|i| policy("team", &i.to_string())).collect();
        let one = Record {
            tag: versions[0].tag.clone(),
            retired_at: Some(1),
            policy: versions[0].canonical.to_string(),
        }
        .size();
        let h = PolicyHistory::new(DEFAULT_MAX_AGE, one * 3, None);
        for (t, v) in versions.iter().enumerate() {
            h.record_install(&PolicySet::new([Arc::clone(v)]), t as u64);
        }
        let kept: Vec<String> = h.tags();
        let mut want: Vec<String> = versions[7..].iter().map(|v| v.tag.clone()).collect();
        want.sort_unstable();
        assert_eq!(kept, want);
        let stored: usize = h.stored_form().map(|d| d.len()).unwrap_or(0);
        assert_eq!(stored, 3);
    }

    #[test]
    fn a_stored_version_loads_back_to_the_same_tag_and_a_forged_one_is_skipped() {
        let v1 = policy("team", "1");
        let h = PolicyHistory::default();
        let good = Record {
            tag: v1.tag.clone(),
            retired_at: Some(5),
            policy: v1.canonical.to_string(),
        };
        let forged = Record {
            tag: "team@0123456789".into(),
            ..good.clone()
        };
        assert_eq!(h.merge_stored([good, forged], 10), 1);
        assert!(h.lookup(&v1.tag).is_some());
        assert!(h.lookup("team@0123456789").is_none());
    }

    /// An in-memory stand-in for the ConfigMap with resourceVersion checks; `interfere`
    /// makes another writer change it between a read and the next write, `n` times.
    #[derive(Default)]
    struct Fake {
        stored: Mutex<Option<(u64, BTreeMap<String, String>)>>,
        interfere: Mutex<Vec<BTreeMap<String, String>>>,
    }

    impl HistoryBackend for Fake {
        async fn get(&self) -> Result<Option<Stored>, HistoryError> {
            let s = self.stored.lock().unwrap_or_else(|p| p.into_inner());
            Ok(s.as_ref().map(|(rv, data)| Stored {
                resource_version: Some(rv.to_string()),
                data: data.clone(),
            }))
        }

        async fn put(
            &self,
            resource_version: Option<String>,
            data: BTreeMap<String, String>,
        ) -> Result<(), HistoryError> {
            let mut s = self.stored.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(other) = self
                .interfere
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop()
            {
                // Another replica wrote first: its data is merged into what is stored.
                let (rv, mut theirs) = s.take().unwrap_or_default();
                theirs.extend(other);
                *s = Some((rv + 1, theirs));
                return Err(HistoryError::Conflict);
            }
            let current = s.as_ref().map(|(rv, _)| rv.to_string());
            if current != resource_version {
                return Err(HistoryError::Conflict);
            }
            let next = s.as_ref().map_or(1, |(rv, _)| rv + 1);
            *s = Some((next, data));
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_history_folder_keeps_versions_for_the_next_start_and_refuses_a_stale_write() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let backend = FileBackend::new(dir.path());
        let (v1, v2) = (policy("team", "1"), policy("team", "2"));
        // Real times: loading prunes against the clock.
        let t = now_secs();
        let first = PolicyHistory::default();
        first.record_install(&PolicySet::new([Arc::clone(&v1)]), t);
        first.record_install(&PolicySet::new([Arc::clone(&v2)]), t);
        persist_once(&first, &backend)
            .await
            .unwrap_or_else(|e| panic!("{e}"));

        let next = PolicyHistory::default();
        load_initial(&next, &backend, Duration::from_secs(5)).await;
        assert!(next.lookup(&v1.tag).is_some() && next.lookup(&v2.tag).is_some());

        let stale = backend.get().await.ok().flatten().unwrap_or_default();
        persist_once(&next, &backend)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        next.record_install(&PolicySet::new([policy("team", "3")]), t);
        persist_once(&next, &backend)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let again = backend.put(stale.resource_version, stale.data).await;
        assert!(matches!(again, Err(HistoryError::Conflict)), "{again:?}");
    }

    #[tokio::test]
    async fn concurrent_writers_keep_each_others_versions_through_conflicts() {
        let backend = Fake::default();
        let (a1, b1) = (policy("alpha", "1"), policy("beta", "1"));
        let a = PolicyHistory::default();
        let b = PolicyHistory::default();
        a.record_install(&PolicySet::new([Arc::clone(&a1)]), 1);
        b.record_install(&PolicySet::new([Arc::clone(&b1)]), 1);
        // Between a's read and write, a third writer stores a version of its own.
        let c1 = policy("gamma", "1");
        let c_record = Record {
            tag: c1.tag.clone(),
            retired_at: None,
            policy: c1.canonical.to_string(),
        };
        let c_entry = (
            data_key(&c1.tag),
            serde_json::to_string(&c_record).unwrap_or_default(),
        );
        backend
            .interfere
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([BTreeMap::from([c_entry.clone()]), BTreeMap::from([c_entry])]);

        let (ra, rb) = tokio::join!(persist_once(&a, &backend), persist_once(&b, &backend));
        assert!(ra.is_ok() && rb.is_ok(), "{ra:?} {rb:?}");
        // Whichever wrote last read the other's versions first.
        persist_once(&a, &backend)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let stored = backend.get().await.ok().flatten().unwrap_or_default();
        let mut tags: Vec<String> = decode(&stored.data).into_iter().map(|r| r.tag).collect();
        tags.sort_unstable();
        let mut want = vec![a1.tag.clone(), b1.tag.clone(), c1.tag.clone()];
        want.sort_unstable();
        assert_eq!(tags, want);
        // And a replica started afterwards finds all of them.
        let fresh = PolicyHistory::default();
        load_initial(&fresh, &backend, Duration::from_secs(5)).await;
        assert_eq!(fresh.tags(), want);
    }
}
