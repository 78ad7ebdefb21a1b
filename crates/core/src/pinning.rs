//! Job pinning: a job's executors get the policy versions its driver was admitted under.
//!
//! The driver gets one more Spark configuration default (through `SPARK_SUBMIT_OPTS`, like
//! `sparkConf`): `spark.kubernetes.executor.annotation.spark-admission.io/driver-policies`
//! naming `name@hash` of every policy that could change its executors. Spark copies it onto
//! every executor pod it creates, so the pin travels with the job and needs no lookup. An
//! executor carrying it is mutated with exactly those versions (looked up by tag in the
//! version history); validation always uses the current policies.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::matching::PolicySet;
use crate::policy::CompiledPolicy;
use crate::spark::{SparkRole, ROLE_LABEL};

/// The annotation Spark copies onto every executor of a pinned driver.
pub const DRIVER_POLICIES_ANNOTATION: &str = "spark-admission.io/driver-policies";
/// Set on an executor whose pin names versions the webhook no longer has.
pub const MISSING_POLICIES_ANNOTATION: &str = "spark-admission.io/missing-policies";
/// The Spark setting that makes Spark write [`DRIVER_POLICIES_ANNOTATION`] on executors.
pub const PIN_SPARK_CONF_KEY: &str =
    "spark.kubernetes.executor.annotation.spark-admission.io/driver-policies";

/// The tags a driver in `namespace` pins for its executors: every policy of the namespace
/// that may change an executor (an `all` or `executor` section, executors not excluded by
/// role). Selectors are not checked here: executors carry labels of their own, and each
/// pinned version's selector is checked against the executor when it arrives. Sorted, so
/// the value is the same on every replica and every pass.
pub fn executor_tags(set: &PolicySet, namespace: &str) -> Vec<String> {
    let mut tags: Vec<String> = set
        .for_namespace(namespace)
        .into_iter()
        .filter(|p| p.executors && (p.all.is_some() || p.executor.is_some()))
        .map(|p| p.tag.clone())
        .collect();
    tags.sort_unstable();
    tags
}

/// The pin of an executor pod: the tags in its [`DRIVER_POLICIES_ANNOTATION`], or `None`
/// when the pod is not an executor or carries no pin (client mode, older drivers).
pub fn pin_of(pod: &Pod) -> Option<Vec<&str>> {
    let role = pod.metadata.labels.as_ref()?.get(ROLE_LABEL)?;
    if role != SparkRole::Executor.as_str() {
        return None;
    }
    let value = pod
        .metadata
        .annotations
        .as_ref()?
        .get(DRIVER_POLICIES_ANNOTATION)?;
    Some(
        value
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect(),
    )
}

/// The policies a pinned executor is mutated with.
#[derive(Debug, Default)]
pub struct Pinned {
    pub set: PolicySet,
    /// Pinned tags found neither in the current set nor in the history; for each, the
    /// current version of that policy (if any) is in `set` instead.
    pub missing: Vec<String>,
}

