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
    globs: GlobIndex,
    everywhere: Vec<u32>,
    /// Problems found while assembling the set (duplicate names), for logs and Events.
    pub warnings: Vec<String>,
}

/// The namespace globs of every policy.
#[derive(Debug)]
enum GlobIndex {
    /// One set for all globs (one pass per review); `owner[i]` is glob `i`'s policy.
    Combined { set: GlobSet, owner: Vec<u32> },
    /// The policies with globs, each matched with its own set: used when the combined
    /// set is over globset's size limit.
    PerPolicy(Vec<u32>),
}

impl Default for GlobIndex {
    fn default() -> Self {
        GlobIndex::Combined {
            set: GlobSet::empty(),
            owner: Vec::new(),
        }
    }
}

/// Whether a namespace entry is a glob (else an exact name, or `*` for every namespace).
pub(crate) fn is_glob(ns: &str) -> bool {
    ns != "*" && ns.contains(['*', '?', '[', '{'])
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
        let mut with_globs = Vec::new();
        let mut everywhere = Vec::new();
        for (i, p) in all.iter().enumerate() {
            let i = i as u32;
            for ns in &p.namespaces {
                if ns == "*" {
                    everywhere.push(i);
                } else if is_glob(ns) {
                    // Compiled successfully once already in CompiledPolicy::compile.
                    if let Ok(g) = Glob::new(ns) {
                        builder.add(g);
                        glob_owner.push(i);
                    }
                } else {
                    exact.entry(ns.clone()).or_default().push(i);
                }
            }
            if p.namespace_globs.is_some() {
                with_globs.push(i);
            }
        }
        // Each policy's globs built alone at compile time, but all of them together can
        // exceed globset's size limit: then each policy's own set is matched in turn
        // (slower, still every policy). Dropping the globs would silently unpolicy pods.
        let globs = match builder.build() {
            Ok(set) => GlobIndex::Combined {
                set,
                owner: glob_owner,
            },
            Err(e) => {
                warnings.push(format!(
                    "the namespace globs of all policies together are too large to match in one pass ({e}); each policy's globs are matched in turn"
                ));
                GlobIndex::PerPolicy(with_globs)
            }
        };
        Self {
            policies: all,
            exact,
            globs,
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
        match &self.globs {
            GlobIndex::Combined { set, owner } => {
                if !owner.is_empty() {
                    for g in set.matches(namespace) {
                        if let Some(o) = owner.get(g) {
                            idx.push(*o);
                        }
                    }
                }
            }
            GlobIndex::PerPolicy(with_globs) => {
                for &i in with_globs {
                    let matched = self
                        .policies
                        .get(i as usize)
                        .and_then(|p| p.namespace_globs.as_ref())
                        .is_some_and(|g| g.is_match(namespace));
                    if matched {
                        idx.push(i);
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{parse_documents, PolicySource};

    fn policy(name: &str, namespace: &str) -> Result<Arc<CompiledPolicy>, String> {
        let text = format!(
            "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {{name: {name}}}\nspec:\n  namespaces: [\"team-a\", \"{namespace}\"]\n  all: {{labels: {{team: data}}}}\n"
        );
        let mut docs = parse_documents(&PolicySource(format!("{name}.yaml")), &text)
            .map_err(|errors| format!("{errors:?}"))?;
        Ok(Arc::new(docs.remove(0)))
    }

    fn names(set: &PolicySet, namespace: &str) -> Vec<String> {
        set.for_namespace(namespace)
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    /// A glob that parses but whose matcher is over globset's 10 MiB NFA limit.
    fn unbuildable_glob() -> String {
        format!("big-{}", "?".repeat(300_000))
    }

    /// Two globs that each build alone but not in one set.
    fn large_glob(prefix: &str) -> String {
        format!("{prefix}-{}*", "?".repeat(100_000))
    }

    #[test]
    fn a_namespace_glob_that_cannot_be_built_rejects_the_policy_with_its_path() {
        let Err(err) = policy("huge", &unbuildable_glob()) else {
            panic!("the policy was accepted");
        };
        assert!(err.contains("/spec/namespaces/1"), "{err}");
        assert!(err.contains("namespace glob"), "{err}");
    }

    #[test]
    fn globs_too_large_for_one_set_still_match_their_namespaces() {
        let ns_a = format!("a-{}", "x".repeat(100_000));
        let ns_b = format!("b-{}", "x".repeat(100_000));
        let set = PolicySet::new([
            policy("first", &large_glob("a")).expect("valid alone"),
            policy("second", &large_glob("b")).expect("valid alone"),
        ]);
        assert_eq!(names(&set, &ns_a), ["first"]);
        assert_eq!(names(&set, &ns_b), ["second"]);
        assert_eq!(names(&set, "team-a"), ["first", "second"]);
        assert!(names(&set, "other").is_empty());
    }
}
