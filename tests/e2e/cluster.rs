//! One etcd + kube-apiserver per test binary run, on free loopback ports, with generated
//! certificates and a `system:masters` bearer token; tests take turns on it.
//!
//! Tests run one at a time (`Env` holds a process-wide lock): the webhook configurations
//! are cluster-scoped and registered exactly as shipped (every namespace but kube-system
//! and spark-admission), so two tests' webhooks would otherwise see each other's pods.
//! Namespaces keep their objects apart; a deleted namespace would stay Terminating here (no
//! controller-manager), so each test makes its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

use crate::assets::{self, KubeAssets};
use crate::process::{free_port, wait_until, Background};

pub struct Cluster {
    pub assets: KubeAssets,
    pub dir: PathBuf,
    pub url: String,
    pub ca_file: PathBuf,
    pub token: String,
    pub kubeconfig: PathBuf,
    _etcd: Background,
    pub apiserver: Background,
}

/// What one test gets: the cluster (its turn on it) and a folder of its own.
pub struct Env {
    pub cluster: &'static Cluster,
    pub dir: PathBuf,
    _turn: MutexGuard<'static, ()>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static TURN: Mutex<()> = Mutex::new(());

/// The shared cluster and this test's turn on it (the harness runs a test only when the
/// assets are there).
pub fn env(test: &'static str) -> Env {
    let assets = assets::kube().unwrap_or_else(|e| panic!("{test}: {e}"));
    // A test that panicked poisons the lock; the cluster itself is still fine.
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = match CLUSTER.get_or_init(|| Cluster::start(assets)) {
        Ok(c) => c,
        Err(e) => panic!("{test}: the test cluster did not start: {e}"),
    };
    let dir = cluster.dir.join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test folder");
    Env {
        cluster,
        dir,
        _turn: turn,
    }
}

fn run_root() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e");
    // Folders of earlier runs whose test process is gone.
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("run-") {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    root.join(format!("run-{}", std::process::id()))
}

impl Cluster {
    fn start(assets: KubeAssets) -> Result<Cluster, String> {
        let started = Instant::now();
        let dir = run_root();
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let w = |name: &str, text: &str| -> Result<PathBuf, String> {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok(p)
        };
        let tls = spark_admission::certs::generate(&[]).map_err(|e| e.to_string())?;
        let ca_file = w("ca.crt", &tls.ca_cert_pem)?;
        let serving_cert = w("apiserver.crt", &tls.tls_cert_pem)?;
        let serving_key = w("apiserver.key", &tls.tls_key_pem)?;
        let sa = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let sa_key = w("sa.key", &sa.serialize_pem())?;
        let sa_pub = w("sa.pub", &sa.public_key_pem())?;
        let token = format!("e2e-{:x}", rand_u64());
        let tokens = w(
            "tokens.csv",
            &format!("{token},e2e-admin,e2e-admin,system:masters\n"),
        )?;

        let etcd_port = free_port();
        let peer_port = free_port();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = Background::start(
            "etcd",
            &dir,
            &assets.etcd,
            &[
                format!("--data-dir={}", dir.join("etcd-data").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
            &[],
        );
        wait_until("etcd", Duration::from_secs(30), || {
            crate::process::http_get(etcd_port, "/health")
                .is_some_and(|(s, b)| s == 200 && b.contains("true"))
        })
        .map_err(|e| format!("{e}\n{}", etcd.log_tail(20)))?;

        let port = free_port();
        let apiserver = Background::start(
            "kube-apiserver",
            &dir,
            &assets.kube_apiserver,
            &[
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                format!("--etcd-servers={etcd_url}"),
                format!("--tls-cert-file={}", serving_cert.display()),
                format!("--tls-private-key-file={}", serving_key.display()),
                format!("--client-ca-file={}", ca_file.display()),
                format!("--token-auth-file={}", tokens.display()),
                format!("--service-account-key-file={}", sa_pub.display()),
                format!("--service-account-signing-key-file={}", sa_key.display()),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--authorization-mode=RBAC".into(),
                // ServiceAccount stays on: pods are stored as a real cluster stores them
                // (serviceAccountName, the projected token volume); tests create `default`.
                "--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook"
                    .into(),
                "--allow-privileged=true".into(),
                // In-place resize (pods/resize) is a gate in 1.32, on by default from 1.33.
                "--feature-gates=InPlacePodVerticalScaling=true".into(),
                "--endpoint-reconciler-type=none".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
            &[],
        );
        let url = format!("https://127.0.0.1:{port}");
        let kubeconfig = w(
            "kubeconfig",
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {url}\n    certificate-authority: {}\nusers:\n- name: e2e-admin\n  user:\n    token: {token}\ncontexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: e2e-admin\ncurrent-context: e2e\n",
                ca_file.display()
            ),
        )?;
        let cluster = Cluster {
            assets,
            dir,
            url,
            ca_file,
            token,
            kubeconfig,
            _etcd: etcd,
            apiserver,
        };
        wait_until("kube-apiserver /readyz", Duration::from_secs(90), || {
            cluster
                .kubectl(&["get", "--raw", "/readyz"], None)
                .status
                .success()
        })
        .map_err(|e| format!("{e}\n{}", cluster.apiserver.log_tail(30)))?;
        // The webhook's own namespace, which the shipped selectors leave out: policy
        // ConfigMaps live there, and pods dry-run there are seen by no webhook.
        let unwatched = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": crate::expect::UNWATCHED_NS}},
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": crate::expect::UNWATCHED_NS}},
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "spark", "namespace": crate::expect::UNWATCHED_NS}},
        ]});
        let out = cluster.kubectl(&["create", "-f", "-"], Some(&unwatched.to_string()));
        if !out.status.success() {
            return Err(format!(
                "creating {}: {}",
                crate::expect::UNWATCHED_NS,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        eprintln!(
            "e2e: kube-apiserver ready at {} after {:.1} s",
            cluster.url,
            started.elapsed().as_secs_f64()
        );
        Ok(cluster)
    }

    /// A kube-rs client for the calling test's runtime (a client's connections belong to
    /// the runtime that made them, and every test has its own).
    pub async fn client(&self) -> Client {
        let kc = Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("client config");
        Client::try_from(config).expect("client")
    }

    /// `kubectl --kubeconfig … args`, with `stdin` fed when given.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(&self.assets.kubectl);
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl");
        if let Some(text) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("kubectl stdin");
            pipe.write_all(text.as_bytes()).expect("kubectl stdin");
        }
        child.wait_with_output().expect("kubectl")
    }

    /// Removes every policy ConfigMap an earlier test left in the webhook's namespace.
    pub fn delete_policy_configmaps(&self) {
        let out = self.kubectl(
            &[
                "delete",
                "configmap",
                "-n",
                crate::expect::UNWATCHED_NS,
                "-l",
                "spark-admission.io/policy=true",
            ],
            None,
        );
        assert!(
            out.status.success(),
            "deleting policy ConfigMaps: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A new namespace with the ServiceAccounts pods name (the ServiceAccount admission
    /// plugin refuses a pod whose account does not exist).
    pub async fn namespace(&self, client: &Client, name: &str, labels: &[(&str, &str)]) {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        match Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("namespace {name}: {e}"),
        }
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
        for sa in ["default", "spark"] {
            let obj = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(sa.to_owned()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            };
            match accounts.create(&PostParams::default(), &obj).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => panic!("serviceaccount {name}/{sa}: {e}"),
            }
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
