//! Properties of `maxResources` (issue 24): what it counts is the pod's, not one
//! container's. Renaming containers (the Spark container included) or splitting one
//! container's requests over several never lowers the count, so it never turns a denial
//! into an admission.

use crate::engine_support;

use engine_support::*;
use proptest::prelude::*;
use serde_json::{json, Value};
use spark_admission::engine::Engine;

/// A container as (name, cpu millicores, memory MiB, where: 0 regular, 1 init, 2 sidecar).
type Spec = (String, u32, u32, u8);

fn container(name: &str, cpu: u32, mem: u32, place: u8) -> Value {
    let mut c = json!({
        "name": name,
        "image": "apache/spark:3.5.3",
        "resources": {"requests": {"cpu": format!("{cpu}m"), "memory": format!("{mem}Mi")}}
    });
    if place == 2 {
        c["restartPolicy"] = json!("Always");
    }
    c
}

fn pod(containers: &[Spec]) -> Value {
    let regular: Vec<Value> = containers
        .iter()
        .filter(|c| c.3 == 0)
        .map(|(n, cpu, mem, p)| container(n, *cpu, *mem, *p))
        .collect();
    let init: Vec<Value> = containers
        .iter()
        .filter(|c| c.3 != 0)
        .map(|(n, cpu, mem, p)| container(n, *cpu, *mem, *p))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"spark-role": "executor", "spark-app-name": "app"}},
        "spec": {"containers": regular, "initContainers": init}
    })
}

/// The resources over the cap, as the engine reports them.
fn over(cap_cpu: u32, cap_mem: u32, pod: &Value) -> Vec<&'static str> {
    let set = policies(&format!(
        "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {{name: caps}}\nspec:\n  namespaces: [\"*\"]\n  validate:\n    maxResources:\n      executor:\n        requests: {{cpu: \"{cap_cpu}m\", memory: \"{cap_mem}Mi\"}}\n"
    ));
    let v = Engine::default().validate(&set, &typed(pod), "ns");
    let mut out = Vec::new();
    for f in &v.findings {
        assert_eq!(f.rule, "maxResources");
        if f.message.contains(" cpu ") {
            out.push("cpu");
        }
        if f.message.contains(" memory ") {
            out.push("memory");
        }
    }
    out.sort();
    out
}

fn containers() -> impl Strategy<Value = Vec<Spec>> {
    // The first is the Spark container (regular); the rest anywhere.
    let first = (1u32..20_000, 1u32..200_000)
        .prop_map(|(cpu, mem)| ("spark-kubernetes-executor".to_owned(), cpu, mem, 0u8));
    let rest = proptest::collection::vec((1u32..20_000, 1u32..200_000, 0u8..3), 0..4);
    (first, rest).prop_map(|(first, rest)| {
        let mut all = vec![first];
        for (i, (cpu, mem, place)) in rest.into_iter().enumerate() {
            all.push((format!("c{i}"), cpu, mem, place));
        }
        all
    })
}

proptest! {
    #[test]
    fn renaming_containers_never_lowers_what_max_resources_counts(
        cs in containers(),
        cap_cpu in 1u32..40_000,
        cap_mem in 1u32..400_000,
        rename in 0usize..4,
    ) {
        let before = over(cap_cpu, cap_mem, &pod(&cs));
        let mut renamed = cs.clone();
        let i = rename % renamed.len();
        // Spark's podTemplateContainerName: any name at all, the Spark one included.
        renamed[i].0 = "main".to_owned();
        if i != 0 {
            renamed[0].0 = format!("x{i}");
        }
        prop_assert_eq!(before, over(cap_cpu, cap_mem, &pod(&renamed)));
    }

    #[test]
    fn splitting_a_container_never_lowers_what_max_resources_counts(
        cs in containers(),
        cap_cpu in 1u32..40_000,
        cap_mem in 1u32..400_000,
        which in 0usize..5,
        share in 1u32..100,
        sidecar in any::<bool>(),
    ) {
        let i = which % cs.len();
        // Regular containers and sidecars run together and add up. (An init container
        // split in two runs as two in a row: the scheduler counts the larger half, so that
        // is another pod, not a split.)
        prop_assume!(cs[i].3 != 1);
        let before = over(cap_cpu, cap_mem, &pod(&cs));
        let mut split = cs.clone();
        let (name, cpu, mem, place) = split[i].clone();
        let (cpu_a, mem_a) = (cpu * share / 100, mem * share / 100);
        // Split only when both parts ask for something: taking a share off and adding no
        // part (a share rounding to 0) would lower the pod's total, which is no split.
        if cpu_a > 0 && mem_a > 0 {
            split[i] = (name.clone(), cpu - cpu_a, mem - mem_a, place);
            let part = format!("{name}-part");
            if place == 2 {
                // A sidecar's part starts where it did: before the same init containers,
                // which run beside every sidecar started earlier.
                split.insert(i + 1, (part, cpu_a, mem_a, 2));
            } else {
                // A regular container's part, as a regular container or as a sidecar started
                // after every init container: either runs only beside the others.
                split.push((part, cpu_a, mem_a, if sidecar { 2 } else { 0 }));
            }
        }
        prop_assert_eq!(before, over(cap_cpu, cap_mem, &pod(&split)));
    }
}
