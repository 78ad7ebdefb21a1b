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
//! - Pods, for the driver cache: `GET /api/v1/pods?labelSelector=k=v` lists and watches
//!   cluster-wide as above, `GET /api/v1/namespaces/{ns}/pods/{name}` reads one
//!   ([`apply_pod`](FakeApiServer::apply_pod), [`hold_pod_lists`](FakeApiServer::hold_pod_lists),
//!   [`pod_gets`](FakeApiServer::pod_gets)).
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
    /// Pods: (namespace, name) -> object; their changes, cluster-wide; their watchers.
    pods: BTreeMap<(String, String), Value>,
    pod_history: Vec<Change>,
    pod_watchers: Vec<Watcher>,
    pod_gets: usize,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    /// Lists wait while this is true.
    hold: watch::Sender<bool>,
    /// Pod lists and watches wait while this is true.
    hold_pods: watch::Sender<bool>,
}

pub struct FakeApiServer {
    pub addr: SocketAddr,
    shared: Shared,
}

impl FakeApiServer {
    pub async fn start() -> Self {
        let (hold, _) = watch::channel(false);
        let (hold_pods, _) = watch::channel(false);
        let shared = Shared {
            inner: Arc::new(Mutex::new(Inner {
                rv: 100,
                ..Inner::default()
            })),
            hold,
            hold_pods,
        };
        let app = Router::new()
            .route("/api/v1/namespaces/{ns}/configmaps", get(configmaps))
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
    pub fn apply(&self, mut object: Value) {
        let mut inner = self.shared.inner.lock().unwrap();
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
            &mut inner,
            &ns,
            Change {
                rv,
                old,
                new: Some(object),
            },
        );
    }

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

    /// Creates or replaces a pod (metadata.name and namespace needed); returns its uid.
    pub fn apply_pod(&self, mut object: Value) -> String {
        let mut inner = self.shared.inner.lock().unwrap();
        let ns = object["metadata"]["namespace"].as_str().unwrap().to_owned();
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        inner.rv += 1;
        let rv = inner.rv;
        let key = (ns, name);
        let old = inner.pods.get(&key).cloned();
        let uid = match old.as_ref().and_then(|o| o["metadata"]["uid"].as_str()) {
            Some(u) => u.to_owned(),
            None => {
                inner.next_uid += 1;
                format!("00000000-0000-0000-0000-{:012}", inner.next_uid)
            }
        };
        object["apiVersion"] = json!("v1");
        object["kind"] = json!("Pod");
        object["metadata"]["uid"] = json!(uid);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        inner.pods.insert(key, object.clone());
        let change = Change {
            rv,
            old,
            new: Some(object),
        };
        inner
            .pod_watchers
            .retain(|w| match line_for(&change, &w.selector) {
                Some(line) => w.tx.send(line).is_ok(),
                None => !w.tx.is_closed(),
            });
        inner.pod_history.push(change);
        uid
    }

    /// A stored pod.
    pub fn pod(&self, namespace: &str, name: &str) -> Value {
        let inner = self.shared.inner.lock().unwrap();
        inner.pods[&(namespace.to_owned(), name.to_owned())].clone()
    }

    /// While true, pod lists wait: the driver cache stays empty and every lookup is a GET.
    pub fn hold_pod_lists(&self, hold: bool) {
        self.shared.hold_pods.send_replace(hold);
    }

    /// GETs of single pods received.
    pub fn pod_gets(&self) -> usize {
        self.shared.inner.lock().unwrap().pod_gets
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
    let was = change.old.as_ref().is_some_and(|o| matches(o, selector));
    let is = change.new.as_ref().is_some_and(|o| matches(o, selector));
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
    shared.inner.lock().unwrap().events.push(event.clone());
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        event.to_string(),
    )
        .into_response()
}

async fn pods(State(shared): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let selector = parse_selector(&q);
    let mut hold = shared.hold_pods.subscribe();
    let _ = hold.wait_for(|held| !*held).await;
    let mut inner = shared.inner.lock().unwrap();
    if q.get("watch").map(String::as_str) == Some("true") {
        let since: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        for change in &inner.pod_history {
            if change.rv > since {
                if let Some(line) = line_for(change, &selector) {
                    let _ = tx.send(line);
                }
            }
        }
        inner.pod_watchers.push(Watcher { selector, tx });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
        });
        return (
            [(header::CONTENT_TYPE, "application/json")],
            Body::from_stream(stream),
        )
            .into_response();
    }
    let items: Vec<Value> = inner
        .pods
        .values()
        .filter(|o| matches(o, &selector))
        .cloned()
        .collect();
    let list = json!({
        "apiVersion": "v1",
        "kind": "PodList",
        "metadata": {"resourceVersion": inner.rv.to_string()},
        "items": items,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        list.to_string(),
    )
        .into_response()
}

async fn get_pod(
    State(shared): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let mut inner = shared.inner.lock().unwrap();
    inner.pod_gets += 1;
    match inner.pods.get(&(ns, name.clone())) {
        Some(pod) => (
            [(header::CONTENT_TYPE, "application/json")],
            pod.to_string(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                   "message": format!("pods \"{name}\" not found"), "reason": "NotFound", "code": 404})
            .to_string(),
        )
            .into_response(),
    }
}
