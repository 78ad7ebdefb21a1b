//! The end-to-end suite: the webhook against a real kube-apiserver (v1.32) and Apache
//! Spark's own `spark-submit`. See `tests/e2e/assets.rs` for how it finds them, and the
//! README ("End-to-end suite") for how to run it.

// kube() is for the cluster modules of the lead's e2e branch.
#[allow(dead_code)]
mod assets;
mod spark_conf;
