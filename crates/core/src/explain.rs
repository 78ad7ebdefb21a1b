//! `explain`: what the policies would do to one pod, for admins and for golden tests.

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;
use serde_json::Value;

use crate::engine::{Engine, MutateRequest, Mutation, Validation, SUBMIT_OPTS_VAR};
use crate::matching::PolicySet;
use crate::pinning;
use crate::policy::model::RuleMode;
use crate::policy::CompiledPolicy;
use crate::spark::SparkRole;

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("input is neither JSON nor YAML: {0}")]
    Syntax(String),
    #[error("input is not a Pod or an AdmissionReview carrying a Pod: {0}")]
    NotAPod(String),
    #[error("the patch does not apply to the pod (a bug: please report it): {0}")]
    Patch(String),
    #[error("cannot plan the pod (a bug: please report it)")]
    Engine(#[source] crate::engine::EngineError),
}

/// A pod as given on the command line, and the namespace the input names, if any.
#[derive(Debug, Clone)]
pub struct Input {
    pub pod_json: Value,
    pub pod: Pod,
    pub namespace: Option<String>,
}

/// Reads a Pod or an AdmissionReview, in JSON or YAML.
pub fn read_input(text: &str) -> Result<Input, ExplainError> {
    let doc: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(json_err) => crate::yaml::document(text).map_err(|yaml_err| {
            ExplainError::Syntax(format!(
                "as JSON: {json_err}; as YAML: {}",
                first_line(&yaml_err.to_string())
            ))
        })?,
    };
    let (pod_json, namespace) =
        if doc.get("kind").and_then(Value::as_str) == Some("AdmissionReview") {
            let request = doc.get("request").ok_or_else(|| {
                ExplainError::NotAPod("the AdmissionReview has no request".into())
            })?;
            let object = request
                .get("object")
                .filter(|o| !o.is_null())
                .ok_or_else(|| {
                    ExplainError::NotAPod("the AdmissionReview request has no object".into())
                })?;
            let ns = request
                .get("namespace")
                .and_then(Value::as_str)
                .map(str::to_owned);
            (object.clone(), ns)
        } else {
            let ns = doc
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_owned);
            (doc, ns)
        };
    match pod_json.get("kind").and_then(Value::as_str) {
        Some("Pod") | None => {}
        Some(other) => return Err(ExplainError::NotAPod(format!("kind is {other}"))),
    }
    let pod: Pod = serde_json::from_value(pod_json.clone())
        .map_err(|e| ExplainError::NotAPod(e.to_string()))?;
    Ok(Input {
        pod_json,
        pod,
        namespace,
    })
}

/// The namespace `explain` uses when neither `--namespace` nor the input names one: where
/// `kubectl` would create the pod without `-n`.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Where the namespace of a report came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NamespaceOrigin {
    /// `--namespace`.
    Flag,
    /// The AdmissionReview's `request.namespace` or the pod's `metadata.namespace`.
    Input,
    /// Neither named one: [`DEFAULT_NAMESPACE`], assumed.
    Assumed,
}

/// Everything `explain` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub namespace: String,
    pub namespace_origin: NamespaceOrigin,
    pub matched: Vec<String>,
    pub mutation: Mutation,
    /// The pod after the patch, exactly as the API server would store it.
    pub mutated: Value,
    /// Rules checked against the mutated pod, as the validating webhook would.
    pub validation: Validation,
    /// What an admin should know that is not a change or a warning (where sparkConf goes).
    pub notes: Vec<String>,
}

impl Report {
    pub fn denied(&self) -> bool {
        self.validation.denied()
    }

    /// What to tell the user about the namespace, when it was assumed: policies are chosen
    /// by namespace, so an unsaid choice could explain the wrong policies.
    pub fn namespace_note(&self) -> Option<String> {
        (self.namespace_origin == NamespaceOrigin::Assumed).then(|| {
            format!(
                "the input names no namespace, so namespace \"{}\" was used; pass --namespace to explain another",
                self.namespace
            )
        })
    }
}

pub fn explain(
    engine: &Engine,
    set: &PolicySet,
    input: &Input,
    namespace: Option<&str>,
) -> Result<Report, ExplainError> {
    explain_remembering(engine, set, input, namespace, |_| None)
}

