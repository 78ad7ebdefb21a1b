//! The policy format as platform admins write it: `SparkPodPolicy` documents.
//!
//! These types are the single source of truth: `policies/schema.json` is generated from
//! them, and every document is checked against that schema before it is deserialised.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ConfigMapVolumeSource, Container, ContainerPort, EnvFromSource, EnvVar, HostAlias,
    PersistentVolumeClaimVolumeSource, PodDNSConfig, PodSecurityContext, SecretVolumeSource,
    SecurityContext, Toleration, TopologySpreadConstraint, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spark::SparkRole;

pub const API_VERSION: &str = "spark-admission.io/v1alpha1";
pub const KIND: &str = "SparkPodPolicy";

/// One policy document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "SparkPodPolicy")]
pub struct SparkPodPolicy {
    /// Always `spark-admission.io/v1alpha1`.
    #[schemars(schema_with = "api_version_schema")]
    pub api_version: String,
    /// Always `SparkPodPolicy`.
    #[schemars(schema_with = "kind_schema")]
    pub kind: String,
    pub metadata: PolicyMetadata,
    pub spec: PolicySpec,
}

fn api_version_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "const": API_VERSION })
}

fn kind_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "const": KIND })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyMetadata {
    /// Unique name; it appears in the applied-policy annotation and in every message.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    /// Higher wins when two policies set the same value; ties are broken by name.
    #[serde(default)]
    pub priority: i32,
    /// Namespaces the policy applies to: exact names or globs (`team-*`); `*` is every namespace.
    #[schemars(length(min = 1))]
    pub namespaces: Vec<String>,
    /// Further conditions on the pod; all given conditions must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    /// Changes for drivers and executors alike (applied before the role-specific ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<PodPatch>,
    /// Changes for driver pods only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<PodPatch>,
    /// Changes for executor pods only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<PodPatch>,
    /// Rules checked by the validating webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<Rules>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    /// Spark roles the policy applies to (default: both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<SparkRole>>,
    /// Regular expression matched against the `spark-app-name` label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    /// Labels the pod must carry with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

/// Which containers a volume mount or setting goes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContainerTarget {
    /// Only the Spark container (found by name, never by position).
    #[default]
    Spark,
    /// Every container of the pod, init containers excluded.
    All,
}

