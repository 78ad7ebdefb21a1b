//! The alert rules with promtool, the PrometheusRule against the plain file, and the overlay
//! rendered by kustomize.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::expressions::{alert_rules, rules_file};
use crate::tools::repo_path;

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("running the tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub fn promtool_checks_the_rules_file(promtool: PathBuf) {
    let (ok, text) = run(Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(repo_path("deploy/monitoring/prometheus-rules.yml")));
    assert!(ok, "{text}");
    let n = alert_rules().len();
    assert!(
        text.contains(&format!("SUCCESS: {n} rules found")),
        "{text}"
    );
}

pub fn promtool_unit_tests_fire_and_do_not_fire_every_alert(promtool: PathBuf) {
    let tests = repo_path("tests/monitoring/rules_test.yml");
    let (ok, text) = run(Command::new(&promtool).arg("test").arg("rules").arg(&tests));
    assert!(ok, "{text}");
    // Every alert is named in a test that expects it to fire and in one where it must not.
    let written = std::fs::read_to_string(&tests).unwrap();
    let doc: Value = serde_saphyr::from_str(&written).unwrap();
    let mut fired = std::collections::BTreeSet::new();
    let mut quiet = std::collections::BTreeSet::new();
    for test in doc["tests"].as_array().unwrap() {
        for case in test["alert_rule_test"].as_array().unwrap() {
            let name = case["alertname"].as_str().unwrap().to_owned();
            if case["exp_alerts"].as_array().is_some_and(|a| a.is_empty()) {
                quiet.insert(name);
            } else {
                fired.insert(name);
            }
        }
    }
    for (alert, _) in alert_rules() {
        assert!(fired.contains(&alert), "no test where {alert} fires");
        assert!(quiet.contains(&alert), "no test where {alert} stays quiet");
    }
}

pub fn the_prometheus_rule_carries_exactly_the_plain_rules_file() {
    let text = std::fs::read_to_string(repo_path("deploy/monitoring/prometheusrule.yaml")).unwrap();
    let rule: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(
        rule["spec"],
        rules_file(),
        "prometheusrule.yaml's spec must be prometheus-rules.yml (copy it over)"
    );
    // Every alert says what breaks for users and where its runbook is.
    let runbooks = std::fs::read_to_string(repo_path("docs/MONITORING.md")).unwrap();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            let alert = r["alert"].as_str().unwrap();
            let summary = r["annotations"]["summary"].as_str().unwrap_or_default();
            assert!(summary.len() > 40, "{alert}: a summary saying what breaks");
            assert!(
                ["critical", "warning"].contains(&r["labels"]["severity"].as_str().unwrap_or("")),
                "{alert}: severity"
            );
            let runbook = r["annotations"]["runbook"].as_str().unwrap();
            let anchor = runbook.strip_prefix("docs/MONITORING.md#").unwrap();
            assert_eq!(anchor, alert.to_lowercase(), "{alert}: runbook anchor");
            assert!(
                runbooks.contains(&format!("### {alert}\n")),
                "{alert}: no runbook section in docs/MONITORING.md"
            );
        }
    }
}

pub fn the_overlay_renders_with_kustomize_into_what_the_operator_and_grafana_pick_up(
    kubectl: PathBuf,
) {
    let (ok, text) = run(Command::new(&kubectl)
        .arg("kustomize")
        .arg(repo_path("deploy/monitoring")));
    assert!(ok, "{text}");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["ConfigMap", "PrometheusRule", "ServiceMonitor"],
        "{text}"
    );
    let cm = &docs[0];
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["namespace"], "spark-admission");
    let data = cm["data"].as_object().unwrap();
    assert_eq!(data.len(), 1);
    let (key, json) = data.iter().next().unwrap();
    assert!(
        key.ends_with(".json"),
        "the sidecar loads *.json keys: {key}"
    );
    let file =
        std::fs::read_to_string(repo_path("deploy/monitoring/grafana-dashboard.json")).unwrap();
    assert_eq!(
        json.as_str().unwrap(),
        file,
        "the ConfigMap holds the dashboard file as is"
    );
    let rule = &docs[1];
    assert_eq!(rule["spec"], rules_file());
}
