//! Kubernetes Events (`events.k8s.io/v1`) about policy ConfigMaps, so that
//! `kubectl describe configmap` says why a policy is not in force.
//!
//! Not kube's `Recorder`: it folds repeats of the same reason on the same object into a
//! series that keeps the first message, and a second broken edit must show its own errors.
//! Each Event here is created once (RBAC: `create` only) and the caller sends one per
//! content change, never one per relist.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::mpsc;

use crate::metrics::{EventResult, Metrics};
use std::sync::Arc;

/// `reportingController` of every Event (a qualified name, as the API server requires).
pub const REPORTING_CONTROLLER: &str = "spark-admission.io/webhook";
/// `action` of every Event: what the webhook was doing.
pub const ACTION: &str = "LoadPolicies";
/// The API server refuses longer notes.
const NOTE_LIMIT: usize = 1024;
/// The API server refuses a longer `reportingInstance`.
const INSTANCE_LIMIT: usize = 128;

/// Who reports: the controller and this replica (the pod name).
#[derive(Debug, Clone, PartialEq)]
pub struct Reporter {
    pub controller: String,
    pub instance: String,
    /// The replica's own Pod, which Events about what this replica serves are about.
    pub pod: ObjectReference,
}

impl Reporter {
    /// This replica: `instance` when given (the pod name), else `spark-admission`.
    pub fn new(instance: Option<String>) -> Self {
        let instance = instance
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| "spark-admission".to_owned());
        let pod = ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Pod".to_owned()),
            name: Some(instance.clone()),
            ..ObjectReference::default()
        };
        let mut instance = instance;
        truncate(&mut instance, INSTANCE_LIMIT);
        Self {
            controller: REPORTING_CONTROLLER.to_owned(),
            instance,
            pod,
        }
    }

    /// The Pod's namespace (`POD_NAMESPACE`) and uid (`POD_UID`): with the uid,
    /// `kubectl describe pod` lists the Events about it.
    pub fn in_pod(mut self, namespace: Option<String>, uid: Option<String>) -> Self {
        self.pod.namespace = namespace.filter(|n| !n.is_empty());
        self.pod.uid = uid.filter(|u| !u.is_empty());
        self
    }
}

/// `Normal` or `Warning`, as `kubectl describe` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One Event to publish about an object.
#[derive(Debug, Clone)]
pub struct PolicyEvent {
    pub regarding: ObjectReference,
    pub type_: EventType,
    pub reason: &'static str,
    pub note: String,
}

impl PolicyEvent {
    pub fn normal(regarding: ObjectReference, reason: &'static str, note: String) -> Self {
        Self {
            regarding,
            type_: EventType::Normal,
            reason,
            note,
        }
    }

    pub fn warning(regarding: ObjectReference, reason: &'static str, note: String) -> Self {
        Self {
            regarding,
            type_: EventType::Warning,
            reason,
            note,
        }
    }

    /// The `events.k8s.io/v1` object, created in the namespace of the object it is about.
    pub fn to_event(&self, reporter: &Reporter, now: Timestamp) -> Event {
        let mut note = self.note.clone();
        truncate(&mut note, NOTE_LIMIT);
        let object = self.regarding.name.as_deref().unwrap_or("spark-admission");
        Event {
            metadata: ObjectMeta {
                // Unique per object and instant, like the Events kubectl and kube-rs create.
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                namespace: self.regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(ACTION.to_owned()),
            reason: Some(self.reason.to_owned()),
            note: Some(note),
            regarding: Some(self.regarding.clone()),
            reporting_controller: Some(reporter.controller.clone()),
            reporting_instance: Some(reporter.instance.clone()),
            type_: Some(self.type_.as_str().to_owned()),
            ..Event::default()
        }
    }
}

/// Why an Event could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create Event {reason} for {object}: {error}")]
pub struct EventError {
    pub reason: &'static str,
    pub object: String,
    pub error: kube::Error,
}

/// Creates Events through the API server.
pub struct EventPublisher {
    client: Client,
    reporter: Reporter,
    metrics: Arc<Metrics>,
}

impl EventPublisher {
    pub fn new(client: Client, reporter: Reporter, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            reporter,
            metrics,
        }
    }

    pub async fn publish(&self, ev: &PolicyEvent) -> Result<(), EventError> {
        let namespace = ev.regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let event = ev.to_event(&self.reporter, Timestamp::now());
        api.create(&PostParams::default(), &event)
            .await
            .map(|_| ())
            .map_err(|error| EventError {
                reason: ev.reason,
                object: format!(
                    "configmap {namespace}/{}",
                    ev.regarding.name.as_deref().unwrap_or("")
                ),
                error,
            })
    }

    /// Publishes queued Events one after another until the queue closes. A failure is
    /// logged and counted; the policies are already in force either way.
    pub async fn run(self, mut queue: mpsc::Receiver<PolicyEvent>) {
        while let Some(ev) = queue.recv().await {
            match self.publish(&ev).await {
                Ok(()) => self
                    .metrics
                    .record_policy_event(ev.reason, EventResult::Sent),
                Err(e) => {
                    self.metrics
                        .record_policy_event(ev.reason, EventResult::Failed);
                    tracing::warn!(error = %e, "Event not recorded");
                }
            }
        }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut with `…`.
fn truncate(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut cut = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push('…');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_fit_the_api_limit_on_a_character_boundary() {
        let regarding = ObjectReference {
            name: Some("team".to_owned()),
            namespace: Some("admin".to_owned()),
            ..ObjectReference::default()
        };
        let ev = PolicyEvent::warning(regarding, "PolicyInvalid", "é".repeat(900));
        let event = ev.to_event(&Reporter::new(Some("pod-1".to_owned())), Timestamp::now());
        let note = event.note.unwrap();
        assert!(note.len() <= NOTE_LIMIT);
        assert!(note.ends_with('…'));
        assert_eq!(event.metadata.namespace.as_deref(), Some("admin"));
        assert!(event.metadata.name.unwrap().starts_with("team."));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(
            event.reporting_controller.as_deref(),
            Some(REPORTING_CONTROLLER)
        );
        assert_eq!(event.reporting_instance.as_deref(), Some("pod-1"));
    }
}
