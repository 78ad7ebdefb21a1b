//! Test-only fault injection. A pod that carries [`ANNOTATION`] makes the named internal
//! step fail, so the unit tests can check that an internal failure refuses the pod instead
//! of letting it through unpolicied. Compiled into the crate's own tests only: the shipped
//! binary has no such path.

use k8s_openapi::api::core::v1::Pod;

pub(crate) const ANNOTATION: &str = "test.spark-admission.io/inject-fault";
/// Serialising the pod for the patch fails.
pub(crate) const SERIALISE: &str = "serialise";
/// The mutate handler panics.
pub(crate) const PANIC: &str = "panic";

pub(crate) fn injected(pod: &Pod, fault: &str) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION))
        .is_some_and(|v| v == fault)
}
