//! The watch on Spark pods that ended `Failed`: a label selector on `spark-role` and a
//! field selector on the phase, so the API server sends only those (Spark sets
//! `restartPolicy: Never`, so an OOMKilled Spark container ends its pod `Failed`). Pods
//! are not kept: each is looked at once and dropped. Only namespaces whose current
//! policies enable `memoryOnOOM` for the pod's role count ([`raise_after_oom`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;

use super::{now, MemoryState};
use crate::memory_on_oom::{enabled_anywhere, oom_at_max, raise_after_oom, OomRaise};
use crate::metrics::OomResult;
use crate::source::PolicyStore;
use crate::spark::ROLE_LABEL;
use crate::watch::Watch;

/// Only pods that ended: the field selector the API server applies for us.
pub const FAILED_PHASE: &str = "status.phase=Failed";

/// How often the watch checks, while no policy enables `memoryOnOOM`, whether one does.
const ENABLED_POLL: Duration = Duration::from_secs(1);

/// What one ended pod leads to: the raise queued for writing, if any. A raise the state
/// already holds (a relist, another replica's write) is not queued again; when the queue
/// is full the raise is dropped (logged): the state's writes stay bounded in a flood.
pub fn observe(
    state: &MemoryState,
    policies: &PolicyStore,
    pod: &Pod,
    queue: &mpsc::Sender<OomRaise>,
) -> Option<OomRaise> {
    let namespace = pod.metadata.namespace.as_deref()?;
    let set = policies.snapshot();
    let raise = raise_after_oom(&set, pod, namespace, state.container_names(), now())?;
    if state.knows(&raise) {
        return None;
    }
    tracing::info!(
        namespace,
        pod = raise.remembered.oom_pod.as_str(),
        key = raise.key.as_str(),
        memory = raise.remembered.memory,
        "Spark pod OOMKilled; its application's next pods get more memory"
    );
    if queue.try_send(raise.clone()).is_err() {
        tracing::warn!(
            key = raise.key.as_str(),
            "memory raise dropped: too many OOMKilled pods waiting to be recorded"
        );
        return None;
    }
    state.record_oom(raise.role, OomResult::Raised);
    Some(raise)
}

/// Pods already counted as OOMKilled at `max` (their uid), so a relist counts none twice.
#[derive(Debug, Default)]
pub struct AtMax {
    seen: std::collections::HashSet<String>,
    order: std::collections::VecDeque<String>,
}

/// Pods remembered by [`AtMax`].
const AT_MAX_SEEN: usize = 10_000;

impl AtMax {
    /// Counts `pod` when it was OOMKilled already at its policy's `max` (no raise can
    /// follow: the job may keep failing), once per pod. Returns whether it counted.
    pub fn observe(&mut self, state: &MemoryState, policies: &PolicyStore, pod: &Pod) -> bool {
        let (Some(namespace), Some(uid)) = (
            pod.metadata.namespace.as_deref(),
            pod.metadata.uid.as_deref(),
        ) else {
            return false;
        };
        if self.seen.contains(uid) {
            return false;
        }
        let set = policies.snapshot();
        let Some((role, policy)) = oom_at_max(&set, pod, namespace, state.container_names()) else {
            return false;
        };
        if self.order.len() >= AT_MAX_SEEN {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(uid.to_owned());
        self.order.push_back(uid.to_owned());
        tracing::warn!(
            namespace,
            pod = pod.metadata.name.as_deref().unwrap_or(""),
            policy = policy.as_str(),
            "Spark pod OOMKilled at its memoryOnOOM max: no further raise"
        );
        state.record_oom(role, OomResult::AtMax);
        true
    }
}

/// Waits until a loaded policy enables `memoryOnOOM` (a cluster without it never lists a
/// pod); `false` when `stop` came first.
pub(super) async fn until_enabled<S: Future<Output = ()>>(
    policies: &PolicyStore,
    stop: &mut std::pin::Pin<&mut S>,
) -> bool {
    while !(policies.is_loaded() && enabled_anywhere(&policies.snapshot())) {
        tokio::select! {
            biased;
            () = stop.as_mut() => return false,
            () = tokio::time::sleep(ENABLED_POLL) => {}
        }
    }
    true
}

/// Watches ended Spark pods in every namespace until `stop`; starts only once a policy
/// enables `memoryOnOOM` (a cluster without it never lists a pod).
pub async fn run(
    state: Arc<MemoryState>,
    policies: Arc<PolicyStore>,
    api: Api<Pod>,
    queue: mpsc::Sender<OomRaise>,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    if !until_enabled(&policies, &mut stop).await {
        return;
    }
    let config = watcher::Config::default()
        .labels(ROLE_LABEL)
        .fields(FAILED_PHASE);
    let mut watch = Watch::new(api, config, "ended Spark pods");
    tracing::info!(
        labels = ROLE_LABEL,
        fields = FAILED_PHASE,
        "watching ended Spark pods for OOMKilled containers"
    );
    let mut at_max = AtMax::default();
    while let Some(event) = watch.next(&mut stop).await {
        if let Event::Apply(pod) | Event::InitApply(pod) = event {
            if observe(&state, &policies, &pod, &queue).is_none() {
                at_max.observe(&state, &policies, &pod);
            }
        }
    }
}
