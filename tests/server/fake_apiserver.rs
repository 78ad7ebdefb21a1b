//! A stand-in Kubernetes API server on 127.0.0.1 for the ConfigMap source, speaking just
//! enough of the real protocol for kube-rs' `watcher` and our Event publisher:
//!
//! - `GET /api/v1/namespaces/{ns}/configmaps?labelSelector=k=v` lists (with the current
//!   `resourceVersion`); with `watch=true&resourceVersion=N` it streams newline-separated
//!   watch events after N, then every later change, until the test drops the watch.
//!   Objects that stop matching the selector arrive as DELETED, as from a real API server.
//! - A watch from before [`FakeApiServer::compact`] gets an ERROR event with code 410
//!   (Gone), which makes the client list again.
//! - `POST /apis/events.k8s.io/v1/namespaces/{ns}/events` records the Event.
//! - ConfigMap get, create and replace (with resourceVersion conflicts), and pods of every
//!   namespace listed and watched with label and field selectors, and read one by one (the
//!   driver cache's GET on a miss): see the end of the file.
//!
//! Tests drive it: [`apply`](FakeApiServer::apply), [`delete`](FakeApiServer::delete),
//! [`drop_watches`](FakeApiServer::drop_watches), [`refuse_watches`](FakeApiServer::refuse_watches),
//! [`hold_lists`](FakeApiServer::hold_lists).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

pub const POLICY_SELECTOR: &str = "spark-admission.io/policy=true";

/// One change in the history: `old` None is a creation, `new` None a deletion.
#[derive(Clone)]
struct Change {
    rv: u64,
    old: Option<Value>,
    new: Option<Value>,
}

struct Watcher {
    selector: Option<(String, String)>,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    next_uid: u64,
    /// namespace -> name -> object
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    /// Per namespace, the changes in order.
    history: BTreeMap<String, Vec<Change>>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    watchers: Vec<(String, Watcher)>,
    refuse_watches: bool,
    events: Vec<Value>,
    lists: usize,
    watches: usize,
    /// Pods (cluster-wide list and watch with selectors) and ConfigMap writes.
    pods: Pods,
    configmap_writes: usize,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    /// Lists wait while this is true.
    hold: watch::Sender<bool>,
    /// Pod lists and watches wait while this is true.
    hold_pods: watch::Sender<bool>,
    /// ConfigMap lists selecting on this label key wait while it is set.
    hold_label: watch::Sender<Option<String>>,
}

pub struct FakeApiServer {
    pub addr: SocketAddr,
    shared: Shared,
}

impl FakeApiServer {
    pub async fn start() -> Self {
        let (hold, _) = watch::channel(false);
        let (hold_pods, _) = watch::channel(false);
        let (hold_label, _) = watch::channel(None);
        let shared = Shared {
            inner: Arc::new(Mutex::new(Inner {
                rv: 100,
                ..Inner::default()
            })),
            hold,
            hold_pods,
            hold_label,
        };
        let app = Router::new()
            .route(
                "/api/v1/namespaces/{ns}/configmaps",
                get(configmaps).post(create_configmap),
            )
            .route(
                "/api/v1/namespaces/{ns}/configmaps/{name}",
                get(get_configmap).put(replace_configmap),
            )
            .route("/api/v1/pods", get(pods))
            .route("/api/v1/namespaces/{ns}/pods/{name}", get(get_pod))
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events",
                post(create_event),
            )
            .fallback(|req: axum::extract::Request| async move {
                (
                    StatusCode::NOT_FOUND,
                    format!(
                        "fake API server: no route for {} {}",
                        req.method(),
                        req.uri()
                    ),
                )
            })
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared }
    }

    /// A kube client talking to this server over plain HTTP.
    pub fn client(&self) -> kube::Client {
        let url: http::Uri = format!("http://{}", self.addr).parse().unwrap();
        kube::Client::try_from(kube::Config::new(url)).unwrap()
    }

    /// Creates or replaces a ConfigMap (the object needs metadata.name and namespace).
    pub fn apply(&self, object: Value) {
        let mut inner = self.shared.inner.lock().unwrap();
        upsert(&mut inner, object);
    }
}

