//! Scenario 7: Apache Spark's own spark-submit (every pyspark venv given) against the real
//! API server and the webhook. Nothing runs the pods (no kubelet): the driver pod of
//! cluster mode and the executor pods of client mode are read back as stored.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::assets::{self, Pyspark};
use crate::cluster::Cluster;
use crate::scenario::Scenario;

/// Drivers in spark-denied-* must carry an owner label: the way to fix it is a --conf.
const DENY_POLICY: &str = r#"apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata:
  name: e2e-owner-required
spec:
  namespaces: ["spark-denied-*"]
  selector:
    roles: [driver]
  validate:
    mode: enforce
    requiredLabels: [e2e.example.com/owner]
"#;

/// A client-mode app: the SparkSession makes the executor pods, then it stops.
const CLIENT_APP: &str = "import time\nfrom pyspark.sql import SparkSession\nspark = SparkSession.builder.getOrCreate()\ntime.sleep(8)\nspark.stop()\n";

fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spark-submit");
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
    }
    child.wait_with_output().expect("spark-submit output")
}

pub(crate) fn spark_submit(
    c: &Cluster,
    spark: &Pyspark,
    dir: &Path,
    ns: &str,
    args: &[&str],
) -> Output {
    let mut cmd = spark.command(dir);
    cmd.arg("--master")
        .arg(format!("k8s://{}", c.url))
        .args(["--conf", &format!("spark.kubernetes.namespace={ns}")])
        .args([
            "--conf",
            "spark.kubernetes.container.image=apache/spark:3.5.3",
        ])
        .args(args);
    run_bounded(cmd, Duration::from_secs(150))
}

/// Runs [`CLIENT_APP`] (written into `dir`) in client mode as `name` in `ns`: the driver runs
/// here on loopback, authenticates as the test cluster's admin and asks for two executor
/// pods, kept after the run. `extra` comes before the app. Returns the two executors as
/// stored (fails the test, with spark-submit's output, for any other count).
pub(crate) async fn client_mode_executors(
    c: &Cluster,
    client: &kube::Client,
    spark: &Pyspark,
    dir: &Path,
    ns: &str,
    name: &str,
    extra: &[String],
) -> Vec<Pod> {
    let app = dir.join("client_app.py");
    std::fs::write(&app, CLIENT_APP).expect("app");
    let mut args: Vec<String> = ["--deploy-mode", "client", "--name", name]
        .map(str::to_owned)
        .to_vec();
    for setting in [
        format!(
            "spark.kubernetes.authenticate.caCertFile={}",
            c.ca_file.display()
        ),
        format!("spark.kubernetes.authenticate.oauthToken={}", c.token),
        "spark.executor.instances=2".to_owned(),
        "spark.driver.host=127.0.0.1".to_owned(),
        "spark.driver.bindAddress=127.0.0.1".to_owned(),
        "spark.kubernetes.executor.deleteOnTermination=false".to_owned(),
        "spark.scheduler.maxRegisteredResourcesWaitingTime=3s".to_owned(),
        "spark.ui.enabled=false".to_owned(),
    ] {
        args.push("--conf".to_owned());
        args.push(setting);
    }
    args.extend(extra.iter().cloned());
    args.push(app.display().to_string());
    let out = spark_submit(
        c,
        spark,
        dir,
        ns,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let executors = spark_pods(client, ns, "executor").await;
    assert_eq!(
        executors.len(),
        2,
        "{}: client mode created {} executor pods:\n{}",
        spark.version,
        executors.len(),
        tail(&text(&out))
    );
    executors
}

pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub(crate) fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

pub(crate) async fn spark_pods(client: &kube::Client, ns: &str, role: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("spark-role={role}")))
        .await
        .expect("list pods")
        .items
}

fn applied(pod: &Pod) -> String {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(spark_admission::engine::APPLIED_ANNOTATION))
        .cloned()
        .unwrap_or_default()
}

