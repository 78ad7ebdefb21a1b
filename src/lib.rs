//! spark-admission: a Kubernetes admission webhook that applies platform policies to the
//! pods plain `spark-submit` creates.
//!
//! The flow reads top-down: [`policy`] (the format, schema and compiled form) ->
//! [`matching`] (which policies apply to a pod) -> [`engine`] (patch planning and rules) ->
//! [`admission`] (the HTTPS webhook) <- [`source`] (where policies come from).
#![forbid(unsafe_code)]

pub mod admission;
pub mod certs;
pub mod cli;
pub mod engine;
pub mod explain;
#[cfg(test)]
mod fault;
pub mod matching;
pub mod metrics;
pub mod policy;
pub mod quantity;
pub mod source;
pub mod spark;
