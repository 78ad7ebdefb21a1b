//! An Event on each pod admitted with more memory, so `kubectl describe pod` says why.
//!
//! At admission the pod has no uid yet (the API server assigns it after every webhook), and
//! an Event written because of a review would be state anyone reaching the Service could
//! make us write. So the Event comes from what the API server stored: a watch of Spark pods
//! that are `Pending` (label selector `spark-role`, field selector on the phase: every pod
//! starts there, and nothing else is sent), and only for a pod that carries the raise
//! annotation **and** whose application the memory state holds a raise for. The note is
//! made from the state, not from the annotation (which a submitter can write). Bounded:
//! one Event per pod (named after its uid, so a second replica or a restart gets
//! `AlreadyExists` and writes nothing), and at most [`RATE_PER_SECOND`] per replica with a
//! burst of [`BURST`]; beyond that they are dropped and counted.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};

use super::{now, MemoryState};
use crate::memory_on_oom::{format_bytes, RAISED_ANNOTATION};
use crate::metrics::{EventResult, Metrics};
use crate::source::events::{PolicyEvent, Reporter};
use crate::source::PolicyStore;
use crate::spark::ROLE_LABEL;
use crate::watch::Watch;

/// The Event's reason.
pub const REASON: &str = "MemoryRaised";
/// The Event's action.
pub const ACTION: &str = "RaiseMemory";
/// Pods just created: the field selector the API server applies for us.
pub const PENDING_PHASE: &str = "status.phase=Pending";
/// Events per second one replica writes at most, after a burst of [`BURST`].
pub const RATE_PER_SECOND: f64 = 5.0;
pub const BURST: f64 = 20.0;
/// Pods remembered as done (their uid), so updates of a pending pod write nothing more.
const SEEN: usize = 10_000;

/// One Event per raised pod, within a rate.
#[derive(Debug)]
pub struct RaiseEvents {
    seen: HashSet<String>,
    order: VecDeque<String>,
    tokens: f64,
    refilled: Instant,
}

impl Default for RaiseEvents {
    fn default() -> Self {
        Self {
            seen: HashSet::new(),
            order: VecDeque::new(),
            tokens: BURST,
            refilled: Instant::now(),
        }
    }
}

/// What to do about one pod the watch reported.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Not a pod we raised, or already done.
    Nothing,
    /// Over the rate: dropped (counted).
    Dropped,
    /// Write this Event.
    Write(Box<KubeEvent>),
}

