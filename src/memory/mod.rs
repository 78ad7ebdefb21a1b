//! OOM-aware memory, the webhook's half: the raises remembered after OOMKilled Spark pods,
//! shared by every replica. The engine decides what a raise is
//! ([`crate::memory_on_oom`]); this module keeps them:
//!
//! - [`pods`] watches Spark pods that ended `Failed` (label and field selectors, never a
//!   list of every pod) and turns an OOMKilled one into a raise;
//! - [`configmaps`] writes raises into a few ConfigMaps in the webhook's namespace
//!   (optimistic concurrency on `resourceVersion`) and watches them, so a replica that
//!   did not see the OOM applies the raise as soon as the API server tells it;
//! - [`MemoryState`] is what a review reads: one lock-free lookup per pod;
//! - [`events`] writes one Event on each raised pod once the API server has stored it.
//!
//! The state is bounded in entries (overall and per namespace) and in bytes per ConfigMap;
//! the oldest OOMs go first.

pub mod configmaps;
pub mod events;
pub mod pods;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::Pod;
use sha2::{Digest, Sha256};

use crate::memory_on_oom::{memory_key, OomRaise, RememberedMemory};
use crate::metrics::Metrics;
use crate::spark::{ContainerNames, SparkPod};
use crate::watch::Listed;

/// Label of the state ConfigMaps (value `"true"`), which the replicas watch.
pub const STATE_LABEL: &str = "spark-admission.io/memory-state";
/// The state ConfigMaps are called this plus their shard number.
pub const SHARD_PREFIX: &str = "spark-admission-memory-";
/// The one data key of a state ConfigMap: a JSON object, key -> remembered raise.
pub const DATA_KEY: &str = "entries.json";

/// Bounds of the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryConfig {
    /// How many ConfigMaps the state is spread over (by a hash of the key).
    pub shards: usize,
    /// Entries kept at most, over all shards.
    pub max_entries: usize,
    /// Entries one namespace may hold at most: a flood in one namespace evicts only its own.
    pub max_per_namespace: usize,
    /// Bytes of one ConfigMap's data at most (the API server refuses objects over 1 MiB).
    pub max_shard_bytes: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            shards: 8,
            max_entries: 20_000,
            max_per_namespace: 2_000,
            max_shard_bytes: 512 * 1024,
        }
    }
}

/// The most ConfigMaps the state may be spread over.
pub const MAX_SHARDS: usize = 64;
/// The largest byte bound of one ConfigMap: its data plus metadata must stay under the
/// API server's 1 MiB.
pub const MAX_SHARD_BYTES: usize = 1000 * 1024;
/// The smallest byte bound of one ConfigMap: room for a few entries.
pub const MIN_SHARD_BYTES: usize = 1024;

impl MemoryConfig {
    /// Refuses bounds that cannot hold: each error names the flag and what it accepts.
    pub fn validate(&self) -> Result<(), BoundsError> {
        if !(1..=MAX_SHARDS).contains(&self.shards) {
            return Err(BoundsError(format!(
                "--memory-state-configmaps must be 1 to {MAX_SHARDS}, not {}",
                self.shards
            )));
        }
        if self.max_entries == 0 || self.max_per_namespace == 0 {
            return Err(BoundsError(
                "--memory-state-max-entries and --memory-state-max-entries-per-namespace must be at least 1".to_owned(),
            ));
        }
        if self.max_per_namespace > self.max_entries {
            return Err(BoundsError(format!(
                "--memory-state-max-entries-per-namespace ({}) is larger than --memory-state-max-entries ({}): one namespace could then crowd out every other",
                self.max_per_namespace, self.max_entries
            )));
        }
        if !(MIN_SHARD_BYTES..=MAX_SHARD_BYTES).contains(&self.max_shard_bytes) {
            return Err(BoundsError(format!(
                "--memory-state-max-bytes must be {MIN_SHARD_BYTES} to {MAX_SHARD_BYTES} (a ConfigMap must stay under the API server's 1 MiB), not {}",
                self.max_shard_bytes
            )));
        }
        Ok(())
    }
}

