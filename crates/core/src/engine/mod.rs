//! Pod + compiled policies -> decision: the JSON Patch to send, the warnings, the policies
//! applied (mutation), and the rule findings (validation). Knows nothing of HTTP.
//!
//! Planning works on a typed copy of the pod: each merge step edits the copy with its own
//! rule (one file per concern), and the patch is the diff between the pod as received and
//! the edited copy. Every step only adds or edits in place, so the diff is a list of adds
//! and replaces that applies cleanly to the object the API server sent, and running the
//! engine on its own output changes nothing.

mod bounds;
mod containers;
mod context;
mod deadline;
mod dependencies;
mod env;
mod footprint;
mod images;
mod memory_raise;
mod metadata;
mod patch;
mod planned;
mod ports;
mod resources;
mod rules;
mod scheduling;
mod security;
mod spark_conf;
mod updates;
mod variables;
mod volumes;

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

pub use bounds::{PodLimits, TooLarge, CONTAINER_ENTRIES_FIELD};
pub use context::Change;
pub use deadline::Deadline;
pub use planned::PlannedPatch;
pub use rules::{Finding, Validation};
/// What Spark's launcher reads from a `SPARK_SUBMIT_OPTS` value as written in a pod spec.
pub use spark_conf::{env_tokens as submit_opts_tokens, SUBMIT_OPTS_VAR};
pub use updates::SPARK_LABELS_RULE;

use crate::matching::PolicySet;
use crate::memory_on_oom::RememberedMemory;
use crate::pinning;
use crate::policy::model::PodPatch;
use crate::policy::template::Vars;
use crate::policy::CompiledPolicy;
use crate::spark::{ContainerNames, NotSpark, SparkPod, SparkRole, APP_SELECTOR_LABEL};
use context::Ctx;

/// Annotation listing the policies applied to a pod, as `name@hash,...`.
pub const APPLIED_ANNOTATION: &str = "spark-admission.io/applied";

/// The name job pinning's own changes are counted under.
const PINNING: &str = "spark-admission-pinning";

/// Why the engine could not plan a pod. The pod must then be refused: admitting it
/// unchanged would let it run without its policies.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("could not compute the patch: serialising the pod failed")]
    Patch(#[source] serde_json::Error),
    /// The pod is larger than any Spark pod (see [`PodLimits`]): refused before planning.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// The review's deadline passed while planning; the work stopped there.
    #[error("stopped at the review's deadline before the pod was fully evaluated")]
    Deadline,
}

/// Engine settings that do not change with the policies.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    pub container_names: ContainerNames,
    /// Pin jobs: drivers get the executor pin (see [`crate::pinning`]). The webhook sets
    /// it; `explain` and `spark-admission test` leave it off, so that policy test
    /// expectations do not carry hashes that change with every edit.
    pub pin_jobs: bool,
    /// The largest lists a pod may carry to be planned or checked.
    pub limits: PodLimits,
}

/// What the mutating webhook answers for one pod.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Mutation {
    /// The Spark role, or `None` when the pod is not a Spark pod (then nothing else is set).
    pub role: Option<SparkRole>,
    /// RFC 6902 operations, applying to the pod exactly as received.
    pub patch: PlannedPatch,
    /// `name@hash` of each policy that changed this pod (as written in
    /// [`APPLIED_ANNOTATION`]); empty when no policy changed anything.
    pub applied: Vec<String>,
    /// How many changes each policy made, in the order the policies applied.
    pub changes_by_policy: Vec<(String, u32)>,
    /// Every change, described (only with [`MutateRequest::detail`]).
    pub changes: Vec<Change>,
    /// Messages for the submitter (returned as admission warnings).
    pub warnings: Vec<String>,
    /// The Spark container's memory was raised after an OOMKilled pod (see
    /// [`crate::memory_on_oom`]).
    pub memory_raised: bool,
}

impl Mutation {
    pub fn is_spark(&self) -> bool {
        self.role.is_some()
    }
}