pub async fn spark_submit_meets_the_webhook_in_cluster_and_client_mode() {
    let sparks = assets::sparks();
    let namespaces_of = |spark: &Pyspark| {
        let v = spark.version.replace('.', "-");
        (format!("team-spark-{v}"), format!("spark-denied-{v}"))
    };
    let all: Vec<String> = sparks
        .iter()
        .flat_map(|s| {
            let (a, b) = namespaces_of(s);
            [a, b]
        })
        .collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let extra = [("e2e-owner-required.yaml", DENY_POLICY)];
    // Held to the end: its webhook serves every submission below.
    let scenario = Scenario::start("spark_submit", &all, &extra).await;
    let (c, client) = (scenario.cluster(), &scenario.client);
    let ca = c.ca_file.display().to_string();
    let token = c.token.clone();
    for spark in &sparks {
        let (ns, denied_ns) = namespaces_of(spark);
        let submission = [
            "--conf".to_owned(),
            format!("spark.kubernetes.authenticate.submission.caCertFile={ca}"),
            "--conf".to_owned(),
            format!("spark.kubernetes.authenticate.submission.oauthToken={token}"),
        ];
        let cluster_mode = |name: &str| -> Vec<String> {
            let mut a = vec![
                "--deploy-mode".to_owned(),
                "cluster".to_owned(),
                "--name".to_owned(),
                name.to_owned(),
            ];
            a.extend(submission.iter().cloned());
            a.extend(
                [
                    "--conf",
                    "spark.kubernetes.submission.waitAppCompletion=false",
                    "--class",
                    "org.apache.spark.examples.SparkPi",
                    "local:///opt/spark/examples/jars/spark-examples.jar",
                    "10",
                ]
                .map(str::to_owned),
            );
            a
        };

        // Cluster mode: spark-submit creates the driver pod and returns.
        let args = cluster_mode("e2e-pi");
        let out = spark_submit(
            c,
            spark,
            &scenario.env.dir,
            &ns,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert!(
            out.status.success(),
            "spark-submit {} cluster mode failed:\n{}",
            spark.version,
            tail(&text(&out))
        );
        let drivers = spark_pods(client, &ns, "driver").await;
        assert_eq!(drivers.len(), 1, "{}: one driver pod", spark.version);
        let d = &drivers[0];
        let a = applied(d);
        assert!(
            a.contains("team-defaults@") && a.contains("spot-executors@"),
            "{}: driver policies: {a}",
            spark.version
        );
        let labels = d.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("cost-center").map(String::as_str),
            Some("data-platform")
        );
        assert_eq!(
            labels.get("spark-version").map(String::as_str),
            Some(spark.version.as_str())
        );
        let spec = d.spec.clone().unwrap_or_default();
        assert_eq!(
            spec.priority,
            Some(1000),
            "{}: priority from spark-driver",
            spark.version
        );
        assert!(
            spec.affinity.and_then(|a| a.node_affinity).is_some(),
            "{}: the driver lacks the on-demand node affinity",
            spark.version
        );

        // A policy that denies the driver: spark-submit fails, with our message.
        let args = cluster_mode("e2e-denied");
        let out = spark_submit(
            c,
            spark,
            &scenario.env.dir,
            &denied_ns,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let all = text(&out);
        assert!(
            !out.status.success(),
            "spark-submit {} succeeded against a denying policy",
            spark.version
        );
        assert!(
            all.contains("e2e-owner-required")
                && all.contains("spark.kubernetes.driver.label.e2e.example.com/owner"),
            "spark-submit {}'s output lacks the webhook's message:\n{}",
            spark.version,
            tail(&all)
        );
        assert!(spark_pods(client, &denied_ns, "driver").await.is_empty());

        // Client mode: the local driver creates executor pods through the API.
        let executors =
            client_mode_executors(c, client, spark, &scenario.env.dir, &ns, "e2e-client", &[])
                .await;
        for e in &executors {
            let a = applied(e);
            assert!(
                a.contains("spot-executors@") && a.contains("team-defaults@"),
                "{}: executor policies: {a}",
                spark.version
            );
            let tolerations = e
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.clone())
                .unwrap_or_default();
            assert!(
                tolerations
                    .iter()
                    .any(|t| t.key.as_deref() == Some("cloud.example.com/spot")),
                "{}: executor lacks the spot toleration",
                spark.version
            );
            assert!(
                e.metadata
                    .owner_references
                    .as_ref()
                    .is_none_or(|o| o.is_empty()),
                "client-mode executors have no driver pod to be owned by"
            );
        }
        eprintln!("spark_submit {}: cluster driver stored with policies, denied driver refused, {} client executors stored with policies", spark.version, executors.len());
    }
}
