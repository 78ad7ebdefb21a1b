//! OOM-aware memory, the engine's half: what a `memoryOnOOM` setting means, whether a
//! finished pod was OOMKilled, what its application's next pod should get, and under which
//! key that is remembered. The webhook keeps the remembered values (ConfigMaps, watches)
//! and hands them to the engine as [`RememberedMemory`]; nothing here talks to a cluster.

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

use crate::matching::PolicySet;
use crate::policy::model::MemoryOnOom;
use crate::policy::CompiledPolicy;
use crate::quantity;
use crate::spark::{ContainerNames, SparkPod, SparkRole, APP_SELECTOR_LABEL};

/// Annotation on every raised pod: from what to what, and which OOMKilled pod caused it.
pub const RAISED_ANNOTATION: &str = "spark-admission.io/memory-raised";

/// The reason the kubelet gives a container killed by its memory limit.
pub const OOM_KILLED: &str = "OOMKilled";

const MI: u64 = 1024 * 1024;

/// A `memoryOnOOM` setting with its quantities and duration read.
#[derive(Debug, Clone, PartialEq)]
pub struct OomSettings {
    pub step: Step,
    /// Bytes; 0 when not set.
    pub min_step: u64,
    /// Bytes.
    pub max: u64,
    pub remember_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// A fraction of the killed pod's memory (25% is 0.25).
    Fraction(f64),
    Bytes(u64),
}

/// Why a `memoryOnOOM` setting cannot be used: the field (relative to the setting) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub field: &'static str,
    pub message: String,
}

impl OomSettings {
    pub fn compile(m: &MemoryOnOom) -> Result<Self, SettingError> {
        let bytes = |field: &'static str, q: &str| -> Result<u64, SettingError> {
            match quantity::parse(q) {
                Some(v) if v >= 0.0 && v < u64::MAX as f64 => Ok(v.ceil() as u64),
                _ => Err(SettingError {
                    field,
                    message: format!("\"{q}\" is not a memory quantity (examples: 512Mi, 16Gi)"),
                }),
            }
        };
        let step = match m.step.strip_suffix('%') {
            Some(pct) => match pct.parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 1000.0 => Step::Fraction(p / 100.0),
                _ => {
                    return Err(SettingError {
                        field: "step",
                        message: format!("\"{}\" is not a percentage between 0% and 1000%", m.step),
                    })
                }
            },
            None => Step::Bytes(bytes("step", &m.step)?),
        };
        let min_step = match &m.min_step {
            Some(q) => bytes("minStep", &q.0)?,
            None => 0,
        };
        if step == Step::Bytes(0) && min_step == 0 {
            return Err(SettingError {
                field: "step",
                message: "a step of 0 never raises anything".into(),
            });
        }
        let max = bytes("max", &m.max.0)?;
        if max == 0 {
            return Err(SettingError {
                field: "max",
                message: "max must be above 0".into(),
            });
        }
        let remember_secs = parse_remember(&m.remember).ok_or_else(|| SettingError {
            field: "remember",
            message: format!(
                "\"{}\" is not a duration: a whole number with s, m, h or d (14d, 36h)",
                m.remember
            ),
        })?;
        Ok(Self {
            step,
            min_step,
            max,
            remember_secs,
        })
    }

    /// The memory the next pod gets after a pod with `killed` bytes was OOMKilled: one
    /// step more (at least `minStep`), rounded up to a whole MiB, never above `max`.
    pub fn next_after(&self, killed: u64) -> u64 {
        let step = match self.step {
            Step::Fraction(f) => (killed as f64 * f).ceil() as u64,
            Step::Bytes(b) => b,
        };
        let raised = killed.saturating_add(step.max(self.min_step));
        round_up_mi(raised).min(self.max)
    }
}

fn parse_remember(text: &str) -> Option<u64> {
    let unit = text.chars().last()?;
    let n: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => return None,
    };
    n.checked_mul(scale)
}

fn round_up_mi(bytes: u64) -> u64 {
    bytes.div_ceil(MI).saturating_mul(MI)
}

/// A quantity for a number of bytes as a pod spec shows it: whole MiB or GiB when exact.
pub fn format_bytes(bytes: u64) -> String {
    if bytes.is_multiple_of(1024 * MI) && bytes > 0 {
        format!("{}Gi", bytes / (1024 * MI))
    } else if bytes.is_multiple_of(MI) {
        format!("{}Mi", bytes / MI)
    } else {
        bytes.to_string()
    }
}

