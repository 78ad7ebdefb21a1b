//! The memory state in ConfigMaps of the webhook's namespace: written with optimistic
//! concurrency (a replace names the `resourceVersion` it read; a conflict re-reads and
//! merges again, and merging is idempotent, so replicas writing the same OOM agree) and
//! watched, so every replica holds what any of them wrote.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;

use super::{decode, encode, now, MemoryError, MemoryState, Shard, DATA_KEY, STATE_LABEL};
use crate::memory_on_oom::{OomRaise, RememberedMemory};
use crate::watch::Watch;

/// Raises taken from the queue and written together (one write per shard per batch), so
/// a flood of OOMKilled pods costs a bounded number of writes.
const BATCH: usize = 1000;
/// Attempts to write one batch into one shard before giving up on it.
const ATTEMPTS: usize = 8;

/// Reads and writes the state ConfigMaps.
#[derive(Clone)]
pub struct ShardStore {
    api: Api<ConfigMap>,
}

impl std::fmt::Debug for ShardStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShardStore")
    }
}

fn kube_error(name: &str, source: kube::Error) -> MemoryError {
    match &source {
        kube::Error::Api(s) if s.is_conflict() || s.is_already_exists() => MemoryError::Conflict {
            name: name.to_owned(),
        },
        _ => MemoryError::Kube {
            name: name.to_owned(),
            source,
        },
    }
}

/// A state ConfigMap as a shard; a ConfigMap whose data is not ours reads as empty (the
/// next write replaces it) after an error naming it.
pub fn shard_of(cm: &ConfigMap) -> Result<Shard, MemoryError> {
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(DATA_KEY))
        .map_or("{}", String::as_str);
    let entries = decode(text).map_err(|source| MemoryError::Corrupt {
        name: cm.metadata.name.clone().unwrap_or_default(),
        source,
    })?;
    Ok(Shard {
        resource_version: cm.metadata.resource_version.clone(),
        entries,
        bytes: text.len(),
    })
}

impl ShardStore {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
        }
    }

    /// The shard as stored now (empty, without resourceVersion, when it does not exist).
    pub async fn read(&self, index: usize) -> Result<Shard, MemoryError> {
        let name = MemoryState::shard_name(index);
        match self
            .api
            .get_opt(&name)
            .await
            .map_err(|e| kube_error(&name, e))?
        {
            Some(cm) => shard_of(&cm).or_else(|e| {
                tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "memory state unreadable; it will be rewritten");
                Ok(Shard {
                    resource_version: cm.metadata.resource_version.clone(),
                    ..Shard::default()
                })
            }),
            None => Ok(Shard::default()),
        }
    }

    /// Creates the shard (no resourceVersion) or replaces exactly the version read.
    pub async fn write(
        &self,
        index: usize,
        resource_version: Option<String>,
        entries: &BTreeMap<String, RememberedMemory>,
    ) -> Result<Shard, MemoryError> {
        let name = MemoryState::shard_name(index);
        let creating = resource_version.is_none();
        let text = encode(entries);
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                resource_version,
                labels: Some(BTreeMap::from([
                    (STATE_LABEL.to_owned(), "true".to_owned()),
                    (
                        "app.kubernetes.io/name".to_owned(),
                        "spark-admission".to_owned(),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(DATA_KEY.to_owned(), text.clone())])),
            ..ConfigMap::default()
        };
        let pp = PostParams::default();
        let written = if creating {
            self.api.create(&pp, &cm).await
        } else {
            self.api.replace(&name, &pp, &cm).await
        }
        .map_err(|e| kube_error(&name, e))?;
        Ok(Shard {
            resource_version: written.metadata.resource_version,
            entries: entries
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            bytes: text.len(),
        })
    }
}

/// Merges `raises` into one shard and writes it, re-reading on a conflict.
pub async fn persist(
    state: &MemoryState,
    store: &ShardStore,
    index: usize,
    raises: &[OomRaise],
) -> Result<(), MemoryError> {
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        let base = state.shard(index);
        let Some(entries) = state.merged(&base, raises, now()) else {
            return Ok(());
        };
        match store
            .write(index, base.resource_version.clone(), &entries)
            .await
        {
            Ok(shard) => {
                state.install(index, shard);
                return Ok(());
            }
            Err(MemoryError::Conflict { name }) => {
                // Another replica wrote first: merge into what it wrote.
                tracing::debug!(
                    shard = name.as_str(),
                    attempt,
                    "memory state conflict; re-reading"
                );
                match store.read(index).await {
                    Ok(shard) => state.install(index, shard),
                    Err(e) => last = Some(e),
                }
                last.get_or_insert(MemoryError::Conflict { name });
            }
            Err(e) => {
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or(MemoryError::Conflict {
        name: MemoryState::shard_name(index),
    }))
}

/// Writes queued raises until `stop`: each batch is grouped by shard, one write per shard.
pub async fn run_writer(
    state: Arc<MemoryState>,
    store: ShardStore,
    mut queue: mpsc::Receiver<OomRaise>,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    loop {
        let first = tokio::select! {
            biased;
            () = &mut stop => return,
            r = queue.recv() => match r {
                Some(r) => r,
                None => return,
            },
        };
        let mut by_shard: BTreeMap<usize, Vec<OomRaise>> = BTreeMap::new();
        by_shard
            .entry(state.shard_of(&first.key))
            .or_default()
            .push(first);
        let mut taken = 1;
        while taken < BATCH {
            let Ok(r) = queue.try_recv() else { break };
            by_shard.entry(state.shard_of(&r.key)).or_default().push(r);
            taken += 1;
        }
        for (index, raises) in by_shard {
            if let Err(e) = persist(&state, &store, index, &raises).await {
                tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), raises = raises.len(), "could not record memory raises after OOMKilled pods");
            }
        }
    }
}

/// Watches the state ConfigMaps and installs each as it changes, until `stop`.
pub async fn run_watch(
    state: Arc<MemoryState>,
    api: Api<ConfigMap>,
    stop: impl Future<Output = ()>,
) {
    let config = watcher::Config::default().labels(&format!("{STATE_LABEL}=true"));
    let mut watch = Watch::new(api, config, "memory state");
    let mut stop = std::pin::pin!(stop);
    while let Some(event) = watch.next(&mut stop).await {
        match event {
            Event::Apply(cm) | Event::InitApply(cm) => {
                let Some(index) = cm.metadata.name.as_deref().and_then(|n| state.index_of(n))
                else {
                    continue;
                };
                match shard_of(&cm) {
                    Ok(shard) => state.install(index, shard),
                    Err(e) => {
                        tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "memory state unreadable; it will be rewritten");
                        state.install(
                            index,
                            Shard {
                                resource_version: cm.metadata.resource_version.clone(),
                                ..Shard::default()
                            },
                        );
                    }
                }
            }
            Event::Delete(cm) => {
                if let Some(index) = cm.metadata.name.as_deref().and_then(|n| state.index_of(n)) {
                    state.install(index, Shard::default());
                }
            }
            // Every state ConfigMap has been delivered once: ready to serve from it.
            Event::InitDone => state.listed().mark(),
            Event::Init => {}
        }
    }
}
