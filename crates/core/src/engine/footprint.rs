//! What a pod reserves on its node, per resource, counted the way the scheduler counts it
//! (k8s `resourcehelper.PodRequests`/`PodLimits`): the regular containers and the sidecars
//! (restartable init containers) run together; each other init container runs alone next
//! to the sidecars started before it; the pod needs the larger of the two. Pod-level
//! `spec.resources`, when set, is what the scheduler uses, so it counts too. The RuntimeClass
//! overhead is left out: the submitter does not set it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity;

/// Requests or limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Requests,
    Limits,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::Limits => "limits",
        }
    }

    fn of(self, r: &ResourceRequirements) -> Option<&BTreeMap<String, Quantity>> {
        match self {
            Kind::Requests => r.requests.as_ref(),
            Kind::Limits => r.limits.as_ref(),
        }
    }
}

/// One container's share of a total: where it is and what it asked for, as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Part {
    /// `"main"`, `init container "deps"`, `pod-level spec.resources`.
    pub who: String,
    /// The container's name (None for the pod-level value).
    pub container: Option<String>,
    pub quantity: String,
    pub value: f64,
}

/// The amount of one resource the pod reserves, and the parts that make it up.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Total {
    pub value: f64,
    pub parts: Vec<Part>,
}

fn value_of(c: &Container, kind: Kind, resource: &str) -> Option<(String, f64)> {
    let q = kind.of(c.resources.as_ref()?)?.get(resource)?;
    // The API server validated and canonicalised quantities before any validating
    // webhook sees them; an unparseable one counts as nothing rather than failing.
    quantity::parse(&q.0).map(|v| (q.0.clone(), v))
}

fn part(who: String, c: &Container, q: String, v: f64) -> Part {
    Part {
        who,
        container: Some(c.name.clone()),
        quantity: q,
        value: v,
    }
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The pod's total for `resource`, or None when no container (nor the pod) names it.
pub(crate) fn total(spec: &PodSpec, kind: Kind, resource: &str) -> Option<Total> {
    let mut running = Total {
        value: 0.0,
        parts: Vec::new(),
    };
    for c in &spec.containers {
        if let Some((q, v)) = value_of(c, kind, resource) {
            running.value += v;
            running
                .parts
                .push(part(format!("container \"{}\"", c.name), c, q, v));
        }
    }
    // Sidecars started so far, and the largest moment of the init phase.
    let mut sidecars = Total {
        value: 0.0,
        parts: Vec::new(),
    };
    let mut init_peak: Option<Total> = None;
    for c in spec.init_containers.iter().flatten() {
        let Some((q, v)) = value_of(c, kind, resource) else {
            continue;
        };
        let who = if is_sidecar(c) {
            format!("sidecar init container \"{}\"", c.name)
        } else {
            format!("init container \"{}\"", c.name)
        };
        let p = part(who, c, q, v);
        if is_sidecar(c) {
            running.value += v;
            running.parts.push(p.clone());
            sidecars.value += v;
            sidecars.parts.push(p);
        } else {
            let mut moment = sidecars.clone();
            moment.value += v;
            moment.parts.push(p);
            if init_peak.as_ref().is_none_or(|m| moment.value > m.value) {
                init_peak = Some(moment);
            }
        }
    }
    let pod_level = spec
        .resources
        .as_ref()
        .and_then(|r| kind.of(r))
        .and_then(|m| m.get(resource))
        .and_then(|q| quantity::parse(&q.0).map(|v| (q.0.clone(), v)))
        .map(|(q, v)| Total {
            value: v,
            parts: vec![Part {
                who: "pod-level spec.resources".to_owned(),
                container: None,
                quantity: q,
                value: v,
            }],
        });
    [Some(running), init_peak, pod_level]
        .into_iter()
        .flatten()
        .filter(|t| !t.parts.is_empty())
        .reduce(|a, b| if b.value > a.value { b } else { a })
}

/// Whether `have` is above `limit`, allowing for the rounding of adding up decimal
/// quantities as floats (0.1 + 0.2 is above 0.3 in f64).
pub(crate) fn exceeds(have: f64, limit: f64) -> bool {
    have > limit + limit.abs() * 1e-12
}

/// A total for a message: the quantity as written when one part makes it, else the sum in
/// the unit people write for that resource.
pub(crate) fn show(resource: &str, t: &Total) -> String {
    if let [one] = t.parts.as_slice() {
        return one.quantity.clone();
    }
    let binary = resource == "memory"
        || resource == "ephemeral-storage"
        || resource.starts_with("hugepages-");
    if binary {
        for (suffix, scale) in [
            ("Ei", 60),
            ("Pi", 50),
            ("Ti", 40),
            ("Gi", 30),
            ("Mi", 20),
            ("Ki", 10),
        ] {
            let unit = 2f64.powi(scale);
            if t.value >= unit {
                return format!("{}{suffix}", trimmed(t.value / unit));
            }
        }
    }
    trimmed(t.value)
}

fn trimmed(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    fn c(name: &str, cpu: &str, sidecar: bool) -> Container {
        Container {
            name: name.to_owned(),
            restart_policy: sidecar.then(|| "Always".to_owned()),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "cpu".to_owned(),
                    Quantity(cpu.to_owned()),
                )])),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        }
    }

    fn cpu(spec: &PodSpec) -> f64 {
        total(spec, Kind::Requests, "cpu").map_or(0.0, |t| t.value)
    }

    #[test]
    fn counts_like_the_scheduler() {
        let mut spec = PodSpec {
            containers: vec![c("a", "1", false), c("b", "2", false)],
            ..PodSpec::default()
        };
        assert_eq!(cpu(&spec), 3.0);
        // An init container bigger than the sum wins.
        spec.init_containers = Some(vec![c("init", "5", false)]);
        assert_eq!(cpu(&spec), 5.0);
        // A sidecar before it runs next to it, and next to the regular containers.
        spec.init_containers = Some(vec![c("side", "1", true), c("init", "3", false)]);
        assert_eq!(cpu(&spec), 4.0);
        // Pod-level requests, when larger, are what is reserved.
        spec.resources = Some(ResourceRequirements {
            requests: Some(BTreeMap::from([(
                "cpu".to_owned(),
                Quantity("8".to_owned()),
            )])),
            ..ResourceRequirements::default()
        });
        assert_eq!(cpu(&spec), 8.0);
        assert_eq!(total(&spec, Kind::Requests, "memory"), None);
    }

    #[test]
    fn decimal_sums_do_not_round_over_the_cap() {
        let spec = PodSpec {
            containers: vec![c("a", "100m", false), c("b", "200m", false)],
            ..PodSpec::default()
        };
        assert!(!exceeds(cpu(&spec), 0.3));
        assert!(exceeds(cpu(&spec), 0.299));
        assert_eq!(
            show("cpu", &total(&spec, Kind::Requests, "cpu").unwrap()),
            "0.3"
        );
    }
}