/// What the webhook remembers for one application and role: data for the engine. Field
/// names are short because thousands of these live in ConfigMaps of bounded size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RememberedMemory {
    /// Bytes the application's next pods of this role should have.
    #[serde(rename = "m")]
    pub memory: u64,
    /// Bytes the OOMKilled pod had.
    #[serde(rename = "f")]
    pub from: u64,
    /// The OOMKilled pod's name.
    #[serde(rename = "p")]
    pub oom_pod: String,
    /// When its Spark container was killed (Unix seconds, as the kubelet reported it).
    #[serde(rename = "t")]
    pub oom_at: i64,
    /// Forgotten after this (Unix seconds).
    #[serde(rename = "x")]
    pub expires: i64,
}

impl RememberedMemory {
    /// The larger raise of two, for merging what replicas wrote: replaying the same OOM
    /// (a relist, a second replica) changes nothing, a later one raises further.
    pub fn merge(self, other: RememberedMemory) -> RememberedMemory {
        match self.memory.cmp(&other.memory) {
            std::cmp::Ordering::Less => other,
            std::cmp::Ordering::Greater => self,
            std::cmp::Ordering::Equal if other.expires > self.expires => other,
            std::cmp::Ordering::Equal => self,
        }
    }
}

/// Where a raise is remembered: per namespace, role and `spark-app-name` (the same name
/// runs again tomorrow with a new `spark-app-selector`); a pod without that label is keyed
/// by its application id, so the raise still reaches its own job's next executors.
pub fn memory_key(namespace: &str, spark: &SparkPod<'_>) -> Option<String> {
    let app = match spark.app_name().filter(|n| !n.is_empty()) {
        Some(name) => format!("name:{name}"),
        None => format!(
            "id:{}",
            spark.label(APP_SELECTOR_LABEL).filter(|i| !i.is_empty())?
        ),
    };
    Some(format!("{namespace}/{}/{app}", spark.role))
}

/// The first matching policy (highest priority, then name) whose section for the role
/// sets `memoryOnOOM`, with its settings.
pub fn settings_for<'s>(
    policies: &[&'s CompiledPolicy],
    role: SparkRole,
) -> Option<(&'s CompiledPolicy, &'s OomSettings)> {
    policies.iter().find_map(|p| {
        let section = match role {
            SparkRole::Driver => p.driver.as_ref(),
            SparkRole::Executor => p.executor.as_ref(),
        };
        section.and_then(|s| s.oom.as_ref()).map(|o| (*p, o))
    })
}

/// The Spark container's memory in bytes: its limit, else its request.
pub fn spark_memory(spark: &SparkPod<'_>) -> Option<u64> {
    let r = spark.container()?.resources.as_ref()?;
    let q = r
        .limits
        .as_ref()
        .and_then(|l| l.get("memory"))
        .or_else(|| r.requests.as_ref().and_then(|l| l.get("memory")))?;
    quantity::parse(&q.0)
        .filter(|v| *v > 0.0 && *v < u64::MAX as f64)
        .map(|v| v.ceil() as u64)
}

/// When the pod's Spark container was OOMKilled (Unix seconds of its end), if it was.
/// Only the pod's status counts, which the kubelet writes and a tenant cannot.
pub fn oom_killed_at(spark: &SparkPod<'_>) -> Option<i64> {
    let status = spark.pod.status.as_ref()?;
    let statuses = status.container_statuses.as_ref()?;
    let cs = statuses
        .iter()
        .find(|c| c.name == spark.expected_container)?;
    let terminated = cs.state.as_ref()?.terminated.as_ref()?;
    if terminated.reason.as_deref() != Some(OOM_KILLED) {
        return None;
    }
    Some(
        terminated
            .finished_at
            .as_ref()
            .map_or(0, |t| t.0.as_second()),
    )
}

/// What one OOMKilled pod teaches: the key and the raise to remember.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomRaise {
    pub key: String,
    pub role: SparkRole,
    pub policy: String,
    pub remembered: RememberedMemory,
}