/// One pod to plan, with everything that decides its patch besides the engine's settings.
/// `MutateRequest::new(set, pod, namespace)` is a plain plan with the current set; the
/// builder methods add a pin, a remembered raise, a deadline or change descriptions.
#[derive(Debug, Clone, Copy)]
pub struct MutateRequest<'a> {
    pub pod: &'a Pod,
    /// Where the pod is being created (the policies' namespace match).
    pub namespace: &'a str,
    /// The current policy set: applied unless `pin` gives other versions, and always the
    /// set whose enforced `maxResources` rules cap a remembered raise (validation uses it,
    /// also for a pinned executor).
    pub current: &'a PolicySet,
    pub pin: Pin<'a>,
    /// The raise remembered for this pod's application after an OOMKilled pod (see
    /// [`crate::memory_on_oom`]).
    pub memory: Option<&'a RememberedMemory>,
    /// Planning gives up with [`EngineError::Deadline`] once this passes.
    pub deadline: Deadline,
    /// Describe every change ([`Mutation::changes`], for `explain`); the patch, warnings
    /// and policies applied are the same either way.
    pub detail: bool,
}

/// Which policy versions a request applies.
#[derive(Debug, Clone, Copy)]
pub enum Pin<'a> {
    /// The current set.
    None,
    /// A pod whose pin claim has been resolved ([`pinning::Resolution`]): a verified pin's
    /// versions, otherwise the current set (so an unverified pin never changes what the pod
    /// gets), with the pin's warning first. The webhook's case.
    Resolved(&'a pinning::Resolution),
    /// These versions, and the pinned tags that could not be found (recorded in
    /// [`pinning::MISSING_POLICIES_ANNOTATION`]).
    Versions {
        set: &'a PolicySet,
        missing: &'a [String],
    },
}

impl<'a> MutateRequest<'a> {
    /// `pod` created in `namespace`, planned with `current`: no pin, no remembered raise,
    /// no deadline, no descriptions.
    pub fn new(current: &'a PolicySet, pod: &'a Pod, namespace: &'a str) -> Self {
        Self {
            pod,
            namespace,
            current,
            pin: Pin::None,
            memory: None,
            deadline: Deadline::none(),
            detail: false,
        }
    }

    /// Gives up with [`EngineError::Deadline`] once `deadline` passes.
    pub fn within(self, deadline: Deadline) -> Self {
        Self { deadline, ..self }
    }

    /// Describes every change, or not.
    pub fn described(self, detail: bool) -> Self {
        Self { detail, ..self }
    }

    /// Applies what the resolved pin claim says (see [`Pin::Resolved`]).
    pub fn resolved(self, pin: &'a pinning::Resolution) -> Self {
        Self {
            pin: Pin::Resolved(pin),
            ..self
        }
    }

    /// Applies the pinned versions `set`, recording `missing` (see [`Pin::Versions`]).
    pub fn pinned(self, set: &'a PolicySet, missing: &'a [String]) -> Self {
        Self {
            pin: Pin::Versions { set, missing },
            ..self
        }
    }

    /// With the raise remembered for this pod's application, if any.
    pub fn remembering(self, memory: Option<&'a RememberedMemory>) -> Self {
        Self { memory, ..self }
    }
}

impl Engine {
    pub fn new(container_names: ContainerNames) -> Self {
        Self {
            container_names,
            pin_jobs: false,
            limits: PodLimits::default(),
        }
    }

    /// This engine with job pinning on or off.
    pub fn with_job_pinning(mut self, on: bool) -> Self {
        self.pin_jobs = on;
        self
    }

    /// Plans the patch for one pod: what the webhook answers (see [`MutateRequest`]).
    pub fn mutate(&self, req: MutateRequest<'_>) -> Result<Mutation, EngineError> {
        let (set, missing) = match req.pin {
            Pin::None => (req.current, &[][..]),
            Pin::Versions { set, missing } => (set, missing),
            Pin::Resolved(pin) => match pin.pinned() {
                Some(p) => (&p.set, &p.missing[..]),
                None => (req.current, &[][..]),
            },
        };
        let mut out = self.plan(&req, set, missing)?;
        if let Pin::Resolved(pin) = req.pin {
            let meta = &req.pod.metadata;
            let name = meta
                .name
                .as_deref()
                .or(meta.generate_name.as_deref())
                .unwrap_or_default();
            if let Some(w) = pin.warning(name) {
                out.warnings.insert(0, w);
            }
        }
        Ok(out)
    }

