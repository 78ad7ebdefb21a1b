//! The end-to-end suite: the webhook against a real kube-apiserver (v1.32) and Apache
//! Spark's own `spark-submit`. See `tests/e2e/assets.rs` for how it finds them, and the
//! README ("End-to-end suite") for how to run it.

mod assets;
mod cluster;
mod process;
mod webhook;
mod expect;
mod fixtures;
mod sidecar;
mod faults;
mod install;
mod validation;
mod configmaps;
