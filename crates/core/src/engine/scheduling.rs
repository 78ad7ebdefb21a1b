//! Where and how the pod is scheduled: nodeSelector, affinity, tolerations, priority class,
//! scheduler, runtime class, grace period, topology spread, DNS config, host aliases.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

use foldhash::fast::RandomState;
use k8s_openapi::api::core::v1::{
    Affinity, HostAlias, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodDNSConfig, PodSpec,
};

use super::context::{json, quoted, Ctx};
use super::deadline::Watch;
use super::metadata::merge_map;
use crate::policy::model::PodPatch;

pub(crate) fn apply(ctx: &mut Ctx<'_>, spec: &mut PodSpec, patch: &PodPatch) {
    merge_map(
        ctx,
        "nodeSelector",
        &mut spec.node_selector,
        &patch.node_selector,
    );
    if let Some(a) = &patch.affinity {
        merge_affinity(ctx, spec, a);
    }
    for t in &patch.tolerations {
        // Append, never replace: the API server has already added its not-ready/unreachable
        // tolerations, and user templates may have added more.
        let list = spec.tolerations.get_or_insert_with(Vec::new);
        if !list.contains(t) {
            list.push(t.clone());
            ctx.change(|| ("tolerations", format!("added {}", json(t))));
        }
    }
    scalar(
        ctx,
        "priorityClassName",
        &mut spec.priority_class_name,
        &patch.priority_class_name,
    );
    scalar(
        ctx,
        "schedulerName",
        &mut spec.scheduler_name,
        &patch.scheduler_name,
    );
    scalar(
        ctx,
        "runtimeClassName",
        &mut spec.runtime_class_name,
        &patch.runtime_class_name,
    );
    if let Some(g) = patch.termination_grace_period_seconds {
        if ctx.decide(
            "terminationGracePeriodSeconds",
            || "terminationGracePeriodSeconds".to_owned(),
            spec.termination_grace_period_seconds.as_ref(),
            &g,
            |v| v.to_string(),
        ) {
            spec.termination_grace_period_seconds = Some(g);
        }
    }
    for c in &patch.topology_spread_constraints {
        let list = spec
            .topology_spread_constraints
            .get_or_insert_with(Vec::new);
        let same = list.iter().position(|e| {
            e.topology_key == c.topology_key && e.when_unsatisfiable == c.when_unsatisfiable
        });
        let key = [
            "topologySpread",
            c.topology_key.as_str(),
            c.when_unsatisfiable.as_str(),
        ];
        let shown = || format!("topologySpreadConstraints[{}]", c.topology_key);
        if ctx.decide(key, shown, same.and_then(|i| list.get(i)), c, json) {
            match same {
                Some(i) => list[i] = c.clone(),
                None => list.push(c.clone()),
            }
        }
    }
    if let Some(d) = &patch.dns_config {
        merge_dns(ctx, spec, d);
    }
    for h in &patch.host_aliases {
        merge_host_alias(ctx, spec, h);
    }
}

fn scalar(ctx: &mut Ctx<'_>, field: &str, current: &mut Option<String>, wanted: &Option<String>) {
    if let Some(w) = wanted {
        if ctx.decide(field, || field.to_owned(), current.as_ref(), w, quoted) {
            *current = Some(w.clone());
        }
    }
}