    /// Plans `req.pod` with the policies of `set`, recording the pinned tags `missing`.
    fn plan(
        &self,
        req: &MutateRequest<'_>,
        set: &PolicySet,
        missing: &[String],
    ) -> Result<Mutation, EngineError> {
        let (pod, namespace, detail) = (req.pod, req.namespace, req.detail);
        let memory = req.memory.map(|m| (m, req.current));
        let spark = match SparkPod::recognise(pod, &self.container_names) {
            Ok(s) => s,
            Err(NotSpark::NoRoleLabel) => return Ok(Mutation::default()),
            Err(NotSpark::UnknownRole(r)) => {
                return Ok(Mutation {
                    warnings: vec![format!(
                        "spark-admission: label spark-role=\"{r}\" is neither driver nor executor; no policy was applied"
                    )],
                    ..Mutation::default()
                })
            }
        };
        // Every Spark pod is counted, policies or not, as the server's scan of large
        // bodies does (prescan.rs): the same pod gets the same answer at any body size.
        bounds::check(pod, &self.limits)?;
        let policies = set.matching(&spark, namespace);
        let mut out = Mutation {
            role: Some(spark.role),
            ..Mutation::default()
        };
        // The driver's pin: computed on the full current set, since executor-only
        // policies do not match the driver itself.
        let pin = if self.pin_jobs && spark.role == SparkRole::Driver {
            pinning::driver_pin_tags(set, namespace)
        } else {
            Vec::new()
        };
        // The pin key is the webhook's own: a driver carrying one of its own (which would
        // vouch for versions the webhook never gave it) gets it removed, checked cheaply first.
        let foreign_pin = spark.role == SparkRole::Driver
            && spark
                .spark_container
                .and_then(|i| pod.spec.as_ref()?.containers.get(i)?.env.as_ref())
                .is_some_and(|env| {
                    env.iter().any(|e| {
                        e.name == SUBMIT_OPTS_VAR
                            && e.value
                                .as_deref()
                                .is_some_and(|v| v.contains(pinning::PIN_SPARK_CONF_KEY))
                    })
                });
        if policies.is_empty() && pin.is_empty() && missing.is_empty() && !foreign_pin {
            return Ok(out);
        }
        let mut ctx = Ctx::new(detail, req.deadline);
        if ctx.watch.seen() {
            return Err(EngineError::Deadline);
        }
        let mut planned = patch::working_copy(pod, more_volumes(&policies, spark.role));
        ctx.image_rewrites = policies
            .iter()
            .flat_map(|p| p.patches_for(spark.role))
            .filter_map(|s| s.image.as_ref())
            .flat_map(|i| i.rewrite.iter().map(|r| (r.from.as_str(), r.to.as_str())))
            .collect();
        if foreign_pin {
            remove_foreign_pin(&mut ctx, &mut planned, spark.spark_container, &pin);
        }
        let vars = Vars {
            namespace,
            app_name: spark.app_name(),
            app_id: spark.label(APP_SELECTOR_LABEL),
            role: spark.role,
        };
        for policy in &policies {
            for section in policy.patches_for(spark.role) {
                ctx.policy = &policy.name;
                ctx.overwrite = section.overwrite;
                let section = variables::render(&mut ctx, section, &vars);
                apply_section(&mut ctx, &mut planned, &section, &spark);
                if ctx.watch.passed_now() {
                    return Err(EngineError::Deadline);
                }
            }
        }
        if let Some(spec) = planned.spec.as_mut() {
            volumes::apply_mounts_for_all(&mut ctx, spec);
            // After every policy, so that per key the highest priority decides. The pin
            // comes last: a policy setting the same key would win, as a submitter's would.
            if let Some(idx) = spark.spark_container {
                if !pin.is_empty() {
                    ctx.spark_conf.push((
                        PINNING,
                        pinning::PIN_SPARK_CONF_KEY.to_owned(),
                        pin.join(","),
                    ));
                }
                spark_conf::apply(&mut ctx, spec, idx);
            }
            if let Some(original) = pod.spec.as_ref() {
                resources::reconcile(&mut ctx, original, spec);
            }
        }
        // After every policy's resources: the raise starts from what they decided.
        if let Some((remembered, validating)) = memory {
            let rules = validating.matching(&spark, namespace);
            out.memory_raised = memory_raise::apply(
                &mut ctx,
                &mut planned,
                &spark,
                &policies,
                &rules,
                remembered,
            );
        }
        // Image rules run last, over every container, so that sidecars and init containers
        // added by any policy get the same rewrite (and a second pass finds nothing to do).
        images::apply_image_rules(&mut ctx, &mut planned, &policies, spark.role);

        // Listed: the policies that changed the pod (values that lost or were undone do
        // not count). A policy listed by an earlier pass on this pod (the API server
        // reinvokes the webhook) stays listed; one no longer matching is dropped. A pass
        // that changes nothing leaves the annotation as it is, so the second pass is empty.
        let earlier = metadata::applied_tags(pod);
        let changed = policies.iter().any(|p| ctx.changed_by(&p.name));
        let applied: Vec<String> = if changed {
            policies
                .iter()
                .filter(|p| ctx.changed_by(&p.name) || earlier.contains(&p.tag.as_str()))
                .map(|p| p.tag.clone())
                .collect()
        } else {
            Vec::new()
        };
        if !applied.is_empty() {
            ctx.policy = "spark-admission";
            metadata::record_applied(&mut ctx, &mut planned, &applied.join(","));
        }
        if !missing.is_empty() {
            ctx.policy = PINNING;
            metadata::record_missing(&mut ctx, &mut planned, &missing.join(","));
            ctx.warn(format!(
                "spark-admission: this executor's driver was admitted under policy versions that are no longer known ({}); the current versions of those policies were applied instead",
                missing.join(", ")
            ));
        }
        scheduling::reconcile_priority(pod, &mut planned);
        // The steps after the sections stop early at the deadline; the diff is one pass.
        if ctx.watch.passed_now() {
            return Err(EngineError::Deadline);
        }
        out.patch = patch::diff(pod, &planned).map_err(EngineError::Patch)?;
        if ctx.watch.passed_now() {
            return Err(EngineError::Deadline);
        }
        out.applied = applied;
        out.changes_by_policy = ctx
            .counts
            .iter()
            .map(|(p, n)| ((*p).to_owned(), *n))
            .collect();
        if detail {
            out.changes = ctx.changes;
        }
        out.warnings = ctx.warnings;
        Ok(out)
    }

