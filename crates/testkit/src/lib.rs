//! What spark-admission's tests, benchmarks and load generator share: the real Spark
//! fixtures (`tests/fixtures/`, captured from Apache Spark's spark-submit and a real
//! kube-apiserver), the benchmark policy set, and the harness of the tiers that need
//! outside assets (`tier`, `pyspark`). Test support: it panics with a message
//! where a fixture is missing or broken.
#![forbid(unsafe_code)]

pub mod bench_policies;
pub mod fixtures;
pub mod hostile_yaml;
pub mod key_order;
pub mod pod_fields;
pub mod proc_status;
pub mod pyspark;
pub mod tier;
