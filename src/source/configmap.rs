//! Policies from labelled ConfigMaps in one admin namespace, kept current by a kube-rs
//! `watcher` (list, then watch; relist after a desync; backoff on errors), never by a GET
//! per admission request.
//!
//! [`ConfigMapPolicies`] is the state (no I/O): per ConfigMap, per data key, the last good
//! policies and the current errors. A broken key keeps its last good version; a key or a
//! ConfigMap that disappears takes its policies with it. [`ConfigMapWatcher`] drives it
//! from the watch stream, compiles on the blocking pool (off the request path), installs
//! a new [`PolicySet`] into the [`PolicyStore`] in one atomic swap, and reports problems
//! to the log, the metrics and as Kubernetes Events on the ConfigMap concerned.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use tokio::sync::mpsc;

use super::events::{EventPublisher, PolicyEvent, Reporter};
use super::install::{bounded, Gate, Installer, LIST_IN_NOTE, NAMES_PER_LINE};
use super::PolicyStore;
use crate::matching::PolicySet;
use crate::metrics::{EventResult, Metrics, ReloadResult};
use crate::policy::{parse_documents, CompiledPolicy, PolicyError, PolicySource};

/// The label that marks a ConfigMap as holding policies (value `"true"`).
pub const POLICY_LABEL: &str = "spark-admission.io/policy";
/// The value [`POLICY_LABEL`] must have.
pub const POLICY_LABEL_VALUE: &str = "true";

/// Event reasons, as `kubectl describe configmap` shows them.
pub const REASON_INVALID: &str = "PolicyInvalid";
pub const REASON_LOADED: &str = "PolicyLoaded";
pub const REASON_DUPLICATE: &str = "PolicyDuplicate";
/// Every reason this source sends Events with.
pub const EVENT_REASONS: [&str; 3] = [REASON_INVALID, REASON_LOADED, REASON_DUPLICATE];

/// Events waiting to be sent; beyond this, new ones are dropped (and counted): the API
/// server being slow must never hold up policy reloads.
const EVENT_QUEUE: usize = 256;

/// The label selector of the watch: `spark-admission.io/policy=true`.
pub fn label_selector() -> String {
    format!("{POLICY_LABEL}={POLICY_LABEL_VALUE}")
}

/// Data keys that hold policies: names ending in `.yaml` or `.yml`.
pub fn is_policy_key(key: &str) -> bool {
    key.ends_with(".yaml") || key.ends_with(".yml")
}

/// True when the ConfigMap carries the policy label with the value `"true"`.
pub fn has_policy_label(cm: &ConfigMap) -> bool {
    cm.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(POLICY_LABEL))
        .is_some_and(|v| v == POLICY_LABEL_VALUE)
}

/// How the origins of a ConfigMap's policies start: `configmap NS/NAME `.
pub fn origin_prefix(namespace: &str, name: &str) -> String {
    format!("configmap {namespace}/{name} ")
}

/// The source of one ConfigMap key: its policies' origins read
/// `configmap NS/NAME KEY#DOC (POLICY)`.
pub fn key_source(namespace: &str, name: &str, key: &str) -> PolicySource {
    PolicySource(format!("{}{key}", origin_prefix(namespace, name)))
}

#[derive(Debug)]
struct KeyState {
    content_hash: u64,
    /// The last version of this key that loaded without error (empty if none ever did).
    good: Vec<Arc<CompiledPolicy>>,
    /// Errors of the current content, if it is broken.
    errors: Vec<PolicyError>,
}

#[derive(Debug)]
struct MapState {
    reference: ObjectReference,
    keys: BTreeMap<String, KeyState>,
}

impl MapState {
    fn errors(&self) -> impl Iterator<Item = &PolicyError> {
        self.keys.values().flat_map(|k| k.errors.iter())
    }

    fn good(&self) -> impl Iterator<Item = &Arc<CompiledPolicy>> {
        self.keys.values().flat_map(|k| k.good.iter())
    }
}