    /// Checks the rules of every matching policy against a pod being created.
    pub fn validate(&self, set: &PolicySet, pod: &Pod, namespace: &str) -> Validation {
        match SparkPod::recognise(pod, &self.container_names) {
            Ok(spark) => {
                let policies = set.matching(&spark, namespace);
                rules::check(&policies, &spark, namespace)
            }
            Err(_) => Validation::default(),
        }
    }

    /// `validate` for the webhook: a pod above [`PodLimits`] is refused before any rule
    /// runs, and a check that ends after `deadline` is refused. The rules are one pass over
    /// the pod (bounded by the limits), so they are not cut midway.
    pub fn validate_within(
        &self,
        set: &PolicySet,
        pod: &Pod,
        namespace: &str,
        deadline: Deadline,
    ) -> Result<Validation, EngineError> {
        let Ok(spark) = SparkPod::recognise(pod, &self.container_names) else {
            return Ok(Validation::default());
        };
        bounds::check(pod, &self.limits)?;
        let policies = set.matching(&spark, namespace);
        if deadline.passed() {
            return Err(EngineError::Deadline);
        }
        let validation = rules::check(&policies, &spark, namespace);
        if deadline.passed() {
            return Err(EngineError::Deadline);
        }
        Ok(validation)
    }

    /// Checks an UPDATE of a pod (`pods`, `pods/ephemeralcontainers`, `pods/resize`): the
    /// pod as it will be, and the labels the rules find it by. `Ok(None)` when nothing the
    /// rules read changed: allowed without judging (see `updates`). The new pod is held to
    /// [`PodLimits`] (an ephemeral container is one more container) and to `deadline`, as
    /// a created one is.
    pub fn validate_update(
        &self,
        set: &PolicySet,
        old: &Pod,
        new: &Pod,
        namespace: &str,
        deadline: Deadline,
    ) -> Result<Option<Validation>, EngineError> {
        bounds::check(new, &self.limits)?;
        if deadline.passed() {
            return Err(EngineError::Deadline);
        }
        let validation = updates::check(set, &self.container_names, old, new, namespace);
        if deadline.passed() {
            return Err(EngineError::Deadline);
        }
        Ok(validation)
    }

