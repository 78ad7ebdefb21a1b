//! Validation rules: what a Spark pod may not do, with messages a data engineer can act on
//! (which Spark setting to change), naming the policy, the rule, the value and the limit.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, SecurityContext, Volume};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Serialize;

use super::footprint::{self, Kind};

use crate::policy::model::{RuleMode, Rules};
use crate::policy::{CompiledPolicy, CompiledRules, Pattern};
use crate::quantity;
use crate::spark::{SparkPod, SparkRole};

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub policy: String,
    pub rule: &'static str,
    pub mode: RuleMode,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Validation {
    pub findings: Vec<Finding>,
    /// Policies whose rules were checked, as `name@hash`.
    pub checked: Vec<String>,
}

impl Validation {
    pub fn denied(&self) -> bool {
        self.findings.iter().any(|f| f.mode == RuleMode::Enforce)
    }

    pub fn with_mode(&self, mode: RuleMode) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.mode == mode)
    }

    /// The denial message: every enforced finding, one sentence each.
    pub fn denial_message(&self) -> String {
        self.with_mode(RuleMode::Enforce)
            .map(|f| f.message.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

pub(crate) fn check(
    policies: &[&CompiledPolicy],
    spark: &SparkPod<'_>,
    namespace: &str,
) -> Validation {
    let mut out = Validation::default();
    for p in policies {
        let Some(rules) = &p.rules else { continue };
        out.checked.push(p.tag.clone());
        let mut c = Checker {
            policy: &p.name,
            mode: rules.rules.mode,
            spark,
            namespace,
            findings: &mut out.findings,
        };
        c.run(rules);
    }
    out
}

/// Where in the pod a container is listed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Container,
    Init,
    Ephemeral,
}

/// What the rules read of a container, whatever list it is in.
struct AnyContainer<'a> {
    place: Place,
    name: &'a str,
    image: Option<&'a str>,
    security: Option<&'a SecurityContext>,
}

impl AnyContainer<'_> {
    /// `"name"`, marked when it is not a regular container.
    fn shown(&self) -> String {
        match self.place {
            Place::Container => format!("\"{}\"", self.name),
            Place::Init => format!("\"{}\" (init)", self.name),
            Place::Ephemeral => format!("\"{}\" (ephemeral)", self.name),
        }
    }

    fn is_spark(&self, spark: &SparkPod<'_>) -> bool {
        self.place == Place::Container && spark.container().is_some_and(|c| c.name == self.name)
    }
}

struct Checker<'a, 'b> {
    policy: &'a str,
    mode: RuleMode,
    spark: &'a SparkPod<'b>,
    namespace: &'a str,
    findings: &'a mut Vec<Finding>,
}

impl Checker<'_, '_> {
    fn report(&mut self, rule: &'static str, message: String) {
        self.findings.push(Finding {
            policy: self.policy.to_owned(),
            rule,
            mode: self.mode,
            message: format!("policy \"{}\" ({rule}): {message}", self.policy),
        });
    }

    fn pod(&self) -> &Pod {
        self.spark.pod
    }

