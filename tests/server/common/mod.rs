//! Shared helpers for the server tests: fixtures, test policies, an in-process server on
//! ephemeral ports, and a small TLS client speaking HTTP/1.1 or h2 through hyper.
#![allow(dead_code)]

pub mod bad_input;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use spark_admission::admission::{Server, ServerConfig};

pub type TestBody = BoxBody<Bytes, Infallible>;

/// Adds a label and a toleration to every Spark pod in spark-jobs.
pub const LABEL_POLICY: &str = r#"apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata:
  name: test-labels
spec:
  namespaces: [spark-jobs]
  all:
    labels:
      platform.example.com/managed: "yes"
    tolerations:
      - key: example.com/spark-pool
        operator: Equal
        value: batch
        effect: NoSchedule
"#;

/// The same policy with another label value (for reload tests).
pub const LABEL_POLICY_V2: &str = r#"apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata:
  name: test-labels
spec:
  namespaces: [spark-jobs]
  all:
    labels:
      platform.example.com/managed: "v2"
"#;

/// Not a valid policy: `namespaces` must be a list.
pub const BROKEN_POLICY: &str = r#"apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata:
  name: test-labels
spec:
  namespaces: 42
"#;

/// Denies Spark pods without a cost-center label.
pub const DENY_POLICY: &str = r#"apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata:
  name: test-cost-center
spec:
  namespaces: ["*"]
  validate:
    mode: enforce
    requiredLabels: [cost-center]
"#;

/// Warns about pods without an owner label.
pub const WARN_POLICY: &str = r#"apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata:
  name: test-owner
spec:
  namespaces: ["*"]
  validate:
    mode: warn
    requiredLabels: [owner]
"#;

/// Records pods whose containers do not forbid privilege escalation.
pub const AUDIT_POLICY: &str = r#"apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata:
  name: test-escalation
spec:
  namespaces: ["*"]
  validate:
    mode: audit
    forbidPrivilegeEscalation: true
"#;

pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

pub fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// The `response` of an AdmissionReview body, checking the envelope on the way.
pub fn response_of(body: &[u8]) -> Value {
    let review: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)));
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    review["response"].clone()
}

/// Decodes the base64 patch of a response and applies it to `request.object`.
pub fn patched_object(request_review: &Value, response: &Value) -> Value {
    let mut object = request_review["request"]["object"].clone();
    if let Some(p) = response.get("patch") {
        assert_eq!(response["patchType"], "JSONPatch");
        let text = p.as_str().expect("patch must be a base64 string");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("patch must be base64");
        let patch: json_patch::Patch = serde_json::from_slice(&raw).expect("a JSON Patch array");
        json_patch::patch(&mut object, &patch).expect("the patch applies to the object");
    }
    object
}

/// Replaces a file in one rename, as a ConfigMap volume or an editor does: the server never
/// reads it half-written (an empty policy file is a valid file with no policy).
pub fn write_atomic(path: &Path, text: &str) {
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn write_policies(dir: &Path, policies: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in policies {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// A config for tests: loopback, ephemeral ports, fast polling.
pub fn test_config(root: &Path) -> ServerConfig {
    ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        policies_dir: root.join("policies"),
        certs_dir: root.join("certs"),
        policy_poll: Duration::from_millis(50),
        cert_poll: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(10),
        ..ServerConfig::default()
    }
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub server: Server,
    pub config: ServerConfig,
}

impl TestServer {
    pub async fn start(policies: &[(&str, &str)]) -> Self {
        Self::start_with(policies, |_| {}).await
    }

    pub async fn start_with(policies: &[(&str, &str)], f: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_policies(&dir.path().join("policies"), policies);
        let mut config = test_config(dir.path());
        f(&mut config);
        let server = Server::start(config.clone()).await.unwrap();
        Self {
            dir,
            server,
            config,
        }
    }

    pub fn policies_dir(&self) -> PathBuf {
        self.config.policies_dir.clone()
    }

    pub fn certs_dir(&self) -> PathBuf {
        self.config.certs_dir.clone()
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.certs_dir().join("ca.crt")).unwrap()
    }

    pub async fn connect(&self, proto: Proto) -> Conn {
        Conn::connect(
            self.server.webhook_addr(),
            &self.ca_pem(),
            proto,
            None,
            None,
        )
        .await
        .unwrap()
    }

    pub async fn admin_get(&self, path: &str) -> (StatusCode, String) {
        admin_get(self.server.admin_addr(), path).await
    }

    /// Polls `f` every 20 ms until it returns true; fails after `timeout`.
    pub async fn eventually<F, Fut>(&self, what: &str, timeout: Duration, f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        eventually(what, timeout, f).await
    }
}

pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One plain HTTP/1.1 GET on the admin port.
pub async fn admin_get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    try_admin_get(addr, path).await.unwrap()
}

