//! Job pinning: a job's executors get the policy versions its driver was admitted under.
//!
//! The driver gets one more Spark configuration default (through `SPARK_SUBMIT_OPTS`, like
//! `sparkConf`): `spark.kubernetes.executor.annotation.spark-admission.io/driver-policies`
//! naming `name@hash` of every policy that could change its executors. Spark copies it onto
//! every executor pod it creates. Validation always uses the current policies.
//!
//! Anyone who can create a pod can write that annotation, so a pin is honoured only when it
//! is provably the one this webhook gave the executor's own driver: the executor's owner
//! reference names a stored driver pod (same namespace, name and uid) whose
//! `SPARK_SUBMIT_OPTS` holds the same pin ([`check`]). The server looks the driver up; the
//! result reaches the engine as data ([`PinCheck`]). A pin that is not verified never
//! removes anything: the executor gets every policy that matches it now ([`Resolution`]).
//! The pin key is the webhook's own: a driver arriving with one of its own loses it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

use crate::engine::{submit_opts_tokens, SUBMIT_OPTS_VAR};
use crate::matching::PolicySet;
use crate::policy::CompiledPolicy;
use crate::spark::{ContainerNames, SparkRole, ROLE_LABEL};

/// The annotation Spark copies onto every executor of a pinned driver.
pub const DRIVER_POLICIES_ANNOTATION: &str = "spark-admission.io/driver-policies";
/// Set on an executor whose pin names versions the webhook no longer has.
pub const MISSING_POLICIES_ANNOTATION: &str = "spark-admission.io/missing-policies";
/// The Spark setting that makes Spark write [`DRIVER_POLICIES_ANNOTATION`] on executors.
pub const PIN_SPARK_CONF_KEY: &str =
    "spark.kubernetes.executor.annotation.spark-admission.io/driver-policies";
/// The pin of a driver whose namespace had no executor policy: its executors get none
/// either, even after one is added mid-job (one job, one set of versions). Not a tag
/// (no `@`), so it cannot be mistaken for one.
pub const PIN_NONE: &str = "none";

/// The pin a driver in `namespace` gets: [`executor_tags`], or [`PIN_NONE`] alone when
/// there are none, so that "no executor policy" is pinned too.
pub fn driver_pin_tags(set: &PolicySet, namespace: &str) -> Vec<String> {
    let tags = executor_tags(set, namespace);
    if tags.is_empty() {
        vec![PIN_NONE.to_owned()]
    } else {
        tags
    }
}

/// The tags a driver in `namespace` pins for its executors: every policy of the namespace
/// that may change an executor (an `all` or `executor` section, executors not excluded by
/// role). Selectors are not checked here: executors carry labels of their own, and each
/// pinned version's selector is checked against the executor when it arrives. Sorted, so
/// the value is the same on every replica and every pass.
pub fn executor_tags(set: &PolicySet, namespace: &str) -> Vec<String> {
    let mut tags: Vec<String> = set
        .for_namespace(namespace)
        .into_iter()
        .filter(|p| p.executors && (p.all.is_some() || p.executor.is_some()))
        .map(|p| p.tag.clone())
        .collect();
    tags.sort_unstable();
    tags
}

/// What an executor's [`DRIVER_POLICIES_ANNOTATION`] claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim<'a> {
    /// Not an executor, or no annotation (client mode, drivers without executor policies).
    None,
    /// A value no driver of ours carries: empty, or not a list of `name@hash`.
    Malformed(&'a str),
    /// A well-formed pin: the value as written and its tags (none for [`PIN_NONE`]).
    Pin { value: &'a str, tags: Vec<&'a str> },
}

/// The claim of a pod: only executors carry one.
pub fn claim_of(pod: &Pod) -> Claim<'_> {
    let is_executor = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ROLE_LABEL))
        .is_some_and(|r| r == SparkRole::Executor.as_str());
    let value = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DRIVER_POLICIES_ANNOTATION));
    let Some(value) = value.filter(|_| is_executor) else {
        return Claim::None;
    };
    if value == PIN_NONE {
        // Verified like any pin: only a driver the webhook gave it carries it.
        return Claim::Pin {
            value,
            tags: Vec::new(),
        };
    }
    let tags: Vec<&str> = value.split(',').map(str::trim).collect();
    if tags.iter().all(|t| is_tag(t)) {
        Claim::Pin { value, tags }
    } else {
        Claim::Malformed(value)
    }
}