/// What a policy adds to a pod. Every field is optional.
///
/// Values may use variables, replaced for each pod: `${namespace}`, `${app.name}` (the
/// `spark-app-name` label), `${app.id}` (the `spark-app-selector` label) and `${role}`
/// (`driver` or `executor`); `$${` writes a literal `${`. They are allowed in label and
/// annotation values, env values, sparkConf values, the claimName / configMap name /
/// secretName of volumes and dependency sources, and the mount subPath. An unknown
/// variable is an error when the policy loads; when the pod lacks the label a variable
/// needs, that item is skipped with a warning (never written with an empty value).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodPatch {
    /// When false (default) a value the pod already has wins over the policy's, with a warning.
    #[serde(default)]
    pub overwrite: bool,
    /// Pod labels; values may use variables (`${namespace}`, `${app.name}`, `${app.id}`, `${role}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Pod annotations; values may use variables (`${namespace}`, `${app.name}`, `${app.id}`, `${role}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity is ANDed into every existing term; preferred and pod (anti-)affinity terms are appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Appended; a toleration equal to an existing one is not added again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Names of image pull secrets to add.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImagePatch>,
    /// Volumes and their mounts. claimName, configMap name, secretName and the mount's subPath may use variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumePatch>,
    /// Jars and Python packages put on the Spark classpath / PYTHONPATH. The claimName,
    /// configMap name or secretName of a source may use variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<Dependency>,
    /// Environment variables for the Spark container, merged by name; values may use variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// envFrom sources for the Spark container; an equal source is not added again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesPatch>,
    /// Spark configuration defaults, like spark-defaults.conf: `{spark.key: "value"}`. Driver
    /// pods only (in `all` or `driver`; not allowed in `executor`, whose configuration comes
    /// from its driver: put `spark.executor.*` keys in `driver` or `all`). Written as
    /// `-Dkey=value` into the driver container's SPARK_SUBMIT_OPTS, so whatever the
    /// submitter sets (`--conf`, properties file, its own SPARK_SUBMIT_OPTS) wins. Keys
    /// start with `spark.`; values are strings and may use variables. `overwrite` does not
    /// apply. Nothing reaches a client-mode driver, which runs outside the cluster.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub spark_conf: BTreeMap<String, String>,
    /// Ports of the Spark container (e.g. the UI, 4040), merged by name and by
    /// containerPort/protocol; a port clashing with a different existing one is not added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// Also removes `spec.priority` and `spec.preemptionPolicy`, which the API server recomputes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// Pod-level security context; fields the pod sets are kept unless `overwrite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
    /// Security context of the Spark container; fields the container sets are kept unless `overwrite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub termination_grace_period_seconds: Option<i64>,
    /// Appended; a constraint with the same topologyKey and whenUnsatisfiable is not added again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Nameservers, searches and options are merged without duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<PodDNSConfig>,
    /// Merged by IP: hostnames are added to an existing entry for the same IP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_aliases: Vec<HostAlias>,
    /// Init containers, merged by name and run after the pod's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
    /// Sidecar containers, merged by name and placed after the pod's containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<Container>,
    /// Give the Spark container more memory after a pod of the same application was
    /// OOMKilled (`driver` or `executor` sections only; ConfigMap source only). See the
    /// README, "When an executor runs out of memory".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "memoryOnOOM")]
    pub memory_on_oom: Option<MemoryOnOom>,
}

/// How the Spark container's memory grows after an OOMKilled pod: each OOM adds one step
/// to the memory the killed pod had, up to `max`, and the value is remembered for the
/// application's next runs for `remember`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MemoryOnOom {
    /// One step: a percentage of the killed pod's memory (`25%`) or a quantity (`1Gi`).
    #[serde(default = "default_oom_step")]
    #[schemars(regex(
        pattern = r"^([0-9]+(\.[0-9]+)?%|[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?)$"
    ))]
    pub step: String,
    /// The smallest step, as a quantity (`512Mi`); default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_step: Option<Quantity>,
    /// The Spark container's memory is never raised above this.
    pub max: Quantity,
    /// How long a raise is kept for the application's next runs (`14d`, `36h`, `90m`).
    #[serde(default = "default_oom_remember")]
    #[schemars(regex(pattern = r"^[0-9]+(s|m|h|d)$"))]
    pub remember: String,
}

fn default_oom_step() -> String {
    "25%".to_owned()
}

fn default_oom_remember() -> String {
    "14d".to_owned()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImagePatch {
    /// Prefix rewrites applied to every container image (first match wins), e.g. a registry mirror.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rewrite: Vec<ImageRewrite>,
    /// imagePullPolicy for every container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageRewrite {
    /// Image prefix to replace, e.g. `docker.io/apache/`; an image that already starts with `to` is left alone.
    #[schemars(length(min = 1))]
    pub from: String,
    /// Replacement prefix, e.g. `mirror.corp.example/apache/`.
    #[schemars(length(min = 1))]
    pub to: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// A volume and where to mount it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumePatch {
    /// A Kubernetes Volume (name plus one source).
    pub volume: Volume,
    /// Where to mount it; without a mount the volume is only added to the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<Mount>,
    /// Which containers get the mount.
    #[serde(default)]
    pub containers: ContainerTarget,
}

/// A VolumeMount whose name defaults to the volume's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mount {
    #[schemars(length(min = 1), regex(pattern = r"^/"))]
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path_expr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_propagation: Option<String>,
}

