//! Which compiled policies apply to a pod: a namespace index built once per policy set,
//! then role and selector checks. Nothing here allocates per pod beyond the result list.

use std::collections::HashMap;
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::policy::CompiledPolicy;
use crate::spark::SparkPod;

/// An immutable snapshot of every policy in force, indexed by namespace.
#[derive(Debug, Default)]
pub struct PolicySet {
    /// Sorted by priority (highest first), then name: the order policies apply in.
    policies: Vec<Arc<CompiledPolicy>>,
    exact: HashMap<String, Vec<u32>>,
    globs: GlobSet,
    glob_owner: Vec<u32>,
    everywhere: Vec<u32>,
    /// Problems found while assembling the set (duplicate names), for logs and Events.
    pub warnings: Vec<String>,
}

impl PolicySet {
    /// Builds the set. Of two policies with the same name, the one from the
    /// alphabetically first origin wins, so every replica picks the same one.
    pub fn new(policies: impl IntoIterator<Item = Arc<CompiledPolicy>>) -> Self {
        let mut all: Vec<Arc<CompiledPolicy>> = policies.into_iter().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.origin.cmp(&b.origin)));
        let mut warnings = Vec::new();
        all.dedup_by(|later, kept| {
            let dup = later.name == kept.name;
            if dup {
                warnings.push(format!(
                    "policy \"{}\" is defined twice: {} is used, {} is ignored",
                    kept.name, kept.origin, later.origin
                ));
            }
            dup
        });
        all.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| a.name.cmp(&b.name))
        });

        let mut exact: HashMap<String, Vec<u32>> = HashMap::new();
        let mut builder = GlobSetBuilder::new();
        let mut glob_owner = Vec::new();
        let mut everywhere = Vec::new();
        for (i, p) in all.iter().enumerate() {
            let i = i as u32;
            for ns in &p.namespaces {
                if ns == "*" {
                    everywhere.push(i);
                } else if ns.contains(['*', '?', '[', '{']) {
                    // Compiled successfully once already in CompiledPolicy::compile.
                    if let Ok(g) = Glob::new(ns) {
                        builder.add(g);
                        glob_owner.push(i);
                    }
                } else {
                    exact.entry(ns.clone()).or_default().push(i);
                }
            }
        }
        let globs = builder.build().unwrap_or_else(|_| GlobSet::empty());
        Self {
            policies: all,
            exact,
            globs,
            glob_owner,
            everywhere,
            warnings,
        }
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    pub fn policies(&self) -> &[Arc<CompiledPolicy>] {
        &self.policies
    }

    /// The policies whose namespaces include `namespace`, in application order.
    pub fn for_namespace(&self, namespace: &str) -> Vec<&CompiledPolicy> {
        let mut idx: Vec<u32> = Vec::with_capacity(8);
        if let Some(v) = self.exact.get(namespace) {
            idx.extend_from_slice(v);
        }
        idx.extend_from_slice(&self.everywhere);
        if !self.glob_owner.is_empty() {
            for g in self.globs.matches(namespace) {
                if let Some(owner) = self.glob_owner.get(g) {
                    idx.push(*owner);
                }
            }
        }
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter()
            .filter_map(|i| self.policies.get(i as usize).map(Arc::as_ref))
            .collect()
    }

    /// The policies that apply to this Spark pod in this namespace, in application order.
    pub fn matching<'s>(&'s self, pod: &SparkPod<'_>, namespace: &str) -> Vec<&'s CompiledPolicy> {
        let mut found = self.for_namespace(namespace);
        found.retain(|p| selects(p, pod));
        found
    }
}

/// Role and selector conditions of one policy against one pod.
pub fn selects(policy: &CompiledPolicy, pod: &SparkPod<'_>) -> bool {
    if !policy.applies_to_role(pod.role) {
        return false;
    }
    if let Some(re) = &policy.app_name {
        if !pod.app_name().is_some_and(|n| re.is_match(n)) {
            return false;
        }
    }
    policy
        .match_labels
        .iter()
        .all(|(k, v)| pod.label(k) == Some(v.as_str()))
}