/// For a pod that ended: the raise to remember, when its Spark container was OOMKilled and
/// a current policy of its namespace enables `memoryOnOOM` for its role. `now` (Unix
/// seconds) stands in for a missing finish time.
pub fn raise_after_oom(
    set: &PolicySet,
    pod: &Pod,
    namespace: &str,
    names: &ContainerNames,
    now: i64,
) -> Option<OomRaise> {
    let spark = SparkPod::recognise(pod, names).ok()?;
    let at = oom_killed_at(&spark)?;
    let at = if at > 0 { at } else { now };
    let policies = set.matching(&spark, namespace);
    let (policy, settings) = settings_for(&policies, spark.role)?;
    let from = spark_memory(&spark)?;
    let memory = settings.next_after(from);
    if memory <= from {
        return None;
    }
    Some(OomRaise {
        key: memory_key(namespace, &spark)?,
        role: spark.role,
        policy: policy.name.clone(),
        remembered: RememberedMemory {
            memory,
            from,
            oom_pod: spark.name().to_owned(),
            oom_at: at,
            expires: at.saturating_add(i64::try_from(settings.remember_secs).unwrap_or(i64::MAX)),
        },
    })
}

/// For a pod that ended OOMKilled where a current policy enables `memoryOnOOM` for its
/// role, but whose memory is already at (or over) that policy's `max`: its role, and the
/// policy. No raise follows ([`raise_after_oom`] gives none), so the job may keep failing:
/// worth an alert.
pub fn oom_at_max(
    set: &PolicySet,
    pod: &Pod,
    namespace: &str,
    names: &ContainerNames,
) -> Option<(SparkRole, String)> {
    let spark = SparkPod::recognise(pod, names).ok()?;
    oom_killed_at(&spark)?;
    let policies = set.matching(&spark, namespace);
    let (policy, settings) = settings_for(&policies, spark.role)?;
    let from = spark_memory(&spark)?;
    (settings.next_after(from) <= from).then(|| (spark.role, policy.name.clone()))
}

/// Whether any policy of the set enables `memoryOnOOM` (the webhook watches pods only then).
pub fn enabled_anywhere(set: &PolicySet) -> bool {
    set.policies().iter().any(|p| {
        [&p.driver, &p.executor]
            .iter()
            .any(|s| s.as_ref().is_some_and(|s| s.oom.is_some()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(step: &str, min_step: Option<&str>, max: &str) -> OomSettings {
        OomSettings::compile(&MemoryOnOom {
            step: step.into(),
            min_step: min_step
                .map(|q| k8s_openapi::apimachinery::pkg::api::resource::Quantity(q.into())),
            max: k8s_openapi::apimachinery::pkg::api::resource::Quantity(max.into()),
            remember: "14d".into(),
        })
        .unwrap()
    }

    #[test]
    fn a_step_is_a_share_of_the_killed_pods_memory_at_least_min_step_at_most_max() {
        let s = settings("25%", Some("512Mi"), "16Gi");
        assert_eq!(s.next_after(4096 * MI), 5120 * MI);
        // 25% of 1Gi is 256Mi, below minStep.
        assert_eq!(s.next_after(1024 * MI), 1536 * MI);
        assert_eq!(s.next_after(15 * 1024 * MI), 16 * 1024 * MI);
        assert_eq!(s.next_after(16 * 1024 * MI), 16 * 1024 * MI);
        let fixed = settings("1Gi", None, "8Gi");
        assert_eq!(fixed.next_after(3456 * MI), 4480 * MI);
        assert_eq!(format_bytes(4480 * MI), "4480Mi");
        assert_eq!(format_bytes(16 * 1024 * MI), "16Gi");
    }

    #[test]
    fn settings_that_cannot_work_are_refused_with_their_field() {
        let bad = |step: &str, max: &str, remember: &str| {
            OomSettings::compile(&MemoryOnOom {
                step: step.into(),
                min_step: None,
                max: k8s_openapi::apimachinery::pkg::api::resource::Quantity(max.into()),
                remember: remember.into(),
            })
            .unwrap_err()
            .field
        };
        assert_eq!(bad("0%", "1Gi", "1d"), "step");
        assert_eq!(bad("0", "1Gi", "1d"), "step");
        assert_eq!(bad("25%", "lots", "1d"), "max");
        assert_eq!(bad("25%", "1Gi", "2w"), "remember");
        assert_eq!(parse_remember("14d"), Some(14 * 86400));
    }

    #[test]
    fn merging_keeps_the_larger_raise_and_replaying_changes_nothing() {
        let r = |m: u64, x: i64| RememberedMemory {
            memory: m,
            from: 1,
            oom_pod: "p".into(),
            oom_at: 0,
            expires: x,
        };
        assert_eq!(r(5, 1).merge(r(4, 9)), r(5, 1));
        assert_eq!(r(4, 9).merge(r(5, 1)), r(5, 1));
        assert_eq!(r(5, 1).merge(r(5, 2)), r(5, 2));
        assert_eq!(r(5, 2).merge(r(5, 2)), r(5, 2));
    }
}