/// What one ConfigMap's new content led to.
#[derive(Debug, Clone)]
pub struct MapReport {
    pub name: String,
    /// The ConfigMap, for an Event about it.
    pub reference: ObjectReference,
    /// Keys parsed again because their content changed.
    pub reparsed: usize,
    /// Every error of the ConfigMap's current content (all keys).
    pub errors: Vec<PolicyError>,
    /// Tags (`name@hash`) of this ConfigMap's policies now in the good set.
    pub serving: Vec<String>,
}

/// What applying one watch event found.
#[derive(Debug, Default)]
pub struct Update {
    /// The set of good policies changed: a new snapshot should be installed.
    pub changed: bool,
    /// ConfigMaps whose content was looked at.
    pub maps: Vec<MapReport>,
    /// ConfigMaps gone (deleted, unlabelled, or missing from a relist).
    pub removed: Vec<String>,
}

/// One policy name defined in more than one place; the alphabetically first origin wins
/// (the rule of [`PolicySet::new`]), so every replica picks the same one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duplicate {
    pub name: String,
    /// (ConfigMap, origin) of the definition in use.
    pub used: (String, String),
    /// (ConfigMap, origin) of the ignored definitions.
    pub ignored: Vec<(String, String)>,
}

/// The policies of every labelled ConfigMap in one namespace; no I/O.
#[derive(Debug)]
pub struct ConfigMapPolicies {
    namespace: String,
    maps: BTreeMap<String, MapState>,
    /// Between `Init` and `InitDone`: the ConfigMaps the (re)list has delivered so far.
    relisting: Option<BTreeSet<String>>,
    /// A complete list has been received at least once.
    listed: bool,
}

impl ConfigMapPolicies {
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            maps: BTreeMap::new(),
            relisting: None,
            listed: false,
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A complete list has been received and no relist is in progress: the state mirrors
    /// the API server's and may be installed.
    pub fn settled(&self) -> bool {
        self.listed && self.relisting.is_none()
    }

    /// Applies one watch event.
    pub fn apply(&mut self, event: watcher::Event<ConfigMap>) -> Update {
        let mut update = Update::default();
        match event {
            watcher::Event::Init => self.relisting = Some(BTreeSet::new()),
            watcher::Event::InitApply(cm) => {
                if let (Some(seen), Some(name)) = (&mut self.relisting, cm.metadata.name.clone()) {
                    seen.insert(name);
                }
                self.upsert(&cm, &mut update);
            }
            watcher::Event::InitDone => {
                // Whatever the relist did not return was deleted while we were not watching.
                if let Some(seen) = self.relisting.take() {
                    let gone: Vec<String> = self
                        .maps
                        .keys()
                        .filter(|n| !seen.contains(*n))
                        .cloned()
                        .collect();
                    for name in gone {
                        self.remove(&name, &mut update);
                    }
                }
                self.listed = true;
            }
            watcher::Event::Apply(cm) => self.upsert(&cm, &mut update),
            watcher::Event::Delete(cm) => {
                if let Some(name) = &cm.metadata.name {
                    self.remove(name, &mut update);
                }
            }
        }
        update
    }

    fn remove(&mut self, name: &str, update: &mut Update) {
        if let Some(old) = self.maps.remove(name) {
            update.changed |= old.good().next().is_some();
            update.removed.push(name.to_owned());
        }
    }