/// Bounds of the memory state that make no sense.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BoundsError(String);

/// One state ConfigMap as last read or written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shard {
    pub resource_version: Option<String>,
    pub entries: HashMap<String, RememberedMemory>,
    /// Bytes of its encoded data.
    pub bytes: usize,
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("the memory state ConfigMap {name} changed since it was read")]
    Conflict { name: String },
    #[error("cannot read or write the memory state ConfigMap {name}")]
    Kube {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the memory state ConfigMap {name} does not hold valid JSON in {DATA_KEY}")]
    Corrupt {
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The remembered raises, as every review reads them.
#[derive(Debug)]
pub struct MemoryState {
    config: MemoryConfig,
    names: ContainerNames,
    shards: Vec<ArcSwap<Shard>>,
    metrics: Option<Arc<Metrics>>,
    /// Set once the watch has listed the state ConfigMaps: readiness waits for it, or a
    /// fresh replica would admit a pod without a raise another replica remembered.
    listed: Listed,
}

impl MemoryState {
    pub fn new(config: MemoryConfig, names: ContainerNames, metrics: Option<Arc<Metrics>>) -> Self {
        let config = MemoryConfig {
            shards: config.shards.max(1),
            ..config
        };
        let shards = (0..config.shards)
            .map(|_| ArcSwap::from_pointee(Shard::default()))
            .collect();
        Self {
            config,
            names,
            shards,
            metrics,
            listed: Listed::default(),
        }
    }

    /// Whether the state ConfigMaps have been listed once.
    pub fn listed(&self) -> &Listed {
        &self.listed
    }

    pub fn config(&self) -> &MemoryConfig {
        &self.config
    }

    pub fn container_names(&self) -> &ContainerNames {
        &self.names
    }

    /// The shard a key lives in: stable across processes and versions (a SHA-256 prefix).
    pub fn shard_of(&self, key: &str) -> usize {
        let digest = Sha256::digest(key.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        (u64::from_be_bytes(first) % self.shards.len() as u64) as usize
    }

    pub fn shard_name(index: usize) -> String {
        format!("{SHARD_PREFIX}{index}")
    }

    /// The shard number of a state ConfigMap's name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        let i: usize = name.strip_prefix(SHARD_PREFIX)?.parse().ok()?;
        (i < self.shards.len()).then_some(i)
    }

    pub fn shard(&self, index: usize) -> Arc<Shard> {
        self.shards[index].load_full()
    }

    /// The raise remembered for this pod's application and role, unless expired.
    pub fn lookup(&self, namespace: &str, pod: &Pod, now: i64) -> Option<RememberedMemory> {
        let spark = SparkPod::recognise(pod, &self.names).ok()?;
        let key = memory_key(namespace, &spark)?;
        self.get(&key, now)
    }

    pub fn get(&self, key: &str, now: i64) -> Option<RememberedMemory> {
        let shard = self.shards[self.shard_of(key)].load();
        shard.entries.get(key).filter(|e| e.expires > now).cloned()
    }

    /// Replaces a shard with what the API server holds. A watch event older than what a
    /// write of ours already installed is ignored (resourceVersions of one object grow).
    pub fn install(&self, index: usize, shard: Shard) {
        let Some(slot) = self.shards.get(index) else {
            return;
        };
        let current = slot.load();
        let older = match (
            shard
                .resource_version
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok()),
            current
                .resource_version
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok()),
        ) {
            (Some(new), Some(old)) => new < old,
            _ => false,
        };
        if older {
            return;
        }
        slot.store(Arc::new(shard));
        self.report_size();
    }

    /// Counts an OOMKilled pod the watch saw (`memory_ooms_total`).
    pub fn record_oom(&self, role: crate::spark::SparkRole, result: crate::metrics::OomResult) {
        if let Some(m) = &self.metrics {
            m.record_memory_oom(role, result);
        }
    }

    /// Entries and bytes over all shards.
    pub fn size(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(n, b), s| {
            let s = s.load();
            (n + s.entries.len(), b + s.bytes)
        })
    }

    fn report_size(&self) {
        if let Some(m) = &self.metrics {
            let (entries, bytes) = self.size();
            m.set_memory_state(entries, bytes);
        }
    }

    /// Whether the state already holds this raise (or a larger one): a relist or a second
    /// replica seeing the same pod then writes nothing.
    pub fn knows(&self, raise: &OomRaise) -> bool {
        let shard = self.shards[self.shard_of(&raise.key)].load();
        shard.entries.get(&raise.key).is_some_and(|e| {
            e.memory > raise.remembered.memory
                || (e.memory == raise.remembered.memory && e.expires >= raise.remembered.expires)
        })
    }

    /// The shard's entries with `raises` merged in, expired ones dropped and the bounds
    /// applied (oldest OOM first out); `None` when that changes nothing.
    pub fn merged(
        &self,
        base: &Shard,
        raises: &[OomRaise],
        now: i64,
    ) -> Option<BTreeMap<String, RememberedMemory>> {
        let mut entries: BTreeMap<String, RememberedMemory> = base
            .entries
            .iter()
            .filter(|(_, e)| e.expires > now)
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        for r in raises {
            let merged = match entries.remove(&r.key) {
                Some(old) => old.merge(r.remembered.clone()),
                None => r.remembered.clone(),
            };
            if merged.expires > now {
                entries.insert(r.key.clone(), merged);
            }
        }
        let shards = self.config.shards;
        let per_namespace = self.config.max_per_namespace.div_ceil(shards).max(1);
        let max_entries = self.config.max_entries.div_ceil(shards).max(1);
        bound_namespaces(&mut entries, per_namespace);
        let mut by_age: Vec<(i64, String)> =
            entries.iter().map(|(k, e)| (e.oom_at, k.clone())).collect();
        by_age.sort();
        let mut oldest = by_age.into_iter();
        while entries.len() > max_entries {
            let Some((_, k)) = oldest.next() else { break };
            entries.remove(&k);
        }
        let mut bytes = encoded_len(&entries);
        while bytes > self.config.max_shard_bytes {
            let Some((_, k)) = oldest.next() else { break };
            if let Some(e) = entries.remove(&k) {
                bytes = bytes.saturating_sub(entry_len(&k, &e));
            }
        }
        let unchanged = entries.len() == base.entries.len()
            && entries.iter().all(|(k, e)| base.entries.get(k) == Some(e));
        (!unchanged).then_some(entries)
    }
}

