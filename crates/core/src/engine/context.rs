//! State shared by the merge steps while one pod is planned: which policy decided which
//! field, what changed, and the warnings for the submitter.

use std::collections::{HashMap, HashSet};

use foldhash::fast::RandomState;

use k8s_openapi::api::core::v1::VolumeMount;
use serde::Serialize;

use super::deadline::{Deadline, Watch};

/// One change a policy made, for `explain --output table` and logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub policy: String,
    pub field: String,
    pub action: String,
    /// False for a value that lost: a higher-priority policy decided the field, or the
    /// value was undone after planning. Shown by `explain`, never counted as a change.
    pub applied: bool,
}

pub(crate) struct Ctx<'p> {
    /// Keep a described [`Change`] for every change (`explain`); the admission path only
    /// counts changes per policy, which saves formatting a description of each.
    detail: bool,
    /// The policy being applied now.
    pub policy: &'p str,
    /// That policy's section allows replacing values the pod already has.
    pub overwrite: bool,
    /// Field key -> policy that decided it first (the higher-priority one).
    /// foldhash: SipHash was a twentieth of a whole review for these short, trusted keys.
    claims: HashMap<String, &'p str, RandomState>,
    /// Where a [`Key`] is written to be looked up, reused: a key is stored (copied) only
    /// the first time it is claimed.
    key: String,
    pub changes: Vec<Change>,
    /// Changes per policy that made any, in the order of each one's first change. Only
    /// values that end up in the pod count: losing and undone values do not.
    pub counts: Vec<(&'p str, u32)>,
    /// The resource values policies set, for [`Ctx::undo`].
    set_resources: Vec<SetResource<'p>>,
    pub warnings: Vec<String>,
    /// The warnings already given, so each is given once without a search through them
    /// all (a crafted pod can earn one per container).
    warned: HashSet<String, RandomState>,
    /// The review's deadline, checked between steps and in the loops over the pod's lists.
    pub watch: Watch,
    /// Mounts for every container, applied once all policies have added their containers.
    pub mounts_for_all: Vec<(&'p str, VolumeMount)>,
    /// sparkConf entries (policy, key, value) in policy order, written once all policies
    /// are known (see `spark_conf`).
    pub spark_conf: Vec<(&'p str, String, String)>,
    /// Image rewrites (from, to) of the matching policies, to recognise a container this
    /// webhook added and rewrote on an earlier pass.
    pub image_rewrites: Vec<(&'p str, &'p str)>,
}

impl<'p> Ctx<'p> {
    pub fn new(detail: bool, deadline: Deadline) -> Self {
        Self {
            detail,
            set_resources: Vec::new(),
            policy: "",
            overwrite: false,
            // Room for the claims of a pod under ten policies: growing the table
            // rehashed every key claimed so far, more than once per pod.
            claims: HashMap::with_capacity_and_hasher(64, RandomState::default()),
            key: String::new(),
            changes: Vec::new(),
            counts: Vec::new(),
            warnings: Vec::new(),
            warned: HashSet::default(),
            watch: Watch::new(deadline),
            mounts_for_all: Vec::new(),
            spark_conf: Vec::new(),
            image_rewrites: Vec::new(),
        }
    }

    /// Records a change by the current policy; `describe` gives its field and action, and
    /// is only called when they are kept.
    pub fn change<F: Into<String>, A: Into<String>>(&mut self, describe: impl FnOnce() -> (F, A)) {
        match self.counts.iter_mut().find(|(p, _)| *p == self.policy) {
            Some((_, n)) => *n += 1,
            None => self.counts.push((self.policy, 1)),
        }
        self.record(describe, true);
    }

    /// Records a value of the current policy that lost to a higher-priority policy: shown
    /// by `explain`, not a change to the pod, so not counted.
    pub fn overruled<F: Into<String>, A: Into<String>>(
        &mut self,
        describe: impl FnOnce() -> (F, A),
    ) {
        self.record(describe, false);
    }

    fn record<F: Into<String>, A: Into<String>>(
        &mut self,
        describe: impl FnOnce() -> (F, A),
        applied: bool,
    ) {
        if self.detail {
            let (field, action) = describe();
            self.changes.push(Change {
                policy: self.policy.to_owned(),
                field: field.into(),
                action: action.into(),
                applied,
            });
        }
    }

    /// Notes a resource value the current policy set on `container` (`kind`: requests or
    /// limits), so that [`Ctx::undo`] can take it back.
    pub fn set_resource(&mut self, container: &str, kind: &'static str, resource: &str) {
        self.set_resources.push(SetResource {
            policy: self.policy,
            container: container.to_owned(),
            kind,
            resource: resource.to_owned(),
            applied: true,
        });
    }

    /// Takes back the values policies set for `resource` of `container`: the pod keeps its
    /// own value, so they are no longer counted (with `detail`, their described changes are
    /// marked undone). Returns the policies that set them.
    pub fn undo(&mut self, container: &str, resource: &str) -> Vec<String> {
        let mut by: Vec<String> = Vec::new();
        for r in self
            .set_resources
            .iter_mut()
            .filter(|r| r.applied && r.container == container && r.resource == resource)
        {
            r.applied = false;
            if let Some((_, n)) = self.counts.iter_mut().find(|(p, _)| *p == r.policy) {
                *n = n.saturating_sub(1);
            }
            if !by.iter().any(|b| b == r.policy) {
                by.push(r.policy.to_owned());
            }
            if self.detail {
                let field = resource_field(&r.container, r.kind, &r.resource);
                if let Some(c) = self
                    .changes
                    .iter_mut()
                    .find(|c| c.applied && c.policy == r.policy && c.field == field)
                {
                    c.applied = false;
                    c.action.push_str(" (undone)");
                }
            }
        }
        self.counts.retain(|(_, n)| *n > 0);
        by
    }

    /// Whether `policy` made a change that stays in the pod.
    pub fn changed_by(&self, policy: &str) -> bool {
        self.counts.iter().any(|(p, n)| *p == policy && *n > 0)
    }

    pub fn warn(&mut self, message: impl Into<String>) {
        let message = message.into();
        if !self.warned.contains(&message) {
            self.warned.insert(message.clone());
            self.warnings.push(message);
        }
    }

    /// Who decided `key` before the current policy, if another policy did.
    pub fn claimed_by_other(&mut self, key: impl Key) -> Option<&'p str> {
        self.key.clear();
        key.write(&mut self.key);
        self.claims
            .get(self.key.as_str())
            .copied()
            .filter(|owner| *owner != self.policy)
    }

    /// Marks `key` as decided by the current policy; returns the earlier owner if it was
    /// already decided by a higher-priority policy (which then wins).
    pub fn claim(&mut self, key: impl Key) -> Result<(), &'p str> {
        self.key.clear();
        key.write(&mut self.key);
        match self.claims.get(self.key.as_str()) {
            Some(owner) if *owner != self.policy => Err(*owner),
            Some(_) => Ok(()),
            // Stored (copied) only when new.
            None => {
                self.claims.insert(self.key.clone(), self.policy);
                Ok(())
            }
        }
    }

    /// The rule for one scalar value: the highest-priority policy decides; a value the pod
    /// already has wins unless the policy says `overwrite: true`. Returns true when the
    /// caller should write `wanted`.
    pub fn decide<T: PartialEq + ?Sized>(
        &mut self,
        key: impl Key,
        field: impl Fn() -> String,
        current: Option<&T>,
        wanted: &T,
        show: impl Fn(&T) -> String,
    ) -> bool {
        self.decide_with(key, field, current, wanted, self.overwrite, show)
    }

    /// `decide` with an explicit overwrite flag (resources `force` always overwrites).
    pub fn decide_with<T: PartialEq + ?Sized>(
        &mut self,
        key: impl Key,
        field: impl Fn() -> String,
        current: Option<&T>,
        wanted: &T,
        overwrite: bool,
        show: impl Fn(&T) -> String,
    ) -> bool {
        if let Err(owner) = self.claim(key) {
            if current != Some(wanted) {
                self.overruled(|| {
                    (
                        field(),
                        format!(
                            "not set to {}: policy \"{owner}\" has higher priority",
                            show(wanted)
                        ),
                    )
                });
            }
            return false;
        }
        match current {
            None => {
                self.change(|| (field(), format!("set to {}", show(wanted))));
                true
            }
            Some(c) if c == wanted => false,
            Some(c) if overwrite => {
                self.change(|| {
                    (
                        field(),
                        format!("replaced {} with {}", show(c), show(wanted)),
                    )
                });
                true
            }
            Some(c) => {
                self.warn(format!(
                    "policy \"{}\": {} is already {} on this pod, so the policy's {} was not applied",
                    self.policy,
                    field(),
                    show(c),
                    show(wanted)
                ));
                false
            }
        }
    }
}

