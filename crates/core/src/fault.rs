//! Test-only fault injection. A pod that carries [`ANNOTATION`] makes the named internal
//! step fail, so tests can check that an internal failure refuses the pod instead of
//! letting it through unpolicied. Compiled into this crate's own tests, and into the
//! webhook's tests through the `fault-injection` feature (a dev-dependency feature): a
//! release build of the webhook has no such path.

use k8s_openapi::api::core::v1::Pod;

pub const ANNOTATION: &str = "test.spark-admission.io/inject-fault";
/// Serialising the pod for the patch fails.
pub const SERIALISE: &str = "serialise";
/// The mutate handler panics.
pub const PANIC: &str = "panic";

pub fn injected(pod: &Pod, fault: &str) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION))
        .is_some_and(|v| v == fault)
}
