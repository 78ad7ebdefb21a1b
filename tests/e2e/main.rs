//! The end-to-end suite: the webhook against a real kube-apiserver (v1.32) and Apache
//! Spark's own `spark-submit`. See `tests/e2e/assets.rs` for how it finds them, and the
//! README ("End-to-end suite") for how to run it.

mod assets;
mod cluster;
mod configmaps;
mod expect;
mod faults;
mod fixtures;
mod install;
mod job_pinning;
mod process;
mod scenario;
mod sidecar;
mod spark_conf;
mod spark_submit;
mod validation;
mod webhook;
