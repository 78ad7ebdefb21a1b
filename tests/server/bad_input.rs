//! The bad-input corpus, over real TLS: every malformed or hostile request gets its
//! documented answer (400 / 413 / 408, or allowed unchanged), and the server stays healthy.

use crate::common;

use std::time::Duration;

use common::bad_input::*;
use common::*;
use http::StatusCode;
use hyper::body::Bytes;
use serde_json::json;
use tokio::io::AsyncReadExt;

async fn server() -> TestServer {
    TestServer::start_with(&[("labels.yaml", LABEL_POLICY)], |c| {
        c.limits.request_timeout = Duration::from_secs(2);
        c.handshake_timeout = Duration::from_secs(1);
        c.header_read_timeout = Duration::from_secs(1);
    })
    .await
}

/// The server still answers a good review correctly, on a new connection.
async fn assert_healthy(s: &TestServer) {
    let (status, _) = s.admin_get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let mut conn = s.connect(Proto::H2).await;
    let (status, body) = conn.post("/mutate", to_bytes(&review())).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        response_of(&body)["patch"].is_string(),
        "a good review still gets its patch"
    );
}

async fn post(s: &TestServer, proto: Proto, body: Vec<u8>) -> (StatusCode, String) {
    let mut conn = s.connect(proto).await;
    let (status, body) = conn.post("/mutate?timeout=10s", body).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn malformed_bodies_get_400_with_a_reason() {
    let s = server().await;
    for (what, body, reason) in malformed_bodies() {
        for proto in [Proto::H1, Proto::H2] {
            let (status, text) = post(&s, proto, body.clone()).await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{what} ({proto:?}): {text}"
            );
            assert!(
                !text.trim().is_empty() && !text.trim_end().contains('\n'),
                "{what}: one-line reason, got {text:?}"
            );
            assert!(text.contains(reason), "{what}: {text}");
        }
    }
    assert_healthy(&s).await;
}

#[tokio::test]
async fn wrong_types_in_pod_fields_are_refused_not_crashed_on() {
    let s = server().await;
    for case in wrong_type_reviews() {
        let (status, text) = post(&s, Proto::H1, case.body).await;
        let what = case.what;
        if case.same_kind {
            // e.g. a string name replaced by another string: still a valid pod.
            assert!(
                status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
                "{what}: {status}"
            );
        } else {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {text}");
            assert!(text.contains("invalid pod"), "{what}: {text}");
        }
    }
    assert_healthy(&s).await;
}

#[tokio::test]
async fn other_operations_and_old_object_only_reviews_are_allowed_unchanged() {
    let s = server().await;
    for op in ["DELETE", "CONNECT", "UPDATE"] {
        let mut r = review();
        r["request"]["operation"] = json!(op);
        match op {
            "DELETE" => r["request"]["oldObject"] = r["request"]["object"].take(),
            // As the API server sends an UPDATE: the pod before and after.
            "UPDATE" => r["request"]["oldObject"] = r["request"]["object"].clone(),
            _ => {}
        }
        let (status, text) = post(&s, Proto::H2, to_bytes(&r)).await;
        assert_eq!(status, StatusCode::OK, "{op}: {text}");
        let resp = response_of(text.as_bytes());
        assert_eq!(resp["allowed"], true, "{op}");
        assert!(resp.get("patch").is_none(), "{op}: no patch");
        assert_eq!(resp["uid"], r["request"]["uid"]);
    }
    // An UPDATE of a pod without oldObject is not one the API server sends: refused.
    let mut r = review();
    r["request"]["operation"] = json!("UPDATE");
    let (status, text) = post(&s, Proto::H2, to_bytes(&r)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("without request.oldObject"), "{text}");
}

#[tokio::test]
async fn huge_but_valid_pods_are_answered() {
    let s = server().await;
    for (what, r) in huge_valid_reviews() {
        let (status, text) = post(&s, Proto::H1, to_bytes(&r)).await;
        assert_eq!(status, StatusCode::OK, "{what}");
        assert!(response_of(text.as_bytes())["patch"].is_string(), "{what}");
    }
    assert_healthy(&s).await;
}

