//! The JSON Patch: the difference between the pod as received and the planned pod.

use std::collections::BTreeMap;

use super::planned::{Op, PlannedPatch};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde_json::Value;

/// The copy of the pod that planning edits: all of it but `metadata.managedFields`, which
/// no merge step reads or writes and which is the largest part of a pod the API server
/// sends (cloning it was a fifth of the engine's time). [`diff`] never compares it.
/// `more_volumes` is room for the volumes the policies may add, made while copying: a
/// `Volume` is large, and growing the copied list afterwards copied it a second time.
pub(crate) fn working_copy(pod: &Pod, more_volumes: usize) -> Pod {
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
        spec: pod.spec.as_ref().map(|s| spec_copy(s, more_volumes)),
        status: pod.status.clone(),
    }
}

/// `spec`, cloned, with its volume list (made when there is room to make) able to take
/// `more_volumes` without growing.
fn spec_copy(s: &PodSpec, more_volumes: usize) -> PodSpec {
    let volumes = match (&s.volumes, more_volumes) {
        (v, 0) => v.clone(),
        (v, more) => {
            let old = v.as_deref().unwrap_or_default();
            let mut copy = Vec::with_capacity(old.len() + more);
            copy.extend_from_slice(old);
            Some(copy)
        }
    };
    // Every field named: a field added by a new k8s-openapi must be decided on here.
    PodSpec {
        active_deadline_seconds: s.active_deadline_seconds,
        affinity: s.affinity.clone(),
        automount_service_account_token: s.automount_service_account_token,
        containers: s.containers.clone(),
        dns_config: s.dns_config.clone(),
        dns_policy: s.dns_policy.clone(),
        enable_service_links: s.enable_service_links,
        ephemeral_containers: s.ephemeral_containers.clone(),
        host_aliases: s.host_aliases.clone(),
        host_ipc: s.host_ipc,
        host_network: s.host_network,
        host_pid: s.host_pid,
        host_users: s.host_users,
        hostname: s.hostname.clone(),
        image_pull_secrets: s.image_pull_secrets.clone(),
        init_containers: s.init_containers.clone(),
        node_name: s.node_name.clone(),
        node_selector: s.node_selector.clone(),
        os: s.os.clone(),
        overhead: s.overhead.clone(),
        preemption_policy: s.preemption_policy.clone(),
        priority: s.priority,
        priority_class_name: s.priority_class_name.clone(),
        readiness_gates: s.readiness_gates.clone(),
        resource_claims: s.resource_claims.clone(),
        resources: s.resources.clone(),
        restart_policy: s.restart_policy.clone(),
        runtime_class_name: s.runtime_class_name.clone(),
        scheduler_name: s.scheduler_name.clone(),
        scheduling_gates: s.scheduling_gates.clone(),
        security_context: s.security_context.clone(),
        service_account: s.service_account.clone(),
        service_account_name: s.service_account_name.clone(),
        set_hostname_as_fqdn: s.set_hostname_as_fqdn,
        share_process_namespace: s.share_process_namespace,
        subdomain: s.subdomain.clone(),
        termination_grace_period_seconds: s.termination_grace_period_seconds,
        tolerations: s.tolerations.clone(),
        topology_spread_constraints: s.topology_spread_constraints.clone(),
        volumes,
    }
}

/// Both sides are compared through the same typed model, so fields the model does not know
/// and formatting of the original never show up as differences. `metadata.managedFields`
/// is not compared (see [`working_copy`]).
///
/// The operations are exactly those of a JSON diff of the two pods serialised whole (see
/// [`diff_values`]), but the walk is typed: it goes down the pod, its spec, containers and
/// their lists and maps side by side, skips what is equal (typed comparison, no
/// allocation), and serialises only what is added, or, for a rarely edited deep field
/// that differs, both versions of that field alone (then diffed as JSON). The pod's
/// unchanged bulk never becomes JSON, and removals need only a path.
///
/// An error means the patch is unknown: the caller must refuse the pod, never admit it
/// unchanged (that would let it run without its policies).
/// Added values are written straight from the typed pod to JSON text ([`PlannedPatch`]).
pub(crate) fn diff(original: &Pod, planned: &Pod) -> Result<PlannedPatch, serde_json::Error> {
    let mut d = Differ {
        // Room for the deepest path the walk builds, so that pushing a key never grows it.
        path: String::with_capacity(128),
        ops: Vec::new(),
    };
    d.pod(original, planned)?;
    if d.ops.is_empty() {
        return Ok(PlannedPatch::default());
    }
    fault_point(original)?;
    // Containers created on the way but left empty ({} or []) carry no meaning: drop them.
    d.ops.retain(|op| match op {
        Op::Add { value, .. } => value != "{}" && value != "[]",
        _ => true,
    });
    Ok(PlannedPatch::new(d.ops))
}