/// [`admin_get`] for a port that may not be up yet (a server process still starting).
pub async fn try_admin_get(
    addr: SocketAddr,
    path: &str,
) -> Result<(StatusCode, String), Box<dyn std::error::Error + Send + Sync>> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, conn) = http1::handshake::<_, TestBody>(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(empty())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).boxed()
}

pub fn empty() -> TestBody {
    full(Bytes::new())
}

pub fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client certificate: chain and key.
pub type ClientAuth = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// TLS to `addr`, trusting `ca_pem`. `server_name` None connects by IP, which sends no SNI
/// (like the API server for an IP URL).
pub async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &[u8],
    server_name: Option<&str>,
    alpn: &[&[u8]],
    client_auth: Option<ClientAuth>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client_auth {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = match server_name {
        Some(n) => ServerName::try_from(n.to_owned()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

enum Sender {
    H1(http1::SendRequest<TestBody>),
    H2(http2::SendRequest<TestBody>),
}

/// One client connection (HTTP/1.1 keep-alive or h2).
pub struct Conn {
    sender: Sender,
    authority: String,
    /// The ALPN protocol the server selected.
    pub alpn: Option<Vec<u8>>,
    /// The certificates the server presented, leaf first (DER).
    pub peer_chain: Vec<Vec<u8>>,
}

impl Conn {
    pub async fn connect(
        addr: SocketAddr,
        ca_pem: &[u8],
        proto: Proto,
        server_name: Option<&str>,
        client_auth: Option<ClientAuth>,
    ) -> Result<Conn, Box<dyn std::error::Error + Send + Sync>> {
        let alpn: &[&[u8]] = match proto {
            Proto::H1 => &[b"http/1.1"],
            Proto::H2 => &[b"h2", b"http/1.1"],
        };
        let tls = tls_connect(addr, ca_pem, server_name, alpn, client_auth).await?;
        let (_, session) = tls.get_ref();
        let selected = session.alpn_protocol().map(<[u8]>::to_vec);
        let peer_chain = session
            .peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|c| c.as_ref().to_vec())
            .collect();
        let io = TokioIo::new(tls);
        let sender = match proto {
            Proto::H1 => {
                let (sender, conn) = http1::handshake(io).await?;
                tokio::spawn(conn);
                Sender::H1(sender)
            }
            Proto::H2 => {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(conn);
                Sender::H2(sender)
            }
        };
        Ok(Conn {
            sender,
            authority: format!("localhost:{}", addr.port()),
            alpn: selected,
            peer_chain,
        })
    }

    pub fn request(&self, path_and_query: &str, body: TestBody) -> Request<TestBody> {
        Request::post(format!("https://{}{}", self.authority, path_and_query))
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .body(body)
            .unwrap()
    }

    pub async fn send(
        &mut self,
        req: Request<TestBody>,
    ) -> Result<Response<Incoming>, hyper::Error> {
        match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }

    /// POSTs `body` and returns the status and the whole response body.
    pub async fn post(
        &mut self,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), hyper::Error> {
        let req = self.request(path_and_query, full(body));
        let resp = self.send(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// A request body fed by the test, chunk by chunk, to hold a request open.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

pub fn channel_body() -> (mpsc::Sender<Bytes>, TestBody) {
    let (tx, rx) = mpsc::channel(4);
    (tx, ChannelBody { rx }.boxed())
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// A client certificate signed by the CA in `certs_dir`.
pub fn client_cert(certs_dir: &Path) -> ClientAuth {
    let ca_pem = std::fs::read_to_string(certs_dir.join("ca.crt")).unwrap();
    let ca_key = std::fs::read_to_string(certs_dir.join("ca.key")).unwrap();
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&ca_pem, rcgen::KeyPair::from_pem(&ca_key).unwrap())
            .unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (
        vec![cert.der().clone()],
        PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
    )
}

/// Held by the tests that load the machine or judge a deadline under load (the memory test,
/// the slow-client attack): since they share one test binary with the rest, two of them
/// must not run at once on 2 cores.
pub async fn heavy_test_turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// Startup of a debug build of `serve` (certificate generation, policy compile) on a busy
/// machine.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Our own child process, killed by its handle when dropped (a panic included): nothing
/// else is signalled.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the spawned `serve` answers `/readyz` 200 on `admin`, or returns how it
/// exited; fails the test after [`READY_TIMEOUT`], with its log.
pub async fn ready_or_exit(
    child: &mut KillOnDrop,
    admin: SocketAddr,
    log: &Path,
) -> Result<(), std::process::ExitStatus> {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return Err(status);
        }
        let probe = tokio::time::timeout(Duration::from_secs(5), try_admin_get(admin, "/readyz"));
        if let Ok(Ok((StatusCode::OK, _))) = probe.await {
            return Ok(());
        }
        assert!(
            started.elapsed() < READY_TIMEOUT,
            "server not ready within {READY_TIMEOUT:?}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
