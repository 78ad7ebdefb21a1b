//! The JSON Patch: the difference between the pod as received and the planned pod.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

/// The copy of the pod that planning edits: all of it but `metadata.managedFields`, which
/// no merge step reads or writes and which is the largest part of a pod the API server
/// sends (cloning it was a fifth of the engine's time). [`diff`] never compares it.
pub(crate) fn working_copy(pod: &Pod) -> Pod {
    let m = &pod.metadata;
    Pod {
        // Every field named: a field added by a new k8s-openapi must be decided on here.
        metadata: ObjectMeta {
            annotations: m.annotations.clone(),
            creation_timestamp: m.creation_timestamp.clone(),
            deletion_grace_period_seconds: m.deletion_grace_period_seconds,
            deletion_timestamp: m.deletion_timestamp.clone(),
            finalizers: m.finalizers.clone(),
            generate_name: m.generate_name.clone(),
            generation: m.generation,
            labels: m.labels.clone(),
            managed_fields: None,
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            owner_references: m.owner_references.clone(),
            resource_version: m.resource_version.clone(),
            self_link: m.self_link.clone(),
            uid: m.uid.clone(),
        },
        spec: pod.spec.clone(),
        status: pod.status.clone(),
    }
}

/// Both sides are serialised from the same typed model, so fields the model does not know
/// and formatting of the original never show up as differences. `metadata.managedFields`
/// is not compared (see [`working_copy`]).
///
/// Only what differs is serialised: [`pruned`] blanks on both sides every field and list
/// item that is equal (typed comparison, no allocation), so the pod's unchanged bulk
/// (most of the spec and containers) never becomes JSON. The JSON diff of the pruned pair
/// is exactly that of the full pair: equal subtrees yield no operation, list positions
/// are kept, and object keys keep their order.
///
/// An error means the patch is unknown: the caller must refuse the pod, never admit it
/// unchanged (that would let it run without its policies).
pub(crate) fn diff(original: &Pod, planned: &Pod) -> Result<Patch, serde_json::Error> {
    let (before, after) = pruned(original, planned);
    if before == after {
        return Ok(Patch(Vec::new()));
    }
    let before = to_json(before, original)?;
    let after = to_json(after, original)?;
    let mut ops = Vec::new();
    diff_values(before, after, &mut String::new(), &mut ops);
    // Containers created on the way but left empty ({} or []) carry no meaning: drop them.
    ops.retain(|op| match op {
        PatchOperation::Add(add) => !is_empty_container(&add.value),
        _ => true,
    });
    Ok(Patch(ops))
}

/// `serde_json::to_value`; with fault injection (tests only), it fails for a pod
/// (`original`) that carries the fault annotation.
fn to_json(pod: Pod, original: &Pod) -> Result<Value, serde_json::Error> {
    #[cfg(any(test, feature = "fault-injection"))]
    if crate::fault::injected(original, crate::fault::SERIALISE) {
        return Err(serde::ser::Error::custom("fault injected by a test"));
    }
    let _ = original;
    serde_json::to_value(pod)
}

/// The operations `json_patch::diff` computes (same operations, same order: keys in
/// order, removals after the keys of the new object, list items by index), consuming both
/// sides: added and replaced values move into the patch instead of being cloned, and the
/// path is built in one string.
fn diff_values(before: Value, after: Value, path: &mut String, ops: &mut Vec<PatchOperation>) {
    match (before, after) {
        (Value::Object(mut left), Value::Object(right)) => {
            for (key, value) in right {
                let len = push_key(path, &key);
                match left.remove(&key) {
                    Some(old) => diff_values(old, value, path, ops),
                    None => ops.push(PatchOperation::Add(AddOperation {
                        path: pointer(path),
                        value,
                    })),
                }
                path.truncate(len);
            }
            // What is left was not in the new object.
            for key in left.keys() {
                let len = push_key(path, key);
                ops.push(PatchOperation::Remove(RemoveOperation {
                    path: pointer(path),
                }));
                path.truncate(len);
            }
        }
        (Value::Array(left), Value::Array(right)) => {
            let n = left.len().max(right.len());
            let (mut left, mut right) = (left.into_iter(), right.into_iter());
            let mut removed = 0;
            for idx in 0..n {
                let len = path.len();
                path.push('/');
                path.push_str(&(idx - removed).to_string());
                match (left.next(), right.next()) {
                    (Some(old), Some(value)) => diff_values(old, value, path, ops),
                    (Some(_), None) => {
                        removed += 1;
                        ops.push(PatchOperation::Remove(RemoveOperation {
                            path: pointer(path),
                        }));
                    }
                    (None, Some(value)) => ops.push(PatchOperation::Add(AddOperation {
                        path: pointer(path),
                        value,
                    })),
                    (None, None) => {}
                }
                path.truncate(len);
            }
        }
        (old, value) if old == value => {}
        (_, value) => ops.push(PatchOperation::Replace(ReplaceOperation {
            path: pointer(path),
            value,
        })),
    }
}