/// `name@hash` as [`CompiledPolicy::tag`] writes it: a policy name, `@`, 10 lowercase hex digits.
fn is_tag(tag: &str) -> bool {
    let Some((name, hash)) = tag.split_once('@') else {
        return false;
    };
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && hash.len() == 10
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The owner reference Spark sets on executors in cluster mode: their driver pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverRef<'a> {
    pub name: &'a str,
    pub uid: &'a str,
}

/// The executor's driver as its owner references name it; `None` when no owner is a pod
/// (client mode, or a pod made by hand). Owners are always in the pod's own namespace.
pub fn driver_ref(pod: &Pod) -> Option<DriverRef<'_>> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "Pod" && o.api_version == "v1" && !o.name.is_empty())
        .map(|o| DriverRef {
            name: &o.name,
            uid: &o.uid,
        })
}

/// Whether a claim could be checked, and what the check found. The server fills it in from
/// the stored driver (see [`check`]); the engine only reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "result", content = "reason")]
pub enum PinCheck {
    /// The executor's own stored driver carries exactly this pin.
    Verified,
    Unverified(Unverified),
}

/// Why a pin was not verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Unverified {
    /// No cluster to read drivers from (the folder source, `explain`).
    NoCluster,
    /// Job pinning is off: switched off, or no cluster (the server pins only with one).
    PinningOff,
    /// No owner reference to a driver pod.
    NoOwner,
    /// The owner is not a stored driver pod with that uid.
    NoSuchDriver { driver: String },
    /// The stored driver could not be read in time.
    LookupFailed { driver: String, error: String },
    /// The executor's own stored driver carries another pin, or none: a forged pin.
    Contradicts {
        driver: String,
        driver_pin: Option<String>,
    },
}

impl Unverified {
    fn describe(&self) -> String {
        match self {
            Unverified::NoCluster => "no cluster to read its driver from (the folder source and explain cannot verify a pin)".to_owned(),
            Unverified::PinningOff => "job pinning is off (switched off, or the folder source: no stored drivers to verify pins against)".to_owned(),
            Unverified::NoOwner => "the pod has no owner reference to a driver pod".to_owned(),
            Unverified::NoSuchDriver { driver } => {
                format!("its owner \"{driver}\" is not a stored driver pod with that uid")
            }
            Unverified::LookupFailed { driver, error } => {
                format!("its driver \"{driver}\" could not be read ({error})")
            }
            Unverified::Contradicts { driver, driver_pin } => match driver_pin {
                Some(p) => format!("its driver \"{driver}\" was given another pin (\"{p}\")"),
                None => format!("its driver \"{driver}\" was given no pin"),
            },
        }
    }
}

/// The pin written in a stored driver's Spark container: the `-D` token of
/// [`PIN_SPARK_CONF_KEY`] in its one literal `SPARK_SUBMIT_OPTS`. `None` when there is no
/// such token, or when what Spark reads cannot be told from the spec (the variable set
/// twice, from a reference, or unreadable, or the key set twice): then nothing is vouched for.
pub fn driver_pin(driver: &Pod, names: &ContainerNames) -> Option<String> {
    let container = driver
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == names.driver)?;
    let mut opts = container
        .env
        .iter()
        .flatten()
        .filter(|e| e.name == SUBMIT_OPTS_VAR);
    let only = opts.next()?;
    if opts.next().is_some() || only.value_from.is_some() {
        return None;
    }
    let tokens = submit_opts_tokens(only.value.as_deref()?).ok()?;
    let prefix = format!("-D{PIN_SPARK_CONF_KEY}");
    let mut pins = tokens.iter().filter_map(|t| t.strip_prefix(&prefix));
    let pin = pins.next()?.strip_prefix('=')?;
    pins.next().is_none().then(|| pin.to_owned())
}