    fn upsert(&mut self, cm: &ConfigMap, update: &mut Update) {
        let Some(name) = cm.metadata.name.clone() else {
            return;
        };
        // The watch selects on the label; an object without it (a selector-less stand-in,
        // or a label removed in a race) holds no policies.
        if !has_policy_label(cm) {
            self.remove(&name, update);
            return;
        }
        let namespace = self.namespace.clone();
        let empty = BTreeMap::new();
        let data = cm.data.as_ref().unwrap_or(&empty);
        let state = self.maps.entry(name.clone()).or_insert_with(|| MapState {
            reference: ObjectReference::default(),
            keys: BTreeMap::new(),
        });
        state.reference = cm.object_ref(&());
        // The resource version makes each Event point at the version it is about.
        state.reference.resource_version = cm.metadata.resource_version.clone();

        // Keys gone from the data take their policies with them. Unlike a file, whose
        // non-atomic write is briefly empty, a ConfigMap changes atomically: an emptied or
        // removed key is what the admin meant.
        state.keys.retain(|k, s| {
            let keep = is_policy_key(k) && data.contains_key(k);
            update.changed |= !keep && !s.good.is_empty();
            keep
        });
        let mut reparsed = 0;
        for (key, text) in data.iter().filter(|(k, _)| is_policy_key(k)) {
            let content_hash = hash_text(text);
            if state
                .keys
                .get(key)
                .is_some_and(|s| s.content_hash == content_hash)
            {
                continue;
            }
            reparsed += 1;
            let parsed = parse_documents(&key_source(&namespace, &name, key), text);
            let key_state = state.keys.entry(key.clone()).or_insert_with(|| KeyState {
                content_hash,
                good: Vec::new(),
                errors: Vec::new(),
            });
            key_state.content_hash = content_hash;
            match parsed {
                Ok(policies) => {
                    key_state.good = policies.into_iter().map(Arc::new).collect();
                    key_state.errors.clear();
                    update.changed = true;
                }
                Err(errors) => key_state.errors = errors,
            }
        }
        update.maps.push(MapReport {
            name,
            reference: state.reference.clone(),
            reparsed,
            errors: state.errors().cloned().collect(),
            serving: state.good().map(|p| p.tag.clone()).collect(),
        });
    }

    /// Every error of the current contents, ConfigMap by ConfigMap.
    pub fn errors(&self) -> Vec<PolicyError> {
        self.maps
            .values()
            .flat_map(|m| m.errors().cloned())
            .collect()
    }

    /// A snapshot of every good policy.
    pub fn policy_set(&self) -> PolicySet {
        PolicySet::new(self.maps.values().flat_map(|m| m.good().cloned()))
    }

    /// Policy names defined more than once among the good policies.
    pub fn duplicates(&self) -> Vec<Duplicate> {
        let mut by_name: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
        for (map, state) in &self.maps {
            for p in state.good() {
                by_name
                    .entry(p.name.as_str())
                    .or_default()
                    .push((p.origin.clone(), map.clone()));
            }
        }
        by_name
            .into_iter()
            .filter(|(_, defs)| defs.len() > 1)
            .map(|(name, mut defs)| {
                // Same order as PolicySet::new: by origin.
                defs.sort();
                let mut defs = defs.into_iter().map(|(origin, map)| (map, origin));
                let used = defs.next().unwrap_or_default();
                Duplicate {
                    name: name.to_owned(),
                    used,
                    ignored: defs.collect(),
                }
            })
            .collect()
    }

    /// The reference of a ConfigMap currently known, for an Event about it.
    pub fn reference(&self, name: &str) -> Option<&ObjectReference> {
        self.maps.get(name).map(|m| &m.reference)
    }
}