/// Per namespace, at most `max` entries: the oldest OOMs of a namespace over it go.
fn bound_namespaces(entries: &mut BTreeMap<String, RememberedMemory>, max: usize) {
    let mut by_namespace: HashMap<&str, Vec<(i64, &String)>> = HashMap::new();
    for (k, e) in entries.iter() {
        let ns = k.split('/').next().unwrap_or("");
        by_namespace.entry(ns).or_default().push((e.oom_at, k));
    }
    let mut evict = Vec::new();
    for (_, mut list) in by_namespace {
        if list.len() > max {
            list.sort();
            let over = list.len() - max;
            evict.extend(list.into_iter().take(over).map(|(_, k)| k.clone()));
        }
    }
    for k in evict {
        entries.remove(&k);
    }
}

fn entry_len(key: &str, e: &RememberedMemory) -> usize {
    // "key":{...}, — the quotes, colon and comma around the two JSON texts.
    serde_json::to_string(key).map_or(0, |k| k.len())
        + serde_json::to_string(e).map_or(0, |v| v.len())
        + 2
}

fn encoded_len(entries: &BTreeMap<String, RememberedMemory>) -> usize {
    2 + entries.iter().map(|(k, e)| entry_len(k, e)).sum::<usize>()
}

/// The data of a state ConfigMap.
pub fn encode(entries: &BTreeMap<String, RememberedMemory>) -> String {
    serde_json::to_string(entries).unwrap_or_else(|_| "{}".to_owned())
}

