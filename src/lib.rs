//! spark-admission: a Kubernetes admission webhook that applies platform policies to the
//! pods plain `spark-submit` creates.
//!
//! The engine lives in `spark-admission-core` (re-exported here under the same names):
//! [`spark`] -> [`policy`] -> [`matching`] -> [`engine`]. This crate serves it:
//! [`admission`] (the HTTPS webhook) <- [`source`] (where policies come from), with
//! [`certs`], [`metrics`] and the [`cli`].
#![forbid(unsafe_code)]

pub use spark_admission_core::{
    engine, explain, matching, memory_on_oom, pinning, policy, quantity, spark, yaml,
};

pub mod admission;
pub mod certs;
pub mod cli;
pub mod duration;
pub mod error_chain;
pub mod memory;
pub mod metrics;
pub mod policytest;
pub mod shutdown;
pub mod source;
pub mod watch;