fn hash_text(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// Turns watch events into installed policy sets, log lines, metrics and Events.
#[derive(Debug)]
struct Reloader {
    policies: ConfigMapPolicies,
    installer: Installer,
    metrics: Arc<Metrics>,
    /// Duplicates already reported, so each is logged and sent as an Event once.
    reported_duplicates: BTreeSet<Duplicate>,
    /// This replica's Pod: the `PolicyLoaded` Event of each install is about it.
    replica: ObjectReference,
}

impl Reloader {
    fn new(
        namespace: &str,
        store: Arc<PolicyStore>,
        metrics: Arc<Metrics>,
        replica: ObjectReference,
    ) -> Self {
        Self {
            policies: ConfigMapPolicies::new(namespace),
            installer: Installer::new(
                store,
                Arc::clone(&metrics),
                format!("ConfigMaps in {namespace}"),
            ),
            metrics,
            reported_duplicates: BTreeSet::new(),
            replica,
        }
    }

    /// Applies one event; returns the Events to publish.
    fn handle(&mut self, event: watcher::Event<ConfigMap>) -> Vec<PolicyEvent> {
        let ns = self.policies.namespace().to_owned();
        let update = self.policies.apply(event);
        self.installer.changed(update.changed);
        if update.changed {
            self.installer.change_seen();
        }
        let errors = self.policies.errors();
        self.metrics.set_policy_errors(errors.len());
        let mut out = Vec::new();

        let mut rejected = false;
        for map in update.maps.iter().filter(|m| m.reparsed > 0) {
            if map.errors.is_empty() {
                // Cut like the install's line (a ConfigMap can hold thousands of
                // policies); the install's lines name them all.
                tracing::info!(
                    configmap = %format!("{ns}/{}", map.name),
                    count = map.serving.len(),
                    policies = bounded(&map.serving, NAMES_PER_LINE).as_str(),
                    "policy ConfigMap read"
                );
                // Not during a (re)list: every replica would describe every ConfigMap on
                // each start.
                if self.policies.settled() {
                    out.push(PolicyEvent::normal(
                        map.reference.clone(),
                        REASON_LOADED,
                        format!("policies in use: {}", bounded(&map.serving, LIST_IN_NOTE)),
                    ));
                }
                continue;
            }
            rejected = true;
            for e in &map.errors {
                tracing::error!(
                    configmap = %format!("{ns}/{}", map.name),
                    error = %e,
                    "policy rejected; its last good version (if any) keeps serving"
                );
            }
            out.push(PolicyEvent::warning(
                map.reference.clone(),
                REASON_INVALID,
                invalid_note(&ns, &map.name, &map.errors, &map.serving),
            ));
        }
        for name in &update.removed {
            tracing::info!(configmap = %format!("{ns}/{name}"), "policy ConfigMap removed; its policies no longer apply");
        }

        match self.installer.gate(self.policies.settled(), errors.len()) {
            Gate::Wait => {
                if rejected {
                    self.metrics.record_policy_reload(ReloadResult::Rejected);
                }
            }
            Gate::Unready => {
                tracing::error!(
                    namespace = ns.as_str(),
                    errors = errors.len(),
                    "policy ConfigMaps have errors: the webhook stays unready until they are fixed"
                );
                self.metrics.record_policy_reload(ReloadResult::Rejected);
            }
            Gate::Install => {
                let set = self.policies.policy_set();
                out.extend(self.report_duplicates());
                let serving = self.installer.install(set, errors.len());
                // About this replica's Pod, at start and on every change: after a rollout,
                // `kubectl get events` says what each replica serves.
                let mut pod = self.replica.clone();
                if pod.namespace.is_none() {
                    pod.namespace = Some(ns.clone());
                }
                out.push(PolicyEvent::normal(pod, REASON_LOADED, serving));
            }
        }
        out
    }

    /// Logs new duplicates and returns an Event for every ConfigMap involved.
    fn report_duplicates(&mut self) -> Vec<PolicyEvent> {
        let now: BTreeSet<Duplicate> = self.policies.duplicates().into_iter().collect();
        let mut out = Vec::new();
        for d in now.difference(&self.reported_duplicates) {
            let ignored: Vec<&str> = d.ignored.iter().map(|(_, o)| o.as_str()).collect();
            tracing::warn!(
                policy = d.name.as_str(),
                used = d.used.1.as_str(),
                ignored = ignored.join(", ").as_str(),
                "policy defined more than once; the alphabetically first origin is used"
            );
            if let Some(r) = self.policies.reference(&d.used.0) {
                out.push(PolicyEvent::warning(
                    r.clone(),
                    REASON_DUPLICATE,
                    format!(
                        "policy \"{}\" is also defined in {}; this definition ({}) is used because its origin sorts first",
                        d.name,
                        ignored.join(", "),
                        d.used.1
                    ),
                ));
            }
            for (map, origin) in &d.ignored {
                if let Some(r) = self.policies.reference(map) {
                    out.push(PolicyEvent::warning(
                        r.clone(),
                        REASON_DUPLICATE,
                        format!(
                            "policy \"{}\" is ignored here ({origin}): {} defines it too and is used; rename one of them",
                            d.name, d.used.1
                        ),
                    ));
                }
            }
        }
        self.reported_duplicates = now;
        out
    }
}

/// Bytes of the served list in a `PolicyInvalid` note: the errors come after it.
const SERVING_IN_INVALID_NOTE: usize = 256;

/// The note of a `PolicyInvalid` Event: each error as `key#doc (name): /path: message`,
/// after the policies still served, cut short so that the errors fit the note's 1 KiB.
fn invalid_note(namespace: &str, name: &str, errors: &[PolicyError], serving: &[String]) -> String {
    let prefix = origin_prefix(namespace, name);
    let lines: Vec<String> = errors
        .iter()
        .map(|e| {
            let origin = e.origin.strip_prefix(&prefix).unwrap_or(&e.origin);
            format!("{origin}: {}: {}", e.path, e.message)
        })
        .collect();
    format!(
        "{} error(s), the broken keys are not applied (still serving: {}): {}",
        errors.len(),
        bounded(serving, SERVING_IN_INVALID_NOTE),
        lines.join("; ")
    )
}

/// Watches the policy ConfigMaps of one namespace and keeps the store current.
pub struct ConfigMapWatcher {
    client: Client,
    namespace: String,
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    reporter: Reporter,
}

impl std::fmt::Debug for ConfigMapWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigMapWatcher")
            .field("namespace", &self.namespace)
            .field("reporter", &self.reporter)
            .finish_non_exhaustive()
    }
}