#[tokio::test]
async fn a_4_mib_body_gets_413() {
    let s = server().await;
    let r = oversized_review();
    for proto in [Proto::H1, Proto::H2] {
        let (status, text) = post(&s, proto, to_bytes(&r)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{proto:?}: {text}");
    }
    assert_healthy(&s).await;
}

#[tokio::test]
async fn a_client_sending_one_byte_a_second_gets_408_within_the_deadline() {
    let s = server().await;
    let mut conn = s.connect(Proto::H1).await;
    let (tx, body) = channel_body();
    let req = conn.request("/mutate", body);
    let sender = tokio::spawn(async move {
        // At most 10 bytes: the server must give up well before this loop ends.
        for b in b"{\"kind\":\"A" {
            if tx.send(Bytes::copy_from_slice(&[*b])).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let resp = tokio::time::timeout(Duration::from_secs(8), conn.send(req))
        .await
        .expect("the server answers instead of waiting for the slow body")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
    sender.abort();
    assert_healthy(&s).await;
}

#[tokio::test]
async fn connections_that_never_speak_are_closed() {
    let s = server().await;
    // No TLS handshake at all: closed after the handshake timeout.
    let mut raw = tokio::net::TcpStream::connect(s.server.webhook_addr())
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(6), raw.read(&mut buf))
        .await
        .expect("server closes a silent TCP connection")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // TLS done, but no HTTP request: closed after the header read timeout.
    let mut tls = tls_connect(
        s.server.webhook_addr(),
        &s.ca_pem(),
        None,
        &[b"http/1.1"],
        None,
    )
    .await
    .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(6), tls.read(&mut buf))
        .await
        .expect("server closes a silent TLS connection")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // h2 negotiated, but no client preface: the server sends its own SETTINGS, then
    // closes the connection after the same timeout instead of holding it forever.
    let mut tls = tls_connect(s.server.webhook_addr(), &s.ca_pem(), None, &[b"h2"], None)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "server closes a silent h2 connection");
    // Both TLS connections count as cut for slow headers (the raw TCP one never got to
    // HTTP: a handshake timeout).
    let (_, metrics) = s.admin_get("/metrics").await;
    assert!(
        metrics.contains("spark_admission_slow_clients_total{reason=\"header\"} 2"),
        "{metrics}"
    );
    assert_healthy(&s).await;
}

/// One client of the slow-body attack: on one connection after another, it announces a
/// body of `declared` bytes and sends one byte every 0.5 s, until the test ends.
async fn trickle(s: std::net::SocketAddr, ca: Vec<u8>, proto: Proto, declared: usize) {
    loop {
        let Ok(mut conn) = Conn::connect(s, &ca, proto, None, None).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        loop {
            let (tx, body) = channel_body();
            let mut req = conn.request("/mutate?timeout=10s", body);
            req.headers_mut()
                .insert(http::header::CONTENT_LENGTH, declared.into());
            let drip = tokio::spawn(async move {
                for _ in 0..declared {
                    if tx.send(Bytes::from_static(b" ")).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
            let answered = conn.send(req).await;
            drip.abort();
            if answered.is_err() {
                break; // cut: connect again
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_reviews_are_answered_within_2_s_while_slow_clients_trickle_their_bodies() {
    let _turn = common::heavy_test_turn().await;
    // The documented defaults, as in a cluster: 8 s request timeout, 64 review slots.
    let s = TestServer::start(&[("labels.yaml", LABEL_POLICY)]).await;
    let addr = s.server.webhook_addr();
    // More slow clients than review slots, half announcing 16 KiB, half 2 MB, over
    // HTTP/1.1 and h2: before the fix they held every slot while their bodies trickled.
    let mut attackers = tokio::task::JoinSet::new();
    for i in 0..96 {
        let declared = if i % 2 == 0 { 16 * 1024 } else { 2_000_000 };
        let proto = if i % 4 < 2 { Proto::H1 } else { Proto::H2 };
        attackers.spawn(trickle(addr, s.ca_pem(), proto, declared));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Real reviews on fresh connections, as the API server sends them, meanwhile.
    let body = to_bytes(&review());
    let mut late = Vec::new();
    // Rounds spread over 5 s: while the slow clients hold their requests open, and while
    // they are cut and come back.
    for round in 0..5 {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        let mut reviews = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (ca, body) = (s.ca_pem(), body.clone());
            reviews.spawn(async move {
                tokio::time::timeout(Duration::from_secs(2), async move {
                    let mut conn = Conn::connect(addr, &ca, Proto::H2, None, None).await?;
                    let answer = conn.post("/mutate?timeout=10s", body).await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(answer)
                })
                .await
            });
        }
        while let Some(joined) = reviews.join_next().await {
            match joined.unwrap() {
                Ok(Ok((status, body))) => {
                    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
                    assert!(
                        response_of(&body)["patch"].is_string(),
                        "answered with its patch"
                    );
                }
                Ok(Err(e)) => late.push(format!("round {round}: error {e}")),
                Err(_) => late.push(format!("round {round}: no answer within 2 s")),
            }
        }
    }
    assert!(
        late.is_empty(),
        "{} of 20 real reviews failed: {late:?}",
        late.len()
    );

    // The slow clients are cut (after the 2 s --body-read-timeout grace), and counted.
    let admin = s.server.admin_addr();
    eventually(
        "every slow client cut at least once",
        Duration::from_secs(10),
        || async move {
            let (_, metrics) = admin_get(admin, "/metrics").await;
            let cut: f64 = metrics
                .lines()
                .filter(|l| {
                    l.starts_with("spark_admission_slow_clients_total{reason=\"body_rate\"}")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            cut >= 96.0
        },
    )
    .await;
    attackers.shutdown().await;
    assert_healthy(&s).await;
}