/// Jars or Python packages made available to Spark before it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Dependency {
    /// Short name; the volume is called `spark-deps-<name>`.
    #[schemars(
        length(min = 1, max = 50),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    pub source: DependencySource,
    /// Where the dependency appears in the Spark container (default `/opt/spark/deps/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/[^:]*$"))]
    pub mount_path: Option<String>,
    /// Put `<mountPath>/*` on the JVM classpath (default true).
    #[serde(default = "default_true")]
    pub jars: bool,
    /// Put `<mountPath>` on PYTHONPATH (default false).
    #[serde(default)]
    pub python: bool,
}

fn default_true() -> bool {
    true
}

/// Exactly one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum DependencySource {
    PersistentVolumeClaim(PersistentVolumeClaimVolumeSource),
    ConfigMap(ConfigMapVolumeSource),
    Secret(SecretVolumeSource),
    /// An OCI image mounted as a volume (Kubernetes image volumes).
    Image(ImageSource),
    /// Files fetched by an init container into an emptyDir before Spark starts.
    Download(DownloadSource),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageSource {
    #[schemars(length(min = 1))]
    pub reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DownloadSource {
    /// http(s) URLs, each saved under its last path segment: a URL, or `{url, sha256}` to
    /// have the file's SHA-256 checked before Spark starts.
    #[schemars(schema_with = "download_urls_schema")]
    pub urls: Vec<DownloadUrl>,
    /// Image of the init container; it must provide `sh`, `curl` and `sha256sum`.
    #[serde(default = "default_download_image")]
    pub image: String,
    /// Numeric user the download runs as (default 185, the Spark user of Apache's images).
    /// Numeric so that the kubelet can verify `runAsNonRoot` whatever user the image names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2147483647))]
    pub run_as_user: Option<i64>,
    /// Numeric group the download runs as (default 185, the Spark group of Apache's images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub run_as_group: Option<i64>,
    /// Seconds a connection may take to open, and a transfer may go without receiving a
    /// byte, before the try fails (default 60). Without it a stalled repository keeps the pod
    /// in Init for ever; with it the pod fails and Spark replaces the executor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub stall_timeout_seconds: Option<u32>,
}

pub const DEFAULT_DOWNLOAD_IMAGE: &str = "curlimages/curl:8.11.1";
/// The uid and gid of the `spark` user in Apache Spark's images: the files the download
/// writes belong to the user who reads them.
pub const DEFAULT_DOWNLOAD_USER: i64 = 185;
pub const DEFAULT_DOWNLOAD_GROUP: i64 = 185;
/// A repository that sends nothing for a minute is not coming back within a pod's start.
pub const DEFAULT_DOWNLOAD_STALL_SECONDS: u32 = 60;

fn default_download_image() -> String {
    DEFAULT_DOWNLOAD_IMAGE.to_owned()
}

/// One file to download: a bare URL, or a URL with the SHA-256 its content must have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DownloadUrl {
    Plain(String),
    Checked(CheckedUrl),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckedUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl DownloadUrl {
    pub fn url(&self) -> &str {
        match self {
            DownloadUrl::Plain(url) | DownloadUrl::Checked(CheckedUrl { url, .. }) => url,
        }
    }

    pub fn sha256(&self) -> Option<&str> {
        match self {
            DownloadUrl::Plain(_) => None,
            DownloadUrl::Checked(c) => c.sha256.as_deref(),
        }
    }

    /// The name the file is saved under: the URL path's last segment (query and fragment
    /// left out), as curl's `--remote-name` would choose it. None when that is empty, `.`
    /// or `..`.
    pub fn file_name(&self) -> Option<&str> {
        let rest = self.url().split_once("://")?.1;
        // A byte search: `split(['?', '#'])`'s char-set matcher cost ~2k instructions a
        // URL, and this runs for every download URL of every planned pod.
        let end = rest.bytes().position(|b| b == b'?' || b == b'#');
        let path = end.map_or(rest, |at| &rest[..at]);
        let (_, name) = path.rsplit_once('/')?;
        (!matches!(name, "" | "." | "..")).then_some(name)
    }
}

const DOWNLOAD_URL_PATTERN: &str = r"^https?://[^\s]+/[^/\s]+$";

/// Each item is a URL string or a `{url, sha256}` object. One schema with both types
/// rather than `anyOf`: `pattern` only applies to strings and `properties` only to
/// objects, so a mistake is reported at its own path instead of "not valid under any of
/// the schemas".
fn download_urls_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "minItems": 1,
        "items": {
            "type": ["string", "object"],
            "pattern": DOWNLOAD_URL_PATTERN,
            "properties": {
                "url": { "type": "string", "pattern": DOWNLOAD_URL_PATTERN },
                "sha256": {
                    "description": "Expected SHA-256 of the file, 64 hex digits; the init container fails when the download differs.",
                    "type": "string",
                    "pattern": "^[0-9a-fA-F]{64}$"
                }
            },
            "required": ["url"],
            "additionalProperties": false
        }
    })
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourcesPatch {
    /// Set only where the Spark container has no value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<ResourceValues>,
    /// Always set, replacing what the container has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<ResourceValues>,
}