fn merge_affinity(ctx: &mut Ctx<'_>, spec: &mut PodSpec, want: &Affinity) {
    if let Some(na) = &want.node_affinity {
        if let Some(req) = &na.required_during_scheduling_ignored_during_execution {
            let node = spec
                .affinity
                .get_or_insert_with(Default::default)
                .node_affinity
                .get_or_insert_with(Default::default);
            let current = node
                .required_during_scheduling_ignored_during_execution
                .take();
            let (merged, changed) = and_node_selectors(current, req, &mut ctx.watch);
            if changed {
                ctx.change(|| {
                    (
                        "affinity.nodeAffinity.required",
                        format!("ANDed {} into every term", json(&req.node_selector_terms)),
                    )
                });
            }
            node.required_during_scheduling_ignored_during_execution = Some(merged);
        }
        for t in na
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
        {
            let list = spec
                .affinity
                .get_or_insert_with(Default::default)
                .node_affinity
                .get_or_insert_with(Default::default)
                .preferred_during_scheduling_ignored_during_execution
                .get_or_insert_with(Vec::new);
            append_unique(ctx, "affinity.nodeAffinity.preferred", list, t);
        }
    }
    if let Some(pa) = &want.pod_affinity {
        for t in pa
            .required_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
        {
            let list = pod_affinity(spec)
                .required_during_scheduling_ignored_during_execution
                .get_or_insert_with(Vec::new);
            append_unique(ctx, "affinity.podAffinity.required", list, t);
        }
        for t in pa
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
        {
            let list = pod_affinity(spec)
                .preferred_during_scheduling_ignored_during_execution
                .get_or_insert_with(Vec::new);
            append_unique(ctx, "affinity.podAffinity.preferred", list, t);
        }
    }
    if let Some(pa) = &want.pod_anti_affinity {
        for t in pa
            .required_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
        {
            let list = anti_affinity(spec)
                .required_during_scheduling_ignored_during_execution
                .get_or_insert_with(Vec::new);
            append_unique(ctx, "affinity.podAntiAffinity.required", list, t);
        }
        for t in pa
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
        {
            let list = anti_affinity(spec)
                .preferred_during_scheduling_ignored_during_execution
                .get_or_insert_with(Vec::new);
            append_unique(ctx, "affinity.podAntiAffinity.preferred", list, t);
        }
    }
}

fn pod_affinity(spec: &mut PodSpec) -> &mut k8s_openapi::api::core::v1::PodAffinity {
    spec.affinity
        .get_or_insert_with(Default::default)
        .pod_affinity
        .get_or_insert_with(Default::default)
}

fn anti_affinity(spec: &mut PodSpec) -> &mut k8s_openapi::api::core::v1::PodAntiAffinity {
    spec.affinity
        .get_or_insert_with(Default::default)
        .pod_anti_affinity
        .get_or_insert_with(Default::default)
}

fn append_unique<T: PartialEq + Clone + serde::Serialize>(
    ctx: &mut Ctx<'_>,
    field: &str,
    list: &mut Vec<T>,
    item: &T,
) {
    if !list.contains(item) {
        list.push(item.clone());
        ctx.change(|| (field, format!("added {}", json(item))));
    }
}

/// Node selector terms are ORed and the requirements inside a term ANDed, so "the pod's
/// rule AND the policy's rule" is every pod term combined with every policy term.
/// A pod whose every term already contains some policy term is left as it is, which is
/// what makes a second pass a no-op. Duplicate combined terms are dropped (the first
/// stays) through an index by hash, so the merge costs the size of its output, not its
/// square. Stops early once `watch` sees the deadline (the caller then refuses the pod).
pub(crate) fn and_node_selectors(
    current: Option<NodeSelector>,
    policy: &NodeSelector,
    watch: &mut Watch,
) -> (NodeSelector, bool) {
    let existing = match current {
        Some(c) if !c.node_selector_terms.is_empty() => c,
        _ => return (policy.clone(), true),
    };
    let satisfied = existing.node_selector_terms.iter().all(|e| {
        policy
            .node_selector_terms
            .iter()
            .any(|p| term_contains(e, p))
    });
    if satisfied || policy.node_selector_terms.is_empty() {
        return (existing, false);
    }
    let mut terms =
        Vec::with_capacity(existing.node_selector_terms.len() * policy.node_selector_terms.len());
    let hasher = RandomState::default();
    // Term hash -> indices in `terms` of the terms with that hash.
    let mut seen: HashMap<u64, Vec<usize>, RandomState> = HashMap::default();
    'all: for e in &existing.node_selector_terms {
        for p in &policy.node_selector_terms {
            if watch.tick() {
                break 'all;
            }
            let mut t = e.clone();
            for m in p.match_expressions.iter().flatten() {
                let list = t.match_expressions.get_or_insert_with(Vec::new);
                if !list.contains(m) {
                    list.push(m.clone());
                }
            }
            for m in p.match_fields.iter().flatten() {
                let list = t.match_fields.get_or_insert_with(Vec::new);
                if !list.contains(m) {
                    list.push(m.clone());
                }
            }
            let same = seen.entry(term_hash(&hasher, &t)).or_default();
            if !same.iter().any(|&i| terms[i] == t) {
                same.push(terms.len());
                terms.push(t);
            }
        }
    }
    (
        NodeSelector {
            node_selector_terms: terms,
        },
        true,
    )
}