/// With fault injection (tests only), a pod (`original`) that carries the fault annotation
/// fails here when the planned pod differs from it, as a failed serialisation would.
fn fault_point(original: &Pod) -> Result<(), serde_json::Error> {
    #[cfg(any(test, feature = "fault-injection"))]
    if crate::fault::injected(original, crate::fault::SERIALISE) {
        return Err(serde::ser::Error::custom("fault injected by a test"));
    }
    let _ = original;
    Ok(())
}

fn to_json<T: Serialize>(value: &T) -> Result<Value, serde_json::Error> {
    serde_json::to_value(value)
}

type Res = Result<(), serde_json::Error>;

/// Walks an object the way the JSON diff does: first the keys of the new side in their
/// serialised order (k8s-openapi writes struct fields sorted, as `serde_json::Map` iterates
/// them), each diffed, or added when only new; then the keys only on the old side,
/// removed. `opt` fields are absent from the JSON when `None`, `req` ones always there.
/// The destructuring names every field of the type, so a field added by a new
/// k8s-openapi fails to compile here instead of being silently left out of the diff.
macro_rules! object {
    ($d:expr, $ty:ident, $a:expr, $b:expr,
     [$($kind:ident $key:literal $field:ident $how:expr),* $(,)?], skip: [$($skip:ident),*]) => {{
        let (d, a, b): (&mut Differ, &$ty, &$ty) = ($d, $a, $b);
        let $ty { $($field: _,)* $($skip: _,)* } = a;
        $( object!(@new $kind d, $key, &a.$field, &b.$field, $how); )*
        $( object!(@old $kind d, $key, &a.$field, &b.$field); )*
        Ok(())
    }};
    (@new opt $d:ident, $key:literal, $a:expr, $b:expr, $how:expr) => {
        $d.field($key, $a, $b, $how)?
    };
    (@new req $d:ident, $key:literal, $a:expr, $b:expr, $how:expr) => {
        $d.required($key, $a, $b, $how)?
    };
    (@old opt $d:ident, $key:literal, $a:expr, $b:expr) => {
        if $a.is_some() && $b.is_none() {
            $d.remove_key($key);
        }
    };
    (@old req $d:ident, $key:literal, $a:expr, $b:expr) => {};
}

/// The path being walked (a JSON Pointer, built in one string) and the operations so far.
struct Differ {
    path: String,
    ops: Vec<Op>,
}

impl Differ {
    fn pod(&mut self, a: &Pod, b: &Pod) -> Res {
        // `apiVersion` and `kind` come first and are constants of the type.
        self.required("metadata", &a.metadata, &b.metadata, Differ::meta)?;
        self.field("spec", &a.spec, &b.spec, Differ::spec)?;
        self.field("status", &a.status, &b.status, Differ::values)?;
        if a.spec.is_some() && b.spec.is_none() {
            self.remove_key("spec");
        }
        if a.status.is_some() && b.status.is_none() {
            self.remove_key("status");
        }
        Ok(())
    }

    fn meta(&mut self, a: &ObjectMeta, b: &ObjectMeta) -> Res {
        object!(self, ObjectMeta, a, b, [
            opt "annotations" annotations Differ::map,
            opt "creationTimestamp" creation_timestamp Differ::values,
            opt "deletionGracePeriodSeconds" deletion_grace_period_seconds Differ::values,
            opt "deletionTimestamp" deletion_timestamp Differ::values,
            opt "finalizers" finalizers Differ::values,
            opt "generateName" generate_name Differ::values,
            opt "generation" generation Differ::values,
            opt "labels" labels Differ::map,
            opt "name" name Differ::values,
            opt "namespace" namespace Differ::values,
            opt "ownerReferences" owner_references Differ::values,
            opt "resourceVersion" resource_version Differ::values,
            opt "selfLink" self_link Differ::values,
            opt "uid" uid Differ::values,
        ], skip: [managed_fields])
    }

