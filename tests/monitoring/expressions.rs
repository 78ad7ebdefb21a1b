//! The PromQL the monitoring ships: the dashboard's panel queries and the alert
//! expressions, and the metric names they use.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::tools::repo_path;

/// (where, expression) of every query of every dashboard panel.
pub fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_path("deploy/monitoring/grafana-dashboard.json"))
        .expect("the dashboard JSON");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut out = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            let ref_id = target["refId"].as_str().unwrap_or("?");
            out.push((format!("panel {title:?} {ref_id}"), expr.to_owned()));
        }
    }
    assert!(!out.is_empty());
    out
}

/// (alert, expression) of every rule of the plain rules file.
pub fn alert_rules() -> Vec<(String, String)> {
    let rules = rules_file();
    let mut out = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            out.push((
                rule["alert"].as_str().expect("an alert name").to_owned(),
                rule["expr"].as_str().expect("an expr").trim().to_owned(),
            ));
        }
    }
    out
}

pub fn rules_file() -> Value {
    let text = std::fs::read_to_string(repo_path("deploy/monitoring/prometheus-rules.yml"))
        .expect("the rules file");
    serde_saphyr::from_str(&text).expect("the rules file is YAML")
}

/// Grafana's own variables, replaced the way Grafana would before sending a query.
pub fn as_sent_by_grafana(expr: &str) -> String {
    expr.replace("$__rate_interval", "30s")
        .replace("$__interval", "5s")
        .replace("$__range", "5m")
}

/// Metric names in an expression: every identifier that starts with `spark_admission_`,
/// and `up`. Label names and values never start with the prefix here, which the test of
/// this function checks on the shipped expressions.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            // Inside a string literal ("…") the word is a label value, not a name.
            let quoted = expr[..start].matches('"').count() % 2 == 1;
            let word = &expr[start..i];
            if !quoted && (word.starts_with("spark_admission_") || word == "up") {
                // `up` is also a word in a label matcher only after `{`; the shipped
                // expressions have no label called up.
                names.insert(word.to_owned());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The sample names each metric family declared on `/metrics` (OpenMetrics `# TYPE`
/// lines) can have: counters `_total`, histograms `_bucket`/`_sum`/`_count`, gauges as is.
pub fn exported_names(metrics_text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in metrics_text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                out.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
            _ => {
                out.insert(name.to_owned());
            }
        }
    }
    out
}

/// Names used by `exprs` that `/metrics` does not export (`up` is Prometheus's own).
pub fn missing_names<'a>(
    exprs: impl IntoIterator<Item = &'a (String, String)>,
    exported: &BTreeSet<String>,
) -> Vec<String> {
    let mut missing = Vec::new();
    for (origin, expr) in exprs {
        for name in metric_names(expr) {
            if name != "up" && !exported.contains(&name) {
                missing.push(format!("{origin}: {name}"));
            }
        }
    }
    missing
}

pub fn names_are_found_in_expressions_and_a_renamed_metric_is_reported_missing() {
    let expr = r#"sum by (endpoint) (rate(spark_admission_requests_total{job="spark-admission",outcome="error"}[5m])) / on() group_left up{job="spark_admission_x"}"#;
    assert_eq!(
        metric_names(expr).into_iter().collect::<Vec<_>>(),
        ["spark_admission_requests_total", "up"]
    );
    let exported = exported_names(
        "# HELP spark_admission_requests x\n# TYPE spark_admission_requests counter\nspark_admission_requests_total{a=\"b\"} 1\n# TYPE spark_admission_request_duration_seconds histogram\n# TYPE spark_admission_ready gauge\n",
    );
    assert!(exported.contains("spark_admission_requests_total"));
    assert!(exported.contains("spark_admission_request_duration_seconds_bucket"));
    assert!(exported.contains("spark_admission_ready"));
    let renamed = [(
        "panel".to_owned(),
        "rate(spark_admission_request_total[5m])".to_owned(),
    )];
    assert_eq!(
        missing_names(&renamed, &exported),
        ["panel: spark_admission_request_total"]
    );
    let fine = [("panel".to_owned(), expr.to_owned())];
    assert!(missing_names(&fine, &exported).is_empty());
}

pub fn every_shipped_expression_names_at_least_one_metric_of_ours() {
    for (origin, expr) in dashboard_queries().iter().chain(alert_rules().iter()) {
        let names = metric_names(expr);
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("spark_admission_") || n == "up"),
            "{origin}: no metric name found in {expr}"
        );
        assert!(
            !expr.contains("$") || as_sent_by_grafana(expr) != *expr,
            "{origin}: unknown Grafana variable in {expr}"
        );
        assert!(!as_sent_by_grafana(expr).contains('$'), "{origin}: {expr}");
    }
}
