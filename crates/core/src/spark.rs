//! What a Spark pod is: its role, its application, and the Spark container found by name.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label that `spark-submit` puts on every pod it (or the driver) creates.
pub const ROLE_LABEL: &str = "spark-role";
pub const APP_NAME_LABEL: &str = "spark-app-name";
pub const APP_SELECTOR_LABEL: &str = "spark-app-selector";
pub const EXEC_ID_LABEL: &str = "spark-exec-id";

/// The container names Spark's Kubernetes backend uses unless configured otherwise.
pub const DEFAULT_DRIVER_CONTAINER: &str = "spark-kubernetes-driver";
pub const DEFAULT_EXECUTOR_CONTAINER: &str = "spark-kubernetes-executor";

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SparkRole {
    Driver,
    Executor,
}

impl SparkRole {
    pub fn as_str(self) -> &'static str {
        match self {
            SparkRole::Driver => "driver",
            SparkRole::Executor => "executor",
        }
    }
}

impl std::fmt::Display for SparkRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the Spark container is recognised; Spark lets users rename it, so it is configurable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerNames {
    pub driver: String,
    pub executor: String,
}

impl Default for ContainerNames {
    fn default() -> Self {
        Self {
            driver: DEFAULT_DRIVER_CONTAINER.to_owned(),
            executor: DEFAULT_EXECUTOR_CONTAINER.to_owned(),
        }
    }
}

impl ContainerNames {
    pub fn for_role(&self, role: SparkRole) -> &str {
        match role {
            SparkRole::Driver => &self.driver,
            SparkRole::Executor => &self.executor,
        }
    }
}

/// Why a pod carrying a spark-role label is still not a Spark pod we can work on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotSpark {
    /// No `spark-role` label: not ours, never touched.
    NoRoleLabel,
    /// A `spark-role` label with a value Spark never writes.
    UnknownRole(String),
}

/// A read-only view of a pod that Spark created.
#[derive(Debug, Clone, Copy)]
pub struct SparkPod<'a> {
    pub pod: &'a Pod,
    pub role: SparkRole,
    /// Index of the Spark container in `spec.containers`, found by name; `None` if absent.
    pub spark_container: Option<usize>,
    /// The name we looked for, for messages.
    pub expected_container: &'a str,
}

impl<'a> SparkPod<'a> {
    pub fn recognise(pod: &'a Pod, names: &'a ContainerNames) -> Result<Self, NotSpark> {
        let role = role_of(pod)?;
        let expected_container = names.for_role(role);
        let spark_container = pod.spec.as_ref().and_then(|s| {
            s.containers
                .iter()
                .position(|c| c.name == expected_container)
        });
        Ok(Self {
            pod,
            role,
            spark_container,
            expected_container,
        })
    }

    pub fn labels(&self) -> Option<&'a BTreeMap<String, String>> {
        self.pod.metadata.labels.as_ref()
    }

    pub fn label(&self, key: &str) -> Option<&'a str> {
        self.labels().and_then(|l| l.get(key)).map(String::as_str)
    }

    pub fn app_name(&self) -> Option<&'a str> {
        self.label(APP_NAME_LABEL)
    }

    pub fn name(&self) -> &'a str {
        self.pod.metadata.name.as_deref().unwrap_or("")
    }

    pub fn container(&self) -> Option<&'a Container> {
        let idx = self.spark_container?;
        self.pod.spec.as_ref()?.containers.get(idx)
    }
}

/// The role from the `spark-role` label, which is what makes a pod ours at all.
pub fn role_of(pod: &Pod) -> Result<SparkRole, NotSpark> {
    let value = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ROLE_LABEL))
        .ok_or(NotSpark::NoRoleLabel)?;
    match value.as_str() {
        "driver" => Ok(SparkRole::Driver),
        "executor" => Ok(SparkRole::Executor),
        other => Err(NotSpark::UnknownRole(other.to_owned())),
    }
}