    fn spec(&mut self, a: &PodSpec, b: &PodSpec) -> Res {
        object!(self, PodSpec, a, b, [
            opt "activeDeadlineSeconds" active_deadline_seconds Differ::values,
            opt "affinity" affinity Differ::values,
            opt "automountServiceAccountToken" automount_service_account_token Differ::values,
            req "containers" containers Differ::containers,
            opt "dnsConfig" dns_config Differ::values,
            opt "dnsPolicy" dns_policy Differ::values,
            opt "enableServiceLinks" enable_service_links Differ::values,
            opt "ephemeralContainers" ephemeral_containers Differ::values,
            opt "hostAliases" host_aliases Differ::values,
            opt "hostIPC" host_ipc Differ::values,
            opt "hostNetwork" host_network Differ::values,
            opt "hostPID" host_pid Differ::values,
            opt "hostUsers" host_users Differ::values,
            opt "hostname" hostname Differ::values,
            opt "imagePullSecrets" image_pull_secrets Differ::list,
            opt "initContainers" init_containers Differ::containers,
            opt "nodeName" node_name Differ::values,
            opt "nodeSelector" node_selector Differ::map,
            opt "os" os Differ::values,
            opt "overhead" overhead Differ::values,
            opt "preemptionPolicy" preemption_policy Differ::values,
            opt "priority" priority Differ::values,
            opt "priorityClassName" priority_class_name Differ::values,
            opt "readinessGates" readiness_gates Differ::values,
            opt "resourceClaims" resource_claims Differ::values,
            opt "resources" resources Differ::values,
            opt "restartPolicy" restart_policy Differ::values,
            opt "runtimeClassName" runtime_class_name Differ::values,
            opt "schedulerName" scheduler_name Differ::values,
            opt "schedulingGates" scheduling_gates Differ::values,
            opt "securityContext" security_context Differ::values,
            opt "serviceAccount" service_account Differ::values,
            opt "serviceAccountName" service_account_name Differ::values,
            opt "setHostnameAsFQDN" set_hostname_as_fqdn Differ::values,
            opt "shareProcessNamespace" share_process_namespace Differ::values,
            opt "subdomain" subdomain Differ::values,
            opt "terminationGracePeriodSeconds" termination_grace_period_seconds Differ::values,
            opt "tolerations" tolerations Differ::list,
            opt "topologySpreadConstraints" topology_spread_constraints Differ::values,
            opt "volumes" volumes Differ::list,
        ], skip: [])
    }

    #[expect(clippy::ptr_arg, reason = "the walk passes each field as its type")]
    fn containers(&mut self, a: &Vec<Container>, b: &Vec<Container>) -> Res {
        self.list_with(a, b, Differ::container)
    }

    fn container(&mut self, a: &Container, b: &Container) -> Res {
        object!(self, Container, a, b, [
            opt "args" args Differ::values,
            opt "command" command Differ::values,
            opt "env" env Differ::list,
            opt "envFrom" env_from Differ::list,
            opt "image" image Differ::values,
            opt "imagePullPolicy" image_pull_policy Differ::values,
            opt "lifecycle" lifecycle Differ::values,
            opt "livenessProbe" liveness_probe Differ::values,
            req "name" name Differ::values,
            opt "ports" ports Differ::list,
            opt "readinessProbe" readiness_probe Differ::values,
            opt "resizePolicy" resize_policy Differ::values,
            opt "resources" resources Differ::resources,
            opt "restartPolicy" restart_policy Differ::values,
            opt "securityContext" security_context Differ::values,
            opt "startupProbe" startup_probe Differ::values,
            opt "stdin" stdin Differ::values,
            opt "stdinOnce" stdin_once Differ::values,
            opt "terminationMessagePath" termination_message_path Differ::values,
            opt "terminationMessagePolicy" termination_message_policy Differ::values,
            opt "tty" tty Differ::values,
            opt "volumeDevices" volume_devices Differ::values,
            opt "volumeMounts" volume_mounts Differ::list,
            opt "workingDir" working_dir Differ::values,
        ], skip: [])
    }

