//! spark-admission-core: what a Spark pod is, the policy format, and the engine that turns
//! a pod and the policies into a decision — without any HTTP, TLS or Kubernetes client.
//!
//! The flow reads top-down: [`spark`] (recognising a Spark pod and its container) ->
//! [`policy`] (the format, schema check and compiled form) -> [`matching`] (which policies
//! apply to a pod) -> [`engine`] (patch planning and rules) -> [`explain`] (the same, described
//! for people). The webhook server, a CLI or a test tool can take this crate alone.
#![forbid(unsafe_code)]

pub mod engine;
pub mod explain;
#[cfg(any(test, feature = "fault-injection"))]
pub mod fault;
pub mod matching;
pub mod memory_on_oom;
pub mod pinning;
pub mod policy;
pub mod quantity;
pub mod spark;
pub mod yaml;