/// Appends `/key` with JSON Pointer escaping; returns the length to truncate back to.
fn push_key(path: &mut String, key: &str) -> usize {
    let len = path.len();
    path.push('/');
    for c in key.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
    len
}

fn pointer(path: &str) -> PointerBuf {
    // Built from escaped tokens only, so it always parses; the fallback is unreachable.
    PointerBuf::parse(path).unwrap_or_default()
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Copies each listed field where the two sides differ and leaves it at its default
/// (`None`: absent from the JSON) where they are equal. The destructuring names every
/// field of the type, so a field added by a new k8s-openapi fails to compile here instead
/// of being silently left out of the diff; `custom` fields are left to the caller.
macro_rules! prune_fields {
    ($ty:ident, $a:expr, $b:expr, plain: [$($field:ident),* $(,)?], custom: [$($custom:ident),* $(,)?]) => {{
        let (a, b): (&$ty, &$ty) = ($a, $b);
        let $ty { $($field: _,)* $($custom: _,)* } = a;
        let mut l = $ty::default();
        let mut r = $ty::default();
        $(
            if a.$field != b.$field {
                l.$field = a.$field.clone();
                r.$field = b.$field.clone();
            }
        )*
        (l, r)
    }};
}

/// The two pods reduced to what differs between them.
fn pruned(a: &Pod, b: &Pod) -> (Pod, Pod) {
    let (lm, rm) = prune_meta(&a.metadata, &b.metadata);
    let (ls, rs) = match (&a.spec, &b.spec) {
        (Some(x), Some(y)) => {
            let (l, r) = prune_spec(x, y);
            (Some(l), Some(r))
        }
        (x, y) => (x.clone(), y.clone()),
    };
    let (lt, rt) = if a.status == b.status {
        (None, None)
    } else {
        (a.status.clone(), b.status.clone())
    };
    (
        Pod {
            metadata: lm,
            spec: ls,
            status: lt,
        },
        Pod {
            metadata: rm,
            spec: rs,
            status: rt,
        },
    )
}

fn prune_meta(a: &ObjectMeta, b: &ObjectMeta) -> (ObjectMeta, ObjectMeta) {
    prune_fields!(ObjectMeta, a, b,
        plain: [annotations, creation_timestamp, deletion_grace_period_seconds,
            deletion_timestamp, finalizers, generate_name, generation, labels, name,
            namespace, owner_references, resource_version, self_link, uid],
        custom: [managed_fields])
}

fn prune_spec(a: &PodSpec, b: &PodSpec) -> (PodSpec, PodSpec) {
    let (mut l, mut r) = prune_fields!(PodSpec, a, b,
        plain: [active_deadline_seconds, affinity, automount_service_account_token, dns_config,
            dns_policy, enable_service_links, ephemeral_containers, host_aliases, host_ipc,
            host_network, host_pid, host_users, hostname, image_pull_secrets, node_name,
            node_selector, os, overhead, preemption_policy, priority, priority_class_name,
            readiness_gates, resource_claims, resources, restart_policy, runtime_class_name,
            scheduler_name, scheduling_gates, security_context, service_account,
            service_account_name, set_hostname_as_fqdn, share_process_namespace, subdomain,
            termination_grace_period_seconds, tolerations, topology_spread_constraints],
        custom: [containers, init_containers, volumes]);
    if a.containers != b.containers {
        (l.containers, r.containers) = prune_list(&a.containers, &b.containers, prune_container);
    }
    (l.init_containers, r.init_containers) =
        prune_optional_list(&a.init_containers, &b.init_containers, prune_container);
    (l.volumes, r.volumes) = prune_optional_list(&a.volumes, &b.volumes, whole);
    (l, r)
}

fn prune_container(a: &Container, b: &Container) -> (Container, Container) {
    let (mut l, mut r) = prune_fields!(Container, a, b,
        plain: [args, command, env_from, image, image_pull_policy, lifecycle, liveness_probe,
            name, ports, readiness_probe, resize_policy, resources, restart_policy,
            security_context, startup_probe, stdin, stdin_once, termination_message_path,
            termination_message_policy, tty, volume_devices, working_dir],
        custom: [env, volume_mounts]);
    (l.env, r.env) = prune_optional_list(&a.env, &b.env, whole);
    (l.volume_mounts, r.volume_mounts) =
        prune_optional_list(&a.volume_mounts, &b.volume_mounts, whole);
    (l, r)
}

/// Two differing list items kept as they are.
fn whole<T: Clone>(a: &T, b: &T) -> (T, T) {
    (a.clone(), b.clone())
}

fn prune_optional_list<T: Clone + Default + PartialEq>(
    a: &Option<Vec<T>>,
    b: &Option<Vec<T>>,
    item: impl Fn(&T, &T) -> (T, T),
) -> (Option<Vec<T>>, Option<Vec<T>>) {
    match (a, b) {
        _ if a == b => (None, None),
        (Some(x), Some(y)) => {
            let (l, r) = prune_list(x, y, item);
            (Some(l), Some(r))
        }
        _ => (a.clone(), b.clone()),
    }
}

/// Item by item, as the JSON diff compares lists (by index): equal items become the same
/// placeholder on both sides, differing ones are pruned by `item`, items only on the right
/// are kept whole (they are added) and items only on the left become placeholders (a
/// removal names the index, not the value).
fn prune_list<T: Clone + Default + PartialEq>(
    a: &[T],
    b: &[T],
    item: impl Fn(&T, &T) -> (T, T),
) -> (Vec<T>, Vec<T>) {
    let mut l = Vec::with_capacity(a.len());
    let mut r = Vec::with_capacity(b.len());
    for i in 0..a.len().max(b.len()) {
        match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) if x == y => {
                l.push(T::default());
                r.push(T::default());
            }
            (Some(x), Some(y)) => {
                let (px, py) = item(x, y);
                l.push(px);
                r.push(py);
            }
            (Some(_), None) => l.push(T::default()),
            (None, Some(y)) => r.push(y.clone()),
            (None, None) => {}
        }
    }
    (l, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The diff as it was computed before pruning: both whole pods as JSON (without
    /// managedFields, which the engine never plans on).
    fn full_diff(original: &Pod, planned: &Pod) -> Patch {
        let before = serde_json::to_value(working_copy(original)).unwrap();
        let after = serde_json::to_value(working_copy(planned)).unwrap();
        let mut patch = json_patch::diff(&before, &after);
        patch.0.retain(|op| match op {
            PatchOperation::Add(add) => !is_empty_container(&add.value),
            _ => true,
        });
        patch
    }

    fn fixture_pods() -> Vec<(String, Pod)> {
        spark_admission_testkit::fixtures::all_pods()
            .into_iter()
            .map(|(name, pod)| (name, serde_json::from_value(pod).unwrap()))
            .collect()
    }

    /// A named change to a pod.
    type Edit = (&'static str, fn(&mut Pod));

    /// Edits of every kind the diff meets: adds, replaces and removals at each level the
    /// pruning distinguishes (metadata, spec fields, container lists and their fields, env
    /// and mount lists, volumes, status).
    fn edits() -> Vec<Edit> {
        fn spark(p: &mut Pod) -> &mut Container {
            p.spec.as_mut().unwrap().containers.last_mut().unwrap()
        }
        vec![
            ("label", |p| {
                p.metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .insert("team".into(), "data".into());
            }),
            ("annotations from none", |p| {
                p.metadata.annotations = Some([("a/b~c".to_owned(), "x".to_owned())].into());
            }),
            ("node selector", |p| {
                p.spec.as_mut().unwrap().node_selector = Some([("k".into(), "v".into())].into());
            }),
            ("priority removed", |p| {
                let s = p.spec.as_mut().unwrap();
                s.priority = None;
                s.preemption_policy = None;
                s.priority_class_name = Some("spark".into());
            }),
            ("toleration appended", |p| {
                p.spec
                    .as_mut()
                    .unwrap()
                    .tolerations
                    .get_or_insert_with(Vec::new)
                    .push(Default::default());
            }),
            ("env appended and replaced", |p| {
                let c = spark(p);
                let env = c.env.get_or_insert_with(Vec::new);
                if let Some(first) = env.first_mut() {
                    first.value = Some("changed".into());
                }
                env.push(k8s_openapi::api::core::v1::EnvVar {
                    name: "TZ".into(),
                    value: Some("UTC".into()),
                    ..Default::default()
                });
            }),
            ("env removed", |p| {
                let c = spark(p);
                if let Some(env) = c.env.as_mut() {
                    env.remove(0);
                }
            }),
            ("mount and volume", |p| {
                spark(p)
                    .volume_mounts
                    .get_or_insert_with(Vec::new)
                    .push(Default::default());
                p.spec
                    .as_mut()
                    .unwrap()
                    .volumes
                    .get_or_insert_with(Vec::new)
                    .insert(0, Default::default());
            }),
            ("image and resources", |p| {
                let c = spark(p);
                c.image = Some("mirror/x".into());
                c.resources = Some(Default::default());
            }),
            ("sidecar and init container", |p| {
                let s = p.spec.as_mut().unwrap();
                s.containers.insert(
                    0,
                    Container {
                        name: "side".into(),
                        ..Default::default()
                    },
                );
                s.init_containers = Some(vec![Container {
                    name: "init".into(),
                    ..Default::default()
                }]);
            }),
            ("container removed", |p| {
                let s = p.spec.as_mut().unwrap();
                s.containers.push(Container::default());
                s.containers.remove(0);
            }),
            ("status", |p| p.status = Some(Default::default())),
            ("no spec", |p| p.spec = None),
        ]
    }

    #[test]
    fn the_working_copy_is_the_pod_without_managed_fields() {
        for (name, pod) in fixture_pods() {
            let mut expected = pod.clone();
            expected.metadata.managed_fields = None;
            assert_eq!(working_copy(&pod), expected, "{name}");
            assert!(
                diff(&pod, &working_copy(&pod))
                    .expect("serialisable")
                    .0
                    .is_empty(),
                "{name}"
            );
        }
    }

    #[test]
    fn pruned_diff_equals_the_full_diff() {
        for (name, pod) in fixture_pods() {
            let all = edits();
            for (what, edit) in &all {
                let mut planned = pod.clone();
                edit(&mut planned);
                assert_eq!(
                    diff(&pod, &planned).expect("serialisable"),
                    full_diff(&pod, &planned),
                    "{name}: {what}"
                );
                // The other direction turns adds into removals.
                assert_eq!(
                    diff(&planned, &pod).expect("serialisable"),
                    full_diff(&planned, &pod),
                    "{name}: {what}, reversed"
                );
            }
            // Everything at once.
            let mut planned = pod.clone();
            for (_, edit) in all.iter().filter(|(w, _)| *w != "no spec") {
                edit(&mut planned);
            }
            assert_eq!(
                diff(&pod, &planned).expect("serialisable"),
                full_diff(&pod, &planned),
                "{name}"
            );
        }
    }
}
