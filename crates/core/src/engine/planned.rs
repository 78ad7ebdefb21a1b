//! The patch as planned: each operation's value kept as the JSON text the typed pod was
//! written to, so the webhook's answer copies it out without a `serde_json::Value` tree
//! in between (building, walking and dropping that tree was a fifth of a review).
//!
//! The same patch as a `json_patch::Patch` (for applying it, comparing it, or printing it)
//! is made the first time it is asked for, by dereferencing: tests, `explain` and the CLI
//! read it that way; the admission path never does.

use std::ops::Deref;
use std::sync::OnceLock;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use serde::{Serialize, Serializer};
use serde_json::Value;

/// One RFC 6902 operation with its path (an escaped JSON Pointer) and, for add and
/// replace, its value as compact JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Add { path: String, value: String },
    Replace { path: String, value: String },
    Remove { path: String },
}

/// RFC 6902 operations, applying to the pod exactly as received.
#[derive(Debug, Clone, Default)]
pub struct PlannedPatch {
    ops: Vec<Op>,
    parsed: OnceLock<json_patch::Patch>,
}

impl PlannedPatch {
    pub(crate) fn new(ops: Vec<Op>) -> Self {
        Self {
            ops,
            parsed: OnceLock::new(),
        }
    }

    /// How many operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Appends the patch as a JSON array to `out`: the bytes `serde_json::to_vec` writes for
    /// the same `json_patch::Patch`.
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        out.push(b'[');
        for (i, op) in self.ops.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let (name, path, value) = match op {
                Op::Add { path, value } => ("add", path, Some(value)),
                Op::Replace { path, value } => ("replace", path, Some(value)),
                Op::Remove { path } => ("remove", path, None),
            };
            out.extend_from_slice(b"{\"op\":\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\",\"path\":");
            serde_json::to_writer(&mut *out, path.as_str())?;
            if let Some(value) = value {
                out.extend_from_slice(b",\"value\":");
                out.extend_from_slice(value.as_bytes());
            }
            out.push(b'}');
        }
        out.push(b']');
        Ok(())
    }

    /// The same operations as `json_patch` values.
    fn to_json_patch(&self) -> json_patch::Patch {
        // Paths are built from escaped tokens and values were written by serde_json, so
        // both always parse; the fallbacks are unreachable.
        let pointer = |p: &str| PointerBuf::parse(p).unwrap_or_default();
        let value = |v: &str| serde_json::from_str(v).unwrap_or(Value::Null);
        json_patch::Patch(
            self.ops
                .iter()
                .map(|op| match op {
                    Op::Add { path, value: v } => PatchOperation::Add(AddOperation {
                        path: pointer(path),
                        value: value(v),
                    }),
                    Op::Replace { path, value: v } => PatchOperation::Replace(ReplaceOperation {
                        path: pointer(path),
                        value: value(v),
                    }),
                    Op::Remove { path } => PatchOperation::Remove(RemoveOperation {
                        path: pointer(path),
                    }),
                })
                .collect(),
        )
    }
}

impl Deref for PlannedPatch {
    type Target = json_patch::Patch;

    fn deref(&self) -> &json_patch::Patch {
        self.parsed.get_or_init(|| self.to_json_patch())
    }
}

impl PartialEq for PlannedPatch {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Serialize for PlannedPatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

/// A `json_patch::Patch` made elsewhere (tests, tools) as a planned patch.
impl TryFrom<&json_patch::Patch> for PlannedPatch {
    type Error = serde_json::Error;

    fn try_from(patch: &json_patch::Patch) -> Result<Self, serde_json::Error> {
        let mut ops = Vec::with_capacity(patch.0.len());
        for op in &patch.0 {
            ops.push(match op {
                PatchOperation::Add(a) => Op::Add {
                    path: a.path.to_string(),
                    value: serde_json::to_string(&a.value)?,
                },
                PatchOperation::Replace(r) => Op::Replace {
                    path: r.path.to_string(),
                    value: serde_json::to_string(&r.value)?,
                },
                PatchOperation::Remove(r) => Op::Remove {
                    path: r.path.to_string(),
                },
                other => {
                    return Err(serde::ser::Error::custom(format!(
                        "the engine plans add, replace and remove only, not {other:?}"
                    )))
                }
            });
        }
        Ok(Self::new(ops))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::{Engine, MutateRequest};
    use crate::matching::PolicySet;
    use crate::policy::{parse_documents, PolicySource};

    /// The patches the engine plans for every real pod with the bench policies (sidecars,
    /// init containers, env, affinity, security contexts: every shape a patch takes): the
    /// JSON written for the webhook is the patch, and applying it plans nothing more.
    #[test]
    fn the_written_patches_of_the_fixtures_are_the_patches() {
        let mut all = Vec::new();
        for (name, text) in spark_admission_testkit::bench_policies::files(100, 10) {
            let parsed = parse_documents(&PolicySource(name), &text).unwrap();
            all.extend(parsed.into_iter().map(Arc::new));
        }
        let set = PolicySet::new(all);
        let mut seen = 0;
        for (name, json) in spark_admission_testkit::fixtures::all_pods() {
            let pod = serde_json::from_value(json.clone()).unwrap();
            let m = Engine::default()
                .mutate(MutateRequest::new(&set, &pod, "spark-jobs"))
                .unwrap();
            let mut out = Vec::new();
            m.patch.write_json(&mut out).unwrap();
            let written: json_patch::Patch = serde_json::from_slice(&out).unwrap();
            assert_eq!(written, *m.patch, "{name}");
            assert_eq!(m.patch.len(), written.0.len(), "{name}");
            let back = PlannedPatch::try_from(&written).unwrap();
            assert_eq!(back, m.patch, "{name}");
            let mut once = json;
            json_patch::patch(&mut once, &written).unwrap();
            let once = serde_json::from_value(once).unwrap();
            let again = Engine::default()
                .mutate(MutateRequest::new(&set, &once, "spark-jobs"))
                .unwrap();
            assert!(again.patch.is_empty(), "{name}: {:?}", *again.patch);
            seen += usize::from(m.patch.len() > 10);
        }
        assert!(
            seen >= 8,
            "only {seen} fixtures got more than 10 operations"
        );
    }
}
