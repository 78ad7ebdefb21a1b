//! How many entries a pod's lists may hold to be planned or checked. The limits sit far above
//! anything spark-submit or a pod template produces (one container, a few volumes, tens of
//! env entries), so they only stop crafted pods. Planning merges the policies' entries into
//! these lists (node-affinity terms multiply: pod terms × policy terms), so a bound here is
//! what keeps a review's work and its patch proportionate. Checked before any planning: a
//! pod above a limit is refused whole, never half-planned.

use k8s_openapi::api::core::v1::{Container, NodeSelectorTerm, Pod, PodSpec};

/// The largest count accepted for each list. [`PodLimits::default`] is what the webhook uses
/// (documented in the README, "Limits on a Spark pod's size").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodLimits {
    /// `spec.containers`, and separately `spec.initContainers`.
    pub containers: usize,
    /// `spec.volumes`.
    pub volumes: usize,
    /// `spec.tolerations`.
    pub tolerations: usize,
    /// Terms of each affinity list: nodeSelectorTerms, preferred node terms, pod
    /// (anti-)affinity terms; also topologySpreadConstraints, hostAliases,
    /// imagePullSecrets and each dnsConfig list.
    pub terms: usize,
    /// matchExpressions (and matchFields) of one node selector term.
    pub expressions: usize,
    /// `env` of one container.
    pub env: usize,
    /// `envFrom`, `ports` and `volumeMounts` of one container.
    pub container_lists: usize,
    /// `command` and `args` of one container: nothing merges into them, but each entry is a
    /// string decoded and copied, so a crafted list costs many times its bytes.
    pub arguments: usize,
    /// The entries of those lists (env, envFrom, ports, volumeMounts, command, args) over
    /// every container and init container together: each list under its own limit, 64
    /// containers of them would still cost ~20x a benign body of the same size.
    pub container_entries: usize,
}

/// The field [`PodLimits::container_entries`] is reported under.
pub const CONTAINER_ENTRIES_FIELD: &str =
    "all containers' env, envFrom, ports, volumeMounts, command and args together";

impl Default for PodLimits {
    fn default() -> Self {
        Self {
            containers: 64,
            volumes: 256,
            tolerations: 128,
            terms: 64,
            expressions: 64,
            env: 1024,
            container_lists: 256,
            arguments: 4096,
            container_entries: 8192,
        }
    }
}

impl PodLimits {
    /// No limit (tools and benchmarks that measure the merges themselves).
    pub fn unlimited() -> Self {
        Self {
            containers: usize::MAX,
            volumes: usize::MAX,
            tolerations: usize::MAX,
            terms: usize::MAX,
            expressions: usize::MAX,
            env: usize::MAX,
            container_lists: usize::MAX,
            arguments: usize::MAX,
            container_entries: usize::MAX,
        }
    }
}

/// A pod with more entries in a list than [`PodLimits`] allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} has {count} entries, more than the {limit} spark-admission accepts in a Spark pod; the pod was not admitted (Spark never creates such a pod: check the pod template)")]
pub struct TooLarge {
    /// JSON path of the list, e.g. `spec.containers[1].env`.
    pub field: String,
    pub count: usize,
    pub limit: usize,
}

/// The list's length, or the error when it is over `limit`.
fn at_most<T>(
    list: Option<&Vec<T>>,
    limit: usize,
    field: impl FnOnce() -> String,
) -> Result<usize, TooLarge> {
    let count = list.map_or(0, Vec::len);
    if count > limit {
        return Err(TooLarge {
            field: field(),
            count,
            limit,
        });
    }
    Ok(count)
}

