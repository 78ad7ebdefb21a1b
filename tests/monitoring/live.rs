//! A real Prometheus (Debian's 2.42) on 127.0.0.1 scrapes the real webhook every second and
//! evaluates the shipped rules, during a short load that touches every series the
//! dashboard and the alerts read: reviews, a policy reload, a broken policy, a certificate
//! renewal, slow clients, waits for a slot, an executor with a pin nothing vouches for.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::KillOnDrop;
use crate::common::*;
use crate::expressions::{
    alert_rules, as_sent_by_grafana, dashboard_queries, exported_names, missing_names,
};
use crate::process::{free_port, start_webhook, Webhook};
use crate::tools::repo_path;

/// Bound of every wait on Prometheus (scrapes and rule evaluations are every second).
const PATIENCE: Duration = Duration::from_secs(60);

/// Panels whose query has no data with the folder source, and why.
const EMPTY_WITH_THE_FOLDER_SOURCE: &[&str] = &[
    // Events are sent by the ConfigMap source only (tests/server/policy_configmaps.rs).
    "panel \"Policy Events by reason and result\" A",
];

struct Prometheus {
    _child: KillOnDrop,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(binary: &Path, target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        let rules = repo_path("deploy/monitoring/prometheus-rules.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 rule_files: [{rules:?}]\n\
                 scrape_configs:\n\
                 \x20 - job_name: spark-admission\n\
                 \x20   static_configs: [{{targets: [\"{target}\"]}}]\n"
            ),
        )
        .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = KillOnDrop(
            std::process::Command::new(binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=warn")
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("starting prometheus"),
        );
        let p = Prometheus {
            _child: child,
            addr,
            _dir: dir,
        };
        eventually("Prometheus ready", PATIENCE, || async {
            matches!(
                try_admin_get(addr, "/-/ready").await,
                Ok((StatusCode::OK, _))
            )
        })
        .await;
        p
    }

    /// An instant query through the HTTP API: Ok(result) or Err(the API's error).
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let (status, body) =
            admin_get(self.addr, &format!("/api/v1/query?query={}", encode(expr))).await;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
        if v["status"] != "success" {
            return Err(format!("{status}: {} {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    async fn until_nonempty(&self, what: &str, expr: &str) {
        eventually(what, PATIENCE, || async {
            self.query(expr).await.is_ok_and(|r| !r.is_empty())
        })
        .await;
    }

    async fn until_empty(&self, what: &str, expr: &str) {
        eventually(what, PATIENCE, || async {
            self.query(expr).await.is_ok_and(|r| r.is_empty())
        })
        .await;
    }
}

/// Percent-encoding for a query parameter (everything but RFC 3986's unreserved bytes).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn metrics_text(w: &Webhook) -> String {
    let (status, text) = admin_get(w.admin, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    text
}

/// Reviews of every fixture kind, `rounds` times, over one connection.
async fn reviews(w: &Webhook, ca: &[u8], rounds: usize) {
    let mut conn = Conn::connect(w.webhook, ca, Proto::H2, None, None)
        .await
        .unwrap();
    for _ in 0..rounds {
        for (path, name) in [
            ("/mutate", "mutate-driver-scala-sparkpi.json"),
            ("/mutate", "mutate-executor-rich-1.json"),
            ("/validate", "validate-driver-rich.json"),
            ("/validate", "validate-executor-client-1.json"),
        ] {
            let (status, _) = conn.post(path, fixture(name)).await.unwrap();
            assert_eq!(status, StatusCode::OK, "{name}");
        }
    }
}

/// An executor carrying a pin nothing can vouch for (the folder source has no stored
/// drivers): mutated with the current policies, and counted as `unverified`.
async fn a_pin_whose_versions_are_gone(w: &Webhook, ca: &[u8]) {
    let mut review = fixture_json("mutate-executor-rich-1.json");
    review["request"]["object"]["metadata"]["annotations"]["spark-admission.io/driver-policies"] =
        json!("test-labels@0123456789");
    let mut conn = Conn::connect(w.webhook, ca, Proto::H1, None, None)
        .await
        .unwrap();
    let (status, body) = conn.post("/mutate", to_bytes(&review)).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response_of(&body)["allowed"], true);
}

/// Large reviews at once while only one is evaluated at a time (--max-concurrent-requests
/// 1): the others wait for the slot. Repeated until a wait was counted (bounded).
async fn slot_waits(w: &Webhook, ca: &[u8]) {
    let mut review = fixture_json("mutate-driver-scala-sparkpi.json");
    // Above the inline limit (256 KiB): evaluated on the blocking pool, holding the slot.
    review["request"]["object"]["metadata"]["annotations"]["example.com/padding"] =
        json!("x".repeat(600 * 1024));
    let body = to_bytes(&review);
    for _ in 0..10 {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let (addr, ca, body) = (w.webhook, ca.to_vec(), body.clone());
            tasks.spawn(async move {
                let mut conn = Conn::connect(addr, &ca, Proto::H1, None, None)
                    .await
                    .unwrap();
                conn.post("/mutate", body).await.unwrap().0
            });
        }
        while let Some(status) = tasks.join_next().await {
            assert_eq!(status.unwrap(), StatusCode::OK);
        }
        if metrics_text(w)
            .await
            .contains("spark_admission_slot_waits_total{")
        {
            return;
        }
    }
    panic!("no slot wait counted after 10 rounds of 6 concurrent large reviews");
}

