//! The policy version history: every version the webhook installs, kept by its tag
//! (`name@hash`) so that a pinned executor gets its driver's versions (see
//! `spark_admission_core::pinning`).
//!
//! Reads (one per pinned executor) are one atomic load of a map of compiled versions.
//! Writes happen on install, off the request path. Durably, the history lives in a few
//! ConfigMaps in the webhook's namespace ([`shard_name`]; a version's ConfigMap is chosen
//! by a hash of its tag, so the history outgrows no single object and every replica puts
//! a version in the same place): each replica merges what it installed into what is
//! stored and writes with the resourceVersion it read, retrying on a conflict, so that
//! replicas never lose each other's versions. Every replica watches them
//! ([`run_watch`]), so a version another replica stored is known here as soon as the API
//! server says so; a replica started later loads them before serving. The folder source
//! keeps the history in memory, or in files (`--policy-history-dir`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::Api;
use serde::{Deserialize, Serialize};

use crate::matching::PolicySet;
use crate::metrics::Metrics;
use crate::policy::{parse_documents, CompiledPolicy, PolicySource};
use crate::watch::Listed;
use crate::watch::Watch;

/// The first ConfigMap holding the history, in the webhook's own namespace (the others
/// add `-1`, `-2`, …: [`shard_name`]).
pub const HISTORY_CONFIGMAP: &str = "spark-admission-policy-history";
/// Label of the history ConfigMaps (value `"true"`), which every replica watches.
pub const HISTORY_LABEL: &str = "spark-admission.io/policy-history";
/// How many ConfigMaps the history is spread over, by default.
pub const DEFAULT_CONFIGMAPS: usize = 4;
/// The most ConfigMaps accepted for the history.
pub const MAX_CONFIGMAPS: usize = 64;
/// Versions retired longer than this are dropped.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The stored data of each ConfigMap is kept under this many bytes: the API server
/// refuses objects over 1 MiB, and metadata needs room too.
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

/// The name of the history ConfigMap `index` (the first keeps the name of a single one).
pub fn shard_name(index: usize) -> String {
    if index == 0 {
        HISTORY_CONFIGMAP.to_owned()
    } else {
        format!("{HISTORY_CONFIGMAP}-{index}")
    }
}

/// The index of a history ConfigMap's name.
pub fn shard_index(name: &str) -> Option<usize> {
    if name == HISTORY_CONFIGMAP {
        return Some(0);
    }
    let i: usize = name
        .strip_prefix(HISTORY_CONFIGMAP)?
        .strip_prefix('-')?
        .parse()
        .ok()?;
    (i > 0).then_some(i)
}

