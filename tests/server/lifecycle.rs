//! The server while it runs: certificate rotation under traffic, policy reload, and the
//! graceful shutdown with a request in flight.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::StatusCode;

use common::*;
use spark_admission::certs::{self, CertPaths};

const WAIT: Duration = Duration::from_secs(15);

async fn managed_label(conn: &mut Conn) -> Option<String> {
    let req = fixture_json("mutate-executor-client-1.json");
    let (status, body) = conn.post("/mutate", to_bytes(&req)).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let pod = patched_object(&req, &response_of(&body));
    pod["metadata"]["labels"]["platform.example.com/managed"]
        .as_str()
        .map(str::to_owned)
}

fn metric(server: &spark_admission::admission::Server, line_prefix: &str) -> Option<String> {
    let text = server.metrics().encode().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix).map(|v| v.trim().to_owned()))
}

/// A server with the label policy, where most tests here start.
async fn labelled_server() -> TestServer {
    TestServer::start(&[("labels.yaml", LABEL_POLICY)]).await
}

/// The managed label a review gets on a new HTTP/1.1 connection.
async fn managed_label_on_a_new_connection(t: &TestServer) -> Option<String> {
    let mut conn = t.connect(Proto::H1).await;
    managed_label(&mut conn).await
}

/// Waits until a new connection trusting `ca` is served a leaf other than `old_leaf`.
async fn until_a_new_leaf_is_served(
    what: &str,
    addr: SocketAddr,
    proto: Proto,
    ca: &[u8],
    old_leaf: &[u8],
) {
    eventually(what, WAIT, || async move {
        match Conn::connect(addr, ca, proto, None, None).await {
            Ok(c) => c.peer_chain[0] != old_leaf,
            Err(_) => false,
        }
    })
    .await;
}

