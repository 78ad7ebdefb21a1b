//! The Prometheus example (`policies/70-prometheus.yaml`) with the real thing: the stored
//! PySpark driver pod is planned in-process under the example, the driver's
//! `SPARK_SUBMIT_OPTS` is given to Apache Spark's own `spark-submit` (client mode, as the
//! driver container runs it), and Debian's Prometheus scrapes the driver at the annotated
//! path. Two runs of the same app (two application ids) must give the same metric names:
//! that is what makes a dashboard possible.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use spark_admission::engine::{Engine, MutateRequest, SUBMIT_OPTS_VAR};
use spark_admission::matching::PolicySet;
use spark_admission::policy::{parse_documents, PolicySource};

use spark_admission_testkit::pyspark::Pyspark;

use crate::spark_conf::kubelet_expand;

const NAMESPACE: &str = "team-ml";
const DRIVER_CONTAINER: &str = "spark-kubernetes-driver";

/// Runs a job (so job/stage metrics exist), says its application id, then keeps the UI up
/// until the test creates `stop` (at most 90 s, so a lost test cannot leave it running).
const APP: &str = r#"import os, time
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
spark.sparkContext.parallelize(range(1000), 2).map(lambda x: x * x).sum()
print("E2E-APP " + spark.sparkContext.applicationId, flush=True)
deadline = time.time() + 90
while not os.path.exists("stop") and time.time() < deadline:
    time.sleep(0.2)
spark.stop()
"#;

/// What the planned driver says about its metrics.
struct Planned {
    submit_opts: String,
    app_name: String,
    port: String,
    path: String,
}

fn plan() -> Planned {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("policies/70-prometheus.yaml"))
        .expect("the example policy");
    plan_with(&text)
}