    /// A container's resources, the field the policies change most: its maps walked key
    /// by key rather than both sides made JSON and diffed.
    fn resources(&mut self, a: &ResourceRequirements, b: &ResourceRequirements) -> Res {
        object!(self, ResourceRequirements, a, b, [
            opt "claims" claims Differ::values,
            opt "limits" limits Differ::map,
            opt "requests" requests Differ::map,
        ], skip: [])
    }

    /// A field present on both sides: diffed by `how` under its key. Equal sides (most
    /// fields of a pod) are passed over before the key is written into the path.
    fn required<T: PartialEq>(
        &mut self,
        key: &str,
        a: &T,
        b: &T,
        how: impl FnOnce(&mut Self, &T, &T) -> Res,
    ) -> Res {
        if a == b {
            return Ok(());
        }
        let len = push_key(&mut self.path, key);
        let res = how(self, a, b);
        self.path.truncate(len);
        res
    }

    /// An optional field, first pass: diffed when on both sides, added when only new.
    /// Removal (only old) waits for the second pass, after every key of the new side.
    fn field<T: Serialize + PartialEq>(
        &mut self,
        key: &str,
        a: &Option<T>,
        b: &Option<T>,
        how: impl FnOnce(&mut Self, &T, &T) -> Res,
    ) -> Res {
        match (a, b) {
            (Some(x), Some(y)) => self.required(key, x, y, how),
            (None, Some(y)) => {
                let len = push_key(&mut self.path, key);
                let res = self.add(y);
                self.path.truncate(len);
                res
            }
            _ => Ok(()),
        }
    }

    /// Any subtree, when it differs: both sides as JSON, diffed as JSON. Used for the
    /// scalars and for the deep fields the engine seldom changes.
    fn values<T: Serialize + PartialEq>(&mut self, a: &T, b: &T) -> Res {
        if a != b {
            diff_values(to_json(a)?, to_json(b)?, &mut self.path, &mut self.ops)?;
        }
        Ok(())
    }

    /// A list whose differing items are diffed as JSON.
    #[expect(clippy::ptr_arg, reason = "the walk passes each field as its type")]
    fn list<T: Serialize + PartialEq>(&mut self, a: &Vec<T>, b: &Vec<T>) -> Res {
        self.list_with(a, b, Differ::values)
    }

    /// Item by item, by index, as the JSON diff compares arrays: extra new items are
    /// added, extra old ones removed (each at the index the previous removals leave).
    fn list_with<T: Serialize + PartialEq>(
        &mut self,
        a: &[T],
        b: &[T],
        item: impl Fn(&mut Self, &T, &T) -> Res,
    ) -> Res {
        if a == b {
            return Ok(());
        }
        let mut removed = 0;
        for idx in 0..a.len().max(b.len()) {
            let len = push_index(&mut self.path, idx - removed);
            let res = match (a.get(idx), b.get(idx)) {
                (Some(x), Some(y)) if x == y => Ok(()),
                (Some(x), Some(y)) => item(self, x, y),
                (Some(_), None) => {
                    removed += 1;
                    self.remove();
                    Ok(())
                }
                (None, Some(y)) => self.add(y),
                (None, None) => Ok(()),
            };
            self.path.truncate(len);
            res?;
        }
        Ok(())
    }

    /// A map serialises as an object with its keys in order, as `serde_json::Map` keeps them.
    fn map<V: Serialize + PartialEq>(
        &mut self,
        a: &BTreeMap<String, V>,
        b: &BTreeMap<String, V>,
    ) -> Res {
        if a == b {
            return Ok(());
        }
        for (key, y) in b {
            let old = a.get(key);
            if old == Some(y) {
                continue;
            }
            let len = push_key(&mut self.path, key);
            let res = match old {
                Some(x) => self.values(x, y),
                None => self.add(y),
            };
            self.path.truncate(len);
            res?;
        }
        for key in a.keys().filter(|k| !b.contains_key(*k)) {
            self.remove_key(key);
        }
        Ok(())
    }

    /// Adds `value` at the current path, written straight to JSON text.
    fn add<T: Serialize + ?Sized>(&mut self, value: &T) -> Res {
        self.ops.push(Op::Add {
            path: self.path.clone(),
            value: serde_json::to_string(value)?,
        });
        Ok(())
    }

    fn remove(&mut self) {
        self.ops.push(Op::Remove {
            path: self.path.clone(),
        });
    }