    /// Every container that can run in the pod: regular, init and ephemeral (added later
    /// through `pods/ephemeralcontainers`, e.g. by `kubectl debug`).
    fn all_containers(&self) -> impl Iterator<Item = AnyContainer<'_>> {
        let spec = self.pod().spec.as_ref();
        spec.into_iter().flat_map(|s| {
            let regular = s.containers.iter().map(|c| AnyContainer {
                place: Place::Container,
                name: &c.name,
                image: c.image.as_deref(),
                security: c.security_context.as_ref(),
            });
            let init = s.init_containers.iter().flatten().map(|c| AnyContainer {
                place: Place::Init,
                name: &c.name,
                image: c.image.as_deref(),
                security: c.security_context.as_ref(),
            });
            let ephemeral = s
                .ephemeral_containers
                .iter()
                .flatten()
                .map(|c| AnyContainer {
                    place: Place::Ephemeral,
                    name: &c.name,
                    image: c.image.as_deref(),
                    security: c.security_context.as_ref(),
                });
            regular.chain(init).chain(ephemeral)
        })
    }

    fn run(&mut self, compiled: &CompiledRules) {
        let r: &Rules = &compiled.rules;
        let role = self.spark.role;
        if r.require_spark_container && self.spark.spark_container.is_none() {
            self.report(
                "requireSparkContainer",
                format!(
                    "this {role} pod has no container named \"{}\"; pods must be created by spark-submit (with spark.kubernetes.{role}.podTemplateContainerName left at its default)",
                    self.spark.expected_container
                ),
            );
        }
        if let Some(globs) = &compiled.allowed_images {
            self.check_images(globs, r.allowed_images.as_deref().unwrap_or_default());
        }
        if let Some(max) = r.max_resources.as_ref().and_then(|m| m.for_role(role)) {
            self.check_max_resources(&max.requests, Kind::Requests);
            self.check_max_resources(&max.limits, Kind::Limits);
        }
        for label in &r.required_labels {
            if self.spark.label(label).is_none() {
                self.report(
                    "requiredLabels",
                    format!(
                        "the pod has no label \"{label}\"; add it with --conf spark.kubernetes.{role}.label.{label}=<value>"
                    ),
                );
            }
        }
        if !r.forbidden_volume_types.is_empty() {
            self.check_volume_types(&r.forbidden_volume_types);
        }
        if r.forbid_privileged {
            let names: Vec<String> = self
                .all_containers()
                .filter(|c| c.security.and_then(|s| s.privileged) == Some(true))
                .map(|c| c.shown())
                .collect();
            if !names.is_empty() {
                self.report(
                    "forbidPrivileged",
                    format!("container {} runs privileged, which is not allowed in namespace {}; remove privileged: true from the pod template (or from the ephemeral container: kubectl debug --profile=sysadmin sets it)", names.join(", "), self.namespace),
                );
            }
        }
        if r.forbid_privilege_escalation {
            let names: Vec<String> = self
                .all_containers()
                .filter(|c| c.security.and_then(|s| s.allow_privilege_escalation) != Some(false))
                .map(|c| c.shown())
                .collect();
            if !names.is_empty() {
                self.report(
                    "forbidPrivilegeEscalation",
                    format!("container {} does not set securityContext.allowPrivilegeEscalation: false; set it in the pod template (or ask your platform team to have a policy set it)", names.join(", ")),
                );
            }
        }
        if r.forbid_host_namespaces {
            if let Some(spec) = self.pod().spec.as_ref() {
                let used: Vec<&str> = [
                    ("hostNetwork", spec.host_network),
                    ("hostPID", spec.host_pid),
                    ("hostIPC", spec.host_ipc),
                ]
                .into_iter()
                .filter(|(_, v)| *v == Some(true))
                .map(|(n, _)| n)
                .collect();
                if !used.is_empty() {
                    self.report(
                        "forbidHostNamespaces",
                        format!("the pod uses {}, which is not allowed in namespace {}; remove it from the pod template", used.join(", "), self.namespace),
                    );
                }
            }
        }
        if let Some(globs) = &compiled.allowed_service_accounts {
            let sa = self
                .pod()
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.as_deref())
                .unwrap_or("default");
            if !globs.iter().any(|g| g.is_match(sa)) {
                let allowed = r
                    .allowed_service_accounts
                    .as_deref()
                    .unwrap_or_default()
                    .join(", ");
                let hint = match role {
                    SparkRole::Driver => "spark.kubernetes.authenticate.driver.serviceAccountName",
                    SparkRole::Executor => {
                        "spark.kubernetes.authenticate.executor.serviceAccountName"
                    }
                };
                self.report(
                    "allowedServiceAccounts",
                    format!("service account \"{sa}\" is not allowed in namespace {} (allowed: {allowed}); set {hint}", self.namespace),
                );
            }
        }
    }

    fn check_images(&mut self, globs: &[Pattern], patterns: &[String]) {
        let bad: Vec<(String, bool, String)> = self
            .all_containers()
            .filter_map(|c| {
                let image = c.image.unwrap_or("");
                (!globs.iter().any(|g| g.is_match(image)))
                    .then(|| (c.shown(), c.is_spark(self.spark), image.to_owned()))
            })
            .collect();
        for (name, is_spark, image) in bad {
            let hint = if is_spark {
                format!(
                    "; set spark.kubernetes.{}.container.image to an allowed image",
                    self.spark.role
                )
            } else {
                String::new()
            };
            self.report(
                "allowedImages",
                format!(
                    "container {name} uses image \"{image}\", which is not allowed here (allowed: {}){hint}",
                    patterns.join(", ")
                ),
            );
        }
    }

    /// The whole pod, counted as the scheduler counts it (see `footprint`): a renamed Spark
    /// container, a second container or an init container cannot carry resources past the cap.
    fn check_max_resources(&mut self, max: &BTreeMap<String, Quantity>, kind: Kind) {
        let Some(spec) = self.pod().spec.as_ref() else {
            return;
        };
        let role = self.spark.role;
        let spark_name = self.spark.container().map(|c| c.name.as_str());
        let mut problems = Vec::new();
        for (resource, limit) in max {
            let Some(l) = quantity::parse(&limit.0) else {
                continue;
            };
            let Some(total) = footprint::total(spec, kind, resource) else {
                continue;
            };
            if footprint::exceeds(total.value, l) {
                problems.push((resource.clone(), total, limit.0.clone()));
            }
        }
        let kind_name = kind.as_str();
        for (resource, total, limit) in problems {
            let have = footprint::show(&resource, &total);
            let spark_alone = matches!(total.parts.as_slice(), [p] if p.container.is_some() && p.container.as_deref() == spark_name);
            let message = if spark_alone {
                format!(
                    "the {role} asks for {resource} {have} ({kind_name}), above the {limit} allowed for {role}s in namespace {}; {}",
                    self.namespace,
                    spark_setting_hint(role, &resource, kind_name)
                )
            } else {
                let parts: Vec<String> = total
                    .parts
                    .iter()
                    .map(|p| format!("{} {}", p.who, p.quantity))
                    .collect();
                let spark_counted = total
                    .parts
                    .iter()
                    .any(|p| p.container.is_some() && p.container.as_deref() == spark_name);
                let hint = if spark_counted {
                    format!(
                        "{}, or the other containers' {kind_name} in the pod template",
                        spark_setting_hint(role, &resource, kind_name)
                    )
                } else {
                    format!(
                        "lower the {kind_name} of {} in the pod template",
                        if total.parts.len() == 1 {
                            "that container"
                        } else {
                            "those containers"
                        }
                    )
                };
                format!(
                    "the {role} pod asks for {resource} {have} ({kind_name}, counted as the scheduler does: {}), above the {limit} allowed for {role}s in namespace {}; {hint}",
                    parts.join(" + "),
                    self.namespace,
                )
            };
            self.report("maxResources", message);
        }
    }

    fn check_volume_types(&mut self, forbidden: &[String]) {
        let Some(volumes) = self.pod().spec.as_ref().and_then(|s| s.volumes.as_ref()) else {
            return;
        };
        let mut bad = Vec::new();
        for v in volumes {
            for kind in volume_kinds(v) {
                if forbidden.iter().any(|f| f == kind) {
                    bad.push((v.name.clone(), kind));
                }
            }
        }
        for (name, kind) in bad {
            self.report(
                "forbiddenVolumeTypes",
                format!(
                    "volume \"{name}\" is a {kind} volume, which is not allowed in namespace {}; remove the spark.kubernetes.{}.volumes.{kind}.{name}.* settings",
                    self.namespace, self.spark.role
                ),
            );
        }
    }
}

