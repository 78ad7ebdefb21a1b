//! The test file format (`spark-admission-test.yaml`): serde and schemars types, the single
//! source of its JSON Schema (`policies/tests/schema.json`, `spark-admission schema --kind test`).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::{SchemaValidator, API_VERSION};

/// The file name `spark-admission test` looks for under the paths it is given.
pub const TEST_FILE_NAME: &str = "spark-admission-test.yaml";
pub const TEST_KIND: &str = "SparkAdmissionTest";

/// One test file: the policies under test, the input pods, and the cases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "SparkAdmissionTest")]
pub struct TestFile {
    /// Always `spark-admission.io/v1alpha1`.
    #[schemars(schema_with = "api_version_schema")]
    pub api_version: String,
    /// Always `SparkAdmissionTest`.
    #[schemars(schema_with = "kind_schema")]
    pub kind: String,
    pub metadata: TestMetadata,
    pub spec: TestSpec,
}

fn api_version_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "const": API_VERSION })
}

fn kind_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "const": TEST_KIND })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestMetadata {
    #[schemars(length(min = 1))]
    pub name: String,
    /// Free text for humans. Kept by `--update`, which does not keep comments inside the document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestSpec {
    /// Paths relative to this file: policy files, policy folders (their `.yaml`/`.yml` files,
    /// not recursive), or Kubernetes manifests as applied (multi-document YAML, `kustomize
    /// build` output, `List`s) whose ConfigMaps labelled `spark-admission.io/policy: "true"`
    /// hold the policies in their `.yaml`/`.yml` keys.
    #[schemars(length(min = 1))]
    pub policies: Vec<String>,
    /// The pods the cases admit.
    #[schemars(length(min = 1))]
    pub pods: Vec<PodInput>,
    #[schemars(length(min = 1))]
    pub cases: Vec<Case>,
}

/// A pod as `spark-submit` sends it: a Pod (JSON or YAML) or the AdmissionReview a
/// kube-apiserver sent for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodInput {
    /// How cases refer to this pod.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Path relative to this file.
    #[schemars(length(min = 1))]
    pub file: String,
    /// Namespace the pod is created in (default: the review's, else the pod's, else `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels set on the pod before admission, e.g. `spark-app-name` to exercise a selector
    /// with a real fixture (as `spark.kubernetes.driver.label.*` or the app name would).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Admit the pod as if the webhook remembered an OOMKilled pod of its application
    /// (memoryOnOOM), which a policy test has no cluster to learn from.
    #[serde(default, rename = "afterOOM", skip_serializing_if = "Option::is_none")]
    pub after_oom: Option<AfterOom>,
}

/// A remembered raise after an OOMKilled pod, as the webhook would hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AfterOom {
    /// The memory the application's next pods should get (`4320Mi`).
    #[schemars(length(min = 1))]
    pub memory: String,
    /// The OOMKilled pod's name.
    #[schemars(length(min = 1))]
    pub oom_killed_pod: String,
    /// The memory it had (`3456Mi`).
    #[schemars(length(min = 1))]
    pub oom_killed_memory: String,
    /// When its container was killed (RFC 3339, `2026-06-01T02:10:00Z`).
    #[schemars(length(min = 1))]
    pub at: String,
}

/// One pod admitted under the policies, and what must come out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Case {
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The `name` of one of `spec.pods`.
    pub pod: String,
    /// Only what is stated is checked; at least one expectation is required (`--update`
    /// fills an empty one in).
    #[serde(default)]
    pub expect: Expect,
}

/// What the webhook must answer. Every field is optional; each one given is checked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expect {
    /// `allowed` or `refused`: the validating webhook's verdict on the mutated pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Verdict>,
    /// The rules that refuse the pod (enforce mode), in any order; the list is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_by: Option<Vec<RuleRef>>,
    /// The audit-mode findings (allowed, recorded in the `audit-findings` audit annotation),
    /// in any order; the list is complete. For rules on their way from audit to enforce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audited: Option<Vec<RuleRef>>,
    /// Every warning the submitter sees (from the mutation and from warn-mode rules), in
    /// any order; `[]` asserts there are none. A string must equal a warning; `{contains: …}`
    /// must be part of one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<WarningExpectation>>,
    /// Names of the policies recorded in the `spark-admission.io/applied` annotation, in any
    /// order; `name@hash` pins a policy's exact content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Vec<String>>,
    /// A partial pod, compared with the pod after our patch: every field given must be equal
    /// (`null`: must be absent). Lists of named items (containers, env, volumes, …) are matched
    /// by `name`, `volumeMounts` by `mountPath`; in other lists each item given must equal some
    /// item of the pod's, in any order. The pod may have more fields and items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "BTreeMap<String, Value>")]
    pub pod: Option<Value>,
    /// The whole pod after our patch, compared exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "BTreeMap<String, Value>")]
    pub full_pod: Option<Value>,
    /// The JSON Patch (RFC 6902) the mutating webhook sends, compared exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<BTreeMap<String, Value>>")]
    pub patch: Option<Value>,
}

impl Expect {
    pub fn is_empty(&self) -> bool {
        *self == Expect::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allowed,
    Refused,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Refused => "refused",
        }
    }
}

/// A rule of a policy, as findings name them: `{policy: guardrails, rule: maxResources}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleRef {
    pub policy: String,
    pub rule: String,
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.policy, self.rule)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum WarningExpectation {
    /// The whole warning.
    Exact(String),
    /// Part of a warning.
    Contains {
        #[schemars(length(min = 1))]
        contains: String,
    },
}

impl WarningExpectation {
    pub fn matches(&self, warning: &str) -> bool {
        match self {
            WarningExpectation::Exact(s) => s == warning,
            WarningExpectation::Contains { contains } => warning.contains(contains.as_str()),
        }
    }
}

/// The JSON Schema of the test format.
pub fn test_schema_json() -> Value {
    let schema = schemars::schema_for!(TestFile);
    let mut value = serde_json::to_value(schema).unwrap_or(Value::Null);
    crate::policy::strip_optional_null(&mut value);
    value
}

/// Built once per process, like the policy schema's validator.
pub fn test_schema_validator() -> Result<&'static SchemaValidator, String> {
    static VALIDATOR: OnceLock<Result<SchemaValidator, String>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| {
            SchemaValidator::compile(&test_schema_json())
                .map_err(|e| format!("the built-in test schema does not compile: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}