/// A hash agreeing with `NodeSelectorTerm`'s `==` (which compares every field in order).
fn term_hash(hasher: &RandomState, t: &NodeSelectorTerm) -> u64 {
    fn requirements(list: &Option<Vec<NodeSelectorRequirement>>, h: &mut impl Hasher) {
        match list {
            None => h.write_u8(0),
            Some(list) => {
                h.write_u8(1);
                h.write_usize(list.len());
                for r in list {
                    r.key.hash(h);
                    r.operator.hash(h);
                    r.values.hash(h);
                }
            }
        }
    }
    let mut h = hasher.build_hasher();
    requirements(&t.match_expressions, &mut h);
    requirements(&t.match_fields, &mut h);
    h.finish()
}

fn term_contains(term: &NodeSelectorTerm, required: &NodeSelectorTerm) -> bool {
    let has_all = |have: &Option<Vec<_>>, need: &Option<Vec<_>>| {
        need.iter()
            .flatten()
            .all(|n| have.iter().flatten().any(|h| h == n))
    };
    has_all(&term.match_expressions, &required.match_expressions)
        && has_all(&term.match_fields, &required.match_fields)
}

fn merge_dns(ctx: &mut Ctx<'_>, spec: &mut PodSpec, want: &PodDNSConfig) {
    let dns = spec.dns_config.get_or_insert_with(Default::default);
    for n in want.nameservers.iter().flatten() {
        append_unique(
            ctx,
            "dnsConfig.nameservers",
            dns.nameservers.get_or_insert_with(Vec::new),
            n,
        );
    }
    for s in want.searches.iter().flatten() {
        append_unique(
            ctx,
            "dnsConfig.searches",
            dns.searches.get_or_insert_with(Vec::new),
            s,
        );
    }
    for o in want.options.iter().flatten() {
        let list = dns.options.get_or_insert_with(Vec::new);
        let same = list.iter().position(|e| e.name == o.name);
        let key = ["dnsOption", o.name.as_deref().unwrap_or("")];
        let shown = || format!("dnsConfig.options[{}]", o.name.as_deref().unwrap_or(""));
        if ctx.decide(key, shown, same.and_then(|i| list.get(i)), o, json) {
            match same {
                Some(i) => list[i] = o.clone(),
                None => list.push(o.clone()),
            }
        }
    }
}

fn merge_host_alias(ctx: &mut Ctx<'_>, spec: &mut PodSpec, want: &HostAlias) {
    let list = spec.host_aliases.get_or_insert_with(Vec::new);
    let entry = match list.iter().position(|h| h.ip == want.ip) {
        Some(i) => &mut list[i],
        None => {
            list.push(HostAlias {
                ip: want.ip.clone(),
                hostnames: None,
            });
            let last = list.len() - 1;
            &mut list[last]
        }
    };
    for name in want.hostnames.iter().flatten() {
        let names = entry.hostnames.get_or_insert_with(Vec::new);
        if !names.contains(name) {
            names.push(name.clone());
            ctx.change(|| {
                (
                    format!("hostAliases[{}]", want.ip),
                    format!("added hostname \"{name}\""),
                )
            });
        }
    }
}

