//! Counting a large pod review's lists before decoding it. Decoding builds every entry of
//! every list (a container is dozens of fields), so a crafted body of thousands of
//! containers or node selector terms costs many times a benign body of the same size (one
//! long annotation) before the engine can count them and refuse. The scan walks the JSON
//! without building anything but the `spark-role` label and the counts, and a Spark pod
//! above the engine's limits ([`PodLimits`]) is refused with the same message the engine
//! would give. Anything the scan does not understand is left to the full decode, which
//! answers it as before.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

use crate::engine::{PodLimits, TooLarge};
use crate::spark::SparkRole;

/// A Spark pod's review refused by the scan.
#[derive(Debug)]
pub struct Refused {
    pub uid: String,
    pub role: SparkRole,
    pub error: TooLarge,
}

/// The first list of a Spark pod's creation review above `limits`, or `None` (the body is
/// then decoded and planned as usual, and may still be refused by the engine's own check).
pub fn too_large(body: &[u8], limits: &PodLimits) -> Option<Refused> {
    let review: Envelope = serde_json::from_slice(body).ok()?;
    let request = review.request?;
    let kind = request.kind?;
    if !(kind.group.is_empty() && kind.version == "v1" && kind.kind == "Pod")
        || request.sub_resource.is_some()
        || request.operation.as_deref() != Some("CREATE")
    {
        return None;
    }
    let pod = request.object?;
    let role = match pod.metadata?.labels?.role?.as_str() {
        "driver" => SparkRole::Driver,
        "executor" => SparkRole::Executor,
        _ => return None,
    };
    let error = count(pod.spec?, limits)?;
    Some(Refused {
        uid: request.uid?,
        role,
        error,
    })
}

fn count(spec: SpecScan, limits: &PodLimits) -> Option<TooLarge> {
    let over = |field: &str, count: usize, limit: usize| {
        (count > limit).then(|| TooLarge {
            field: field.to_owned(),
            count,
            limit,
        })
    };
    let containers = |field: &str, list: &Option<Vec<ContainerScan>>| {
        let list = list.as_deref().unwrap_or_default();
        over(field, list.len(), limits.containers).or_else(|| {
            list.iter().enumerate().find_map(|(i, c)| {
                over(&format!("{field}[{i}].env"), c.env.0, limits.env)
                    .or_else(|| {
                        over(
                            &format!("{field}[{i}].envFrom"),
                            c.env_from.0,
                            limits.container_lists,
                        )
                    })
                    .or_else(|| {
                        over(
                            &format!("{field}[{i}].ports"),
                            c.ports.0,
                            limits.container_lists,
                        )
                    })
                    .or_else(|| {
                        over(
                            &format!("{field}[{i}].volumeMounts"),
                            c.volume_mounts.0,
                            limits.container_lists,
                        )
                    })
            })
        })
    };
    containers("spec.containers", &spec.containers)
        .or_else(|| containers("spec.initContainers", &spec.init_containers))
        .or_else(|| containers("spec.ephemeralContainers", &spec.ephemeral_containers))
        .or_else(|| over("spec.volumes", spec.volumes.0, limits.volumes))
        .or_else(|| over("spec.tolerations", spec.tolerations.0, limits.tolerations))
        .or_else(|| {
            let terms = spec
                .affinity?
                .node_affinity?
                .required_during_scheduling_ignored_during_execution?
                .node_selector_terms;
            over(
                "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
                terms.0,
                limits.terms,
            )
        })
}

#[derive(Deserialize)]
struct Envelope {
    request: Option<Request>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    uid: Option<String>,
    kind: Option<KindScan>,
    sub_resource: Option<String>,
    operation: Option<String>,
    object: Option<PodScan>,
}

#[derive(Deserialize)]
struct KindScan {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    kind: String,
}

#[derive(Deserialize)]
struct PodScan {
    metadata: Option<MetaScan>,
    spec: Option<SpecScan>,
}

#[derive(Deserialize)]
struct MetaScan {
    labels: Option<LabelsScan>,
}

#[derive(Deserialize)]
struct LabelsScan {
    #[serde(rename = "spark-role")]
    role: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecScan {
    containers: Option<Vec<ContainerScan>>,
    init_containers: Option<Vec<ContainerScan>>,
    ephemeral_containers: Option<Vec<ContainerScan>>,
    #[serde(default)]
    volumes: Count,
    #[serde(default)]
    tolerations: Count,
    affinity: Option<AffinityScan>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerScan {
    #[serde(default)]
    env: Count,
    #[serde(default)]
    env_from: Count,
    #[serde(default)]
    ports: Count,
    #[serde(default)]
    volume_mounts: Count,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AffinityScan {
    node_affinity: Option<NodeAffinityScan>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeAffinityScan {
    required_during_scheduling_ignored_during_execution: Option<SelectorScan>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SelectorScan {
    #[serde(default)]
    node_selector_terms: Count,
}

/// The length of a JSON array (or 0 for null), its items skipped unbuilt.
#[derive(Default)]
struct Count(usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Counter;
        impl<'de> Visitor<'de> for Counter {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Count, E> {
                Ok(Count(0))
            }
            fn visit_none<E: de::Error>(self) -> Result<Count, E> {
                Ok(Count(0))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Count, D::Error> {
                d.deserialize_any(Counter)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                let mut n = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(Count(n))
            }
        }
        d.deserialize_option(Counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn review(labels: Value, spec: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "CREATE",
                "object": {"metadata": {"labels": labels}, "spec": spec}
            }
        }))
        .unwrap_or_default()
    }

    #[test]
    fn counts_agree_with_the_engine_limits_and_name_the_field() {
        let l = PodLimits::default();
        let driver = json!({"spark-role": "driver"});
        let many = |n: usize| {
            json!((0..n)
                .map(|i| json!({"name": format!("c{i}")}))
                .collect::<Vec<_>>())
        };
        assert!(too_large(
            &review(driver.clone(), json!({"containers": many(l.containers)})),
            &l
        )
        .is_none());
        let err = too_large(
            &review(
                driver.clone(),
                json!({"containers": many(l.containers + 1)}),
            ),
            &l,
        );
        assert_eq!(err.as_ref().map(|r| r.uid.as_str()), Some("u"));
        assert_eq!(
            err.map(|r| r.error.to_string()),
            Some(format!(
                "spec.containers has {} entries, more than the {} spark-admission accepts in a Spark pod; the pod was not admitted (Spark never creates such a pod: check the pod template)",
                l.containers + 1,
                l.containers
            ))
        );
        let env = json!({"containers": [{"name": "a"}, {"name": "b", "env": many(l.env + 1)}]});
        assert_eq!(
            too_large(&review(driver.clone(), env), &l).map(|r| r.error.field),
            Some("spec.containers[1].env".to_owned())
        );
        let terms = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": many(l.terms + 1)}}}});
        assert!(too_large(&review(driver, terms.clone()), &l).is_some());
        // Not a Spark pod, or not JSON: left to the full decode.
        assert!(too_large(&review(json!({"app": "x"}), terms.clone()), &l).is_none());
        assert!(too_large(&review(json!({"spark-role": "other"}), terms), &l).is_none());
        assert!(too_large(b"{not json", &l).is_none());
    }
}