/// A claim key: the field's kind and the names that locate it, joined by `/` (for example
/// `resources/spark-kubernetes-driver/limits/memory`). Written into [`Ctx`]'s one buffer
/// rather than `format!`ed per field: formatting the keys was a tenth of planning.
pub(crate) trait Key {
    fn write(&self, out: &mut String);
}

impl Key for &str {
    fn write(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl<const N: usize> Key for [&str; N] {
    fn write(&self, out: &mut String) {
        for (i, part) in self.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(part);
        }
    }
}

/// How a resource value is named in changes and warnings:
/// `containers[NAME].resources.KIND[RESOURCE]`.
pub(crate) fn resource_field(container: &str, kind: &str, resource: &str) -> String {
    format!("containers[{container}].resources.{kind}[{resource}]")
}

/// A resource value a policy set (see [`Ctx::set_resource`]).
struct SetResource<'p> {
    policy: &'p str,
    container: String,
    kind: &'static str,
    resource: String,
    /// Not yet taken back.
    applied: bool,
}

/// Quoted display for strings.
pub(crate) fn quoted<S: std::fmt::Display + ?Sized>(s: &S) -> String {
    format!("\"{s}\"")
}

/// Compact JSON display for structured values.
pub(crate) fn json<T: Serialize>(v: &T) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    if s.len() > 120 {
        let mut cut = 117;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &s[..cut])
    } else {
        s
    }
}