/// Stores a ConfigMap as the API server would (uid, new resourceVersion) and returns it.
fn upsert(inner: &mut Inner, mut object: Value) -> Value {
    {
        let ns = object["metadata"]["namespace"].as_str().unwrap().to_owned();
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        inner.rv += 1;
        let rv = inner.rv;
        let old = inner.objects.get(&ns).and_then(|m| m.get(&name)).cloned();
        let uid = match old.as_ref().and_then(|o| o["metadata"]["uid"].as_str()) {
            Some(u) => u.to_owned(),
            None => {
                inner.next_uid += 1;
                format!("00000000-0000-0000-0000-{:012}", inner.next_uid)
            }
        };
        object["apiVersion"] = json!("v1");
        object["kind"] = json!("ConfigMap");
        object["metadata"]["uid"] = json!(uid);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        inner
            .objects
            .entry(ns.clone())
            .or_default()
            .insert(name, object.clone());
        record(
            inner,
            &ns,
            Change {
                rv,
                old,
                new: Some(object.clone()),
            },
        );
        object
    }
}

impl FakeApiServer {
    pub fn delete(&self, namespace: &str, name: &str) {
        let mut inner = self.shared.inner.lock().unwrap();
        let Some(mut old) = inner
            .objects
            .get_mut(namespace)
            .and_then(|m| m.remove(name))
        else {
            return;
        };
        inner.rv += 1;
        let rv = inner.rv;
        old["metadata"]["resourceVersion"] = json!(rv.to_string());
        record(
            &mut inner,
            namespace,
            Change {
                rv,
                old: Some(old),
                new: None,
            },
        );
    }

    /// Ends every open watch stream, as a load balancer or an API server restart does.
    pub fn drop_watches(&self) {
        self.shared.inner.lock().unwrap().watchers.clear();
    }

    /// While true, new watch requests get HTTP 500.
    pub fn refuse_watches(&self, refuse: bool) {
        self.shared.inner.lock().unwrap().refuse_watches = refuse;
    }

    /// Forgets the history: a watch resuming from an older resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        let mut inner = self.shared.inner.lock().unwrap();
        inner.compacted = inner.rv;
        inner.history.clear();
    }

    /// While true, list requests wait (to observe the server before its first list).
    pub fn hold_lists(&self, hold: bool) {
        self.shared.hold.send_replace(hold);
    }

    /// While `Some(key)`, ConfigMap lists selecting on label `key` wait; others are answered.
    pub fn hold_lists_selecting(&self, key: Option<&str>) {
        self.shared.hold_label.send_replace(key.map(str::to_owned));
    }

    /// The Events created so far.
    pub fn events(&self) -> Vec<Value> {
        self.shared.inner.lock().unwrap().events.clone()
    }

    /// Events with this reason about this object.
    pub fn events_for(&self, reason: &str, name: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["reason"] == reason && e["regarding"]["name"] == name)
            .collect()
    }

    /// (lists, watches) requests received.
    pub fn requests(&self) -> (usize, usize) {
        let inner = self.shared.inner.lock().unwrap();
        (inner.lists, inner.watches)
    }
}

/// A ConfigMap object; `labelled` adds `spark-admission.io/policy: "true"`.
pub fn configmap(namespace: &str, name: &str, labelled: bool, data: &[(&str, &str)]) -> Value {
    let mut labels = serde_json::Map::new();
    if labelled {
        labels.insert("spark-admission.io/policy".into(), json!("true"));
    }
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    json!({
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": data,
    })
}

fn record(inner: &mut Inner, ns: &str, change: Change) {
    inner.watchers.retain(|(wns, w)| {
        if wns != ns {
            return !w.tx.is_closed();
        }
        match line_for(&change, &w.selector) {
            Some(line) => w.tx.send(line).is_ok(),
            None => !w.tx.is_closed(),
        }
    });
    inner.history.entry(ns.to_owned()).or_default().push(change);
}

fn matches(object: &Value, selector: &Option<(String, String)>) -> bool {
    match selector {
        None => true,
        Some((k, v)) => object["metadata"]["labels"][k].as_str() == Some(v.as_str()),
    }
}

/// The watch event a client with `selector` sees for a change, if any.
fn line_for(change: &Change, selector: &Option<(String, String)>) -> Option<Bytes> {
    watch_line(change, |o| matches(o, selector))
}