    /// The policies that would apply, for `explain`.
    pub fn matching<'s>(
        &self,
        set: &'s PolicySet,
        pod: &Pod,
        namespace: &str,
    ) -> Vec<&'s CompiledPolicy> {
        SparkPod::recognise(pod, &self.container_names)
            .map(|s| set.matching(&s, namespace))
            .unwrap_or_default()
    }
}

/// Removes pin tokens the webhook did not write from the driver's `SPARK_SUBMIT_OPTS`
/// (all of them but `pin`, this pass's own, when it is there alone).
fn remove_foreign_pin(ctx: &mut Ctx<'_>, pod: &mut Pod, spark: Option<usize>, pin: &[String]) {
    let (Some(idx), Some(spec)) = (spark, pod.spec.as_mut()) else {
        return;
    };
    let ours = pin.join(",");
    let keep = (!pin.is_empty()).then_some(ours.as_str());
    let removed = spark_conf::remove_key(spec, idx, pinning::PIN_SPARK_CONF_KEY, keep);
    if removed.is_empty() {
        return;
    }
    ctx.policy = PINNING;
    let key = pinning::PIN_SPARK_CONF_KEY;
    ctx.change(|| {
        (
            format!("sparkConf[{key}]"),
            format!(
                "removed \"{}\" (only spark-admission sets it)",
                removed.join("\", \"")
            ),
        )
    });
    ctx.warn(format!(
        "spark-admission: the driver's {SUBMIT_OPTS_VAR} set {key} itself (\"{}\"); that setting is the webhook's own job pin, so it was removed{}",
        removed.join("\", \""),
        if pin.is_empty() { "" } else { " and replaced by the webhook's" }
    ));
}

/// How many volumes the matching policies may add: room made at once in the working copy,
/// since a `Volume` is large and each doubling of the list would copy it again.
fn more_volumes(policies: &[&CompiledPolicy], role: SparkRole) -> usize {
    policies
        .iter()
        .flat_map(|p| p.patches_for(role))
        .map(|s| s.volumes.len() + s.dependencies.len())
        .sum()
}

/// One policy section, in a fixed order: pod metadata and scheduling, then storage and the
/// Spark container, then extra containers.
fn apply_section(ctx: &mut Ctx<'_>, pod: &mut Pod, patch: &PodPatch, spark: &SparkPod<'_>) {
    metadata::apply(ctx, pod, patch);
    let Some(spec) = pod.spec.as_mut() else {
        ctx.warn(format!(
            "policy \"{}\": the pod has no spec; only labels and annotations were applied",
            ctx.policy
        ));
        return;
    };
    scheduling::apply(ctx, spec, patch);
    images::apply_pull_secrets(ctx, spec, patch);
    if needs_spark_container(patch, spark.role) && spark.spark_container.is_none() {
        ctx.warn(format!(
            "policy \"{}\": this {} pod has no container named \"{}\", so its container settings (volumes, dependencies, env, ports, sparkConf, resources, security context) were skipped",
            ctx.policy, spark.role, spark.expected_container
        ));
    }
    volumes::apply(ctx, spec, patch, spark.spark_container);
    containers::apply(ctx, spec, patch, spark.expected_container);
    if let Some(idx) = spark.spark_container {
        dependencies::apply(ctx, spec, patch, idx, spark.role);
        env::apply(ctx, spec, patch, idx);
        ports::apply(ctx, spec, patch, idx);
        // sparkConf only reaches Spark through the driver (see spark_conf.rs); on executor
        // pods an `all` section's entries have nothing to do.
        if spark.role == SparkRole::Driver {
            spark_conf::collect(ctx, patch);
        }
        resources::apply(ctx, spec, patch, idx);
        security::apply_container(ctx, spec, patch, idx);
    }
    security::apply_pod(ctx, spec, patch);
}

fn needs_spark_container(p: &PodPatch, role: SparkRole) -> bool {
    !p.dependencies.is_empty()
        || !p.env.is_empty()
        || !p.ports.is_empty()
        || (role == SparkRole::Driver && !p.spark_conf.is_empty())
        || !p.env_from.is_empty()
        || p.resources.is_some()
        || p.security_context.is_some()
        || p.volumes
            .iter()
            .any(|v| v.containers == crate::policy::model::ContainerTarget::Spark)
}