    fn remove_key(&mut self, key: &str) {
        let len = push_key(&mut self.path, key);
        self.remove();
        self.path.truncate(len);
    }
}

/// The operations `json_patch::diff` computes (same operations, same order: keys in
/// order, removals after the keys of the new object, list items by index), consuming both
/// sides: added and replaced values move into the patch instead of being cloned, and the
/// path is built in one string.
fn diff_values(before: Value, after: Value, path: &mut String, ops: &mut Vec<Op>) -> Res {
    match (before, after) {
        (Value::Object(mut left), Value::Object(right)) => {
            for (key, value) in right {
                let len = push_key(path, &key);
                let res = match left.remove(&key) {
                    Some(old) => diff_values(old, value, path, ops),
                    None => add_value(path, &value, ops),
                };
                path.truncate(len);
                res?;
            }
            // What is left was not in the new object.
            for key in left.keys() {
                let len = push_key(path, key);
                ops.push(Op::Remove { path: path.clone() });
                path.truncate(len);
            }
        }
        (Value::Array(left), Value::Array(right)) => {
            let n = left.len().max(right.len());
            let (mut left, mut right) = (left.into_iter(), right.into_iter());
            let mut removed = 0;
            for idx in 0..n {
                let len = push_index(path, idx - removed);
                let res = match (left.next(), right.next()) {
                    (Some(old), Some(value)) => diff_values(old, value, path, ops),
                    (Some(_), None) => {
                        removed += 1;
                        ops.push(Op::Remove { path: path.clone() });
                        Ok(())
                    }
                    (None, Some(value)) => add_value(path, &value, ops),
                    (None, None) => Ok(()),
                };
                path.truncate(len);
                res?;
            }
        }
        (old, value) if old == value => {}
        (_, value) => ops.push(Op::Replace {
            path: path.clone(),
            value: serde_json::to_string(&value)?,
        }),
    }
    Ok(())
}

fn add_value(path: &str, value: &Value, ops: &mut Vec<Op>) -> Res {
    ops.push(Op::Add {
        path: path.to_owned(),
        value: serde_json::to_string(value)?,
    });
    Ok(())
}

/// Appends `/key` with JSON Pointer escaping; returns the length to truncate back to.
fn push_key(path: &mut String, key: &str) -> usize {
    let len = path.len();
    path.push('/');
    // Copied a run at a time between the characters to escape (label and annotation keys
    // often hold a `/`), not char by char.
    let mut rest = key;
    while let Some(at) = rest.bytes().position(|b| b == b'~' || b == b'/') {
        path.push_str(&rest[..at]);
        path.push_str(if rest.as_bytes()[at] == b'~' {
            "~0"
        } else {
            "~1"
        });
        rest = &rest[at + 1..];
    }
    path.push_str(rest);
    len
}