/// Checks a pin against the stored pod that the executor's owner reference names (`None`:
/// no such pod): it must be a driver (label `spark-role=driver`) with the owner's uid, and
/// carry exactly `pin`.
pub fn check(
    pin: &str,
    owner: &DriverRef<'_>,
    stored: Option<&Pod>,
    names: &ContainerNames,
) -> PinCheck {
    let driver = owner.name.to_owned();
    let Some(stored) = stored else {
        return PinCheck::Unverified(Unverified::NoSuchDriver { driver });
    };
    let is_driver = stored
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ROLE_LABEL))
        .is_some_and(|r| r == SparkRole::Driver.as_str());
    if !is_driver || owner.uid.is_empty() || stored.metadata.uid.as_deref() != Some(owner.uid) {
        return PinCheck::Unverified(Unverified::NoSuchDriver { driver });
    }
    match driver_pin(stored, names) {
        Some(p) if p == pin => PinCheck::Verified,
        driver_pin => PinCheck::Unverified(Unverified::Contradicts { driver, driver_pin }),
    }
}

/// How an executor's pin was resolved: what the webhook applies, says and counts.
#[derive(Debug)]
pub enum Resolution {
    /// No pin: the current policies.
    None,
    /// An empty or malformed pin: treated as none, with a warning.
    Malformed(String),
    /// The driver's own pin: exactly the versions it was admitted under.
    Verified { pin: String, pinned: Pinned },
    /// A pin that could not be verified: the current policies, with a warning.
    Unverified { pin: String, reason: Unverified },
}

impl Resolution {
    /// Resolves `claim`: `check` verifies a well-formed pin (called only for one), and
    /// `history` finds pinned versions by tag.
    pub fn of(
        current: &PolicySet,
        claim: &Claim<'_>,
        check: PinCheck,
        history: impl Fn(&str) -> Option<Arc<CompiledPolicy>>,
    ) -> Self {
        match (claim, check) {
            (Claim::None, _) => Resolution::None,
            (Claim::Malformed(v), _) => Resolution::Malformed((*v).to_owned()),
            (Claim::Pin { value, tags }, PinCheck::Verified) => Resolution::Verified {
                pin: (*value).to_owned(),
                pinned: resolve(current, tags, history),
            },
            (Claim::Pin { value, .. }, PinCheck::Unverified(reason)) => Resolution::Unverified {
                pin: (*value).to_owned(),
                reason,
            },
        }
    }

    /// The pinned versions, for a verified pin only.
    pub fn pinned(&self) -> Option<&Pinned> {
        match self {
            Resolution::Verified { pinned, .. } => Some(pinned),
            _ => None,
        }
    }

    /// The `result` label of `pinned_executors_total`, for a pod with a claim.
    pub fn result(&self) -> Option<&'static str> {
        match self {
            Resolution::None => None,
            Resolution::Malformed(_) => Some("malformed"),
            Resolution::Verified { pinned, .. } if pinned.missing.is_empty() => Some("pinned"),
            Resolution::Verified { .. } => Some("missing"),
            Resolution::Unverified {
                reason: Unverified::Contradicts { .. },
                ..
            } => Some("forged"),
            Resolution::Unverified { .. } => Some("unverified"),
        }
    }

    /// The warning for the submitter (none for no pin or a verified one; missing versions
    /// are warned about by the engine).
    pub fn warning(&self, pod: &str) -> Option<String> {
        let current = "every policy that matches it now was applied, in its current version";
        match self {
            Resolution::None | Resolution::Verified { .. } => None,
            Resolution::Malformed(v) => Some(format!(
                "spark-admission: pod \"{pod}\": annotation {DRIVER_POLICIES_ANNOTATION}=\"{v}\" is not a pin this webhook writes (a list of name@hash); it was ignored and {current}"
            )),
            Resolution::Unverified {
                pin,
                reason: reason @ Unverified::Contradicts { .. },
            } => Some(format!(
                "spark-admission: pod \"{pod}\": forged job pin {DRIVER_POLICIES_ANNOTATION}=\"{pin}\": {}; it was ignored and {current}",
                reason.describe()
            )),
            Resolution::Unverified { pin, reason } => Some(format!(
                "spark-admission: pod \"{pod}\": job pin \"{pin}\" was not verified: {}; it was ignored and {current}",
                reason.describe()
            )),
        }
    }

    /// One line for `explain`: how the pin was resolved.
    pub fn describe(&self) -> Option<String> {
        match self {
            Resolution::None => None,
            Resolution::Malformed(v) => Some(format!(
                "pin \"{v}\" is malformed: ignored, the current policies apply"
            )),
            Resolution::Verified { pin, pinned } => Some(if pinned.missing.is_empty() {
                format!("pin \"{pin}\" verified against the executor's driver: its pinned versions apply")
            } else {
                format!(
                    "pin \"{pin}\" verified against the executor's driver: its pinned versions apply, the current ones for {} (no longer known)",
                    pinned.missing.join(", ")
                )
            }),
            Resolution::Unverified { pin, reason } => Some(format!(
                "pin \"{pin}\" not verified: {}; ignored, the current policies apply",
                reason.describe()
            )),
        }
    }
}