/// Waits until the server has `n` reviews in its handler.
async fn until_in_flight(t: &TestServer, n: usize) {
    let n = n.to_string();
    eventually("the request to reach the handler", WAIT, || {
        let current = metric(&t.server, "spark_admission_in_flight_requests");
        let reached = current.as_deref() == Some(n.as_str());
        async move { reached }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_traffic_drops_nothing() {
    let t = labelled_server().await;
    let addr = t.server.webhook_addr();
    let old_ca = t.ca_pem();
    let mut h2 = t.connect(Proto::H2).await;
    let mut h1 = t.connect(Proto::H1).await;
    let old_leaf = h2.peer_chain[0].clone();

    // Steady traffic on both kept-alive connections while the files change.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let body = fixture("mutate-driver-rich.json");
    let traffic = {
        let (stop, sent, body) = (Arc::clone(&stop), Arc::clone(&sent), body.clone());
        tokio::spawn(async move {
            for _ in 0..5000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                for conn in [&mut h2, &mut h1] {
                    let (status, _) = conn.post("/mutate", body.clone()).await.unwrap();
                    assert_eq!(status, StatusCode::OK);
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            (h2, h1)
        })
    };

    // cert-manager style renewal: a new CA and serving pair written in place.
    let renewed = certs::generate(&[]).unwrap();
    certs::write_material(&t.certs_dir(), &renewed).unwrap();
    let new_ca = renewed.ca_cert_pem.clone().into_bytes();
    until_a_new_leaf_is_served(
        "new connections to get the new certificate",
        addr,
        Proto::H2,
        &new_ca,
        &old_leaf,
    )
    .await;
    // Connections trusting only the old CA no longer verify.
    assert!(Conn::connect(addr, &old_ca, Proto::H1, None, None)
        .await
        .is_err());

    let before = sent.load(Ordering::Relaxed);
    eventually("traffic to continue after the swap", WAIT, || {
        let sent = Arc::clone(&sent);
        async move { sent.load(Ordering::Relaxed) > before + 4 }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (mut h2, mut h1) = traffic
        .await
        .expect("no request failed during the rotation");
    // The connections opened before the rotation still work.
    for conn in [&mut h2, &mut h1] {
        let (status, _) = conn.post("/mutate", body.clone()).await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(
        metric(
            &t.server,
            r#"spark_admission_certificate_reloads_total{result="ok"}"#
        )
        .as_deref(),
        Some("1")
    );

    // A broken pair is refused and the current one keeps serving. (The renewal above may
    // have been seen half-written once, so count from here.)
    let errors = || {
        metric(
            &t.server,
            r#"spark_admission_certificate_reloads_total{result="error"}"#,
        )
        .map_or(0, |v| v.parse::<u64>().unwrap())
    };
    let errors_before = errors();
    let current_leaf = t.server.serving_chain()[0].clone();
    std::fs::write(
        t.certs_dir().join("tls.crt"),
        b"-----BEGIN CERTIFICATE-----\nbroken\n",
    )
    .unwrap();
    eventually("the broken pair to be rejected", WAIT, || {
        let n = errors();
        async move { n > errors_before }
    })
    .await;
    let conn = Conn::connect(addr, &new_ca, Proto::H1, None, None)
        .await
        .unwrap();
    assert_eq!(conn.peer_chain[0], current_leaf);
    t.server.shutdown().await.unwrap();
}

#[cfg(unix)]
fn link_secret_version(dir: &Path, version: &str, m: &certs::Material) {
    // The layout kubelet gives a Secret volume: files are links through `..data`, which is
    // swapped to a new timestamped folder in one rename.
    let data = dir.join(version);
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("tls.crt"), &m.tls_cert_pem).unwrap();
    std::fs::write(data.join("tls.key"), &m.tls_key_pem).unwrap();
    std::fs::write(data.join("ca.crt"), &m.ca_cert_pem).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key", "ca.crt"] {
        let link = dir.join(f);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(f), &link).unwrap();
        }
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_volume_swap_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    let first = certs::generate(&[]).unwrap();
    link_secret_version(&certs_dir, "..2026_01_01", &first);
    write_policies(&dir.path().join("policies"), &[]);
    let server = spark_admission::admission::Server::start(test_config(dir.path()))
        .await
        .unwrap();
    let addr = server.webhook_addr();
    let conn = Conn::connect(addr, first.ca_cert_pem.as_bytes(), Proto::H1, None, None)
        .await
        .unwrap();
    let old_leaf = conn.peer_chain[0].clone();

    let second = certs::generate(&[]).unwrap();
    link_secret_version(&certs_dir, "..2026_02_01", &second);
    let ca = second.ca_cert_pem.clone().into_bytes();
    until_a_new_leaf_is_served(
        "the swapped Secret to serve",
        addr,
        Proto::H1,
        &ca,
        &old_leaf,
    )
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_go_live_and_a_broken_file_keeps_the_last_good_version() {
    let t = labelled_server().await;
    let file = t.policies_dir().join("labels.yaml");
    let mut conn = t.connect(Proto::H2).await;
    assert_eq!(managed_label(&mut conn).await.as_deref(), Some("yes"));

    write_atomic(&file, LABEL_POLICY_V2);
    eventually("the edited policy to apply", WAIT, || async {
        managed_label_on_a_new_connection(&t).await.as_deref() == Some("v2")
    })
    .await;

    write_atomic(&file, BROKEN_POLICY);
    eventually("the broken file to be seen", WAIT, || {
        let errors = metric(&t.server, "spark_admission_policy_errors");
        async move { errors.as_deref().is_some_and(|e| e != "0") }
    })
    .await;
    assert_eq!(managed_label(&mut conn).await.as_deref(), Some("v2"));
    let (status, _) = t.admin_get("/readyz").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a broken file does not make the server unready"
    );

    // A new good file still goes live next to the broken one.
    write_atomic(
        &t.policies_dir().join("other.yaml"),
        &LABEL_POLICY_V2
            .replace("test-labels", "test-other")
            .replace("platform.example.com/managed", "other.example.com/x"),
    );
    eventually("the new policy to apply", WAIT, || {
        let loaded = metric(&t.server, "spark_admission_policies_loaded");
        async move { loaded.as_deref() == Some("2") }
    })
    .await;

    // Removing the file removes its policy.
    std::fs::remove_file(&file).unwrap();
    eventually("the removed policy to stop applying", WAIT, || async {
        managed_label_on_a_new_connection(&t).await.is_none()
    })
    .await;
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_policies_at_startup_keep_the_server_unready_until_fixed() {
    let t = TestServer::start(&[("labels.yaml", BROKEN_POLICY)]).await;
    let (status, text) = t.admin_get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("policies"), "{text}");
    let mut conn = t.connect(Proto::H1).await;
    let (status, _) = conn
        .post("/mutate", fixture("mutate-driver-rich.json"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    write_atomic(&t.policies_dir().join("labels.yaml"), LABEL_POLICY);
    eventually("readiness after the fix", WAIT, || {
        let addr = t.server.admin_addr();
        async move { admin_get(addr, "/readyz").await.0 == StatusCode::OK }
    })
    .await;
    let mut conn = t.connect(Proto::H1).await;
    assert_eq!(managed_label(&mut conn).await.as_deref(), Some("yes"));
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_policy_folder_is_ready() {
    let t = TestServer::start(&[]).await;
    let (status, _) = t.admin_get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    let mut conn = t.connect(Proto::H2).await;
    let req = fixture_json("mutate-driver-rich.json");
    let (status, body) = conn.post("/mutate", to_bytes(&req)).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(response_of(&body).get("patch").is_none());
    t.server.shutdown().await.unwrap();
}

async fn drain_with_a_request_in_flight(proto: Proto) {
    let t = labelled_server().await;
    let mut conn = t.connect(proto).await;
    let review = to_bytes(&fixture_json("mutate-driver-scala-sparkpi.json"));
    let (head, tail) = review.split_at(review.len() / 2);

    // A request whose body is only half sent.
    let (tx, body) = channel_body();
    tx.send(head.to_vec().into()).await.unwrap();
    let req = conn.request("/mutate?timeout=10s", body);
    let in_flight = tokio::spawn(async move {
        let resp = conn.send(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    });
    until_in_flight(&t, 1).await;

    let handle = t.server.shutdown_handle();
    handle.trigger();
    // Unready at once, while the admin port still answers during the drain.
    let (status, text) = t.admin_get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("shutting down"), "{text}");
    // No new connections are taken.
    let addr = t.server.webhook_addr();
    let ca = t.ca_pem();
    eventually("the listener to close", WAIT, || {
        let ca = ca.clone();
        async move {
            Conn::connect(addr, &ca, Proto::H1, None, None)
                .await
                .is_err()
        }
    })
    .await;

    // The client finishes its body: the in-flight review completes normally.
    tx.send(tail.to_vec().into()).await.unwrap();
    drop(tx);
    let (status, body) = tokio::time::timeout(WAIT, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let resp = response_of(&body);
    assert_eq!(resp["allowed"], true);
    assert!(resp["patch"].is_string());

    tokio::time::timeout(WAIT, t.server.wait())
        .await
        .expect("the server stops once drained")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_an_in_flight_http1_request() {
    drain_with_a_request_in_flight(Proto::H1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_an_in_flight_h2_request() {
    drain_with_a_request_in_flight(Proto::H2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_after_the_grace_period() {
    let t = TestServer::start_with(&[("labels.yaml", LABEL_POLICY)], |c| {
        c.shutdown_grace = Duration::from_millis(200);
    })
    .await;
    let mut conn = t.connect(Proto::H1).await;
    let (tx, body) = channel_body();
    tx.send(b"{".to_vec().into()).await.unwrap();
    let req = conn.request("/mutate", body);
    let stuck = tokio::spawn(async move { conn.send(req).await });
    until_in_flight(&t, 1).await;
    // The client never finishes; the server still stops, bounded by the grace.
    tokio::time::timeout(WAIT, t.server.shutdown())
        .await
        .expect("shutdown is bounded by the grace period")
        .unwrap();
    drop(tx);
    let _ = stuck.await;
}

#[test]
fn paths_of_a_cert_folder() {
    let p = CertPaths::new("/x");
    assert_eq!(p.tls_cert, Path::new("/x/tls.crt"));
    assert_eq!(p.ca_cert, Path::new("/x/ca.crt"));
}