pub fn decode(text: &str) -> Result<HashMap<String, RememberedMemory>, serde_json::Error> {
    serde_json::from_str(text)
}

/// The entries of state ConfigMaps as exported by `kubectl get configmap … -o yaml` (one
/// ConfigMap or a List of them; JSON is YAML too), for `explain --memory-state`.
pub fn read_exported(text: &str) -> Result<HashMap<String, RememberedMemory>, ExportError> {
    let doc: serde_json::Value = crate::yaml::document(text).map_err(ExportError::Yaml)?;
    let items = match doc.get("items").and_then(|i| i.as_array()) {
        Some(items) => items.clone(),
        None => vec![doc],
    };
    let mut out = HashMap::new();
    for item in items {
        let name = item["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let Some(text) = item["data"][DATA_KEY].as_str() else {
            continue;
        };
        let entries = decode(text).map_err(|source| ExportError::Entries { name, source })?;
        out.extend(entries);
    }
    Ok(out)
}

/// Why an exported memory state cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("not YAML or JSON")]
    Yaml(#[source] crate::yaml::YamlError),
    #[error("ConfigMap {name}: {DATA_KEY} is not a memory state")]
    Entries {
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Unix seconds now.
pub fn now() -> i64 {
    i64::try_from(crate::source::history::now_secs()).unwrap_or(i64::MAX)
}

/// Raises waiting to be written; beyond this a flood's raises are dropped (logged).
const QUEUE: usize = 10_000;

/// Starts OOM-aware memory for a server using the ConfigMap source: the watch of the
/// state ConfigMaps in `namespace`, their writer, and the watch of ended Spark pods. All
/// stop with `shutdown`. Returns the state reviews read.
pub fn start(
    config: &MemoryConfig,
    names: ContainerNames,
    client: kube::Client,
    namespace: &str,
    policies: Arc<crate::source::PolicyStore>,
    metrics: Arc<Metrics>,
    shutdown: &crate::shutdown::ShutdownHandle,
) -> Arc<MemoryState> {
    let state = Arc::new(MemoryState::new(
        config.clone(),
        names,
        Some(Arc::clone(&metrics)),
    ));
    let (queue, queued) = tokio::sync::mpsc::channel(QUEUE);
    let stop = shutdown.clone();
    tokio::spawn(configmaps::run_watch(
        Arc::clone(&state),
        kube::Api::namespaced(client.clone(), namespace),
        async move { stop.triggered().await },
    ));
    let stop = shutdown.clone();
    tokio::spawn(configmaps::run_writer(
        Arc::clone(&state),
        configmaps::ShardStore::new(client.clone(), namespace),
        queued,
        async move { stop.triggered().await },
    ));
    let stop = shutdown.clone();
    let instance = std::env::var(crate::admission::POD_NAME_ENV)
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok());
    tokio::spawn(events::run(
        Arc::clone(&state),
        Arc::clone(&policies),
        client.clone(),
        crate::source::events::Reporter::new(instance),
        metrics,
        async move { stop.triggered().await },
    ));
    let stop = shutdown.clone();
    tokio::spawn(pods::run(
        Arc::clone(&state),
        policies,
        kube::Api::all(client),
        queue,
        async move { stop.triggered().await },
    ));
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spark::SparkRole;

    fn raise(ns: &str, app: &str, memory: u64, at: i64) -> OomRaise {
        OomRaise {
            key: format!("{ns}/executor/name:{app}"),
            role: SparkRole::Executor,
            policy: "p".into(),
            remembered: RememberedMemory {
                memory,
                from: memory / 2,
                oom_pod: format!("{app}-exec-1"),
                oom_at: at,
                expires: at + 1000,
            },
        }
    }

    fn one_shard(
        max_entries: usize,
        max_per_namespace: usize,
        max_shard_bytes: usize,
    ) -> MemoryState {
        MemoryState::new(
            MemoryConfig {
                shards: 1,
                max_entries,
                max_per_namespace,
                max_shard_bytes,
            },
            ContainerNames::default(),
            None,
        )
    }

    fn shard(entries: BTreeMap<String, RememberedMemory>) -> Shard {
        let bytes = encode(&entries).len();
        Shard {
            resource_version: Some("1".into()),
            entries: entries.into_iter().collect(),
            bytes,
        }
    }

    #[test]
    fn merging_the_same_oom_again_changes_nothing_and_a_larger_one_wins() {
        let s = one_shard(100, 100, 1 << 20);
        let first = s
            .merged(&Shard::default(), &[raise("a", "x", 10, 100)], 0)
            .unwrap();
        let base = shard(first);
        assert!(s.merged(&base, &[raise("a", "x", 10, 100)], 0).is_none());
        assert!(
            s.merged(&base, &[raise("a", "x", 5, 200)], 0).is_none(),
            "smaller loses"
        );
        let bigger = s.merged(&base, &[raise("a", "x", 20, 150)], 0).unwrap();
        assert_eq!(bigger["a/executor/name:x"].memory, 20);
        // Expired entries go at the next write.
        let later = s.merged(&base, &[raise("a", "y", 10, 2000)], 1500).unwrap();
        assert_eq!(later.keys().collect::<Vec<_>>(), ["a/executor/name:y"]);
    }

    #[test]
    fn the_oldest_go_first_when_entries_or_bytes_are_over_their_bound() {
        let raises: Vec<OomRaise> = (0..10)
            .map(|i| raise("a", &format!("app{i}"), 10, i))
            .collect();
        let kept = one_shard(4, 100, 1 << 20)
            .merged(&Shard::default(), &raises, 0)
            .unwrap();
        let names: Vec<&str> = kept.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "a/executor/name:app6",
                "a/executor/name:app7",
                "a/executor/name:app8",
                "a/executor/name:app9"
            ]
        );
        let bytes = 400;
        let kept = one_shard(100, 100, bytes)
            .merged(&Shard::default(), &raises, 0)
            .unwrap();
        assert!(encode(&kept).len() <= bytes, "{}", encode(&kept).len());
        assert!(
            kept.contains_key("a/executor/name:app9") && !kept.contains_key("a/executor/name:app0")
        );
    }

    #[test]
    fn one_namespace_over_its_bound_evicts_only_its_own_entries() {
        let s = one_shard(100, 3, 1 << 20);
        let mut raises = vec![raise("quiet", "old", 10, 0)];
        raises.extend((1..50).map(|i| raise("noisy", &format!("app{i}"), 10, i)));
        let kept = s.merged(&Shard::default(), &raises, 0).unwrap();
        assert!(kept.contains_key("quiet/executor/name:old"));
        assert_eq!(kept.keys().filter(|k| k.starts_with("noisy/")).count(), 3);
    }

    #[test]
    fn an_exported_state_reads_back_and_a_foreign_one_is_refused() {
        let entries: BTreeMap<String, RememberedMemory> = BTreeMap::from([(
            "a/executor/name:x".to_owned(),
            raise("a", "x", 10, 5).remembered,
        )]);
        let cm = serde_json::json!({"kind": "ConfigMap", "metadata": {"name": "spark-admission-memory-0"},
            "data": {DATA_KEY: encode(&entries)}});
        let back = read_exported(&cm.to_string()).unwrap();
        assert_eq!(back["a/executor/name:x"].memory, 10);
        let list = serde_json::json!({"kind": "List", "items": [cm]});
        assert_eq!(read_exported(&list.to_string()).unwrap().len(), 1);
        let bad = serde_json::json!({"metadata": {"name": "x"}, "data": {DATA_KEY: "[1]"}});
        assert!(read_exported(&bad.to_string())
            .unwrap_err()
            .to_string()
            .contains("ConfigMap x"));
    }
}