/// A client that sends part of its headers and stalls (cut at --header-read-timeout), and
/// one that stalls in its body (cut at --body-read-timeout, answered 408: a failed review).
async fn slow_clients(w: &Webhook, ca: &[u8]) {
    for partial in [
        "POST /mutate HTTP/1.1\r\nhost: localhost\r\n".to_owned(),
        "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n{\"apiVersion\":".to_owned(),
    ] {
        let mut tls = tls_connect(w.webhook, ca, None, &[b"http/1.1"], None).await.unwrap();
        tls.write_all(partial.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        let mut answer = Vec::new();
        // The server ends the exchange; a read error (reset) counts as closed too.
        let _ = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut answer))
            .await
            .expect("the server closes a stalled connection");
    }
}

pub fn a_real_prometheus_evaluates_every_dashboard_query_and_alert_on_the_running_webhook(
    prometheus: PathBuf,
) {
    crate::runtime().block_on(evaluates_everything(prometheus));
}

async fn evaluates_everything(prometheus: PathBuf) {
    let _turn = heavy_test_turn().await;
    let w = start_webhook(
        "127.0.0.1",
        &[
            "--log-format",
            "json",
            "--policy-poll-interval",
            "200ms",
            "--cert-poll-interval",
            "200ms",
            "--header-read-timeout",
            "1s",
            "--body-read-timeout",
            "1s",
            "--max-concurrent-requests",
            "1",
        ],
    )
    .await;
    let prom = Prometheus::start(&prometheus, w.admin).await;
    let job = r#"{job="spark-admission"}"#;
    prom.until_nonempty(
        "the first scrape",
        &format!("spark_admission_ready{job} == 1"),
    )
    .await;

    // A rule in audit mode, so that reviews break it (the findings panel).
    write_atomic(&w.policies.join("test-escalation.yaml"), AUDIT_POLICY);
    prom.until_nonempty(
        "the audit policy loaded",
        &format!("spark_admission_policies_loaded{job} == 2"),
    )
    .await;

    // Load, with every event the dashboard and the alerts are about.
    let ca = w.ca_pem();
    reviews(&w, &ca, 25).await;
    a_pin_whose_versions_are_gone(&w, &ca).await;
    slot_waits(&w, &ca).await;
    slow_clients(&w, &ca).await;

    // A policy reload: a new version goes live and the change is stamped.
    write_atomic(&w.policies.join("test-labels.yaml"), LABEL_POLICY_V2);
    prom.until_nonempty(
        "the reload seen by Prometheus",
        r#"spark_admission_policy_reloads_total{job="spark-admission",result="applied"} >= 2"#,
    )
    .await;

    // A broken policy: rejected, the last good set keeps serving, and the alert's
    // expression holds on the real series (its `for:` is longer than this test).
    write_atomic(
        &w.policies.join("zz-broken.yaml"),
        "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {name: broken}\nspec: {namespaces: 42}\n",
    );
    let rejected = alert_expr("SparkAdmissionPolicyRejected");
    prom.until_nonempty("the rejected policy in the alert's expression", &rejected)
        .await;
    let held = prom.query(&rejected).await.unwrap();
    let installed: f64 = held[0]["value"][1].as_str().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        installed > now - 600.0 && installed <= now,
        "the alert's value says since when the last good set serves: {installed}"
    );
    std::fs::remove_file(w.policies.join("zz-broken.yaml")).unwrap();
    prom.until_empty("the fixed policy out of the alert's expression", &rejected)
        .await;

    // A certificate renewal: the new pair is served and its expiry exported.
    let before = prom
        .query(&format!(
            "spark_admission_certificate_not_after_timestamp_seconds{job}"
        ))
        .await
        .unwrap();
    let renewed = spark_admission::certs::generate(&[]).unwrap();
    spark_admission::certs::write_material(&w.certs, &renewed).unwrap();
    prom.until_nonempty(
        "the renewal seen by Prometheus",
        r#"spark_admission_certificate_reloads_total{job="spark-admission",result="ok"} >= 1"#,
    )
    .await;
    let ca = w.ca_pem();
    reviews(&w, &ca, 5).await;
    assert!(!before.is_empty());

    // One more scrape and rule evaluation after everything above.
    let text = metrics_text(&w).await;
    for must in [
        "spark_admission_slow_clients_total{reason=\"header\"}",
        "spark_admission_slow_clients_total{reason=\"body_idle\"}",
        "spark_admission_pinned_executors_total{result=\"unverified\"} 1",
        "outcome=\"error\"",
    ] {
        assert!(text.contains(must), "the load produced {must}: {text}");
    }
    prom.until_nonempty(
        "the last load in Prometheus",
        r#"spark_admission_requests_total{job="spark-admission",outcome="error"}"#,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Every metric name used is exported (a renamed metric fails here) and scraped. The
    // Event counters exist with the ConfigMap source only: their names come from the
    // server's registry as that source sets it up, and from nowhere else.
    let mut exported = exported_names(&text);
    let configmap_only = {
        let m = spark_admission::metrics::Metrics::new();
        m.init_policy_events(&spark_admission::source::configmap::EVENT_REASONS);
        let names = exported_names(&m.encode().unwrap());
        let only: BTreeSet<String> = names.difference(&exported).cloned().collect();
        exported.extend(names);
        only
    };
    assert_eq!(
        configmap_only.into_iter().collect::<Vec<_>>(),
        ["spark_admission_policy_events_total"],
        "every other series is on the running webhook's /metrics"
    );
    let dashboard = dashboard_queries();
    let alerts = alert_rules();
    let missing = missing_names(dashboard.iter().chain(alerts.iter()), &exported);
    assert!(missing.is_empty(), "names not on /metrics: {missing:?}");
    let (_, names) = admin_get(prom.addr, "/api/v1/label/__name__/values").await;
    let scraped: Value = serde_json::from_str(&names).unwrap();
    let scraped: BTreeSet<String> = scraped["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let used: BTreeSet<String> = dashboard
        .iter()
        .chain(alerts.iter())
        .flat_map(|(_, e)| crate::expressions::metric_names(e))
        .collect();
    let unseen: Vec<&String> = used
        .iter()
        .filter(|n| !scraped.contains(*n) && !n.ends_with("policy_events_total"))
        .collect();
    assert!(unseen.is_empty(), "never scraped: {unseen:?}");

    // Every panel's query evaluates, and has data after this load.
    let mut empty = Vec::new();
    for (origin, expr) in &dashboard {
        match prom.query(&as_sent_by_grafana(expr)).await {
            Ok(result) if result.is_empty() => empty.push(origin.clone()),
            Ok(_) => {}
            Err(e) => panic!("{origin}: {expr}: {e}"),
        }
    }
    assert_eq!(empty, EMPTY_WITH_THE_FOLDER_SOURCE, "panels without data");

    // Every alert expression evaluates through the API, and Prometheus's own evaluation of
    // the rules reports no error. While the replica runs and serves, none holds: the load's
    // one executor with a pin nothing vouches for is `unverified`, which is no alarm.
    for (alert, expr) in &alerts {
        let result = prom
            .query(expr)
            .await
            .unwrap_or_else(|e| panic!("{alert}: {expr}: {e}"));
        assert!(
            result.is_empty(),
            "{alert} holds on a healthy replica: {result:?}"
        );
    }
    // The pin counters start at 0, so `increase()` sees the first executor (a series that
    // first appeared at 1 would show none, and the pin alerts could never fire on it).
    let first = prom
        .query(r#"sum(increase(spark_admission_pinned_executors_total{job="spark-admission",result="unverified"}[30m]))"#)
        .await
        .unwrap_or_else(|e| panic!("increase of the pin counter: {e}"));
    let n: f64 = first[0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no increase of the pin counter: {first:?}"));
    assert!((0.9..3.0).contains(&n), "about one executor: {first:?}");
    let (_, rules) = admin_get(prom.addr, "/api/v1/rules").await;
    let rules: Value = serde_json::from_str(&rules).unwrap();
    let evaluated: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(evaluated.len(), alerts.len());
    for r in evaluated {
        assert_eq!(r["health"], "ok", "{}: {}", r["name"], r["lastError"]);
    }

    eprintln!(
        "real Prometheus: {} panel queries and {} alert expressions evaluated, {} metric names checked against /metrics",
        dashboard.len(),
        alerts.len(),
        used.len()
    );

    // The replica stops: Prometheus sees no ready replica.
    let no_ready = alert_expr("SparkAdmissionNoReadyReplica");
    drop(w);
    prom.until_nonempty("no ready replica once the webhook is gone", &no_ready)
        .await;
}

fn alert_expr(alert: &str) -> String {
    alert_rules()
        .into_iter()
        .find(|(a, _)| a == alert)
        .unwrap_or_else(|| panic!("no alert {alert}"))
        .1
}
