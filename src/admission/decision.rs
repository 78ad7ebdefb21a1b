//! What one answered review leads to, for its log line and its metrics.

use k8s_openapi::api::core::v1::Pod;

use super::review::PodCreate;
use crate::metrics::Outcome;
use crate::spark::{self, SparkRole, APP_NAME_LABEL};

pub(super) struct Decision<'a> {
    pub(super) role: Option<SparkRole>,
    pub(super) outcome: Outcome,
    pub(super) namespace: &'a str,
    pub(super) pod: &'a str,
    pub(super) app: &'a str,
    /// The policies applied or checked, comma-separated.
    pub(super) policies: String,
    /// Patch operations sent.
    pub(super) ops: usize,
    pub(super) dry_run: bool,
}

impl<'a> Decision<'a> {
    /// A review that is not ours to judge (not a pod, not a Spark pod's CREATE or UPDATE).
    pub(super) fn pass_through(what: &'a str) -> Self {
        Decision {
            role: None,
            outcome: Outcome::Unchanged,
            namespace: "",
            pod: what,
            app: "",
            policies: String::new(),
            ops: 0,
            dry_run: false,
        }
    }

    /// A pod answered without the policies' verdict: refused before or while they ran,
    /// or an UPDATE that changes nothing they read.
    pub(super) fn unjudged(create: &'a PodCreate, outcome: Outcome) -> Self {
        let role = spark::role_of(&create.pod).ok();
        Self::judged(create, role, outcome, String::new(), 0)
    }

    /// A pod answered by the policies: `policies` applied or checked, `ops` operations.
    pub(super) fn judged(
        create: &'a PodCreate,
        role: Option<SparkRole>,
        outcome: Outcome,
        policies: String,
        ops: usize,
    ) -> Self {
        Decision {
            role,
            outcome,
            namespace: &create.namespace,
            pod: &create.name,
            app: app_name(&create.pod),
            policies,
            ops,
            dry_run: create.dry_run,
        }
    }
}

fn app_name(pod: &Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(APP_NAME_LABEL))
        .map_or("", String::as_str)
}
