//! The real server in-process over real TLS: HTTP/1.1 and h2, no SNI, full chains,
//! client certificates, limits, the admin port and certificate generation.

use crate::common;

use std::time::Duration;

use hyper::StatusCode;
use serde_json::json;

use common::*;
use spark_admission::admission::{ServeError, Server};
use spark_admission::certs::{self, CertPaths, CertsArgs, Ensured};
use spark_admission::error_chain::ErrorChain;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutate_and_validate_over_http1_and_h2() {
    let t = TestServer::start(&[("labels.yaml", LABEL_POLICY), ("deny.yaml", DENY_POLICY)]).await;
    let mutate = fixture_json("mutate-driver-scala-sparkpi.json");
    let validate = fixture_json("validate-driver-scala-sparkpi.json");
    for proto in [Proto::H1, Proto::H2] {
        let mut conn = t.connect(proto).await;
        let expected: &[u8] = match proto {
            Proto::H1 => b"http/1.1",
            Proto::H2 => b"h2",
        };
        assert_eq!(conn.alpn.as_deref(), Some(expected));
        // Several reviews on one kept-alive connection, as the API server does.
        for _ in 0..3 {
            let (status, body) = conn
                .post("/mutate?timeout=10s", to_bytes(&mutate))
                .await
                .unwrap();
            assert_eq!(status, StatusCode::OK, "{proto:?}");
            let resp = response_of(&body);
            assert_eq!(resp["uid"], mutate["request"]["uid"]);
            let pod = patched_object(&mutate, &resp);
            assert_eq!(
                pod["metadata"]["labels"]["platform.example.com/managed"],
                "yes"
            );
            let tolerations = pod["spec"]["tolerations"].as_array().unwrap();
            assert_eq!(tolerations.len(), 3);
            assert_eq!(tolerations[2]["key"], "example.com/spark-pool");
        }
        let (status, body) = conn
            .post("/validate?timeout=10s", to_bytes(&validate))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        let resp = response_of(&body);
        assert_eq!(resp["allowed"], false);
        assert_eq!(resp["status"]["code"], 403);
        assert_eq!(resp["uid"], validate["request"]["uid"]);
    }
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_served_without_sni_and_with_it() {
    let t = TestServer::start(&[("labels.yaml", LABEL_POLICY)]).await;
    let addr = t.server.webhook_addr();
    let ca = t.ca_pem();
    let body = fixture("mutate-driver-rich.json");
    // By IP: rustls sends no SNI, like the API server for an IP URL.
    for name in [None, Some("localhost")] {
        let mut conn = Conn::connect(addr, &ca, Proto::H2, name, None)
            .await
            .unwrap();
        let (status, _) = conn.post("/mutate", body.clone()).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{name:?}");
    }
    // A name the certificate does not carry is refused by the client.
    let err = Conn::connect(addr, &ca, Proto::H1, Some("example.com"), None).await;
    assert!(
        err.is_err(),
        "the certificate must not be valid for example.com"
    );
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_chain_in_tls_crt_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    let material = certs::generate(&["spark-admission.spark-admission.svc".to_owned()]).unwrap();
    let paths = certs::write_material(&certs_dir, &material).unwrap();
    // Like cert-manager: tls.crt holds the leaf and then its issuer.
    let chain = format!("{}{}", material.tls_cert_pem, material.ca_cert_pem);
    certs::write_file(&paths.tls_cert, chain.as_bytes(), false).unwrap();
    write_policies(&dir.path().join("policies"), &[]);
    let server = Server::start(test_config(dir.path())).await.unwrap();
    let conn = Conn::connect(
        server.webhook_addr(),
        material.ca_cert_pem.as_bytes(),
        Proto::H1,
        Some("spark-admission.spark-admission.svc"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(conn.peer_chain.len(), 2, "leaf and CA");
    assert_eq!(conn.peer_chain, server.serving_chain());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_with_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    assert_eq!(certs::ensure(&certs_dir, &[]).unwrap(), Ensured::Generated);
    write_policies(
        &dir.path().join("policies"),
        &[("labels.yaml", LABEL_POLICY)],
    );
    let mut config = test_config(dir.path());
    config.client_ca = Some(certs_dir.join("ca.crt"));
    let server = Server::start(config).await.unwrap();
    let ca = std::fs::read(certs_dir.join("ca.crt")).unwrap();
    let body = fixture("mutate-driver-rich.json");

    // Without a client certificate: the handshake or the first request fails.
    let refused = match Conn::connect(server.webhook_addr(), &ca, Proto::H1, None, None).await {
        Err(_) => true,
        Ok(mut conn) => conn.post("/mutate", body.clone()).await.is_err(),
    };
    assert!(refused, "a client without a certificate must be refused");

    let mut conn = Conn::connect(
        server.webhook_addr(),
        &ca,
        Proto::H2,
        None,
        Some(client_cert(&certs_dir)),
    )
    .await
    .unwrap();
    let (status, _) = conn.post("/mutate", body).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_over_the_wire() {
    let t = TestServer::start(&[("labels.yaml", LABEL_POLICY)]).await;
    let mut big = fixture_json("mutate-driver-rich.json");
    big["request"]["object"]["metadata"]["annotations"]["padding"] =
        json!("x".repeat(3 * 1024 * 1024 + 1));
    for proto in [Proto::H1, Proto::H2] {
        let mut conn = t.connect(proto).await;
        let (status, _) = conn.post("/mutate", to_bytes(&big)).await.unwrap();
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{proto:?}");
        // The rest of the body was read, so the connection is still usable.
        let (status, _) = conn
            .post("/mutate", fixture("mutate-driver-rich.json"))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{proto:?}");
    }
    for (what, body) in [
        ("v1beta1", {
            let mut v = fixture_json("mutate-driver-rich.json");
            v["apiVersion"] = json!("admission.k8s.io/v1beta1");
            to_bytes(&v)
        }),
        ("not JSON", b"hello".to_vec()),
    ] {
        let mut conn = t.connect(Proto::H2).await;
        let (status, body) = conn.post("/mutate", body).await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}");
        assert!(!body.is_empty());
    }
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_http1_client_is_disconnected() {
    let t = TestServer::start_with(&[], |c| {
        c.header_read_timeout = Duration::from_millis(200);
        c.handshake_timeout = Duration::from_millis(200);
    })
    .await;
    let addr = t.server.webhook_addr();
    // TLS done, then nothing: the server closes the connection after the header timeout.
    let mut tls = tls_connect(addr, &t.ca_pem(), None, &[b"http/1.1"], None)
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut tls, &mut buf),
    )
    .await
    .expect("the server must close a silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // No TLS at all: the handshake times out and the connection is closed.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
    )
    .await
    .expect("the server must close a connection that never handshakes");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_has_probes_and_metrics() {
    let t = TestServer::start(&[("labels.yaml", LABEL_POLICY)]).await;
    assert_eq!(t.admin_get("/healthz").await.0, StatusCode::OK);
    let (status, text) = t.admin_get("/readyz").await;
    assert_eq!((status, text.trim()), (StatusCode::OK, "ready"));

    let mut conn = t.connect(Proto::H2).await;
    conn.post("/mutate", fixture("mutate-executor-rich-1.json"))
        .await
        .unwrap();
    conn.post("/mutate", b"nope".to_vec()).await.unwrap();

    let (status, metrics) = t.admin_get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        r#"spark_admission_requests_total{endpoint="mutate",role="executor",outcome="patched"} 1"#,
        r#"spark_admission_requests_total{endpoint="mutate",role="none",outcome="bad_request"} 1"#,
        r#"spark_admission_request_duration_seconds_count{endpoint="mutate"} 2"#,
        r#"spark_admission_policy_changes_total{policy="test-labels"}"#,
        r#"spark_admission_patch_operations_total{role="executor"}"#,
        r#"spark_admission_policy_reloads_total{result="applied"} 1"#,
        "spark_admission_policies_loaded 1",
        "spark_admission_policy_errors 0",
        "spark_admission_certificate_not_after_timestamp_seconds ",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    let not_after: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("spark_admission_certificate_not_after_timestamp_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(not_after > now + 300 * 24 * 3600, "about a year ahead");
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    // No policy folder.
    let err = Server::start(test_config(dir.path())).await.unwrap_err();
    assert!(matches!(err, ServeError::NoPolicyFolder(_)), "{err}");
    assert!(err.to_string().contains("policies"), "{err}");

    // A port already taken.
    write_policies(&dir.path().join("policies"), &[]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = test_config(dir.path());
    config.listen = taken.local_addr().unwrap();
    let err = Server::start(config).await.unwrap_err();
    assert!(matches!(err, ServeError::Bind { .. }), "{err}");
    // What the binary prints: the error and its causes, in one line.
    let printed = ErrorChain(&err).to_string();
    assert!(printed.contains("in use"), "{printed}");

    // A key that does not belong to the certificate.
    let other = certs::generate(&[]).unwrap();
    let paths = CertPaths::new(dir.path().join("certs"));
    certs::write_file(&paths.tls_key, other.tls_key_pem.as_bytes(), true).unwrap();
    let err = Server::start(test_config(dir.path())).await.unwrap_err();
    assert!(matches!(err, ServeError::Tls(_)), "{err}");
    let printed = ErrorChain(&err).to_string();
    assert!(printed.contains("tls.key"), "{printed}");
}

#[test]
fn ensure_generates_once_and_reuses_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    let dns = vec!["spark-admission.spark-admission.svc".to_owned()];
    assert_eq!(certs::ensure(&certs_dir, &dns).unwrap(), Ensured::Generated);
    let paths = CertPaths::new(&certs_dir);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in [&paths.ca_key, &paths.tls_key] {
            let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }
    let leaf = std::fs::read(&paths.tls_cert).unwrap();
    let ca = std::fs::read(&paths.ca_cert).unwrap();
    assert_eq!(certs::ensure(&certs_dir, &dns).unwrap(), Ensured::Existing);
    assert_eq!(std::fs::read(&paths.tls_cert).unwrap(), leaf);

    // Serving pair gone, CA kept: a new serving certificate from the same CA.
    std::fs::remove_file(&paths.tls_cert).unwrap();
    std::fs::remove_file(&paths.tls_key).unwrap();
    assert_eq!(
        certs::ensure(&certs_dir, &dns).unwrap(),
        Ensured::IssuedFromCa
    );
    assert_eq!(std::fs::read(&paths.ca_cert).unwrap(), ca);
    assert_ne!(std::fs::read(&paths.tls_cert).unwrap(), leaf);
    let provider = ring();
    let loaded =
        spark_admission::admission::tls::load_pair(&paths.tls_cert, &paths.tls_key, &provider)
            .unwrap();
    for name in [
        "localhost",
        "127.0.0.1",
        "spark-admission.spark-admission.svc",
    ] {
        assert!(
            loaded.names.iter().any(|n| n == name),
            "{name} in {:?}",
            loaded.names
        );
    }

    // Half a pair is an error, not a silent overwrite.
    std::fs::remove_file(&paths.tls_key).unwrap();
    assert!(certs::ensure(&certs_dir, &dns).is_err());
}

#[test]
fn certs_command_writes_files_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = |force| CertsArgs {
        out: out.clone(),
        dns: vec!["spark-admission.spark-admission.svc".to_owned()],
        force,
        renew: false,
    };
    certs::run(args(false)).unwrap();
    let paths = CertPaths::new(&out);
    for p in [
        &paths.ca_cert,
        &paths.ca_key,
        &paths.tls_cert,
        &paths.tls_key,
    ] {
        assert!(p.is_file(), "{}", p.display());
    }
    let err = certs::run(args(false)).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    certs::run(args(true)).unwrap();

    let bundle = certs::ca_bundle(&std::fs::read(&paths.ca_cert).unwrap());
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(bundle)
        .unwrap();
    assert!(String::from_utf8(decoded)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
}