/// [`explain`] with the memory raises the webhook remembers after OOMKilled pods
/// (`remembered` answers for a key of [`crate::memory_on_oom::memory_key`]): shows the
/// raise that would apply to this pod.
pub fn explain_remembering(
    engine: &Engine,
    set: &PolicySet,
    input: &Input,
    namespace: Option<&str>,
    remembered: impl Fn(&str) -> Option<crate::memory_on_oom::RememberedMemory>,
) -> Result<Report, ExplainError> {
    // The flag, else the input's own namespace (an empty one is none), else assumed.
    let (namespace, namespace_origin) = match (namespace, input.namespace.as_deref()) {
        (Some(ns), _) => (ns, NamespaceOrigin::Flag),
        (None, Some(ns)) if !ns.is_empty() => (ns, NamespaceOrigin::Input),
        (None, _) => (DEFAULT_NAMESPACE, NamespaceOrigin::Assumed),
    };
    // explain reads no cluster, so a pin can never be verified here: it is ignored, as the
    // webhook ignores any pin it cannot verify, and the note says so.
    let claim = pinning::claim_of(&input.pod);
    let pin = pinning::Resolution::of(
        set,
        &claim,
        pinning::PinCheck::Unverified(pinning::Unverified::NoCluster),
        |_| None,
    );
    let memory = crate::spark::SparkPod::recognise(&input.pod, &engine.container_names)
        .ok()
        .and_then(|spark| crate::memory_on_oom::memory_key(namespace, &spark))
        .and_then(|key| remembered(&key));
    let mutation = engine
        .mutate(
            MutateRequest::new(set, &input.pod, namespace)
                .resolved(&pin)
                .remembering(memory.as_ref())
                .described(true),
        )
        .map_err(ExplainError::Engine)?;
    let mut mutated = input.pod_json.clone();
    json_patch::patch(&mut mutated, &mutation.patch)
        .map_err(|e| ExplainError::Patch(e.to_string()))?;
    let mutated_pod: Pod =
        serde_json::from_value(mutated.clone()).map_err(|e| ExplainError::Patch(e.to_string()))?;
    let validation = engine.validate(set, &mutated_pod, namespace);
    let policies = engine.matching(set, &input.pod, namespace);
    let mut notes = spark_conf_notes(&policies, &input.pod, mutation.role);
    notes.extend(pin.describe());
    let matched = policies.iter().map(|p| p.tag.clone()).collect();
    Ok(Report {
        namespace: namespace.to_owned(),
        namespace_origin,
        matched,
        mutation,
        mutated,
        validation,
        notes,
    })
}

/// sparkConf only reaches Spark through a driver pod; say where it went, and that a
/// client-mode application (driver outside the cluster) gets none of it.
fn spark_conf_notes(
    policies: &[&CompiledPolicy],
    pod: &Pod,
    role: Option<SparkRole>,
) -> Vec<String> {
    let with_conf: Vec<&str> = policies
        .iter()
        .filter(|p| {
            p.applies_to_role(SparkRole::Driver)
                && p.patches_for(SparkRole::Driver)
                    .any(|s| !s.spark_conf.is_empty())
        })
        .map(|p| p.name.as_str())
        .collect();
    if with_conf.is_empty() {
        return Vec::new();
    }
    let names = with_conf
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let client_mode = "the driver runs outside the cluster, has no driver pod, and gets none of it";
    match role {
        Some(SparkRole::Driver) => vec![format!(
            "sparkConf of {names} is written into the driver's {SUBMIT_OPTS_VAR} as defaults: the submitter's --conf and properties win, and executors get it from the driver; in client mode {client_mode}"
        )],
        Some(SparkRole::Executor) => {
            let owned_by_driver = pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "Pod");
            let mut notes = vec![format!(
                "sparkConf of {names} is not written on executor pods: executors get their configuration from their driver pod"
            )];
            if !owned_by_driver {
                notes.push(format!(
                    "this executor has no driver pod as its owner, as in client mode, where {client_mode}"
                ));
            }
            notes
        }
        None => Vec::new(),
    }
}

/// The human-readable table.
pub fn render_table(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let role = r
        .mutation
        .role
        .map(|r| r.as_str())
        .unwrap_or("not a Spark pod");
    let assumed = if r.namespace_origin == NamespaceOrigin::Assumed {
        " (assumed: the input names none)"
    } else {
        ""
    };
    let _ = writeln!(s, "namespace: {}{assumed}   role: {role}", r.namespace);
    let _ = writeln!(
        s,
        "policies matched: {}",
        if r.matched.is_empty() {
            "none".to_owned()
        } else {
            r.matched.join(", ")
        }
    );
    let _ = writeln!(s);
    if r.mutation.changes.is_empty() {
        let _ = writeln!(s, "changes: none");
    } else {
        let w_policy = r
            .mutation
            .changes
            .iter()
            .map(|c| c.policy.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let w_field = r
            .mutation
            .changes
            .iter()
            .map(|c| c.field.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(s, "{:<w_policy$}  {:<w_field$}  CHANGE", "POLICY", "FIELD");
        for c in &r.mutation.changes {
            let _ = writeln!(
                s,
                "{:<w_policy$}  {:<w_field$}  {}",
                c.policy, c.field, c.action
            );
        }
    }
    let _ = writeln!(s, "\npatch: {} operation(s)", r.mutation.patch.0.len());
    for w in &r.mutation.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    let _ = writeln!(s);
    if r.validation.checked.is_empty() {
        let _ = writeln!(s, "validation: no rules apply");
    }
    for f in &r.validation.findings {
        let verdict = match f.mode {
            RuleMode::Enforce => "DENY",
            RuleMode::Warn => "WARN",
            RuleMode::Audit => "AUDIT",
        };
        let _ = writeln!(s, "{verdict:<5} {}", f.message);
    }
    let _ = writeln!(
        s,
        "verdict: {}",
        if r.denied() { "denied" } else { "allowed" }
    );
    s
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
