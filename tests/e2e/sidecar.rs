//! A second mutating webhook that appends a sidecar container, as service meshes and log
//! shippers do: it runs after ours (configurations are called in name order), so the API
//! server must call ours again (`reinvocationPolicy: IfNeeded`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, DeleteParams};
use kube::Client;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub const NAME: &str = "zz-e2e-sidecar-injector";
pub const CONTAINER: &str = "log-shipper";

/// Serves the sidecar webhook with the certificate in `certs` (tls.crt, tls.key); the
/// task ends with the test's runtime.
pub async fn serve(certs: &Path) -> SocketAddr {
    let chain = CertificateDer::pem_file_iter(certs.join("tls.crt"))
        .expect("tls.crt")
        .collect::<Result<Vec<_>, _>>()
        .expect("tls.crt PEM");
    let key = PrivateKeyDer::from_pem_file(certs.join("tls.key")).expect("tls.key");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server certificate");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(handle);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let body = req.into_body().collect().await?.to_bytes();
    let review: Value = serde_json::from_slice(&body).unwrap_or_default();
    let uid = review["request"]["uid"].clone();
    // Named by the pod and whether the sidecar is already there (the reinvocation).
    let object = &review["request"]["object"];
    let pod = object["metadata"]["name"]
        .as_str()
        .or(object["metadata"]["generateName"].as_str())
        .unwrap_or("pod");
    let has_sidecar = review["request"]["object"]["spec"]["containers"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["name"] == CONTAINER));
    let ns = review["request"]["namespace"].as_str().unwrap_or("none");
    crate::record::review(
        &format!("{ns}-{pod}-{}", if has_sidecar { "again" } else { "first" }),
        &body,
    );
    let mut response = json!({"uid": uid, "allowed": true});
    if !has_sidecar {
        let patch = json!([{"op": "add", "path": "/spec/containers/-",
            "value": {"name": CONTAINER, "image": "fluent/fluent-bit:3.0"}}]);
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(&patch).unwrap_or_default()));
    }
    let out = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(out.to_string())))
        .unwrap_or_default())
}

/// Registers the sidecar webhook for Spark pods, with the shipped selectors.
pub async fn register(client: &Client, addr: SocketAddr, ca_pem: &str) {
    let config: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": NAME},
        "webhooks": [{
            "name": "sidecar.e2e.example.com",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "clientConfig": {
                "url": format!("https://{addr}/mutate"),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
            },
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
            "objectSelector": {"matchExpressions": [{"key": "spark-role", "operator": "In", "values": ["driver", "executor"]}]},
            "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "spark-admission"]}]},
        }]
    }))
    .expect("sidecar configuration");
    let pp = kube::api::PatchParams::apply("spark-admission-e2e").force();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(NAME, &pp, &kube::api::Patch::Apply(&config))
        .await
        .expect("register the sidecar webhook");
}

pub async fn unregister(client: &Client) {
    match Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete(NAME, &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => panic!("unregister the sidecar webhook: {e}"),
    }
}

/// Waits until dry-run pods do (or, after `unregister`, no longer) get the sidecar.
pub async fn wait_active(client: &Client, ns: &str, active: bool) {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::PostParams;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let dry = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        if let Ok(p) = pods.create(&dry, &crate::webhook::probe_pod()).await {
            let has = p
                .spec
                .is_some_and(|s| s.containers.iter().any(|c| c.name == CONTAINER));
            if has == active {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sidecar webhook active={active} not seen within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