/// The watch event a client sees for a change, given which objects its selectors match:
/// ADDED or DELETED when the change moves an object into or out of them, as from a real
/// API server.
fn watch_line(change: &Change, selected: impl Fn(&Value) -> bool) -> Option<Bytes> {
    let was = change.old.as_ref().is_some_and(&selected);
    let is = change.new.as_ref().is_some_and(&selected);
    let (kind, mut object) = match (was, is) {
        (false, true) => ("ADDED", change.new.clone()?),
        (true, true) => ("MODIFIED", change.new.clone()?),
        (true, false) => ("DELETED", change.new.clone().or(change.old.clone())?),
        (false, false) => return None,
    };
    object["metadata"]["resourceVersion"] = json!(change.rv.to_string());
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).ok()?;
    line.push(b'\n');
    Some(Bytes::from(line))
}

fn parse_selector(q: &HashMap<String, String>) -> Option<(String, String)> {
    let s = q.get("labelSelector")?;
    let (k, v) = s.split_once('=')?;
    Some((k.to_owned(), v.to_owned()))
}

async fn configmaps(
    State(shared): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let selector = parse_selector(&q);
    if q.get("watch").map(String::as_str) == Some("true") {
        return start_watch(&shared, &ns, selector, &q);
    }
    let mut hold = shared.hold.subscribe();
    let _ = hold.wait_for(|held| !*held).await;
    let key = selector.as_ref().map(|(k, _)| k.clone());
    let mut held = shared.hold_label.subscribe();
    let _ = held.wait_for(|h| h.is_none() || *h != key).await;
    let mut inner = shared.inner.lock().unwrap();
    inner.lists += 1;
    let items: Vec<Value> = inner
        .objects
        .get(&ns)
        .into_iter()
        .flat_map(|m| m.values())
        .filter(|o| matches(o, &selector))
        .cloned()
        .collect();
    let list = json!({
        "apiVersion": "v1",
        "kind": "ConfigMapList",
        "metadata": {"resourceVersion": inner.rv.to_string()},
        "items": items,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        list.to_string(),
    )
        .into_response()
}

fn start_watch(
    shared: &Shared,
    ns: &str,
    selector: Option<(String, String)>,
    q: &HashMap<String, String>,
) -> Response {
    let mut inner = shared.inner.lock().unwrap();
    inner.watches += 1;
    if inner.refuse_watches {
        return (StatusCode::INTERNAL_SERVER_ERROR, "watch refused").into_response();
    }
    let since: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    if since < inner.compacted {
        let gone = json!({"type": "ERROR", "object": {
            "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {since} ({})", inner.compacted),
            "reason": "Expired", "code": 410}});
        let mut line = serde_json::to_vec(&gone).unwrap();
        line.push(b'\n');
        let _ = tx.send(Bytes::from(line));
        // The stream ends after the error, as the API server closes it.
        drop(tx);
    } else {
        for change in inner.history.get(ns).into_iter().flatten() {
            if change.rv > since {
                if let Some(line) = line_for(change, &selector) {
                    let _ = tx.send(line);
                }
            }
        }
        inner
            .watchers
            .push((ns.to_owned(), Watcher { selector, tx }));
    }
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn create_event(
    State(shared): State<Shared>,
    Path(ns): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    if event["metadata"]["namespace"] != ns.as_str() {
        return (StatusCode::BAD_REQUEST, "namespace mismatch").into_response();
    }
    let mut inner = shared.inner.lock().unwrap();
    // Names are unique per namespace, as in the real API server.
    let name = &event["metadata"]["name"];
    if inner.events.iter().any(|e| {
        e["metadata"]["namespace"] == event["metadata"]["namespace"]
            && e["metadata"]["name"] == *name
    }) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("events.events.k8s.io {name} already exists"),
        );
    }
    inner.events.push(event.clone());
    drop(inner);
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        event.to_string(),
    )
        .into_response()
}

// --- Pods, and ConfigMap reads and writes -------------------------------------------
//
// `GET /api/v1/pods` lists or watches pods of every namespace, with a label selector
// (`key`, `key=value`, comma-separated) and a field selector (`status.phase=X`,
// `metadata.namespace=X`) applied by the server, as the real one does; a request without
// a label selector is refused, so a test fails if the webhook ever asks for every pod.
// `GET/PUT .../configmaps/{name}` and `POST .../configmaps` read, replace and create, with
// the API server's optimistic concurrency: a replace naming another resourceVersion gets
// 409 Conflict, a create of an existing name 409 AlreadyExists.