/// The policies a pinned executor is mutated with.
#[derive(Debug, Default)]
pub struct Pinned {
    pub set: PolicySet,
    /// Pinned tags found neither in the current set nor in the history; for each, the
    /// current version of that policy (if any) is in `set` instead.
    pub missing: Vec<String>,
}

/// Resolves a pin: each tag from `history`, else from the current set; a tag found nowhere falls back to the current version of its policy. Policies
/// the pin does not name (created after the driver) are left out. Which of the resulting
/// versions apply to the pod is then decided as always, by each version's own namespaces
/// and selector: a pin copied into another namespace brings nothing that namespace lacks.
pub fn resolve(
    current: &PolicySet,
    tags: &[&str],
    history: impl Fn(&str) -> Option<Arc<CompiledPolicy>>,
) -> Pinned {
    let mut chosen: Vec<Arc<CompiledPolicy>> = Vec::with_capacity(tags.len());
    let mut missing = Vec::new();
    for tag in tags {
        // The history holds the current versions too (a hash lookup); scanning the
        // current set is for callers without one.
        let found =
            history(tag).or_else(|| current.policies().iter().find(|p| p.tag == *tag).cloned());
        match found {
            Some(p) => chosen.push(p),
            None => {
                missing.push((*tag).to_owned());
                let name = tag.split_once('@').map_or(*tag, |(n, _)| n);
                if let Some(p) = current.policies().iter().find(|p| p.name == name) {
                    chosen.push(Arc::clone(p));
                }
            }
        }
    }
    Pinned {
        set: PolicySet::new(chosen),
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{parse_documents, PolicySource};

    fn policy(name: &str, namespaces: &str, body: &str) -> Arc<CompiledPolicy> {
        let text = format!(
            "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {{name: {name}}}\nspec:\n  namespaces: {namespaces}\n{body}"
        );
        let mut docs = parse_documents(&PolicySource(format!("{name}.yaml")), &text)
            .unwrap_or_else(|e| panic!("{e:?}"));
        Arc::new(docs.remove(0))
    }

    #[test]
    fn a_driver_pins_only_policies_that_can_change_its_executors() {
        let set = PolicySet::new([
            policy("b-exec", "[jobs]", "  executor: {labels: {a: b}}\n"),
            policy("a-all", "[\"*\"]", "  all: {labels: {a: b}}\n"),
            policy("driver-only", "[jobs]", "  driver: {labels: {a: b}}\n"),
            policy(
                "rules-only",
                "[jobs]",
                "  validate: {forbidPrivileged: true}\n",
            ),
            policy("elsewhere", "[other]", "  all: {labels: {a: b}}\n"),
        ]);
        let tags = executor_tags(&set, "jobs");
        let names: Vec<&str> = tags
            .iter()
            .map(|t| t.split('@').next().unwrap_or(""))
            .collect();
        assert_eq!(names, ["a-all", "b-exec"]);
    }

    #[test]
    fn a_pin_takes_history_versions_leaves_out_new_policies_and_falls_back_when_missing() {
        let v1 = policy("team", "[jobs]", "  all: {labels: {v: \"1\"}}\n");
        let v2 = policy("team", "[jobs]", "  all: {labels: {v: \"2\"}}\n");
        let newer = policy("newer", "[jobs]", "  all: {labels: {n: \"1\"}}\n");
        let gone = policy("gone", "[jobs]", "  all: {labels: {g: \"1\"}}\n");
        let current = PolicySet::new([Arc::clone(&v2), newer, Arc::clone(&gone)]);
        let v1_tag = v1.tag.clone();
        let history = |tag: &str| (tag == v1_tag).then(|| Arc::clone(&v1));

        let pinned = resolve(&current, &[v1.tag.as_str()], history);
        let tags: Vec<&str> = pinned
            .set
            .policies()
            .iter()
            .map(|p| p.tag.as_str())
            .collect();
        assert_eq!(tags, [v1.tag.as_str()]);
        assert!(pinned.missing.is_empty());

        let pinned = resolve(&current, &["team@0000000000", gone.tag.as_str()], history);
        let mut tags: Vec<&str> = pinned
            .set
            .policies()
            .iter()
            .map(|p| p.tag.as_str())
            .collect();
        tags.sort_unstable();
        let mut want = [gone.tag.as_str(), v2.tag.as_str()];
        want.sort_unstable();
        assert_eq!(tags, want);
        assert_eq!(pinned.missing, ["team@0000000000"]);
    }

    #[test]
    fn only_executors_carry_a_pin_and_only_a_list_of_tags_is_one() {
        let pod = |role: &str, value: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {
                    "labels": {"spark-role": role},
                    "annotations": {DRIVER_POLICIES_ANNOTATION: value}
                }
            }))
            .unwrap_or_default()
        };
        let good = "a@0123456789, b.c@abcdef0123";
        let exec = pod("executor", good);
        assert_eq!(
            claim_of(&exec),
            Claim::Pin {
                value: good,
                tags: vec!["a@0123456789", "b.c@abcdef0123"]
            }
        );
        assert_eq!(claim_of(&pod("driver", good)), Claim::None);
        for bad in [
            "",
            ",",
            " , ",
            "a@0123456789,",
            "nonexistent@deadbeef",
            "A@0123456789",
            "a@0123456789ab",
            "a@ABCDEF0123",
            "@0123456789",
            "a",
        ] {
            let p = pod("executor", bad);
            assert_eq!(claim_of(&p), Claim::Malformed(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_driver_without_executor_policies_pins_none_and_only_its_own_executors_keep_it() {
        let drivers_only = PolicySet::new([policy(
            "driver-only",
            "[jobs]",
            "  driver: {labels: {a: b}}\n",
        )]);
        assert_eq!(driver_pin_tags(&drivers_only, "jobs"), [PIN_NONE]);
        let added = policy("added", "[jobs]", "  executor: {labels: {added: x}}\n");
        let later = PolicySet::new([Arc::clone(&added)]);
        assert_eq!(
            driver_pin_tags(&later, "jobs"),
            std::slice::from_ref(&added.tag)
        );

        let exec: Pod = serde_json::from_value(serde_json::json!({"metadata": {
            "labels": {"spark-role": "executor"},
            "annotations": {DRIVER_POLICIES_ANNOTATION: PIN_NONE}}}))
        .unwrap_or_default();
        let claim = claim_of(&exec);
        assert_eq!(
            claim,
            Claim::Pin {
                value: PIN_NONE,
                tags: vec![]
            }
        );
        // Verified (its driver carries "none"): the policy added mid-job is left out.
        let verified = Resolution::of(&later, &claim, PinCheck::Verified, |_| None);
        assert_eq!(verified.result(), Some("pinned"));
        assert!(verified
            .pinned()
            .is_some_and(|p| p.set.policies().is_empty()));
        // Not verified (a forged "none"): nothing is removed, the current policies apply.
        let forged = Resolution::of(
            &later,
            &claim,
            PinCheck::Unverified(Unverified::Contradicts {
                driver: "d".into(),
                driver_pin: Some(added.tag.clone()),
            }),
            |_| None,
        );
        assert!(forged.pinned().is_none());
        assert_eq!(forged.result(), Some("forged"));
        // A driver carrying "none" verifies "none" and nothing else.
        let names = ContainerNames::default();
        let stored = driver(
            "u1",
            "driver",
            serde_json::json!([{"name": "SPARK_SUBMIT_OPTS", "value": format!("-D{PIN_SPARK_CONF_KEY}={PIN_NONE}")}]),
        );
        let owner = DriverRef {
            name: "d",
            uid: "u1",
        };
        assert_eq!(
            check(PIN_NONE, &owner, Some(&stored), &names),
            PinCheck::Verified
        );
        assert!(matches!(
            check(&added.tag, &owner, Some(&stored), &names),
            PinCheck::Unverified(Unverified::Contradicts { .. })
        ));
    }

    fn driver(uid: &str, role: &str, env: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d", "uid": uid, "labels": {"spark-role": role}},
            "spec": {"containers": [
                {"name": "sidecar", "env": [{"name": "SPARK_SUBMIT_OPTS", "value": format!("-D{PIN_SPARK_CONF_KEY}=x@0000000000")}]},
                {"name": "spark-kubernetes-driver", "env": env}
            ]}
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_pin_is_verified_only_by_its_own_stored_driver_carrying_exactly_it() {
        let names = ContainerNames::default();
        let pin = "team@0123456789";
        let opts = |v: &str| serde_json::json!([{"name": "SPARK_SUBMIT_OPTS", "value": v}]);
        let ours = driver(
            "u1",
            "driver",
            opts(&format!("-Dspark.a=1 -D{PIN_SPARK_CONF_KEY}={pin}")),
        );
        let owner = DriverRef {
            name: "d",
            uid: "u1",
        };
        assert_eq!(check(pin, &owner, Some(&ours), &names), PinCheck::Verified);
        let unverified = |c: PinCheck| match c {
            PinCheck::Unverified(r) => r,
            PinCheck::Verified => panic!("verified"),
        };
        // Another value, or another pod with the same name, or not a driver.
        assert!(matches!(
            unverified(check("team@9999999999", &owner, Some(&ours), &names)),
            Unverified::Contradicts {
                driver_pin: Some(_),
                ..
            }
        ));
        let other_uid = DriverRef {
            name: "d",
            uid: "u2",
        };
        assert!(matches!(
            unverified(check(pin, &other_uid, Some(&ours), &names)),
            Unverified::NoSuchDriver { .. }
        ));
        let exec_owner = driver(
            "u1",
            "executor",
            opts(&format!("-D{PIN_SPARK_CONF_KEY}={pin}")),
        );
        assert!(matches!(
            unverified(check(pin, &owner, Some(&exec_owner), &names)),
            Unverified::NoSuchDriver { .. }
        ));
        assert!(matches!(
            unverified(check(pin, &owner, None, &names)),
            Unverified::NoSuchDriver { .. }
        ));
        // What Spark reads cannot be told: the variable twice, from a reference, or the
        // key twice. The sidecar's variable never counts.
        let twice = serde_json::json!([
            {"name": "SPARK_SUBMIT_OPTS", "value": format!("-D{PIN_SPARK_CONF_KEY}={pin}")},
            {"name": "SPARK_SUBMIT_OPTS", "value": "-Dx=1"}
        ]);
        let referenced = serde_json::json!([{"name": "SPARK_SUBMIT_OPTS", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]);
        let key_twice = opts(&format!(
            "-D{PIN_SPARK_CONF_KEY}={pin} -D{PIN_SPARK_CONF_KEY}={pin}"
        ));
        for env in [twice, referenced, key_twice, serde_json::json!([])] {
            let d = driver("u1", "driver", env.clone());
            assert!(
                matches!(
                    unverified(check(pin, &owner, Some(&d), &names)),
                    Unverified::Contradicts {
                        driver_pin: None,
                        ..
                    }
                ),
                "{env}"
            );
        }
    }
}

#[cfg(test)]
mod engine_tests {
    use super::*;
    use crate::engine::{Engine, MutateRequest};
    use crate::policy::{parse_documents, PolicySource};
    use crate::spark::ContainerNames;

    fn policy(name: &str, body: &str) -> Arc<CompiledPolicy> {
        let text = format!(
            "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {{name: {name}}}\nspec:\n  namespaces: [jobs]\n{body}"
        );
        let mut docs = parse_documents(&PolicySource(format!("{name}.yaml")), &text)
            .unwrap_or_else(|e| panic!("{e:?}"));
        Arc::new(docs.remove(0))
    }

    fn pod(role: &str, annotations: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": format!("p-{role}"),
                "labels": {"spark-role": role, "spark-app-name": "etl", "spark-app-selector": "spark-1"},
                "annotations": annotations
            },
            "spec": {"containers": [{"name": format!("spark-kubernetes-{role}"), "image": "spark:3.5"}]}
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn applied(pod: &Pod, patch: &json_patch::Patch) -> Pod {
        let mut value = serde_json::to_value(pod).unwrap_or_default();
        json_patch::patch(&mut value, patch).unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    fn engine() -> Engine {
        Engine::new(ContainerNames::default()).with_job_pinning(true)
    }

    #[test]
    fn a_driver_gets_the_pin_once_even_when_only_executor_policies_match() {
        let gpu = policy(
            "gpu",
            "  selector: {roles: [executor]}\n  executor: {labels: {gpu: \"yes\"}}\n",
        );
        let set = PolicySet::new([Arc::clone(&gpu)]);
        let driver = pod("driver", serde_json::json!({}));
        let first = engine()
            .mutate(MutateRequest::new(&set, &driver, "jobs"))
            .unwrap_or_else(|e| panic!("{e}"));
        let once = applied(&driver, &first.patch);
        let opts = serde_json::to_string(&once).unwrap_or_default();
        assert!(
            opts.contains(&format!("-D{PIN_SPARK_CONF_KEY}={}", gpu.tag)),
            "{opts}"
        );
        let second = engine()
            .mutate(MutateRequest::new(&set, &once, "jobs"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(second.patch.0.is_empty(), "{:?}", second.patch);
        // Without pinning (explain, policy tests) the driver is left alone.
        let off = Engine::new(ContainerNames::default())
            .mutate(MutateRequest::new(&set, &driver, "jobs"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(off.patch.0.is_empty());
    }

    #[test]
    fn an_executor_with_a_missing_pin_gets_the_current_version_and_the_annotation_once() {
        let v2 = policy("team", "  all: {labels: {v: \"2\"}}\n");
        let current = PolicySet::new([Arc::clone(&v2)]);
        let exec = pod(
            "executor",
            serde_json::json!({DRIVER_POLICIES_ANNOTATION: "team@0000000000"}),
        );
        let pinned = resolve(&current, &["team@0000000000"], |_| None);
        let first = engine()
            .mutate(
                MutateRequest::new(&pinned.set, &exec, "jobs").pinned(&pinned.set, &pinned.missing),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!first.warnings.is_empty());
        let once = applied(&exec, &first.patch);
        let ann = once.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            ann.get(MISSING_POLICIES_ANNOTATION).map(String::as_str),
            Some("team@0000000000")
        );
        assert_eq!(
            once.metadata
                .labels
                .unwrap_or_default()
                .get("v")
                .map(String::as_str),
            Some("2")
        );
        let second = engine()
            .mutate(
                MutateRequest::new(&pinned.set, &applied(&exec, &first.patch), "jobs")
                    .pinned(&pinned.set, &pinned.missing),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(second.patch.0.is_empty(), "{:?}", second.patch);
    }

    #[test]
    fn a_pin_copied_into_another_namespace_brings_nothing_from_policies_of_other_namespaces() {
        let theirs = policy("secret-mounts", "  all: {labels: {granted: \"yes\"}}\n");
        let exec = pod(
            "executor",
            serde_json::json!({DRIVER_POLICIES_ANNOTATION: theirs.tag.clone()}),
        );
        let current = PolicySet::new([Arc::clone(&theirs)]);
        let pinned = resolve(&current, &[theirs.tag.as_str()], |_| None);
        let m = engine()
            .mutate(
                MutateRequest::new(&pinned.set, &exec, "elsewhere")
                    .pinned(&pinned.set, &pinned.missing),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(m.patch.0.is_empty(), "{:?}", m.patch);
    }
}