/// `volume_kinds(v)`: the sources a volume sets, by their JSON names (the names
/// `forbiddenVolumeTypes` lists), read from the typed volume: nothing to serialise, so
/// nothing that could fail and let a volume go unchecked. The destructuring names every
/// field, so a volume source added by a new k8s-openapi fails to compile here instead of
/// passing every rule unseen.
macro_rules! volume_kinds {
    ($($field:ident $key:literal),* $(,)?) => {
        fn volume_kinds(v: &Volume) -> impl Iterator<Item = &'static str> {
            let Volume { name: _, $($field: _),* } = v;
            [$((v.$field.is_some(), $key)),*]
                .into_iter()
                .filter_map(|(set, key)| set.then_some(key))
        }

        #[cfg(test)]
        const VOLUME_KINDS: &[&str] = &[$($key),*];
    };
}

volume_kinds![
    aws_elastic_block_store "awsElasticBlockStore",
    azure_disk "azureDisk",
    azure_file "azureFile",
    cephfs "cephfs",
    cinder "cinder",
    config_map "configMap",
    csi "csi",
    downward_api "downwardAPI",
    empty_dir "emptyDir",
    ephemeral "ephemeral",
    fc "fc",
    flex_volume "flexVolume",
    flocker "flocker",
    gce_persistent_disk "gcePersistentDisk",
    git_repo "gitRepo",
    glusterfs "glusterfs",
    host_path "hostPath",
    image "image",
    iscsi "iscsi",
    nfs "nfs",
    persistent_volume_claim "persistentVolumeClaim",
    photon_persistent_disk "photonPersistentDisk",
    portworx_volume "portworxVolume",
    projected "projected",
    quobyte "quobyte",
    rbd "rbd",
    scale_io "scaleIO",
    secret "secret",
    storageos "storageos",
    vsphere_volume "vsphereVolume",
];