#[derive(Default)]
struct Pods {
    /// (namespace, name) -> pod
    objects: BTreeMap<(String, String), Value>,
    history: Vec<Change>,
    watchers: Vec<PodWatcher>,
    lists: usize,
    gets: usize,
    /// Selectors of every list and watch request, as sent.
    selectors: Vec<(String, String)>,
}

struct PodWatcher {
    labels: String,
    fields: String,
    tx: mpsc::UnboundedSender<Bytes>,
}

fn pod_matches(pod: &Value, labels: &str, fields: &str) -> bool {
    let label_ok =
        labels
            .split(',')
            .filter(|t| !t.is_empty())
            .all(|term| match term.split_once('=') {
                Some((k, v)) => pod["metadata"]["labels"][k].as_str() == Some(v),
                None => pod["metadata"]["labels"].get(term).is_some(),
            });
    let field_ok =
        fields
            .split(',')
            .filter(|t| !t.is_empty())
            .all(|term| match term.split_once('=') {
                Some(("status.phase", v)) => pod["status"]["phase"].as_str() == Some(v),
                Some(("metadata.namespace", v)) => pod["metadata"]["namespace"].as_str() == Some(v),
                _ => false,
            });
    label_ok && field_ok
}

fn pod_line(change: &Change, labels: &str, fields: &str) -> Option<Bytes> {
    watch_line(change, |o| pod_matches(o, labels, fields))
}

impl FakeApiServer {
    /// Creates or replaces a pod, status included, as the API server stores it after the
    /// kubelet's status update (the pod needs metadata.name and namespace); returns its
    /// uid: the one given, else the stored pod's, else a new one.
    pub fn apply_pod(&self, mut pod: Value) -> String {
        let mut inner = self.shared.inner.lock().unwrap();
        let ns = pod["metadata"]["namespace"].as_str().unwrap().to_owned();
        let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
        inner.rv += 1;
        let rv = inner.rv;
        let key = (ns, name);
        let kept = inner
            .pods
            .objects
            .get(&key)
            .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_owned));
        let uid = match pod["metadata"]["uid"].as_str().map(str::to_owned).or(kept) {
            Some(u) => u,
            None => {
                inner.next_uid += 1;
                format!("00000000-0000-0000-0001-{:012}", inner.next_uid)
            }
        };
        pod["apiVersion"] = json!("v1");
        pod["kind"] = json!("Pod");
        pod["metadata"]["uid"] = json!(uid);
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let old = inner.pods.objects.insert(key, pod.clone());
        let change = Change {
            rv,
            old,
            new: Some(pod),
        };
        inner
            .pods
            .watchers
            .retain(|w| match pod_line(&change, &w.labels, &w.fields) {
                Some(line) => w.tx.send(line).is_ok(),
                None => !w.tx.is_closed(),
            });
        inner.pods.history.push(change);
        uid
    }

    /// A stored pod.
    pub fn pod(&self, namespace: &str, name: &str) -> Value {
        let inner = self.shared.inner.lock().unwrap();
        inner.pods.objects[&(namespace.to_owned(), name.to_owned())].clone()
    }

    /// While true, pod lists and watches wait: the driver cache stays empty and every
    /// lookup is a GET.
    pub fn hold_pod_lists(&self, hold: bool) {
        self.shared.hold_pods.send_replace(hold);
    }

    /// GETs of single pods received.
    pub fn pod_gets(&self) -> usize {
        self.shared.inner.lock().unwrap().pods.gets
    }

    /// Deletes a pod (watchers whose selectors it matched see DELETED).
    pub fn delete_pod(&self, namespace: &str, name: &str) {
        let mut inner = self.shared.inner.lock().unwrap();
        let Some(old) = inner
            .pods
            .objects
            .remove(&(namespace.to_owned(), name.to_owned()))
        else {
            return;
        };
        inner.rv += 1;
        let change = Change {
            rv: inner.rv,
            old: Some(old),
            new: None,
        };
        inner
            .pods
            .watchers
            .retain(|w| match pod_line(&change, &w.labels, &w.fields) {
                Some(line) => w.tx.send(line).is_ok(),
                None => !w.tx.is_closed(),
            });
        inner.pods.history.push(change);
    }

    /// (label selector, field selector) of every pod list and watch received.
    pub fn pod_selectors(&self) -> Vec<(String, String)> {
        self.shared.inner.lock().unwrap().pods.selectors.clone()
    }

    /// Open pod watches.
    pub fn pod_watches(&self) -> usize {
        let mut inner = self.shared.inner.lock().unwrap();
        inner.pods.watchers.retain(|w| !w.tx.is_closed());
        inner.pods.watchers.len()
    }

    /// ConfigMap creates and replaces accepted so far.
    pub fn configmap_writes(&self) -> usize {
        self.shared.inner.lock().unwrap().configmap_writes
    }

    /// A stored ConfigMap.
    pub fn configmap(&self, namespace: &str, name: &str) -> Option<Value> {
        let inner = self.shared.inner.lock().unwrap();
        inner
            .objects
            .get(namespace)
            .and_then(|m| m.get(name))
            .cloned()
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code.as_u16()});
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn json_response(code: StatusCode, object: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        object.to_string(),
    )
        .into_response()
}