/// The first list of `pod` above its limit, if any. Costs one pass over the lists' lengths.
pub(crate) fn check(pod: &Pod, limits: &PodLimits) -> Result<(), TooLarge> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    at_most(Some(&spec.containers), limits.containers, || {
        "spec.containers".to_owned()
    })?;
    at_most(spec.init_containers.as_ref(), limits.containers, || {
        "spec.initContainers".to_owned()
    })?;
    let mut entries = 0;
    for (kind, list) in [
        ("containers", Some(&spec.containers)),
        ("initContainers", spec.init_containers.as_ref()),
    ] {
        for (i, c) in list.into_iter().flatten().enumerate() {
            entries += check_container(c, limits, kind, i)?;
        }
    }
    if entries > limits.container_entries {
        return Err(TooLarge {
            field: CONTAINER_ENTRIES_FIELD.to_owned(),
            count: entries,
            limit: limits.container_entries,
        });
    }
    // Ephemeral containers arrive by UPDATE (`kubectl debug`), and the rules read them too.
    at_most(
        spec.ephemeral_containers.as_ref(),
        limits.containers,
        || "spec.ephemeralContainers".to_owned(),
    )?;
    for (i, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
        at_most(c.env.as_ref(), limits.env, || {
            format!("spec.ephemeralContainers[{i}].env")
        })?;
    }
    at_most(spec.volumes.as_ref(), limits.volumes, || {
        "spec.volumes".to_owned()
    })?;
    at_most(spec.tolerations.as_ref(), limits.tolerations, || {
        "spec.tolerations".to_owned()
    })?;
    check_scheduling(spec, limits)
}

/// Checks `c`'s lists against their limits; returns their entries together, which
/// [`PodLimits::container_entries`] bounds over all containers.
fn check_container(
    c: &Container,
    limits: &PodLimits,
    kind: &str,
    i: usize,
) -> Result<usize, TooLarge> {
    let field = |name: &str| format!("spec.{kind}[{i}].{name}");
    Ok(at_most(c.env.as_ref(), limits.env, || field("env"))?
        + at_most(c.env_from.as_ref(), limits.container_lists, || {
            field("envFrom")
        })?
        + at_most(c.ports.as_ref(), limits.container_lists, || field("ports"))?
        + at_most(c.volume_mounts.as_ref(), limits.container_lists, || {
            field("volumeMounts")
        })?
        + at_most(c.command.as_ref(), limits.arguments, || field("command"))?
        + at_most(c.args.as_ref(), limits.arguments, || field("args"))?)
}

fn check_scheduling(spec: &PodSpec, limits: &PodLimits) -> Result<(), TooLarge> {
    let terms = limits.terms;
    at_most(spec.topology_spread_constraints.as_ref(), terms, || {
        "spec.topologySpreadConstraints".to_owned()
    })?;
    at_most(spec.host_aliases.as_ref(), terms, || {
        "spec.hostAliases".to_owned()
    })?;
    for (i, h) in spec.host_aliases.iter().flatten().enumerate() {
        at_most(h.hostnames.as_ref(), terms, || {
            format!("spec.hostAliases[{i}].hostnames")
        })?;
    }
    at_most(spec.image_pull_secrets.as_ref(), terms, || {
        "spec.imagePullSecrets".to_owned()
    })?;
    if let Some(dns) = &spec.dns_config {
        at_most(dns.nameservers.as_ref(), terms, || {
            "spec.dnsConfig.nameservers".to_owned()
        })?;
        at_most(dns.searches.as_ref(), terms, || {
            "spec.dnsConfig.searches".to_owned()
        })?;
        at_most(dns.options.as_ref(), terms, || {
            "spec.dnsConfig.options".to_owned()
        })?;
    }
    let Some(affinity) = &spec.affinity else {
        return Ok(());
    };
    if let Some(node) = &affinity.node_affinity {
        const REQUIRED: &str = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms";
        if let Some(req) = &node.required_during_scheduling_ignored_during_execution {
            at_most(Some(&req.node_selector_terms), terms, || {
                REQUIRED.to_owned()
            })?;
            for (i, t) in req.node_selector_terms.iter().enumerate() {
                check_term(t, limits, || format!("{REQUIRED}[{i}]"))?;
            }
        }
        const PREFERRED: &str =
            "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution";
        let preferred = node
            .preferred_during_scheduling_ignored_during_execution
            .as_ref();
        at_most(preferred, terms, || PREFERRED.to_owned())?;
        for (i, t) in preferred.into_iter().flatten().enumerate() {
            check_term(&t.preference, limits, || {
                format!("{PREFERRED}[{i}].preference")
            })?;
        }
    }
    if let Some(pa) = &affinity.pod_affinity {
        at_most(
            pa.required_during_scheduling_ignored_during_execution
                .as_ref(),
            terms,
            || {
                "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                    .to_owned()
            },
        )?;
        at_most(
            pa.preferred_during_scheduling_ignored_during_execution
                .as_ref(),
            terms,
            || {
                "spec.affinity.podAffinity.preferredDuringSchedulingIgnoredDuringExecution"
                    .to_owned()
            },
        )?;
    }
    if let Some(pa) = &affinity.pod_anti_affinity {
        at_most(
            pa.required_during_scheduling_ignored_during_execution
                .as_ref(),
            terms,
            || {
                "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                    .to_owned()
            },
        )?;
        at_most(
            pa.preferred_during_scheduling_ignored_during_execution
                .as_ref(),
            terms,
            || {
                "spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution"
                    .to_owned()
            },
        )?;
    }
    Ok(())
}