/// Which Spark setting controls a resource of the Spark container.
fn spark_setting_hint(role: SparkRole, resource: &str, kind: &str) -> String {
    match (resource, kind) {
        ("memory", _) => format!("lower spark.{role}.memory or spark.{role}.memoryOverhead"),
        ("cpu", "limits") => format!("lower spark.kubernetes.{role}.limit.cores"),
        ("cpu", _) => {
            format!("lower spark.kubernetes.{role}.request.cores (or spark.{role}.cores)")
        }
        _ => format!(
            "lower spark.kubernetes.{role}.resource / spark.{role}.resource.{resource} settings"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An object's keys, in order, but `name`.
    fn keys_but_name(v: &serde_json::Value) -> Vec<&str> {
        let keys = v.as_object().unwrap().keys().map(String::as_str);
        keys.filter(|k| *k != "name").collect()
    }

    /// The list names every volume source of the API (its OpenAPI schema, as k8s-openapi
    /// publishes it), spelled as in JSON.
    #[test]
    fn every_volume_source_is_a_kind() {
        let schema = serde_json::to_value(schemars::schema_for!(Volume)).unwrap();
        let mut api = keys_but_name(&schema["properties"]);
        api.sort_unstable();
        let mut ours = VOLUME_KINDS.to_vec();
        ours.sort_unstable();
        assert_eq!(ours, api);
    }

    /// The kinds of every volume of the real pods, and of one volume of each source that
    /// decodes from a small object: the keys of the volume's JSON but `name` (how the rule
    /// read them before).
    #[test]
    fn the_kinds_of_a_volume_are_its_json_keys() {
        let mut volumes: Vec<Volume> = spark_admission_testkit::fixtures::all_pods()
            .into_iter()
            .filter_map(|(_, p)| serde_json::from_value::<Pod>(p).ok()?.spec)
            .flat_map(|s| s.volumes.unwrap_or_default())
            .collect();
        let fixtures = volumes.len();
        let small = [
            ("hostPath", serde_json::json!({"path": "/var/run"})),
            (
                "persistentVolumeClaim",
                serde_json::json!({"claimName": "c"}),
            ),
            ("nfs", serde_json::json!({"server": "s", "path": "/"})),
            ("csi", serde_json::json!({"driver": "d"})),
            ("image", serde_json::json!({"reference": "r"})),
            ("gitRepo", serde_json::json!({"repository": "r"})),
            ("ephemeral", serde_json::json!({})),
        ];
        for (kind, source) in small {
            volumes.push(
                serde_json::from_value(serde_json::json!({"name": "v", kind: source})).unwrap(),
            );
        }
        // Two sources at once (the API server refuses it, the rule must still see both).
        volumes.push(
            serde_json::from_value(
                serde_json::json!({"name": "v", "hostPath": {"path": "/"}, "emptyDir": {}}),
            )
            .unwrap(),
        );
        assert!(fixtures >= 5, "{fixtures} volumes in the fixtures");
        for v in &volumes {
            let json = serde_json::to_value(v).unwrap();
            let keys = keys_but_name(&json);
            let mut ours: Vec<&str> = volume_kinds(v).collect();
            ours.sort_unstable();
            assert_eq!(ours, keys, "{json}");
            assert!(!ours.is_empty());
        }
    }
}