/// The stored PySpark driver planned under `policy`.
fn plan_with(policy: &str) -> Planned {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let loaded = parse_documents(&PolicySource("70-prometheus.yaml".into()), policy)
        .unwrap_or_else(|e| panic!("policy: {e:?}"));
    let set = PolicySet::new(loaded.into_iter().map(Arc::new));
    let fixture = root.join("tests/fixtures/spark/driver-pyspark-pi.json");
    let mut pod: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).expect("fixture")).expect("JSON");
    let typed: Pod = serde_json::from_value(pod.clone()).expect("a Pod");
    let m = Engine::default()
        .mutate(MutateRequest::new(&set, &typed, NAMESPACE))
        .expect("the engine plans the pod");
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    json_patch::patch(&mut pod, &m.patch).expect("the patch applies");

    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    let text = |v: &Value| v.as_str().expect("a string").to_owned();
    let env = pod["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == DRIVER_CONTAINER))
        .and_then(|c| c["env"].as_array())
        .expect("the driver's env");
    let mut defined = Vec::new();
    let mut submit_opts = None;
    for e in env {
        let (Some(name), Some(value)) = (e["name"].as_str(), e["value"].as_str()) else {
            continue;
        };
        let value = kubelet_expand(value, &defined);
        if name == SUBMIT_OPTS_VAR {
            submit_opts = Some(value.clone());
        }
        defined.push((name.to_owned(), value));
    }
    Planned {
        submit_opts: submit_opts.expect("SPARK_SUBMIT_OPTS on the driver"),
        app_name: text(&pod["metadata"]["labels"]["spark-app-name"]),
        port: text(&annotations["prometheus.io/port"]),
        path: text(&annotations["prometheus.io/path"]),
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").port()
}

/// `GET path` over HTTP/1.0 on loopback: status and body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// An instant query's result vector.
fn query(prom: u16, promql: &str) -> Vec<Value> {
    let (status, body) = http_get(prom, &format!("/api/v1/query?query={}", url_encode(promql)))
        .unwrap_or_else(|| panic!("Prometheus did not answer {promql}"));
    assert_eq!(status, 200, "{promql}: {body}");
    let v: Value = serde_json::from_str(&body).expect("Prometheus answers JSON");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn names(prom: u16, selector: &str) -> BTreeSet<String> {
    query(prom, &format!("group by (__name__) ({selector})"))
        .iter()
        .filter_map(|r| r["metric"]["__name__"].as_str().map(str::to_owned))
        // Prometheus' own series about the scrape.
        .filter(|n| n != "up" && !n.starts_with("scrape_"))
        .collect()
}

fn wait_for(what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Ends a child this test started, on every path out of the test.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's `prometheus`, or `None` (with the one line saying so) where it is missing and
/// not required. CI installs it, so there a missing one fails.
fn prometheus_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let msg = "prometheus is not installed (apt-get install prometheus)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("spark tier: prometheus test skipped: {msg}");
    }
    found
}

fn start_prometheus(bin: &Path, dir: &Path, path: &str, targets: &[u16]) -> (Running, u16) {
    let port = free_port();
    let targets: Vec<String> = targets
        .iter()
        .map(|p| format!("\"127.0.0.1:{p}\""))
        .collect();
    let targets = targets.join(", ");
    // One job at the annotated path, as an annotation-based scrape config would build it,
    // and one at the executors' path (the PodMonitor of the example's comment).
    let config = format!(
        "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\n\
         scrape_configs:\n\
         - job_name: driver\n  metrics_path: {path}\n  static_configs: [{{targets: [{targets}]}}]\n\
         - job_name: executors\n  metrics_path: /metrics/executors/prometheus\n  static_configs: [{{targets: [{targets}]}}]\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).expect("config");
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
    let child = Command::new(bin)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus starts");
    let running = Running(child);
    wait_for("Prometheus ready", Duration::from_secs(30), || {
        http_get(port, "/-/ready").is_some_and(|(s, _)| s == 200)
    });
    (running, port)
}

/// What one run of the app showed Prometheus.
struct Run {
    app_id: String,
    driver: BTreeSet<String>,
    executors: BTreeSet<String>,
}

/// The app running under `spark-submit` with its job done and its UI up.
struct App {
    child: Running,
    dir: tempfile::TempDir,
    app_id: String,
    version: String,
}

impl App {
    /// `properties` is the spark.properties the submitter wrote. In a pod each driver has
    /// its own network and serves at Spark's default 4040 (what the annotation says); here
    /// the tests share one, so each run gets a free port, and no fallback to the next one.
    fn start(spark: &Pyspark, submit_opts: &str, properties: &str, ui_port: u16) -> App {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        std::fs::write(
            d.join("spark.properties"),
            format!("{properties}spark.ui.port={ui_port}\nspark.port.maxRetries=0\n"),
        )
        .expect("properties");
        std::fs::write(d.join("app.py"), APP).expect("app");
        let child = spark
            .driver_in_client_mode(d, submit_opts)
            .expect("output files")
            .spawn()
            .expect("spark-submit starts");
        let mut app = App {
            child: Running(child),
            dir,
            app_id: String::new(),
            version: spark.version.clone(),
        };
        let v = &spark.version;
        wait_for(
            &format!("pyspark {v}: the app's job"),
            Duration::from_secs(120),
            || {
                if let Ok(Some(status)) = app.child.0.try_wait() {
                    panic!(
                        "pyspark {v}: spark-submit ended ({status}) before its job\n{}",
                        app.output()
                    );
                }
                let id = std::fs::read_to_string(app.dir.path().join("stdout"))
                    .unwrap_or_default()
                    .lines()
                    .find_map(|l| l.strip_prefix("E2E-APP ").map(str::to_owned));
                app.app_id = id.unwrap_or_default();
                !app.app_id.is_empty()
            },
        );
        app
    }

    fn output(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("{}\n--- stderr ---\n{}", read("stdout"), read("stderr"))
    }

    /// Lets the app end by itself, as a finished job does.
    fn stop(mut self) {
        std::fs::write(self.dir.path().join("stop"), "").expect("stop file");
        let v = self.version.clone();
        wait_for(
            &format!("pyspark {v}: the app ends"),
            Duration::from_secs(60),
            || matches!(self.child.0.try_wait(), Ok(Some(_))),
        );
    }
}

fn run_app(spark: &Pyspark, planned: &Planned, prom: u16, ui_port: u16) -> Run {
    let properties = format!("spark.app.name={}\n", planned.app_name);
    let app = App::start(spark, &planned.submit_opts, &properties, ui_port);
    let v = &spark.version;
    let run = format!("instance=\"127.0.0.1:{ui_port}\"");
    // Up, and scraped a few times since the job ended (1 s interval).
    wait_for(
        &format!("pyspark {v}: up == 1"),
        Duration::from_secs(30),
        || {
            ["driver", "executors"]
                .iter()
                .all(|job| query(prom, &format!("up{{job=\"{job}\",{run}}} == 1")).len() == 1)
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let driver = names(prom, &format!("{{job=\"driver\",{run}}}"));
    let executors = names(prom, &format!("{{job=\"executors\",{run}}}"));
    let app_id = app.app_id.clone();
    app.stop();
    Run {
        app_id,
        driver,
        executors,
    }
}

pub fn metric_names_are_the_same_for_every_run(venvs: Vec<Pyspark>) {
    let planned = plan();
    // The example names the namespace after the spark-app-name label, rendered by the
    // webhook: Spark gets a literal, nothing for it to resolve.
    let namespace_opt = format!("-Dspark.metrics.namespace={}", planned.app_name);
    assert!(
        planned.submit_opts.split(' ').any(|o| o == namespace_opt),
        "{}",
        planned.submit_opts
    );
    // In a pod the driver serves its UI at Spark's default port, the annotated one.
    assert_eq!(planned.port, "4040");
    assert!(!planned.submit_opts.contains("spark.ui.port"));
    let Some(bin) = prometheus_binary() else {
        return;
    };
    let prefix = format!("metrics_{}_driver_", planned.app_name.replace('-', "_"));
    for spark in &venvs {
        let v = &spark.version;
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = [free_port(), free_port()];
        let (_prom, prom) = start_prometheus(&bin, dir.path(), &planned.path, &ports);
        let runs: Vec<Run> = ports
            .iter()
            .map(|&p| run_app(spark, &planned, prom, p))
            .collect();
        let (a, b) = (&runs[0], &runs[1]);
        assert_ne!(
            a.app_id, b.app_id,
            "pyspark {v}: two runs, two application ids"
        );
        assert!(
            a.driver.len() > 50,
            "pyspark {v}: the driver's metrics were scraped: {:?}",
            a.driver
        );
        assert_eq!(
            a.driver, b.driver,
            "pyspark {v}: the same driver metric names"
        );
        assert_eq!(
            a.executors, b.executors,
            "pyspark {v}: the same executor metric names"
        );
        assert!(
            a.executors.contains("metrics_executor_memoryUsed_bytes"),
            "pyspark {v}: {:?}",
            a.executors
        );
        for name in &a.driver {
            assert!(name.starts_with(&prefix), "pyspark {v}: {name}");
        }
        for run in &runs {
            let id = run
                .app_id
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_");
            assert!(
                !run.driver.iter().any(|n| n.contains(&id)),
                "pyspark {v}: no name carries the application id {id}"
            );
        }
        let heap = format!("{prefix}ExecutorMetrics_JVMHeapMemory_Value");
        assert!(a.driver.contains(&heap), "pyspark {v}: {:?}", a.driver);
        eprintln!(
            "pyspark {v}: apps {} and {}: the same {} driver and {} executor metric names, e.g. {heap}",
            a.app_id,
            b.app_id,
            a.driver.len(),
            a.executors.len()
        );
    }
}

/// Why the example renders the label instead of handing Spark its own
/// `${spark.app.name}` (the `$${` escape): Spark does resolve that in the metrics
/// namespace, and it resolves references inside the app name as well, so an app name can
/// pull any other setting (a credential a policy put there) into published metric names.
pub fn spark_resolves_references_inside_the_app_name_in_the_metrics_namespace(venvs: Vec<Pyspark>) {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/70-prometheus.yaml"),
    )
    .expect("the example policy");
    let escaped = example.replace(
        "spark.metrics.namespace: ${app.name}",
        "spark.metrics.namespace: $${spark.app.name}",
    );
    assert_ne!(
        escaped, example,
        "the example sets the namespace from ${{app.name}}"
    );
    let planned = plan_with(&escaped);
    assert!(
        planned
            .submit_opts
            .contains("'-Dspark.metrics.namespace=${spark.app.name}'"),
        "{}",
        planned.submit_opts
    );
    let properties = "spark.app.name=${spark.admission.token}\nspark.admission.token=s3cr3t\n";
    for spark in &venvs {
        let v = &spark.version;
        let port = free_port();
        let app = App::start(spark, &planned.submit_opts, properties, port);
        // The annotated path answers with a redirect to the same path with a slash.
        let path = format!("{}/", planned.path.trim_end_matches('/'));
        let (status, body) = http_get(port, &path).expect("the driver's metrics");
        assert_eq!(status, 200, "pyspark {v}: {body}");
        let first = body.lines().find(|l| l.starts_with("metrics_"));
        assert!(
            first.is_some_and(|l| l.starts_with("metrics_s3cr3t_driver_")),
            "pyspark {v}: {first:?}"
        );
        eprintln!(
            "pyspark {v}: with $${{spark.app.name}}: {}",
            first.unwrap_or_default()
        );
        app.stop();
    }
}