/// A pod whose priority class changed must not carry the priority computed for the old
/// one: the API server rejects the mismatch, and recomputes both fields when absent.
pub(crate) fn reconcile_priority(original: &Pod, planned: &mut Pod) {
    let before = original
        .spec
        .as_ref()
        .and_then(|s| s.priority_class_name.as_ref());
    if let Some(spec) = planned.spec.as_mut() {
        if spec.priority_class_name.as_ref() != before {
            spec.priority = None;
            spec.preemption_policy = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Deadline;
    use proptest::prelude::*;

    /// The merge as it was before the index: each new term searched for in all kept so far.
    fn and_node_selectors_by_search(
        current: Option<NodeSelector>,
        policy: &NodeSelector,
    ) -> (NodeSelector, bool) {
        let existing = match current {
            Some(c) if !c.node_selector_terms.is_empty() => c,
            _ => return (policy.clone(), true),
        };
        let satisfied = existing.node_selector_terms.iter().all(|e| {
            policy
                .node_selector_terms
                .iter()
                .any(|p| term_contains(e, p))
        });
        if satisfied || policy.node_selector_terms.is_empty() {
            return (existing, false);
        }
        let mut terms = Vec::new();
        for e in &existing.node_selector_terms {
            for p in &policy.node_selector_terms {
                let mut t = e.clone();
                for m in p.match_expressions.iter().flatten() {
                    let list = t.match_expressions.get_or_insert_with(Vec::new);
                    if !list.contains(m) {
                        list.push(m.clone());
                    }
                }
                for m in p.match_fields.iter().flatten() {
                    let list = t.match_fields.get_or_insert_with(Vec::new);
                    if !list.contains(m) {
                        list.push(m.clone());
                    }
                }
                if !terms.contains(&t) {
                    terms.push(t);
                }
            }
        }
        (
            NodeSelector {
                node_selector_terms: terms,
            },
            true,
        )
    }

    // Small pools, so that generated terms often repeat, overlap and contain each other.
    fn requirement() -> impl Strategy<Value = NodeSelectorRequirement> {
        (
            prop::sample::select(&["zone", "pool", "arch"][..]),
            prop::sample::select(&["In", "NotIn", "Exists"][..]),
            prop::option::of(prop::collection::vec(
                prop::sample::select(&["a", "b"][..]),
                0..3,
            )),
        )
            .prop_map(|(k, o, v)| NodeSelectorRequirement {
                key: k.to_owned(),
                operator: o.to_owned(),
                values: v.map(|v| v.into_iter().map(str::to_owned).collect()),
            })
    }

    fn term() -> impl Strategy<Value = NodeSelectorTerm> {
        (
            prop::option::of(prop::collection::vec(requirement(), 0..3)),
            prop::option::of(prop::collection::vec(requirement(), 0..2)),
        )
            .prop_map(|(e, f)| NodeSelectorTerm {
                match_expressions: e,
                match_fields: f,
            })
    }

    fn selector(max: usize) -> impl Strategy<Value = NodeSelector> {
        prop::collection::vec(term(), 0..max).prop_map(|t| NodeSelector {
            node_selector_terms: t,
        })
    }

    proptest! {
        /// The indexed merge gives exactly what the search gave: the same terms, in the
        /// same order, and the same "changed".
        #[test]
        fn indexed_merge_equals_the_search(
            pod in prop::option::of(selector(12)),
            policy in selector(4),
        ) {
            let mut watch = Watch::new(Deadline::none());
            let indexed = and_node_selectors(pod.clone(), &policy, &mut watch);
            let searched = and_node_selectors_by_search(pod, &policy);
            prop_assert_eq!(indexed, searched);
        }
    }

    #[test]
    fn thousands_of_identical_terms_merge_into_one() {
        let t = NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: "zone".to_owned(),
                operator: "In".to_owned(),
                values: Some(vec!["a".to_owned()]),
            }]),
            match_fields: None,
        };
        let pod = NodeSelector {
            node_selector_terms: vec![t; 5000],
        };
        let policy = NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: "pool".to_owned(),
                    operator: "Exists".to_owned(),
                    values: None,
                }]),
                match_fields: None,
            }],
        };
        let mut watch = Watch::new(Deadline::none());
        let (merged, changed) = and_node_selectors(Some(pod), &policy, &mut watch);
        assert!(changed);
        assert_eq!(merged.node_selector_terms.len(), 1);
    }
}