/// Resolves a pin: each tag from `history`, else from the current set; a tag found nowhere falls back to the current version of its policy. Policies
/// the pin does not name (created after the driver) are left out. Which of the resulting
/// versions apply to the pod is then decided as always, by each version's own namespaces
/// and selector: a pin copied into another namespace brings nothing that namespace lacks.
pub fn resolve(
    current: &PolicySet,
    tags: &[&str],
    history: impl Fn(&str) -> Option<Arc<CompiledPolicy>>,
) -> Pinned {
    let mut chosen: Vec<Arc<CompiledPolicy>> = Vec::with_capacity(tags.len());
    let mut missing = Vec::new();
    for tag in tags {
        // The history holds the current versions too (a hash lookup); scanning the
        // current set is for callers without one.
        let found =
            history(tag).or_else(|| current.policies().iter().find(|p| p.tag == *tag).cloned());
        match found {
            Some(p) => chosen.push(p),
            None => {
                missing.push((*tag).to_owned());
                let name = tag.split_once('@').map_or(*tag, |(n, _)| n);
                if let Some(p) = current.policies().iter().find(|p| p.name == name) {
                    chosen.push(Arc::clone(p));
                }
            }
        }
    }
    Pinned {
        set: PolicySet::new(chosen),
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{parse_documents, PolicySource};

    fn policy(name: &str, namespaces: &str, body: &str) -> Arc<CompiledPolicy> {
        let text = format!(
            "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {{name: {name}}}\nspec:\n  namespaces: {namespaces}\n{body}"
        );
        let mut docs = parse_documents(&PolicySource(format!("{name}.yaml")), &text)
            .unwrap_or_else(|e| panic!("{e:?}"));
        Arc::new(docs.remove(0))
    }

    #[test]
    fn a_driver_pins_only_policies_that_can_change_its_executors() {
        let set = PolicySet::new([
            policy("b-exec", "[jobs]", "  executor: {labels: {a: b}}\n"),
            policy("a-all", "[\"*\"]", "  all: {labels: {a: b}}\n"),
            policy("driver-only", "[jobs]", "  driver: {labels: {a: b}}\n"),
            policy(
                "rules-only",
                "[jobs]",
                "  validate: {forbidPrivileged: true}\n",
            ),
            policy("elsewhere", "[other]", "  all: {labels: {a: b}}\n"),
        ]);
        let tags = executor_tags(&set, "jobs");
        let names: Vec<&str> = tags
            .iter()
            .map(|t| t.split('@').next().unwrap_or(""))
            .collect();
        assert_eq!(names, ["a-all", "b-exec"]);
    }

    #[test]
    fn a_pin_takes_history_versions_leaves_out_new_policies_and_falls_back_when_missing() {
        let v1 = policy("team", "[jobs]", "  all: {labels: {v: \"1\"}}\n");
        let v2 = policy("team", "[jobs]", "  all: {labels: {v: \"2\"}}\n");
        let newer = policy("newer", "[jobs]", "  all: {labels: {n: \"1\"}}\n");
        let gone = policy("gone", "[jobs]", "  all: {labels: {g: \"1\"}}\n");
        let current = PolicySet::new([Arc::clone(&v2), newer, Arc::clone(&gone)]);
        let v1_tag = v1.tag.clone();
        let history = |tag: &str| (tag == v1_tag).then(|| Arc::clone(&v1));

        let pinned = resolve(&current, &[v1.tag.as_str()], history);
        let tags: Vec<&str> = pinned
            .set
            .policies()
            .iter()
            .map(|p| p.tag.as_str())
            .collect();
        assert_eq!(tags, [v1.tag.as_str()]);
        assert!(pinned.missing.is_empty());

        let pinned = resolve(&current, &["team@0000000000", gone.tag.as_str()], history);
        let mut tags: Vec<&str> = pinned
            .set
            .policies()
            .iter()
            .map(|p| p.tag.as_str())
            .collect();
        tags.sort_unstable();
        let mut want = [gone.tag.as_str(), v2.tag.as_str()];
        want.sort_unstable();
        assert_eq!(tags, want);
        assert_eq!(pinned.missing, ["team@0000000000"]);
    }

    #[test]
    fn only_executors_carry_a_pin() {
        let pod = |role: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {
                    "labels": {"spark-role": role},
                    "annotations": {DRIVER_POLICIES_ANNOTATION: "a@1, b@2,"}
                }
            }))
            .unwrap_or_default()
        };
        assert_eq!(pin_of(&pod("executor")), Some(vec!["a@1", "b@2"]));
        assert_eq!(pin_of(&pod("driver")), None);
    }
}

#[cfg(test)]
mod engine_tests {
    use super::*;
    use crate::engine::Engine;
    use crate::policy::{parse_documents, PolicySource};
    use crate::spark::ContainerNames;