async fn pods(State(shared): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let labels = q.get("labelSelector").cloned().unwrap_or_default();
    let fields = q.get("fieldSelector").cloned().unwrap_or_default();
    // While held, lists and watches wait: the driver cache stays empty.
    let mut hold = shared.hold_pods.subscribe();
    let _ = hold.wait_for(|held| !*held).await;
    let mut inner = shared.inner.lock().unwrap();
    inner.pods.selectors.push((labels.clone(), fields.clone()));
    if labels.is_empty() {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "fake API server: listing every pod of the cluster is not allowed here".into(),
        );
    }
    if q.get("watch").map(String::as_str) == Some("true") {
        let since: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        for change in &inner.pods.history {
            if change.rv > since {
                if let Some(line) = pod_line(change, &labels, &fields) {
                    let _ = tx.send(line);
                }
            }
        }
        inner.pods.watchers.push(PodWatcher { labels, fields, tx });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
        });
        return (
            [(header::CONTENT_TYPE, "application/json")],
            Body::from_stream(stream),
        )
            .into_response();
    }
    inner.pods.lists += 1;
    let items: Vec<Value> = inner
        .pods
        .objects
        .values()
        .filter(|p| pod_matches(p, &labels, &fields))
        .cloned()
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"apiVersion": "v1", "kind": "PodList",
                "metadata": {"resourceVersion": inner.rv.to_string()}, "items": items}),
    )
}

async fn get_configmap(
    State(shared): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let inner = shared.inner.lock().unwrap();
    match inner.objects.get(&ns).and_then(|m| m.get(&name)) {
        Some(cm) => json_response(StatusCode::OK, cm),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("configmaps \"{name}\" not found"),
        ),
    }
}

async fn create_configmap(
    State(shared): State<Shared>,
    Path(ns): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(mut cm) = serde_json::from_slice::<Value>(&body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON".into());
    };
    let Some(name) = cm["metadata"]["name"].as_str().map(str::to_owned) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "name required".into(),
        );
    };
    let mut inner = shared.inner.lock().unwrap();
    if inner
        .objects
        .get(&ns)
        .is_some_and(|m| m.contains_key(&name))
    {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("configmaps \"{name}\" already exists"),
        );
    }
    cm["metadata"]["namespace"] = json!(ns);
    inner.configmap_writes += 1;
    let stored = upsert(&mut inner, cm);
    json_response(StatusCode::CREATED, &stored)
}

async fn replace_configmap(
    State(shared): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Ok(mut cm) = serde_json::from_slice::<Value>(&body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON".into());
    };
    let mut inner = shared.inner.lock().unwrap();
    let Some(current) = inner.objects.get(&ns).and_then(|m| m.get(&name)) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("configmaps \"{name}\" not found"),
        );
    };
    let stored_rv = current["metadata"]["resourceVersion"].clone();
    if cm["metadata"]["resourceVersion"] != stored_rv {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            format!("Operation cannot be fulfilled on configmaps \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
        );
    }
    cm["metadata"]["namespace"] = json!(ns);
    cm["metadata"]["name"] = json!(name);
    inner.configmap_writes += 1;
    let stored = upsert(&mut inner, cm);
    json_response(StatusCode::OK, &stored)
}

/// One pod by name: the driver cache's GET for a driver its watch has not delivered yet.
async fn get_pod(
    State(shared): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let mut inner = shared.inner.lock().unwrap();
    inner.pods.gets += 1;
    match inner.pods.objects.get(&(ns, name.clone())) {
        Some(pod) => json_response(StatusCode::OK, pod),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pods \"{name}\" not found"),
        ),
    }
}