impl ConfigMapWatcher {
    pub fn new(
        client: Client,
        namespace: impl Into<String>,
        store: Arc<PolicyStore>,
        metrics: Arc<Metrics>,
        reporter: Reporter,
    ) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            store,
            metrics,
            reporter,
        }
    }

    /// Lists, then watches, until `stop` resolves. Errors never end it: the watcher
    /// retries with backoff (0.8 s doubling to 30 s) and relists after a desync, while
    /// the last installed set keeps serving.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let config = watcher::Config::default().labels(&label_selector());
        let stream = watcher(api, config).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut stop = std::pin::pin!(stop);

        self.metrics.init_policy_events(&EVENT_REASONS);
        let (events, queue) = mpsc::channel(EVENT_QUEUE);
        let publisher = EventPublisher::new(
            self.client.clone(),
            self.reporter.clone(),
            Arc::clone(&self.metrics),
        );
        let sender = tokio::spawn(publisher.run(queue));
        let reloader = Arc::new(Mutex::new(Reloader::new(
            &self.namespace,
            Arc::clone(&self.store),
            Arc::clone(&self.metrics),
            self.reporter.pod.clone(),
        )));
        let mut failing = false;
        tracing::info!(
            namespace = self.namespace.as_str(),
            selector = label_selector().as_str(),
            "watching policy ConfigMaps"
        );
        loop {
            let next = tokio::select! {
                biased;
                () = &mut stop => break,
                next = stream.next() => next,
            };
            match next {
                Some(Ok(event)) => {
                    if failing {
                        tracing::info!(
                            namespace = self.namespace.as_str(),
                            "policy ConfigMap watch recovered"
                        );
                        failing = false;
                    }
                    let reloader = Arc::clone(&reloader);
                    // Parsing and compiling are CPU work: the blocking pool keeps them off
                    // the async workers that answer reviews.
                    let handled = tokio::task::spawn_blocking(move || {
                        // A panic in an earlier reload leaves the state as it was; go on.
                        let mut state = reloader.lock().unwrap_or_else(PoisonError::into_inner);
                        state.handle(event)
                    })
                    .await;
                    match handled {
                        Ok(to_publish) => {
                            for ev in to_publish {
                                if let Err(e) = events.try_send(ev) {
                                    let reason = match &e {
                                        mpsc::error::TrySendError::Full(ev)
                                        | mpsc::error::TrySendError::Closed(ev) => ev.reason,
                                    };
                                    self.metrics
                                        .record_policy_event(reason, EventResult::Dropped);
                                    tracing::warn!("Event queue full; an Event was dropped");
                                }
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "policy reload failed; the current policies keep serving")
                        }
                    }
                }
                Some(Err(e)) => {
                    self.metrics.record_policy_watch_error();
                    if !failing {
                        self.metrics.record_policy_reload(ReloadResult::Failed);
                        failing = true;
                    }
                    tracing::warn!(
                        namespace = self.namespace.as_str(),
                        error = %e,
                        "policy ConfigMap watch failed; retrying with backoff, the current policies keep serving"
                    );
                }
                // The watcher stream never ends by itself.
                None => break,
            }
        }
        drop(events);
        // Events still queued at shutdown are not worth delaying the exit for.
        sender.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const GOOD: &str = "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {name: NAME}\nspec: {namespaces: [team-a]}\n";
    const BROKEN: &str = "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {name: NAME}\nspec: {namespaces: 42}\n";

    fn cm(name: &str, labelled: bool, data: &[(&str, &str)]) -> ConfigMap {
        let mut labels = BTreeMap::new();
        if labelled {
            labels.insert(POLICY_LABEL.to_owned(), POLICY_LABEL_VALUE.to_owned());
        }
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("admin".to_owned()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ConfigMap::default()
        }
    }

    fn names(p: &ConfigMapPolicies) -> Vec<String> {
        p.policy_set()
            .policies()
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    fn listed(p: &mut ConfigMapPolicies, maps: Vec<ConfigMap>) {
        p.apply(watcher::Event::Init);
        for m in maps {
            p.apply(watcher::Event::InitApply(m));
        }
        p.apply(watcher::Event::InitDone);
    }

    #[test]
    fn a_broken_key_keeps_its_last_good_version_and_other_keys_still_change() {
        let mut p = ConfigMapPolicies::new("admin");
        let a = GOOD.replace("NAME", "a");
        let b = GOOD.replace("NAME", "b");
        listed(
            &mut p,
            vec![cm("m", true, &[("a.yaml", &a), ("b.yml", &b)])],
        );
        assert!(p.settled());
        assert_eq!(names(&p), ["a", "b"]);

        let broken = BROKEN.replace("NAME", "a");
        let b2 = GOOD.replace("NAME", "b2");
        let u = p.apply(watcher::Event::Apply(cm(
            "m",
            true,
            &[("a.yaml", &broken), ("b.yml", &b2)],
        )));
        assert!(u.changed);
        assert_eq!(u.maps[0].reparsed, 2);
        assert_eq!(u.maps[0].errors.len(), 1);
        assert_eq!(u.maps[0].errors[0].path, "/spec/namespaces");
        assert!(u.maps[0].errors[0]
            .origin
            .starts_with("configmap admin/m a.yaml#1 (a)"));
        assert_eq!(names(&p), ["a", "b2"]);
    }

    #[test]
    fn keys_that_are_not_yaml_are_ignored_and_removed_keys_take_their_policies() {
        let mut p = ConfigMapPolicies::new("admin");
        let a = GOOD.replace("NAME", "a");
        listed(
            &mut p,
            vec![cm("m", true, &[("a.yaml", &a), ("notes.txt", "hello")])],
        );
        assert_eq!(names(&p), ["a"]);
        let u = p.apply(watcher::Event::Apply(cm("m", true, &[("notes.txt", "x")])));
        assert!(u.changed);
        assert!(names(&p).is_empty());
    }

    #[test]
    fn a_relist_drops_configmaps_deleted_while_disconnected() {
        let mut p = ConfigMapPolicies::new("admin");
        let a = GOOD.replace("NAME", "a");
        let b = GOOD.replace("NAME", "b");
        listed(
            &mut p,
            vec![
                cm("m1", true, &[("a.yaml", &a)]),
                cm("m2", true, &[("b.yaml", &b)]),
            ],
        );
        p.apply(watcher::Event::Init);
        assert!(!p.settled(), "a relist in progress is not installable");
        let u = p.apply(watcher::Event::InitApply(cm("m2", true, &[("b.yaml", &b)])));
        assert_eq!(
            u.maps[0].reparsed, 0,
            "unchanged content is not parsed again"
        );
        let u = p.apply(watcher::Event::InitDone);
        assert_eq!(u.removed, ["m1"]);
        assert!(u.changed);
        assert_eq!(names(&p), ["b"]);
    }

    #[test]
    fn an_unlabelled_configmap_holds_no_policies() {
        let mut p = ConfigMapPolicies::new("admin");
        let a = GOOD.replace("NAME", "a");
        listed(&mut p, vec![cm("m", true, &[("a.yaml", &a)])]);
        let u = p.apply(watcher::Event::Apply(cm("m", false, &[("a.yaml", &a)])));
        assert!(u.changed);
        assert!(names(&p).is_empty());
    }

    #[test]
    fn duplicates_name_the_definition_in_use_the_same_way_policy_set_does() {
        let mut p = ConfigMapPolicies::new("admin");
        let x = GOOD.replace("NAME", "x");
        listed(
            &mut p,
            vec![
                cm("zz", true, &[("x.yaml", &x)]),
                cm("aa", true, &[("x.yaml", &x)]),
            ],
        );
        let d = p.duplicates();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].used.0, "aa");
        assert_eq!(d[0].ignored[0].0, "zz");
        let set = p.policy_set();
        assert_eq!(set.len(), 1);
        assert!(set.policies()[0].origin.contains("admin/aa"));
        assert_eq!(set.warnings.len(), 1);
    }

    /// A ConfigMap of 200 policies with one broken: `kubectl describe configmap` must show
    /// the error, though the API server cuts an Event's note at 1 KiB and the policies
    /// still served are listed before it.
    #[test]
    fn a_broken_key_beside_many_policies_keeps_its_error_within_the_events_note() {
        let store = Arc::new(PolicyStore::new());
        let replica = Reporter::new(Some("replica-1".to_owned()));
        let mut r = Reloader::new(
            "admin",
            Arc::clone(&store),
            Arc::new(Metrics::new()),
            replica.pod.clone(),
        );
        let good: Vec<(String, String)> = (0..200)
            .map(|i| {
                let name = format!("team-{i:03}-defaults");
                (format!("{name}.yaml"), GOOD.replace("NAME", &name))
            })
            .collect();
        let mut data: Vec<(&str, &str)> =
            good.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let broken = BROKEN.replace("NAME", "zz-broken");
        data.push(("zz-broken.yaml", &broken));
        r.handle(watcher::Event::Init);
        r.handle(watcher::Event::InitApply(cm("m", true, &data[..1])));
        r.handle(watcher::Event::InitDone);
        // The ConfigMap's PolicyLoaded note names the policies in use, cut with a count.
        let loaded = r.handle(watcher::Event::Apply(cm("m", true, &data[..200])));
        assert_eq!(store.snapshot().len(), 200);
        let note = loaded
            .iter()
            .find(|e| e.reason == REASON_LOADED && e.regarding.kind.as_deref() != Some("Pod"))
            .expect("a PolicyLoaded Event")
            .note
            .clone();
        assert!(note.len() <= 1024, "{}", note.len());
        assert!(
            note.starts_with("policies in use: team-000-defaults@"),
            "{note}"
        );
        assert!(note.ends_with(" more"), "{note}");
        let events = r.handle(watcher::Event::Apply(cm("m", true, &data)));
        let invalid = events
            .iter()
            .find(|e| e.reason == REASON_INVALID)
            .expect("a PolicyInvalid Event");
        let note = invalid
            .to_event(&replica, k8s_openapi::jiff::Timestamp::now())
            .note
            .unwrap_or_default();
        assert!(note.len() <= 1024, "{}", note.len());
        assert!(
            note.contains("zz-broken.yaml#1 (zz-broken): /spec/namespaces: "),
            "{note}"
        );
        assert!(note.contains(" more)"), "{note}");
    }

    #[test]
    fn the_first_install_waits_for_a_complete_good_list() {
        let store = Arc::new(PolicyStore::new());
        let replica = Reporter::new(Some("replica-1".to_owned())).pod;
        let mut r = Reloader::new(
            "admin",
            Arc::clone(&store),
            Arc::new(Metrics::new()),
            replica,
        );
        let broken = BROKEN.replace("NAME", "a");
        r.handle(watcher::Event::Init);
        let events = r.handle(watcher::Event::InitApply(cm(
            "m",
            true,
            &[("a.yaml", &broken)],
        )));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, REASON_INVALID);
        assert!(
            events[0].note.contains("a.yaml#1 (a): /spec/namespaces: "),
            "{}",
            events[0].note
        );
        assert!(!store.is_loaded());
        r.handle(watcher::Event::InitDone);
        assert!(!store.is_loaded(), "broken at startup: stays unready");
        let good = GOOD.replace("NAME", "a");
        let events = r.handle(watcher::Event::Apply(cm("m", true, &[("a.yaml", &good)])));
        assert!(store.is_loaded());
        assert_eq!(store.snapshot().len(), 1);
        assert_eq!(events[0].reason, REASON_LOADED);
        // The ConfigMap's Event, then the replica's: what it serves now, with versions.
        let tag = store.snapshot().policies()[0].tag.clone();
        let about_pod: Vec<&PolicyEvent> = events
            .iter()
            .filter(|e| e.regarding.kind.as_deref() == Some("Pod"))
            .collect();
        assert_eq!(about_pod.len(), 1);
        assert_eq!(about_pod[0].reason, REASON_LOADED);
        assert_eq!(about_pod[0].regarding.name.as_deref(), Some("replica-1"));
        assert_eq!(about_pod[0].regarding.namespace.as_deref(), Some("admin"));
        assert_eq!(about_pod[0].note, format!("serving 1 policies: {tag}"));
    }

    #[test]
    fn every_install_from_the_first_list_on_names_what_the_replica_serves() {
        let store = Arc::new(PolicyStore::new());
        let replica = Reporter::new(Some("replica-1".to_owned()))
            .in_pod(Some("spark-admission".to_owned()), Some("uid-1".to_owned()))
            .pod;
        let mut r = Reloader::new(
            "admin",
            Arc::clone(&store),
            Arc::new(Metrics::new()),
            replica,
        );
        let a = GOOD.replace("NAME", "a");
        r.handle(watcher::Event::Init);
        r.handle(watcher::Event::InitApply(cm("m", true, &[("a.yaml", &a)])));
        let at_start = r.handle(watcher::Event::InitDone);
        let pod_events = |events: &[PolicyEvent]| -> Vec<String> {
            events
                .iter()
                .filter(|e| e.regarding.kind.as_deref() == Some("Pod"))
                .map(|e| {
                    assert_eq!(e.reason, REASON_LOADED);
                    assert_eq!(e.regarding.namespace.as_deref(), Some("spark-admission"));
                    assert_eq!(e.regarding.uid.as_deref(), Some("uid-1"));
                    e.note.clone()
                })
                .collect()
        };
        let tag_a = store.snapshot().policies()[0].tag.clone();
        assert_eq!(
            pod_events(&at_start),
            [format!("serving 1 policies: {tag_a}")]
        );
        // A broken edit installs nothing: no new PolicyLoaded about the Pod.
        let broken = BROKEN.replace("NAME", "a");
        let rejected = r.handle(watcher::Event::Apply(cm("m", true, &[("a.yaml", &broken)])));
        assert!(pod_events(&rejected).is_empty());
        // A second ConfigMap goes live: the Event lists both, with the kept version of a.
        let b = GOOD.replace("NAME", "b");
        let changed = r.handle(watcher::Event::Apply(cm("n", true, &[("b.yaml", &b)])));
        let tags: Vec<String> = store
            .snapshot()
            .policies()
            .iter()
            .map(|p| p.tag.clone())
            .collect();
        assert_eq!(tags[0], tag_a);
        assert_eq!(
            pod_events(&changed),
            [format!(
                "serving 2 policies: {}, {} (1 rejected document(s) keep their last good version)",
                tags[0], tags[1]
            )]
        );
    }
}
