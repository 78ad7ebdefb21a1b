//! The webhook as a cluster runs it: the real `spark-admission serve` binary as a child
//! process, registered with the API server through `deploy/base/webhooks.yaml` exactly as
//! shipped, only `clientConfig` swapped for a loopback `url` and our CA.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::process::{free_port, http_get, wait_until, Background};

/// The name of the shipped policy-ConfigMap webhook (in the validating configuration).
pub const POLICY_WEBHOOK: &str = "policies.spark-admission.io";

pub enum Policies<'a> {
    Folder(&'a Path),
    /// ConfigMaps in this namespace, read through the cluster's kubeconfig.
    ConfigMaps(&'a str),
}

pub struct Webhook {
    pub port: u16,
    pub admin_port: u16,
    pub certs: PathBuf,
    pub proc: Background,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    dir: PathBuf,
}

impl Webhook {
    /// Starts `spark-admission serve` and waits until /readyz answers 200.
    pub fn start(cluster: &Cluster, dir: &Path, policies: Policies<'_>) -> Webhook {
        let port = free_port();
        let admin_port = free_port();
        let certs = dir.join("webhook-certs");
        let mut args = vec![
            "serve".to_owned(),
            format!("--listen=127.0.0.1:{port}"),
            format!("--admin-listen=127.0.0.1:{admin_port}"),
            format!("--certs-dir={}", certs.display()),
            "--cert-poll-interval=200ms".to_owned(),
            "--policy-poll-interval=200ms".to_owned(),
            "--log-format=text".to_owned(),
            "--shutdown-grace=2s".to_owned(),
        ];
        let mut env = Vec::new();
        match policies {
            Policies::Folder(p) => {
                args.push("--policy-source=folder".into());
                args.push(format!("--policies={}", p.display()));
            }
            Policies::ConfigMaps(ns) => {
                args.push("--policy-source=configmaps".into());
                args.push(format!("--policy-namespace={ns}"));
                env.push(("KUBECONFIG", cluster.kubeconfig.display().to_string()));
            }
        }
        let mut w = Webhook {
            port,
            admin_port,
            certs,
            proc: spawn(dir, &args, &env),
            args,
            env,
            dir: dir.to_path_buf(),
        };
        w.wait_ready();
        w
    }

    fn wait_ready(&mut self) {
        let admin = self.admin_port;
        if let Err(e) = wait_until("webhook /readyz", Duration::from_secs(30), || {
            http_get(admin, "/readyz").is_some_and(|(s, _)| s == 200)
        }) {
            panic!("{e}\n{}", self.proc.log_tail(30));
        }
    }

    /// Stops the process (SIGTERM, drain).
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// Starts it again with the same flags, ports and certificates.
    pub fn restart(&mut self) {
        self.proc.stop();
        self.proc = spawn(&self.dir, &self.args, &self.env);
        self.wait_ready();
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.certs.join("ca.crt")).expect("webhook ca.crt")
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// The admin port's /metrics text.
    pub fn metrics(&self) -> String {
        http_get(self.admin_port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// Reviews answered on one endpoint (`mutate`, `validate`, `validate-policy`), summed
    /// over every label.
    pub fn reviews(&self, endpoint: &str) -> f64 {
        metric_sum(
            &self.metrics(),
            "spark_admission_requests_total",
            &format!("endpoint=\"{endpoint}\""),
        )
    }
}

fn spawn(dir: &Path, args: &[String], env: &[(&'static str, String)]) -> Background {
    Background::start(
        "spark-admission",
        dir,
        Path::new(env!("CARGO_BIN_EXE_spark-admission")),
        args,
        env,
    )
}

/// Sum of a Prometheus series' samples whose labels contain `filter`.
pub fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The shipped webhook configurations (deploy/base/webhooks.yaml), pointed at `webhook`.
/// `with_policy_webhook: false` leaves out the policy-ConfigMap webhook (for tests that
/// must store a broken policy ConfigMap, which that webhook would refuse).
pub fn shipped_configurations(
    webhook: &Webhook,
    with_policy_webhook: bool,
) -> (MutatingWebhookConfiguration, ValidatingWebhookConfiguration) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base/webhooks.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/base/webhooks.yaml");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("webhooks.yaml is YAML");
    let ca = base64::engine::general_purpose::STANDARD.encode(webhook.ca_pem());
    let mut mutating = None;
    let mut validating = None;
    for mut doc in docs.into_iter().filter(|d| !d.is_null()) {
        let hooks = doc["webhooks"].as_array_mut().expect("webhooks list");
        if !with_policy_webhook {
            hooks.retain(|h| h["name"] != POLICY_WEBHOOK);
        }
        for h in hooks.iter_mut() {
            let path = h["clientConfig"]["service"]["path"]
                .as_str()
                .expect("shipped webhooks call a service path")
                .to_owned();
            h["clientConfig"] = json!({"url": webhook.url(&path), "caBundle": ca});
        }
        match doc["kind"].as_str() {
            Some("MutatingWebhookConfiguration") => {
                mutating = Some(serde_json::from_value(doc).expect("mutating configuration"))
            }
            Some("ValidatingWebhookConfiguration") => {
                validating = Some(serde_json::from_value(doc).expect("validating configuration"))
            }
            other => panic!("unexpected kind {other:?} in webhooks.yaml"),
        }
    }
    (
        mutating.expect("a MutatingWebhookConfiguration"),
        validating.expect("a ValidatingWebhookConfiguration"),
    )
}

/// Registers the shipped configurations for `webhook` (server-side apply, replacing what
/// an earlier test registered under the same names) and waits until the API server calls
/// it: a dry-run Spark pod in `probe_ns` must reach both endpoints.
pub async fn register(
    client: &Client,
    webhook: &Webhook,
    probe_ns: &str,
    with_policy_webhook: bool,
) {
    let (m, v) = shipped_configurations(webhook, with_policy_webhook);
    apply(client, &m, &v).await;
    wait_called(client, webhook, probe_ns).await;
}

pub async fn apply(
    client: &Client,
    m: &MutatingWebhookConfiguration,
    v: &ValidatingWebhookConfiguration,
) {
    let pp = PatchParams::apply("spark-admission-e2e").force();
    let name = m.metadata.name.clone().expect("name");
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(&name, &pp, &Patch::Apply(m))
        .await
        .expect("apply MutatingWebhookConfiguration");
    let name = v.metadata.name.clone().expect("name");
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch(&name, &pp, &Patch::Apply(v))
        .await
        .expect("apply ValidatingWebhookConfiguration");
}

/// The API server learns of webhook configurations through a watch: confirm with
/// dry-run pods rather than sleeping.
pub async fn wait_called(client: &Client, webhook: &Webhook, ns: &str) {
    let (m0, v0) = (webhook.reviews("mutate"), webhook.reviews("validate"));
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    loop {
        match pods
            .create(
                &PostParams {
                    dry_run: true,
                    ..PostParams::default()
                },
                &probe_pod(),
            )
            .await
        {
            Ok(_) => {}
            Err(e) => last = e.to_string(),
        }
        if webhook.reviews("mutate") > m0 && webhook.reviews("validate") > v0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the API server did not call the webhook within 30 s (last error: {last})\n{}",
            webhook.proc.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// [`probe_pod`] under another name.
pub fn driver_pod(name: &str) -> Pod {
    let mut pod = probe_pod();
    pod.metadata.name = Some(name.to_owned());
    pod
}

/// A minimal driver pod as spark-submit makes them (labels, container name).
pub fn probe_pod() -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "e2e-probe-driver",
            "labels": {
                "spark-role": "driver",
                "spark-app-selector": "spark-probe",
                "spark-app-name": "probe",
                "spark-version": "3.5.9"
            }
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "spark-kubernetes-driver", "image": "apache/spark:3.5.3", "args": ["driver"]}]
        }
    }))
    .expect("probe pod")
}

/// Removes the shipped configurations (as before an install).
pub async fn unregister(client: &Client) {
    let dp = kube::api::DeleteParams::default();
    for result in [
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .delete("spark-admission", &dp)
            .await
            .map(|_| ()),
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .delete("spark-admission", &dp)
            .await
            .map(|_| ()),
    ] {
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => panic!("delete webhook configuration: {e}"),
        }
    }
}