    fn policy(name: &str, body: &str) -> Arc<CompiledPolicy> {
        let text = format!(
            "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {{name: {name}}}\nspec:\n  namespaces: [jobs]\n{body}"
        );
        let mut docs = parse_documents(&PolicySource(format!("{name}.yaml")), &text)
            .unwrap_or_else(|e| panic!("{e:?}"));
        Arc::new(docs.remove(0))
    }

    fn pod(role: &str, annotations: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": format!("p-{role}"),
                "labels": {"spark-role": role, "spark-app-name": "etl", "spark-app-selector": "spark-1"},
                "annotations": annotations
            },
            "spec": {"containers": [{"name": format!("spark-kubernetes-{role}"), "image": "spark:3.5"}]}
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn applied(pod: &Pod, patch: &json_patch::Patch) -> Pod {
        let mut value = serde_json::to_value(pod).unwrap_or_default();
        json_patch::patch(&mut value, patch).unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    fn engine() -> Engine {
        Engine::new(ContainerNames::default()).with_job_pinning(true)
    }

    #[test]
    fn a_driver_gets_the_pin_once_even_when_only_executor_policies_match() {
        let gpu = policy(
            "gpu",
            "  selector: {roles: [executor]}\n  executor: {labels: {gpu: \"yes\"}}\n",
        );
        let set = PolicySet::new([Arc::clone(&gpu)]);
        let driver = pod("driver", serde_json::json!({}));
        let first = engine()
            .mutate(&set, &driver, "jobs")
            .unwrap_or_else(|e| panic!("{e}"));
        let once = applied(&driver, &first.patch);
        let opts = serde_json::to_string(&once).unwrap_or_default();
        assert!(
            opts.contains(&format!("-D{PIN_SPARK_CONF_KEY}={}", gpu.tag)),
            "{opts}"
        );
        let second = engine()
            .mutate(&set, &once, "jobs")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(second.patch.0.is_empty(), "{:?}", second.patch);
        // Without pinning (explain, policy tests) the driver is left alone.
        let off = Engine::new(ContainerNames::default())
            .mutate(&set, &driver, "jobs")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(off.patch.0.is_empty());
    }

    #[test]
    fn an_executor_with_a_missing_pin_gets_the_current_version_and_the_annotation_once() {
        let v2 = policy("team", "  all: {labels: {v: \"2\"}}\n");
        let current = PolicySet::new([Arc::clone(&v2)]);
        let exec = pod(
            "executor",
            serde_json::json!({DRIVER_POLICIES_ANNOTATION: "team@0000000000"}),
        );
        let tags = pin_of(&exec).unwrap_or_default();
        let pinned = resolve(&current, &tags, |_| None);
        let first = engine()
            .mutate_pinned(&pinned.set, &exec, "jobs", &pinned.missing)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!first.warnings.is_empty());
        let once = applied(&exec, &first.patch);
        let ann = once.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            ann.get(MISSING_POLICIES_ANNOTATION).map(String::as_str),
            Some("team@0000000000")
        );
        assert_eq!(
            once.metadata
                .labels
                .unwrap_or_default()
                .get("v")
                .map(String::as_str),
            Some("2")
        );
        let second = engine()
            .mutate_pinned(
                &pinned.set,
                &applied(&exec, &first.patch),
                "jobs",
                &pinned.missing,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(second.patch.0.is_empty(), "{:?}", second.patch);
    }

    #[test]
    fn a_pin_copied_into_another_namespace_brings_nothing_from_policies_of_other_namespaces() {
        let theirs = policy("secret-mounts", "  all: {labels: {granted: \"yes\"}}\n");
        let exec = pod(
            "executor",
            serde_json::json!({DRIVER_POLICIES_ANNOTATION: theirs.tag.clone()}),
        );
        let current = PolicySet::new([Arc::clone(&theirs)]);
        let tags = pin_of(&exec).unwrap_or_default();
        let pinned = resolve(&current, &tags, |_| None);
        let m = engine()
            .mutate_pinned(&pinned.set, &exec, "elsewhere", &pinned.missing)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(m.patch.0.is_empty(), "{:?}", m.patch);
    }
}