/// The ConfigMap a tag is kept in, of `shards`: stable across processes and versions.
pub fn shard_of(tag: &str, shards: usize) -> usize {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(tag.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % shards.max(1) as u64) as usize
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
    #[error("--policy-history-configmaps must be 1 to {MAX_CONFIGMAPS}, not {0}")]
    Configmaps(usize),
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
    /// Per ConfigMap.
    max_bytes: usize,
    shards: usize,
    changed: tokio::sync::Notify,
    metrics: Option<Arc<Metrics>>,
    /// Whether the stored history has been read once (the watch's first list): until
    /// then a replica is not ready, or it would ignore pins of versions only others know.
    listed: Listed,
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
            shards: 1,
            changed: tokio::sync::Notify::new(),
            metrics,
            listed: Listed::default(),
        }
    }

    /// This history spread over `configmaps` ConfigMaps (1 to [`MAX_CONFIGMAPS`]), each
    /// within the byte bound.
    pub fn with_configmaps(mut self, configmaps: usize) -> Result<Self, HistoryError> {
        if !(1..=MAX_CONFIGMAPS).contains(&configmaps) {
            return Err(HistoryError::Configmaps(configmaps));
        }
        self.shards = configmaps;
        Ok(self)
    }

    /// How many ConfigMaps the history is spread over.
    pub fn configmaps(&self) -> usize {
        self.shards
    }

    /// Whether the stored history has been read once (or there was none to read).
    pub fn listed(&self) -> &Listed {
        &self.listed
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

    /// The records to store in each ConfigMap (one map per ConfigMap, keyed by data key),
    /// each within the size bound: current versions first, then the most recently
    /// retired. (Only when the current versions alone exceed it are some left out of
    /// the ConfigMap; memory keeps them.)
    pub fn stored_form(&self) -> Result<Vec<BTreeMap<String, String>>, HistoryError> {
        let st = self.lock();
        let mut order: Vec<&Record> = st.records.values().collect();
        order.sort_by_key(|r| std::cmp::Reverse(r.retired_at.unwrap_or(u64::MAX)));
        let mut out = vec![BTreeMap::new(); self.shards];
        let mut size = vec![0; self.shards];
        let mut full = vec![false; self.shards];
        for r in order {
            let shard = shard_of(&r.tag, self.shards);
            if full[shard] {
                continue;
            }
            let value = serde_json::to_string(r).map_err(HistoryError::Encode)?;
            let key = data_key(&r.tag);
            size[shard] += key.len() + value.len();
            if size[shard] > self.max_bytes {
                tracing::warn!(
                    tag = r.tag.as_str(),
                    configmap = shard_name(shard).as_str(),
                    "policy version left out of the stored history: over --policy-history-max-bytes"
                );
                full[shard] = true;
                continue;
            }
            out[shard].insert(key, value);
        }
        Ok(out)
    }

    fn prune_and_publish(&self, st: &mut State, now: u64) {
        prune(
            &mut st.records,
            now,
            self.max_age,
            self.max_bytes,
            self.shards,
        );
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

/// Drops versions retired longer than `max_age`, then, in each of the `shards`
/// ConfigMaps, the oldest retired ones until its records fit in `max_bytes`. Current
/// versions are never dropped.
pub fn prune(
    records: &mut BTreeMap<String, Record>,
    now: u64,
    max_age: Duration,
    max_bytes: usize,
    shards: usize,
) {
    let max_age = max_age.as_secs();
    records.retain(|_, r| {
        r.retired_at
            .is_none_or(|t| now.saturating_sub(t) <= max_age)
    });
    let shards = shards.max(1);
    let mut size = vec![0usize; shards];
    for r in records.values() {
        size[shard_of(&r.tag, shards)] += r.size();
    }
    if size.iter().all(|s| *s <= max_bytes) {
        return;
    }
    let mut retired: Vec<(u64, String)> = records
        .values()
        .filter_map(|r| r.retired_at.map(|t| (t, r.tag.clone())))
        .collect();
    retired.sort_unstable();
    for (_, tag) in retired {
        let shard = shard_of(&tag, shards);
        if size[shard] <= max_bytes {
            continue;
        }
        if let Some(r) = records.remove(&tag) {
            size[shard] = size[shard].saturating_sub(r.size());
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

/// One stored part of the history as read: its data and the resourceVersion to write
/// against.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    pub resource_version: Option<String>,
    pub data: BTreeMap<String, String>,
    /// Whether it carries [`HISTORY_LABEL`] (one written before the history was watched
    /// does not, and is rewritten with it so the watch sees it).
    pub labelled: bool,
}

/// Where the history is kept durably: parts numbered from 0 (ConfigMaps or files).
pub trait HistoryBackend: Send + Sync {
    /// Part `index` as stored, `None` when there is none yet.
    fn get(
        &self,
        index: usize,
    ) -> impl Future<Output = Result<Option<Stored>, HistoryError>> + Send;
    /// Writes part `index`: creates when `resource_version` is none, else replaces that
    /// version; [`HistoryError::Conflict`] when it is no longer the stored one.
    fn put(
        &self,
        index: usize,
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

fn kube_error(name: &str, source: kube::Error) -> HistoryError {
    match &source {
        kube::Error::Api(s) if s.is_conflict() || s.is_already_exists() => HistoryError::Conflict,
        _ => HistoryError::Kube {
            name: name.to_owned(),
            source,
        },
    }
}

fn stored_of(cm: ConfigMap) -> Stored {
    let labelled = cm
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HISTORY_LABEL))
        .is_some_and(|v| v == "true");
    Stored {
        resource_version: cm.metadata.resource_version,
        data: cm.data.unwrap_or_default(),
        labelled,
    }
}

impl HistoryBackend for ConfigMapBackend {
    async fn get(&self, index: usize) -> Result<Option<Stored>, HistoryError> {
        let name = shard_name(index);
        let cm = self
            .api
            .get_opt(&name)
            .await
            .map_err(|e| kube_error(&name, e))?;
        Ok(cm.map(stored_of))
    }

    async fn put(
        &self,
        index: usize,
        resource_version: Option<String>,
        data: BTreeMap<String, String>,
    ) -> Result<(), HistoryError> {
        let name = shard_name(index);
        let creating = resource_version.is_none();
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                resource_version,
                labels: Some(BTreeMap::from([
                    (HISTORY_LABEL.to_owned(), "true".to_owned()),
                    (
                        "app.kubernetes.io/name".to_owned(),
                        "spark-admission".to_owned(),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        };
        let pp = PostParams::default();
        let result = if creating {
            self.api.create(&pp, &cm).await.map(drop)
        } else {
            self.api.replace(&name, &pp, &cm).await.map(drop)
        };
        result.map_err(|e| kube_error(&name, e))
    }
}

/// Watches the history ConfigMaps (by [`HISTORY_LABEL`]) and merges every version another
/// replica stored, as the API server reports it, until `stop`. The first full list marks
/// the history listed (readiness). Merging is idempotent and writes nothing: what this
/// replica learns is written by its own persister only when it changes something.
pub async fn run_watch(
    history: Arc<PolicyHistory>,
    api: Api<ConfigMap>,
    stop: impl Future<Output = ()>,
) {
    let config = watcher::Config::default().labels(&format!("{HISTORY_LABEL}=true"));
    let mut watch = Watch::new(api, config, "policy history");
    let mut stop = std::pin::pin!(stop);
    while let Some(event) = watch.next(&mut stop).await {
        match event {
            Event::Apply(cm) | Event::InitApply(cm) => {
                if cm.metadata.name.as_deref().and_then(shard_index).is_none() {
                    continue;
                }
                let data = cm.data.unwrap_or_default();
                let added = history.merge_stored(decode(&data), now_secs());
                if added > 0 {
                    tracing::info!(
                        versions = added,
                        configmap = cm.metadata.name.as_deref().unwrap_or(""),
                        "policy versions learned from the stored history"
                    );
                }
            }
            Event::InitDone => history.listed().mark(),
            // A deleted part loses nothing here: its versions stay in memory and the
            // persister writes them back.
            Event::Delete(_) | Event::Init => {}
        }
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
    /// Part 0 is `spark-admission-policy-history.json` in `dir`, part N `…-N.json`.
    pub fn new(dir: &std::path::Path) -> Self {
        Self {
            path: dir.join(format!("{HISTORY_CONFIGMAP}.json")),
        }
    }

    fn path_of(&self, index: usize) -> std::path::PathBuf {
        self.path
            .with_file_name(format!("{}.json", shard_name(index)))
    }

    fn file_error(path: &std::path::Path, source: std::io::Error) -> HistoryError {
        HistoryError::File {
            path: path.display().to_string(),
            source,
        }
    }

    // Small files, read and written off the request path (at start and after installs).
    fn read(&self, index: usize) -> Result<Option<Stored>, HistoryError> {
        let path = self.path_of(index);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::file_error(&path, e)),
        };
        let data = serde_json::from_str(&text).map_err(|source| HistoryError::Decode {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Some(Stored {
            resource_version: Some(content_version(&text)),
            data,
            labelled: true,
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
    async fn get(&self, index: usize) -> Result<Option<Stored>, HistoryError> {
        self.read(index)
    }

    async fn put(
        &self,
        index: usize,
        resource_version: Option<String>,
        data: BTreeMap<String, String>,
    ) -> Result<(), HistoryError> {
        if self.read(index)?.and_then(|s| s.resource_version) != resource_version {
            return Err(HistoryError::Conflict);
        }
        let path = self.path_of(index);
        let error = |e| Self::file_error(&path, e);
        let text = serde_json::to_string_pretty(&data).map_err(HistoryError::Encode)?;
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir).map_err(error)?;
        // A unique temporary file in the same folder, renamed into place: a reader never
        // sees half a file.
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(error)?;
        std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(error)?;
        tmp.persist(&path).map_err(|e| error(e.error))?;
        Ok(())
    }
}

/// Loads the stored history into `history`, waiting at most `wait`: readiness must not
/// hang on an API server that does not answer (then pins of older versions fall back to
/// the current ones until the next successful write merges the stored history in).
pub async fn load_initial(history: &PolicyHistory, backend: &impl HistoryBackend, wait: Duration) {
    let read_all = async {
        let mut stored = Vec::new();
        for index in 0..history.configmaps() {
            if let Some(s) = backend.get(index).await? {
                stored.push(s);
            }
        }
        Ok::<_, HistoryError>(stored)
    };
    match tokio::time::timeout(wait, read_all).await {
        Ok(Ok(stored)) if stored.is_empty() => {
            tracing::info!("no policy version history stored yet");
        }
        Ok(Ok(stored)) => {
            let records = stored.iter().flat_map(|s| decode(&s.data));
            let added = history.merge_stored(records.collect::<Vec<_>>(), now_secs());
            tracing::info!(versions = added, "policy version history loaded");
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot load the policy version history; serving without older versions")
        }
        Err(_) => {
            tracing::warn!(wait = ?wait, "the policy version history did not load in time; serving without older versions")
        }
    }
}

/// One merge-and-write of every part: reads it, merges it into `history`, and writes the
/// part's share of the union back against the version read. Conflicts are retried a few
/// times; the first error stops.
pub async fn persist_once(
    history: &PolicyHistory,
    backend: &impl HistoryBackend,
) -> Result<(), HistoryError> {
    for index in 0..history.configmaps() {
        persist_part(history, backend, index).await?;
    }
    Ok(())
}

async fn persist_part(
    history: &PolicyHistory,
    backend: &impl HistoryBackend,
    index: usize,
) -> Result<(), HistoryError> {
    let mut conflicts = 0;
    loop {
        let stored = backend.get(index).await?;
        let (rv, data, labelled) = match stored {
            Some(s) => (s.resource_version, s.data, s.labelled),
            None => (None, BTreeMap::new(), false),
        };
        history.merge_stored(decode(&data), now_secs());
        let mut wanted = history.stored_form()?;
        let wanted = std::mem::take(&mut wanted[index]);
        if wanted == data && (rv.is_some() || wanted.is_empty()) && (labelled || rv.is_none()) {
            return Ok(());
        }
        match backend.put(index, rv, wanted).await {
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
        let stored: usize = h
            .stored_form()
            .map(|d| d.iter().map(BTreeMap::len).sum())
            .unwrap_or(0);
        assert_eq!(stored, 3);
    }

    #[test]
    fn spread_over_configmaps_each_stays_within_its_bound_and_keeps_the_newest() {
        let versions: Vec<_> = (0..60).map(|i| policy("team", &i.to_string())).collect();
        let one = Record {
            tag: versions[0].tag.clone(),
            retired_at: Some(1),
            policy: versions[0].canonical.to_string(),
        }
        .size();
        let h = PolicyHistory::new(DEFAULT_MAX_AGE, one * 5, None)
            .with_configmaps(4)
            .unwrap_or_else(|e| panic!("{e}"));
        for (t, v) in versions.iter().enumerate() {
            h.record_install(&PolicySet::new([Arc::clone(v)]), t as u64);
        }
        let parts = h.stored_form().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parts.len(), 4);
        let mut stored = 0;
        for (i, part) in parts.iter().enumerate() {
            let bytes: usize = part.iter().map(|(k, v)| k.len() + v.len()).sum();
            assert!(bytes <= one * 5, "part {i}: {bytes} bytes");
            for r in decode(part) {
                assert_eq!(shard_of(&r.tag, 4), i, "{} in the wrong part", r.tag);
            }
            stored += part.len();
        }
        // What memory keeps is what is stored: a restart loses nothing more.
        assert_eq!(stored, h.tags().len());
        assert!(stored > 5, "more than one ConfigMap's worth: {stored}");
        // Oldest out first: the current version and the newest retired one are kept.
        assert!(h.lookup(&versions[59].tag).is_some());
        assert!(h.lookup(&versions[58].tag).is_some());
        assert!(h.lookup(&versions[0].tag).is_none());
        assert!(PolicyHistory::default().with_configmaps(0).is_err());
        assert!(PolicyHistory::default()
            .with_configmaps(MAX_CONFIGMAPS + 1)
            .is_err());
        assert_eq!(shard_index(&shard_name(0)), Some(0));
        assert_eq!(shard_index(&shard_name(7)), Some(7));
        assert_eq!(shard_index("spark-admission-policy-history-x"), None);
        assert_eq!(shard_index("spark-admission-policy-history-0"), None);
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
    /// (One part only: the tests using it keep the history in one.)
    #[derive(Default)]
    struct Fake {
        stored: Mutex<Option<(u64, BTreeMap<String, String>)>>,
        interfere: Mutex<Vec<BTreeMap<String, String>>>,
    }

    impl HistoryBackend for Fake {
        async fn get(&self, _index: usize) -> Result<Option<Stored>, HistoryError> {
            let s = self.stored.lock().unwrap_or_else(|p| p.into_inner());
            Ok(s.as_ref().map(|(rv, data)| Stored {
                resource_version: Some(rv.to_string()),
                data: data.clone(),
                labelled: true,
            }))
        }

        async fn put(
            &self,
            _index: usize,
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

        let stale = backend.get(0).await.ok().flatten().unwrap_or_default();
        persist_once(&next, &backend)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        next.record_install(&PolicySet::new([policy("team", "3")]), t);
        persist_once(&next, &backend)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let again = backend.put(0, stale.resource_version, stale.data).await;
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
        let stored = backend.get(0).await.ok().flatten().unwrap_or_default();
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