/// Appends `/idx`; returns the length to truncate back to. Digits written by hand: the
/// formatting machinery cost more than the rest of a list step.
fn push_index(path: &mut String, idx: usize) -> usize {
    let len = path.len();
    path.push('/');
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = idx;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        path.push(char::from(d));
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use json_patch::{Patch, PatchOperation};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn is_empty_container(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        }
    }

    /// The reference: `json_patch::diff` of both whole pods as JSON (without managedFields,
    /// which the engine never plans on).
    fn full_diff(original: &Pod, planned: &Pod) -> Patch {
        let before = serde_json::to_value(working_copy(original, 0)).unwrap();
        let after = serde_json::to_value(working_copy(planned, 0)).unwrap();
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
    /// typed walk distinguishes (metadata maps and fields, spec fields, container lists and
    /// their fields, env and mount lists, volumes, status), absent versus empty included.
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
            ("label removed and replaced", |p| {
                let labels = p.metadata.labels.get_or_insert_with(Default::default);
                labels.insert("a".into(), "1".into());
                labels.insert("z".into(), "1".into());
                let first = labels.keys().next().cloned().unwrap();
                labels.remove(&first);
                let last = labels.keys().last().cloned().unwrap();
                labels.insert(last, "replaced".into());
            }),
            ("annotation keys with ~ and /", |p| {
                let a = p.metadata.annotations.get_or_insert_with(Default::default);
                a.insert("x~y/z".into(), "1".into());
                a.insert("~".into(), "2".into());
                a.insert("/".into(), "3".into());
                a.insert("".into(), "empty key".into());
            }),
            ("labels and annotations emptied", |p| {
                p.metadata.labels = Some(Default::default());
                p.metadata.annotations = None;
            }),
            ("name and namespace", |p| {
                p.metadata.name = Some("renamed".into());
                p.metadata.namespace = None;
                p.metadata.generate_name = Some("gen-".into());
            }),
            ("node selector key replaced", |p| {
                let s = p.spec.as_mut().unwrap();
                let ns = s.node_selector.get_or_insert_with(Default::default);
                ns.insert("k".into(), "v".into());
                ns.insert("k".into(), "w".into());
                ns.insert("m".into(), "v".into());
                let first = ns.keys().next().cloned().unwrap();
                ns.remove(&first);
            }),
            ("node selector emptied", |p| {
                p.spec.as_mut().unwrap().node_selector = Some(Default::default());
            }),
            ("env item changed in the middle", |p| {
                let env = spark(p).env.get_or_insert_with(Vec::new);
                for i in 0..3 {
                    env.push(k8s_openapi::api::core::v1::EnvVar {
                        name: format!("E{i}"),
                        value: Some("v".into()),
                        ..Default::default()
                    });
                }
                let mid = env.len() / 2;
                env[mid].value = None;
                env[mid].value_from = Some(Default::default());
            }),
            ("env emptied", |p| spark(p).env = Some(Vec::new())),
            ("env truncated", |p| {
                if let Some(env) = spark(p).env.as_mut() {
                    env.truncate(1);
                }
            }),
            ("container fields", |p| {
                let c = spark(p);
                c.args = Some(vec!["--x".into()]);
                c.image_pull_policy = None;
                c.name = "renamed".into();
                c.working_dir = Some("/w".into());
                c.tty = Some(true);
                c.ports = Some(vec![k8s_openapi::api::core::v1::ContainerPort {
                    container_port: 4040,
                    ..Default::default()
                }]);
                c.security_context = Some(k8s_openapi::api::core::v1::SecurityContext {
                    run_as_non_root: Some(true),
                    ..Default::default()
                });
            }),
            ("resources changed", |p| {
                let r = spark(p).resources.get_or_insert_with(Default::default);
                let limits = r.limits.get_or_insert_with(Default::default);
                limits.insert("memory".into(), Quantity("3Gi".into()));
                limits.insert("cpu".into(), Quantity("2".into()));
                r.requests = None;
            }),
            ("resource keys added and removed", |p| {
                let r = spark(p).resources.get_or_insert_with(Default::default);
                let limits = r.limits.get_or_insert_with(Default::default);
                limits.insert("nvidia.com/gpu".into(), Quantity("1".into()));
                let requests = r.requests.get_or_insert_with(Default::default);
                let first = requests.keys().next().cloned();
                if let Some(k) = first {
                    requests.remove(&k);
                }
                requests.insert("a~b".into(), Quantity("1".into()));
            }),
            ("mounts shrunk", |p| {
                if let Some(m) = spark(p).volume_mounts.as_mut() {
                    m.pop();
                }
            }),
            ("volumes shrunk", |p| {
                let s = p.spec.as_mut().unwrap();
                if let Some(v) = s.volumes.as_mut() {
                    let keep = v.len().saturating_sub(2);
                    v.truncate(keep);
                }
            }),
            ("volumes none", |p| p.spec.as_mut().unwrap().volumes = None),
            ("volume changed", |p| {
                let s = p.spec.as_mut().unwrap();
                let v = s.volumes.get_or_insert_with(Vec::new);
                v.push(k8s_openapi::api::core::v1::Volume {
                    name: "v".into(),
                    empty_dir: Some(Default::default()),
                    ..Default::default()
                });
                v[0].name = "renamed".into();
                v[0].secret = Some(Default::default());
            }),
            ("init containers from none", |p| {
                let s = p.spec.as_mut().unwrap();
                s.init_containers = Some(s.containers.clone());
            }),
            ("init containers empty", |p| {
                p.spec.as_mut().unwrap().init_containers = Some(Vec::new());
            }),
            ("tolerations and pull secrets", |p| {
                let s = p.spec.as_mut().unwrap();
                s.tolerations = Some(vec![k8s_openapi::api::core::v1::Toleration {
                    key: Some("k".into()),
                    ..Default::default()
                }]);
                s.image_pull_secrets.get_or_insert_with(Vec::new).push(
                    k8s_openapi::api::core::v1::LocalObjectReference {
                        name: "pull".into(),
                    },
                );
            }),
            ("affinity and security context", |p| {
                let s = p.spec.as_mut().unwrap();
                s.affinity = Some(k8s_openapi::api::core::v1::Affinity {
                    node_affinity: Some(Default::default()),
                    ..Default::default()
                });
                s.security_context = Some(k8s_openapi::api::core::v1::PodSecurityContext {
                    fs_group: Some(185),
                    ..Default::default()
                });
                s.scheduler_name = Some("volcano".into());
            }),
            ("containers emptied", |p| {
                p.spec.as_mut().unwrap().containers.clear()
            }),
            ("every field set", set_every_field),
        ]
    }

    /// Every field the walk names, present: a misspelt key shows as a wrong path.
    fn set_every_field(p: &mut Pod) {
        fn set<T: Default>(f: &mut Option<T>) {
            f.get_or_insert_with(T::default);
        }
        let m = &mut p.metadata;
        set(&mut m.annotations);
        let time = || serde_json::from_value(Value::from("2024-01-01T00:00:00Z")).ok();
        m.creation_timestamp = m.creation_timestamp.take().or_else(time);
        set(&mut m.deletion_grace_period_seconds);
        m.deletion_timestamp = m.deletion_timestamp.take().or_else(time);
        set(&mut m.finalizers);
        set(&mut m.generate_name);
        set(&mut m.generation);
        set(&mut m.labels);
        set(&mut m.name);
        set(&mut m.namespace);
        set(&mut m.owner_references);
        set(&mut m.resource_version);
        set(&mut m.self_link);
        set(&mut m.uid);
        let s = p.spec.get_or_insert_with(Default::default);
        set(&mut s.active_deadline_seconds);
        set(&mut s.affinity);
        set(&mut s.automount_service_account_token);
        set(&mut s.dns_config);
        set(&mut s.dns_policy);
        set(&mut s.enable_service_links);
        set(&mut s.ephemeral_containers);
        set(&mut s.host_aliases);
        set(&mut s.host_ipc);
        set(&mut s.host_network);
        set(&mut s.host_pid);
        set(&mut s.host_users);
        set(&mut s.hostname);
        set(&mut s.image_pull_secrets);
        set(&mut s.init_containers);
        set(&mut s.node_name);
        set(&mut s.node_selector);
        set(&mut s.os);
        set(&mut s.overhead);
        set(&mut s.preemption_policy);
        set(&mut s.priority);
        set(&mut s.priority_class_name);
        set(&mut s.readiness_gates);
        set(&mut s.resource_claims);
        set(&mut s.resources);
        set(&mut s.restart_policy);
        set(&mut s.runtime_class_name);
        set(&mut s.scheduler_name);
        set(&mut s.scheduling_gates);
        set(&mut s.security_context);
        set(&mut s.service_account);
        set(&mut s.service_account_name);
        set(&mut s.set_hostname_as_fqdn);
        set(&mut s.share_process_namespace);
        set(&mut s.subdomain);
        set(&mut s.termination_grace_period_seconds);
        set(&mut s.tolerations);
        set(&mut s.topology_spread_constraints);
        set(&mut s.volumes);
        if s.containers.is_empty() {
            s.containers.push(Container::default());
        }
        for c in s.containers.iter_mut() {
            set(&mut c.args);
            set(&mut c.command);
            set(&mut c.env);
            set(&mut c.env_from);
            set(&mut c.image);
            set(&mut c.image_pull_policy);
            set(&mut c.lifecycle);
            set(&mut c.liveness_probe);
            set(&mut c.ports);
            set(&mut c.readiness_probe);
            set(&mut c.resize_policy);
            set(&mut c.resources);
            set(&mut c.restart_policy);
            set(&mut c.security_context);
            set(&mut c.startup_probe);
            set(&mut c.stdin);
            set(&mut c.stdin_once);
            set(&mut c.termination_message_path);
            set(&mut c.termination_message_policy);
            set(&mut c.tty);
            set(&mut c.volume_devices);
            set(&mut c.volume_mounts);
            set(&mut c.working_dir);
        }
        set(&mut p.status);
    }

    /// The pods the edits start from: the fixtures, plus a bare pod (every field absent).
    fn start_pods() -> Vec<(String, Pod)> {
        let mut pods = fixture_pods();
        pods.push((
            "bare".into(),
            Pod {
                spec: Some(PodSpec {
                    containers: vec![Container::default()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        ));
        pods
    }

    #[test]
    fn path_tokens_are_escaped_and_indices_written_in_decimal() {
        let mut path = String::new();
        push_key(&mut path, "spec");
        push_key(&mut path, "a~b/c");
        for idx in [0, 7, 10, 123, usize::MAX] {
            let len = push_index(&mut path, idx);
            assert_eq!(path, format!("/spec/a~0b~1c/{idx}"));
            path.truncate(len);
        }
    }

    #[test]
    fn the_working_copy_is_the_pod_without_managed_fields() {
        for (name, pod) in fixture_pods() {
            let mut expected = pod.clone();
            expected.metadata.managed_fields = None;
            assert_eq!(working_copy(&pod, 0), expected, "{name}");
            // Room for volumes makes the list, as the first added volume would.
            if let Some(spec) = expected.spec.as_mut() {
                spec.volumes.get_or_insert_with(Vec::new);
            }
            let roomy = working_copy(&pod, 3);
            assert_eq!(roomy, expected, "{name}");
            let volumes = roomy.spec.and_then(|s| s.volumes).unwrap_or_default();
            assert!(volumes.capacity() >= volumes.len() + 3, "{name}");
            assert!(
                diff(&pod, &working_copy(&pod, 2))
                    .expect("serialisable")
                    .0
                    .is_empty(),
                "{name}"
            );
        }
    }

    /// The JSON the webhook sends is the patch the tests read, for every edit of every pod.
    #[test]
    fn written_json_is_the_patch() {
        for (name, pod) in start_pods() {
            for (what, edit) in &edits() {
                let mut planned = pod.clone();
                edit(&mut planned);
                let patch = diff(&pod, &planned).expect("serialisable");
                let mut out = Vec::new();
                patch.write_json(&mut out).expect("written");
                let written: Value = serde_json::from_slice(&out).expect("JSON");
                assert_eq!(
                    written,
                    serde_json::to_value(&*patch).unwrap(),
                    "{name}: {what}"
                );
                assert_eq!(patch.len(), patch.0.len(), "{name}: {what}");
                // The old way (whole pods diffed as JSON `Value`s, the oracle) and the
                // written patch, applied to the pod: the same pod.
                let written: Patch = serde_json::from_value(written).expect("a patch");
                let start = serde_json::to_value(working_copy(&pod, 0)).unwrap();
                let (mut new, mut old) = (start.clone(), start);
                let applied = json_patch::patch(&mut new, &written);
                if applied.is_err() {
                    // A diff the oracle cannot apply either (e.g. "no spec" into a list).
                    assert!(json_patch::patch(&mut old, &full_diff(&pod, &planned)).is_err());
                    continue;
                }
                json_patch::patch(&mut old, &full_diff(&pod, &planned)).expect("oracle");
                assert_eq!(new, old, "{name}: {what}");
            }
        }
    }

    #[test]
    fn pruned_diff_equals_the_full_diff() {
        for (name, pod) in start_pods() {
            let all = edits();
            for (what, edit) in &all {
                let mut planned = pod.clone();
                edit(&mut planned);
                assert_eq!(
                    *diff(&pod, &planned).expect("serialisable"),
                    full_diff(&pod, &planned),
                    "{name}: {what}"
                );
                // The other direction turns adds into removals.
                assert_eq!(
                    *diff(&planned, &pod).expect("serialisable"),
                    full_diff(&planned, &pod),
                    "{name}: {what}, reversed"
                );
            }
            // Everything at once.
            let mut planned = pod.clone();
            let whole_pod = |w: &&str| !matches!(*w, "no spec" | "containers emptied");
            for (_, edit) in all.iter().filter(|(w, _)| whole_pod(w)) {
                edit(&mut planned);
            }
            assert_eq!(
                *diff(&pod, &planned).expect("serialisable"),
                full_diff(&pod, &planned),
                "{name}"
            );
        }
    }
}
