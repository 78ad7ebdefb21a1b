//! sparkConf with the real thing: the driver pod as spark-submit 3.5.9 created it is
//! planned in-process with a policy carrying sparkConf, and the resulting driver
//! `SPARK_SUBMIT_OPTS` is given to Apache Spark's own `spark-submit` (each pyspark venv),
//! run as the driver container's entrypoint runs it: client mode, a properties file
//! standing for the spark.properties spark-submit wrote. A tiny PySpark app prints what
//! arrived: its SparkConf, a JVM system property and the Hadoop configuration.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};
use spark_admission::engine::{Engine, MutateRequest, SUBMIT_OPTS_VAR};
use spark_admission::matching::PolicySet;
use spark_admission::policy::{parse_documents, PolicySource};

use spark_admission_testkit::pyspark::Pyspark;

const NAMESPACE: &str = "spark-jobs";

/// Everything a value can hold that a shell or the launcher would otherwise eat: runs of
/// spaces, both quotes, `$`, a backslash before a letter and at the end of a word, a tab,
/// Spark's own `${env:…}` reference (written `$${` in the policy), non-ASCII text, and
/// what the kubelet's expansion of env values would eat (`$$`, `$(SPARK_USER)`).
/// (Characters outside the BMP are refused at load: the launcher turns "😀" into "😀?".)
const TRICKY: &str = "$$ $(SPARK_USER) né € it's \"quoted\"  $HOME \\temp\\ a\tb ${env:USER} end\\";

fn policy_yaml() -> String {
    let tricky_in_policy = serde_json::to_string(&TRICKY.replace("${", "$${")).unwrap_or_default();
    format!(
        r#"apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata: {{name: e2e-spark-conf}}
spec:
  namespaces: ["{NAMESPACE}"]
  driver:
    sparkConf:
      spark.eventLog.dir: "s3a://spark-events/${{namespace}}"
      spark.admission.tricky: {tricky_in_policy}
      "spark.kubernetes.executor.annotation.example.com/owner": data-team
      spark.hadoop.fs.s3a.path.style.access: "true"
      spark.hadoop.fs.s3a.endpoint: "http://minio.minio.svc:9000"
      spark.executor.cores: "3"
      spark.hadoop.fs.s3a.bucket.spark-events.access.key: "$${{env.E2E_EVENTS_KEY}}"
"#
    )
}

/// What the submitter wrote into spark.properties; spark.executor.cores is also in the policy.
const PROPERTIES: &str =
    "spark.app.name=spark-conf-e2e\nspark.executor.cores=1\nspark.ui.enabled=false\n";

/// The submitter's own SPARK_SUBMIT_OPTS (spark.kubernetes.driverEnv.SPARK_SUBMIT_OPTS).
const SUBMITTER_OPTS: &str = "-Dfoo.bar=x";

const APP: &str = r#"import json, sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
hadoop = spark._jsc.hadoopConfiguration()
print("E2E-RESULT " + json.dumps({
    "conf": dict(spark.sparkContext.getConf().getAll()),
    "foo.bar": spark._jvm.java.lang.System.getProperty("foo.bar"),
    "hadoop": {k: hadoop.get(k) for k in sys.argv[1:]},
}))
spark.stop()
"#;