/// Requests and limits by resource name (cpu, memory, ephemeral-storage, nvidia.com/gpu, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceValues {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Quantity>,
}

/// What the validating webhook checks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rules {
    /// enforce: deny the pod; warn: allow with a warning to the submitter; audit: allow, record in the audit log.
    #[serde(default)]
    pub mode: RuleMode,
    /// Image globs every container image must match (containers, init and ephemeral
    /// containers), e.g. `registry.corp/spark/*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_images: Option<Vec<String>>,
    /// Upper bounds for what the whole pod reserves, per role: every container, init
    /// containers and sidecars as the scheduler counts them, and pod-level resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_resources: Option<MaxResources>,
    /// Label keys every Spark pod must carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_labels: Vec<String>,
    /// Volume source types not allowed, by their field name: hostPath, emptyDir, nfs, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forbidden_volume_types: Vec<String>,
    /// No container (init and ephemeral included) may run privileged.
    #[serde(default)]
    pub forbid_privileged: bool,
    /// Every container (init and ephemeral included) must set allowPrivilegeEscalation: false.
    #[serde(default)]
    pub forbid_privilege_escalation: bool,
    /// No hostNetwork, hostPID or hostIPC.
    #[serde(default)]
    pub forbid_host_namespaces: bool,
    /// Service account names or globs the pod may run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_service_accounts: Option<Vec<String>>,
    /// The Spark container must be present (recognised by name).
    #[serde(default)]
    pub require_spark_container: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuleMode {
    #[default]
    Enforce,
    Warn,
    Audit,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MaxResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<ResourceValues>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<ResourceValues>,
}

impl MaxResources {
    pub fn for_role(&self, role: SparkRole) -> Option<&ResourceValues> {
        match role {
            SparkRole::Driver => self.driver.as_ref(),
            SparkRole::Executor => self.executor.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DownloadUrl;

    /// The last segment of the URL's path, before any query or fragment (whichever comes
    /// first), never empty, `.` or `..`.
    #[test]
    fn a_download_is_saved_under_the_last_segment_of_its_path() {
        for (url, name) in [
            ("https://r.example/m/a-1.0.jar", Some("a-1.0.jar")),
            ("https://r.example/a.jar?sig=x/y.jar", Some("a.jar")),
            ("https://r.example/a.jar#frag/b.jar", Some("a.jar")),
            ("https://r.example/a.jar#f?q/b.jar", Some("a.jar")),
            ("https://r.example/a.jar?q#f/b.jar", Some("a.jar")),
            ("https://r.example/dir/", None),
            ("https://r.example/lib/..", None),
            ("https://r.example/lib/.?x", None),
            ("https://r.example?x=/a.jar", None),
            ("r.example/a.jar", None),
        ] {
            assert_eq!(
                DownloadUrl::Plain(url.to_owned()).file_name(),
                name,
                "{url}"
            );
        }
    }
}