fn check_term(
    t: &NodeSelectorTerm,
    limits: &PodLimits,
    at: impl Fn() -> String,
) -> Result<(), TooLarge> {
    at_most(t.match_expressions.as_ref(), limits.expressions, || {
        format!("{}.matchExpressions", at())
    })?;
    at_most(t.match_fields.as_ref(), limits.expressions, || {
        format!("{}.matchFields", at())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::EnvVar;

    fn pod_with(containers: usize, env: usize) -> Pod {
        let c = Container {
            name: "c".to_owned(),
            env: Some(vec![EnvVar::default(); env]),
            ..Container::default()
        };
        Pod {
            spec: Some(PodSpec {
                containers: vec![c; containers],
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn a_pod_at_the_limits_passes_and_one_more_entry_is_refused_by_name() {
        let l = PodLimits::default();
        // Every container at once, their entries exactly at the pod's total.
        let per = l.container_entries / l.containers;
        assert_eq!(check(&pod_with(l.containers, per), &l), Ok(()));
        // Each list at its own limit, but together far over the total.
        let err = check(&pod_with(l.containers, l.env), &l).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.count, err.limit),
            (
                CONTAINER_ENTRIES_FIELD,
                l.containers * l.env,
                l.container_entries
            )
        );
        let mut one_more = pod_with(l.containers, per);
        if let Some(spec) = one_more.spec.as_mut() {
            spec.containers[0].args = Some(vec!["x".to_owned()]);
        }
        assert_eq!(
            check(&one_more, &l).map_err(|e| e.count),
            Err(l.container_entries + 1)
        );
        assert_eq!(
            check(&pod_with(l.containers + 1, 0), &l),
            Err(TooLarge {
                field: "spec.containers".to_owned(),
                count: l.containers + 1,
                limit: l.containers
            })
        );
        let err = check(&pod_with(2, l.env + 1), &l).unwrap_err();
        assert_eq!(err.field, "spec.containers[0].env");
        assert!(
            err.to_string().contains("1025 entries, more than the 1024"),
            "{err}"
        );
        assert_eq!(
            check(&pod_with(1000, 5000), &PodLimits::unlimited()),
            Ok(())
        );
    }

    #[test]
    fn ephemeral_containers_added_by_update_are_counted_too() {
        use k8s_openapi::api::core::v1::EphemeralContainer;
        let l = PodLimits::default();
        let mut pod = pod_with(1, 0);
        let debug = EphemeralContainer {
            name: "debugger".to_owned(),
            ..EphemeralContainer::default()
        };
        if let Some(spec) = pod.spec.as_mut() {
            spec.ephemeral_containers = Some(vec![debug.clone(); l.containers]);
        }
        assert_eq!(check(&pod, &l), Ok(()));
        if let Some(spec) = pod.spec.as_mut() {
            spec.ephemeral_containers = Some(vec![debug; l.containers + 1]);
        }
        assert_eq!(
            check(&pod, &l).map_err(|e| e.field),
            Err("spec.ephemeralContainers".to_owned())
        );
    }
}