impl RaiseEvents {
    /// The Event for `pod`, if it is one this webhook raised and has not reported yet.
    pub fn decide(
        &mut self,
        state: &MemoryState,
        pod: &Pod,
        reporter: &Reporter,
        at: Instant,
    ) -> Decision {
        let meta = &pod.metadata;
        let (Some(namespace), Some(name), Some(uid)) = (
            meta.namespace.as_deref(),
            meta.name.as_deref(),
            meta.uid.as_deref(),
        ) else {
            return Decision::Nothing;
        };
        let annotated = meta
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(RAISED_ANNOTATION));
        if !annotated || self.seen.contains(uid) {
            return Decision::Nothing;
        }
        // Only an application the state holds a raise for: an annotation alone (which a
        // submitter can write) makes nothing happen.
        let Some(remembered) = state.lookup(namespace, pod, now()) else {
            return Decision::Nothing;
        };
        self.remember(uid);
        if !self.take_token(at) {
            return Decision::Dropped;
        }
        let oom_at = Timestamp::from_second(remembered.oom_at)
            .map_or_else(|_| remembered.oom_at.to_string(), |t| t.to_string());
        let note = format!(
            "memory raised from {} to {} (memoryOnOOM) because pod {} of this application was OOMKilled at {oom_at}; details in annotation {RAISED_ANNOTATION}",
            format_bytes(remembered.from),
            format_bytes(remembered.memory),
            remembered.oom_pod,
        );
        let regarding = ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Pod".to_owned()),
            namespace: Some(namespace.to_owned()),
            name: Some(name.to_owned()),
            uid: Some(uid.to_owned()),
            ..ObjectReference::default()
        };
        let mut event =
            PolicyEvent::normal(regarding, REASON, note).to_event(reporter, Timestamp::now());
        // One per pod, whichever replica writes first: the name is the pod's uid.
        event.metadata.name = Some(format!("{uid}.memory-raised"));
        event.action = Some(ACTION.to_owned());
        Decision::Write(Box::new(event))
    }

    fn remember(&mut self, uid: &str) {
        if self.order.len() >= SEEN {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(uid.to_owned());
        self.order.push_back(uid.to_owned());
    }

    fn take_token(&mut self, at: Instant) -> bool {
        let elapsed = at.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * RATE_PER_SECOND).min(BURST);
        self.refilled = at;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Watches pending Spark pods in every namespace until `stop` and writes the Event of each
/// raised one; starts only once a policy enables `memoryOnOOM`.
pub async fn run(
    state: Arc<MemoryState>,
    policies: Arc<PolicyStore>,
    client: kube::Client,
    reporter: Reporter,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    if !super::pods::until_enabled(&policies, &mut stop).await {
        return;
    }
    metrics.init_policy_events(&[REASON]);
    let config = watcher::Config::default()
        .labels(ROLE_LABEL)
        .fields(PENDING_PHASE);
    let mut watch = Watch::new(
        Api::<Pod>::all(client.clone()),
        config,
        "pending Spark pods",
    );
    let mut events = RaiseEvents::default();
    while let Some(event) = watch.next(&mut stop).await {
        let (Event::Apply(pod) | Event::InitApply(pod)) = event else {
            continue;
        };
        match events.decide(&state, &pod, &reporter, Instant::now()) {
            Decision::Nothing => {}
            Decision::Dropped => {
                metrics.record_policy_event(REASON, EventResult::Dropped);
                tracing::warn!(
                    namespace = pod.metadata.namespace.as_deref().unwrap_or(""),
                    pod = pod.metadata.name.as_deref().unwrap_or(""),
                    "MemoryRaised Event dropped: over {RATE_PER_SECOND} per second"
                );
            }
            Decision::Write(event) => {
                let namespace = event.metadata.namespace.clone().unwrap_or_default();
                let api: Api<KubeEvent> = Api::namespaced(client.clone(), &namespace);
                match api.create(&PostParams::default(), &event).await {
                    Ok(_) => metrics.record_policy_event(REASON, EventResult::Sent),
                    // Another replica (or this one before a restart) wrote it.
                    Err(kube::Error::Api(s)) if s.is_already_exists() => {}
                    Err(e) => {
                        metrics.record_policy_event(REASON, EventResult::Failed);
                        tracing::warn!(error = %e, namespace = namespace.as_str(), "MemoryRaised Event not recorded");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryConfig, Shard};
    use crate::memory_on_oom::RememberedMemory;
    use crate::spark::ContainerNames;
    use std::time::Duration;

    fn state_with(key: &str) -> MemoryState {
        let state = MemoryState::new(MemoryConfig::default(), ContainerNames::default(), None);
        let entry = RememberedMemory {
            memory: 4320 << 20,
            from: 3456 << 20,
            oom_pod: "app-exec-1".into(),
            oom_at: now() - 10,
            expires: now() + 1000,
        };
        let index = state.shard_of(key);
        state.install(
            index,
            Shard {
                resource_version: Some("1".into()),
                entries: [(key.to_owned(), entry)].into_iter().collect(),
                bytes: 10,
            },
        );
        state
    }

    fn pod(uid: &str, annotated: bool) -> Pod {
        let mut annotations = serde_json::Map::new();
        if annotated {
            annotations.insert(RAISED_ANNOTATION.into(), "tenant text".into());
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("app-exec-{uid}"), "namespace": "team-a", "uid": uid,
                "labels": {"spark-role": "executor", "spark-app-name": "app"},
                "annotations": annotations},
            "spec": {"containers": [{"name": "spark-kubernetes-executor"}]}
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn one_event_per_raised_pod_from_the_state_and_a_bounded_rate() {
        let state = state_with("team-a/executor/name:app");
        let reporter = Reporter::new(Some("replica-1".into()));
        let mut events = RaiseEvents::default();
        let t0 = Instant::now();
        let Decision::Write(ev) = events.decide(&state, &pod("u1", true), &reporter, t0) else {
            panic!("a raised pod gets an Event")
        };
        assert_eq!(ev.metadata.name.as_deref(), Some("u1.memory-raised"));
        assert_eq!(ev.metadata.namespace.as_deref(), Some("team-a"));
        let regarding = ev.regarding.clone().unwrap_or_default();
        assert_eq!(regarding.uid.as_deref(), Some("u1"));
        let note = ev.note.clone().unwrap_or_default();
        assert!(
            note.contains("3456Mi to 4320Mi") && note.contains("app-exec-1"),
            "{note}"
        );
        assert!(
            !note.contains("tenant text"),
            "the note comes from the state"
        );
        // The same pod again (an update while pending, a relist): nothing.
        assert_eq!(
            events.decide(&state, &pod("u1", true), &reporter, t0),
            Decision::Nothing
        );
        // Not annotated, or an application without a raise: nothing.
        assert_eq!(
            events.decide(&state, &pod("u2", false), &reporter, t0),
            Decision::Nothing
        );
        let other = state_with("team-a/executor/name:other");
        assert_eq!(
            events.decide(&other, &pod("u3", true), &reporter, t0),
            Decision::Nothing
        );
        // A flood: at most the burst at once, then the rate.
        let written = (0..200)
            .filter(|i| {
                matches!(
                    events.decide(&state, &pod(&format!("f{i}"), true), &reporter, t0),
                    Decision::Write(_)
                )
            })
            .count();
        assert_eq!(written, BURST as usize - 1);
        let later = t0 + Duration::from_secs(2);
        let more = (0..200)
            .filter(|i| {
                matches!(
                    events.decide(&state, &pod(&format!("g{i}"), true), &reporter, later),
                    Decision::Write(_)
                )
            })
            .count();
        assert_eq!(more, (2.0 * RATE_PER_SECOND) as usize);
    }
}
