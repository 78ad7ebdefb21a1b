//! The bad-input corpus, over real TLS: every malformed or hostile request gets its
//! documented answer (400 / 413 / 408, or allowed unchanged), and the server stays healthy.

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use hyper::body::Bytes;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

fn review() -> Value {
    fixture_json("mutate-driver-scala-sparkpi.json")
}

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
    let good = to_bytes(&review());
    let nested = format!(
        "{{\"request\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let mut no_uid = review();
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let mut wrong_version = review();
    wrong_version["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut wrong_kind = review();
    wrong_kind["kind"] = json!("ConversionReview");
    let mut create_without_object = review();
    create_without_object["request"]["oldObject"] =
        create_without_object["request"]["object"].take();
    let duplicate =
        String::from_utf8(good.clone())
            .unwrap()
            .replacen('{', "{\"kind\":\"AdmissionReview\",", 1);
    let mut invalid_utf8 = good.clone();
    invalid_utf8.splice(40..40, [0xff, 0xfe, 0xc3]);
    // In a field nobody reads (found by the review fuzzer): still not text, still 400.
    let text = String::from_utf8(good.clone()).unwrap();
    let at = text.find("\"f:metadata\"").unwrap() + 3;
    let mut invalid_utf8_skipped = good.clone();
    invalid_utf8_skipped[at] = 0x8f;

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() / 2].to_vec(), "not JSON"),
        ("empty", Vec::new(), "not JSON"),
        ("deeply nested", nested.into_bytes(), ""),
        ("no uid", to_bytes(&no_uid), "uid"),
        ("v1beta1", to_bytes(&wrong_version), "admission.k8s.io/v1"),
        ("unknown kind", to_bytes(&wrong_kind), "AdmissionReview"),
        (
            "no request",
            to_bytes(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})),
            "no request",
        ),
        (
            "CREATE with only oldObject",
            to_bytes(&create_without_object),
            "object",
        ),
        ("duplicate keys", duplicate.into_bytes(), "duplicate"),
        ("invalid UTF-8", invalid_utf8, ""),
        (
            "invalid UTF-8 in an ignored field",
            invalid_utf8_skipped,
            "UTF-8",
        ),
        ("a JSON array", b"[1,2,3]".to_vec(), ""),
    ];
    for (what, body, reason) in cases {
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
    let fields = [
        "/metadata/labels",
        "/metadata/annotations",
        "/metadata/name",
        "/spec/containers",
        "/spec/containers/0/env",
        "/spec/containers/0/resources",
        "/spec/containers/0/volumeMounts",
        "/spec/containers/0/name",
        "/spec/volumes",
        "/spec/tolerations",
        "/spec/nodeSelector",
        "/spec/affinity",
        "/spec/priority",
        "/spec/terminationGracePeriodSeconds",
        "/spec/securityContext",
        "/spec/imagePullSecrets",
    ];
    for path in fields {
        for wrong in [
            json!(42),
            json!("text"),
            json!([1]),
            json!({"x": {"y": 1}}),
            json!(true),
        ] {
            let mut r = fixture_json("mutate-driver-rich.json");
            let (parent, key) = path.rsplit_once('/').unwrap();
            let parent = r["request"]["object"].pointer_mut(parent).unwrap();
            let slot = match parent {
                Value::Array(a) => &mut a[key.parse::<usize>().unwrap()],
                other => other
                    .as_object_mut()
                    .unwrap()
                    .entry(key)
                    .or_insert(Value::Null),
            };
            // Same JSON type (or an object where an absent object field goes): unknown keys are
            // ignored as the API server prunes them, so such a pod may still be valid.
            let same_kind = std::mem::discriminant(&*slot) == std::mem::discriminant(&wrong)
                || (slot.is_null() && wrong.is_object());
            *slot = wrong.clone();
            let (status, text) = post(&s, Proto::H1, to_bytes(&r)).await;
            if same_kind {
                // e.g. a string name replaced by another string: still a valid pod.
                assert!(
                    status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
                    "{path} = {wrong}: {status}"
                );
            } else {
                assert_eq!(status, StatusCode::BAD_REQUEST, "{path} = {wrong}: {text}");
                assert!(text.contains("invalid pod"), "{path} = {wrong}: {text}");
            }
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
        if op == "DELETE" {
            r["request"]["oldObject"] = r["request"]["object"].take();
        }
        let (status, text) = post(&s, Proto::H2, to_bytes(&r)).await;
        assert_eq!(status, StatusCode::OK, "{op}: {text}");
        let resp = response_of(text.as_bytes());
        assert_eq!(resp["allowed"], true, "{op}");
        assert!(resp.get("patch").is_none(), "{op}: no patch");
        assert_eq!(resp["uid"], r["request"]["uid"]);
    }
}

#[tokio::test]
async fn huge_but_valid_pods_are_answered() {
    let s = server().await;
    let mut big_string = review();
    big_string["request"]["object"]["metadata"]["annotations"] =
        json!({"big": "x".repeat(2 * 1024 * 1024)});
    let mut big_array = review();
    big_array["request"]["object"]["spec"]["containers"][0]["env"] = json!((0..30_000)
        .map(|i| json!({"name": format!("V{i}"), "value": "1"}))
        .collect::<Vec<_>>());
    for (what, r) in [("2 MiB string", big_string), ("30k env entries", big_array)] {
        let (status, text) = post(&s, Proto::H1, to_bytes(&r)).await;
        assert_eq!(status, StatusCode::OK, "{what}");
        assert!(response_of(text.as_bytes())["patch"].is_string(), "{what}");
    }
    assert_healthy(&s).await;
}

#[tokio::test]
async fn a_4_mib_body_gets_413() {
    let s = server().await;
    let mut r = review();
    r["request"]["object"]["metadata"]["annotations"] = json!({"big": "x".repeat(4 * 1024 * 1024)});
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
    assert_healthy(&s).await;
}