/// An env value as the kubelet hands it to the container (Kubernetes' `expansion.Expand`):
/// `$$` is `$`, `$(NAME)` is the value of an env var defined before it (left as written
/// when undefined or unclosed), any other `$` stays.
pub fn kubelet_expand(value: &str, defined: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(close) = after.strip_prefix('(').and_then(|a| a.find(')')) {
            let name = &after[1..=close];
            match defined.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &after[close + 2..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The driver container's SPARK_SUBMIT_OPTS after the webhook, for the stored driver pod
/// with the submitter's own value in place, as the container's process sees it.
fn planned_submit_opts() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spark");
    let text = std::fs::read_to_string(dir.join("driver-pyspark-pi.json")).expect("fixture");
    let mut pod: Value = serde_json::from_str(&text).expect("fixture JSON");
    let spark = pod["spec"]["containers"]
        .as_array_mut()
        .and_then(|cs| {
            cs.iter_mut()
                .find(|c| c["name"] == "spark-kubernetes-driver")
        })
        .expect("the driver container");
    spark["env"]
        .as_array_mut()
        .expect("env")
        .push(json!({"name": SUBMIT_OPTS_VAR, "value": SUBMITTER_OPTS}));

    let loaded = parse_documents(&PolicySource("e2e.yaml".into()), &policy_yaml())
        .unwrap_or_else(|e| panic!("policy: {e:?}"));
    let set = PolicySet::new(loaded.into_iter().map(Arc::new));
    let typed: Pod = serde_json::from_value(pod.clone()).expect("a Pod");
    let m = Engine::default()
        .mutate(MutateRequest::new(&set, &typed, NAMESPACE))
        .expect("the engine plans the pod");
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    json_patch::patch(&mut pod, &m.patch).expect("the patch applies");
    let env = pod["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "spark-kubernetes-driver"))
        .and_then(|c| c["env"].as_array())
        .expect("the driver's env");
    let mut defined = Vec::new();
    for e in env {
        let (Some(name), Some(value)) = (e["name"].as_str(), e["value"].as_str()) else {
            continue;
        };
        let value = kubelet_expand(value, &defined);
        if name == SUBMIT_OPTS_VAR {
            return value;
        }
        defined.push((name.to_owned(), value));
    }
    panic!("no SPARK_SUBMIT_OPTS on the driver: {env:?}")
}

/// Runs the app with `spark-submit` as the driver entrypoint does; output to files (Spark
/// logs more than a pipe holds), bounded in time.
fn run(spark: &Pyspark, dir: &Path, submit_opts: &str) -> (bool, String) {
    let mut child = spark
        .driver_in_client_mode(dir, submit_opts)
        .expect("output files")
        .env("E2E_EVENTS_KEY", "key-from-the-environment")
        .args([
            "fs.s3a.path.style.access",
            "fs.s3a.endpoint",
            "fs.s3a.bucket.spark-events.access.key",
        ])
        .spawn()
        .expect("spark-submit starts");
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() < Duration::from_secs(180) => {
                std::thread::sleep(Duration::from_millis(200))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = std::fs::read_to_string(dir.join("stdout")).unwrap_or_default();
    let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    let ok = status.is_some_and(|s| s.success());
    (ok, format!("{stdout}\n--- stderr ---\n{stderr}"))
}

pub fn the_kubelet_expansion_here_is_the_one_kubernetes_documents() {
    let defined = [("A".to_owned(), "1".to_owned())];
    assert_eq!(
        kubelet_expand("$(A)-$$(A)-$(B)-$-$x-$(A", &defined),
        "1-$(A)-$(B)-$-$x-$(A"
    );
}

pub fn spark_conf_reaches_real_spark_submit_as_defaults(venvs: Vec<Pyspark>) {
    let submit_opts = planned_submit_opts();
    assert!(
        submit_opts.starts_with(SUBMITTER_OPTS),
        "the submitter's value comes first: {submit_opts}"
    );
    for spark in &venvs {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("spark.properties"), PROPERTIES).expect("properties");
        std::fs::write(dir.path().join("app.py"), APP).expect("app");
        let (ok, output) = run(spark, dir.path(), &submit_opts);
        let v = &spark.version;
        assert!(
            ok,
            "pyspark {v}: spark-submit failed with SPARK_SUBMIT_OPTS={submit_opts}\n{output}"
        );
        let result: Value = output
            .lines()
            .find_map(|l| l.strip_prefix("E2E-RESULT "))
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_else(|| panic!("pyspark {v}: no result line\n{output}"));
        let conf = &result["conf"];
        // Defaults arrive byte for byte, variables rendered, Spark's own ${…} untouched.
        assert_eq!(conf["spark.admission.tricky"], TRICKY, "pyspark {v}");
        assert_eq!(
            conf["spark.eventLog.dir"],
            format!("s3a://spark-events/{NAMESPACE}"),
            "pyspark {v}"
        );
        assert_eq!(
            conf["spark.kubernetes.executor.annotation.example.com/owner"], "data-team",
            "pyspark {v}: a key with /"
        );
        // The submitter's properties file wins over the policy's default.
        assert_eq!(conf["spark.executor.cores"], "1", "pyspark {v}");
        assert_eq!(conf["spark.app.name"], "spark-conf-e2e", "pyspark {v}");
        // The submitter's own SPARK_SUBMIT_OPTS still reaches the JVM.
        assert_eq!(result["foo.bar"], "x", "pyspark {v}");
        // spark.hadoop.* lands in the Hadoop configuration without the prefix.
        assert_eq!(
            result["hadoop"]["fs.s3a.path.style.access"], "true",
            "pyspark {v}"
        );
        assert_eq!(
            result["hadoop"]["fs.s3a.endpoint"], "http://minio.minio.svc:9000",
            "pyspark {v}"
        );
        // What 60-history-server relies on: "$${env.X}" in a policy reaches Hadoop as
        // ${env.X}, which Hadoop's Configuration replaces with the environment variable.
        assert_eq!(
            result["hadoop"]["fs.s3a.bucket.spark-events.access.key"], "key-from-the-environment",
            "pyspark {v}"
        );
        eprintln!("pyspark {v}: sparkConf arrived through SPARK_SUBMIT_OPTS={submit_opts}");
    }
}
