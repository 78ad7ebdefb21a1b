//! Counting a large pod review's lists before decoding it. Decoding builds every entry of
//! every list (a container is dozens of fields), so a crafted body of thousands of
//! containers or node selector terms costs many times a benign body of the same size (one
//! long annotation) before the engine can count them and refuse. The scan reads the JSON in
//! order, building nothing but the request's head (uid, kind, operation), the `spark-role`
//! label and the lists' counts, and refuses a Spark pod with a list above the engine's
//! limits ([`PodLimits`], the same lists `engine::bounds` checks).
//!
//! A list is read only up to one entry past its limit. When the head and the label came
//! before it, as the API server writes them (Go struct order: `uid`, `kind`, `operation`
//! before `object`, a pod's `metadata` before its `spec`), the scan stops there: the rest of
//! the body is never read, so a refused review costs what its first lists cost, whatever
//! its size. Otherwise the rest of the body is skipped unbuilt (serde's `IgnoredAny`) and the
//! answer is decided at its end. Anything the scan does not understand is left to the full
//! decode, which answers it as before.
//!
//! Stopping early means trusting what came first. A body only a client other than the API
//! server could send (a key repeated after the list, or `subResource` after the object) may
//! be refused here where the full decode would have answered it otherwise; a refusal admits
//! nothing.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::engine::{PodLimits, CONTAINER_ENTRIES_FIELD};
use crate::spark::SparkRole;

/// A Spark pod's review refused by the scan.
#[derive(Debug)]
pub struct Refused {
    pub uid: String,
    pub role: SparkRole,
    pub error: OverLimit,
}

/// A list with more entries than [`PodLimits`] allows. The scan stops counting one entry
/// past the limit, so it says "more than", where the engine's own check (small bodies,
/// decoded first) gives the count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} has more than {limit} entries, the most spark-admission accepts in a Spark pod; the pod was not admitted (Spark never creates such a pod: check the pod template)")]
pub struct OverLimit {
    /// JSON path of the list, e.g. `spec.containers[1].env`.
    pub field: String,
    pub limit: usize,
}

/// The first list (in the body's order) of a Spark pod's creation review above `limits`, or
/// `None` (the body is then decoded and planned as usual, and may still be refused by the
/// engine's own check).
pub fn too_large(body: &[u8], limits: &PodLimits) -> Option<Refused> {
    let mut scan = Scan {
        limits: *limits,
        ..Scan::default()
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let read = Node {
        scan: &mut scan,
        at: At::Review,
        path: &Path::ROOT,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if read.is_err() && !scan.stopped {
        return None;
    }
    scan.refusal()
}

/// What the scan has read so far.
#[derive(Default)]
struct Scan {
    limits: PodLimits,
    uid: Option<String>,
    /// `request.kind` is a core v1 Pod (`None`: not read yet).
    pod_v1: Option<bool>,
    create: bool,
    sub_resource: bool,
    role: Option<SparkRole>,
    over: Option<OverLimit>,
    /// Entries of the lists counted towards `PodLimits::container_entries`, so far.
    container_entries: usize,
    /// The read ended early, at `over`, the head and label already known.
    stopped: bool,
}

impl Scan {
    /// Whether what is known already refuses the review, once a list is over its limit.
    fn decided(&self) -> bool {
        self.uid.is_some()
            && self.pod_v1 == Some(true)
            && self.create
            && !self.sub_resource
            && self.role.is_some()
    }

    /// Records the first list over its limit and ends the read when that decides the
    /// review; otherwise (not known yet whether this is a Spark pod's creation) skips the
    /// rest of `seq` unbuilt, to decide at the end.
    fn over_limit<'de, A: SeqAccess<'de>>(
        &mut self,
        field: String,
        limit: usize,
        mut seq: A,
    ) -> Result<(), A::Error> {
        if self.over.is_none() {
            self.over = Some(OverLimit { field, limit });
        }
        if self.decided() {
            self.stopped = true;
            return Err(de::Error::custom(STOP));
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn refusal(self) -> Option<Refused> {
        if !self.decided() {
            return None;
        }
        Some(Refused {
            uid: self.uid?,
            role: self.role?,
            error: self.over?,
        })
    }
}

/// Where in the review a value is. The list positions carry their limit; their items'
/// positions are constants.
#[derive(Clone, Copy)]
enum At {
    Review,
    Request,
    Uid,
    Kind,
    SubResource,
    Operation,
    Pod,
    Meta,
    Labels,
    Role,
    Spec,
    Container {
        ephemeral: bool,
    },
    HostAlias,
    Dns,
    Affinity,
    NodeAffinity,
    Selector,
    Term,
    Preferred,
    PodAffinity,
    List {
        limit: usize,
        item: &'static At,
        /// Its entries count towards `PodLimits::container_entries` too.
        pooled: bool,
    },
    /// Anything the scan does not read: skipped unbuilt.
    Skip,
}

impl At {
    /// The position of `key`'s value in an object at `self`, and the key as a path part.
    fn child(self, key: &str, l: &PodLimits) -> Option<(At, &'static str)> {
        let list = |limit, item| At::List {
            limit,
            item,
            pooled: false,
        };
        // A list of a container (not an ephemeral one) counted towards the pod's total.
        let pooled = |limit| At::List {
            limit,
            item: &At::Skip,
            pooled: true,
        };
        const SKIP: &At = &At::Skip;
        let (at, name) = match (self, key) {
            (At::Review, "request") => (At::Request, "request"),
            (At::Request, "uid") => (At::Uid, "uid"),
            (At::Request, "kind") => (At::Kind, "kind"),
            (At::Request, "subResource") => (At::SubResource, "subResource"),
            (At::Request, "operation") => (At::Operation, "operation"),
            (At::Request, "object") => (At::Pod, "object"),
            (At::Pod, "metadata") => (At::Meta, "metadata"),
            (At::Pod, "spec") => (At::Spec, "spec"),
            (At::Meta, "labels") => (At::Labels, "labels"),
            (At::Labels, "spark-role") => (At::Role, "spark-role"),
            (At::Spec, "containers") => (
                list(l.containers, &At::Container { ephemeral: false }),
                "containers",
            ),
            (At::Spec, "initContainers") => (
                list(l.containers, &At::Container { ephemeral: false }),
                "initContainers",
            ),
            // Ephemeral containers arrive by UPDATE; the engine counts them and their env.
            (At::Spec, "ephemeralContainers") => (
                list(l.containers, &At::Container { ephemeral: true }),
                "ephemeralContainers",
            ),
            (At::Spec, "volumes") => (list(l.volumes, SKIP), "volumes"),
            (At::Spec, "tolerations") => (list(l.tolerations, SKIP), "tolerations"),
            (At::Spec, "topologySpreadConstraints") => {
                (list(l.terms, SKIP), "topologySpreadConstraints")
            }
            (At::Spec, "hostAliases") => (list(l.terms, &At::HostAlias), "hostAliases"),
            (At::Spec, "imagePullSecrets") => (list(l.terms, SKIP), "imagePullSecrets"),
            (At::Spec, "dnsConfig") => (At::Dns, "dnsConfig"),
            (At::Spec, "affinity") => (At::Affinity, "affinity"),
            (At::Container { ephemeral: true }, "env") => (list(l.env, SKIP), "env"),
            (At::Container { ephemeral: false }, "env") => (pooled(l.env), "env"),
            (At::Container { ephemeral: false }, "envFrom") => {
                (pooled(l.container_lists), "envFrom")
            }
            (At::Container { ephemeral: false }, "ports") => (pooled(l.container_lists), "ports"),
            (At::Container { ephemeral: false }, "volumeMounts") => {
                (pooled(l.container_lists), "volumeMounts")
            }
            (At::Container { ephemeral: false }, "command") => (pooled(l.arguments), "command"),
            (At::Container { ephemeral: false }, "args") => (pooled(l.arguments), "args"),
            (At::HostAlias, "hostnames") => (list(l.terms, SKIP), "hostnames"),
            (At::Dns, "nameservers") => (list(l.terms, SKIP), "nameservers"),
            (At::Dns, "searches") => (list(l.terms, SKIP), "searches"),
            (At::Dns, "options") => (list(l.terms, SKIP), "options"),
            (At::Affinity, "nodeAffinity") => (At::NodeAffinity, "nodeAffinity"),
            (At::Affinity, "podAffinity") => (At::PodAffinity, "podAffinity"),
            (At::Affinity, "podAntiAffinity") => (At::PodAffinity, "podAntiAffinity"),
            (At::NodeAffinity, "requiredDuringSchedulingIgnoredDuringExecution") => (
                At::Selector,
                "requiredDuringSchedulingIgnoredDuringExecution",
            ),
            (At::NodeAffinity, "preferredDuringSchedulingIgnoredDuringExecution") => (
                list(l.terms, &At::Preferred),
                "preferredDuringSchedulingIgnoredDuringExecution",
            ),
            (At::Selector, "nodeSelectorTerms") => (list(l.terms, &At::Term), "nodeSelectorTerms"),
            (At::Term, "matchExpressions") => (list(l.expressions, SKIP), "matchExpressions"),
            (At::Term, "matchFields") => (list(l.expressions, SKIP), "matchFields"),
            (At::Preferred, "preference") => (At::Term, "preference"),
            (At::PodAffinity, "requiredDuringSchedulingIgnoredDuringExecution") => (
                list(l.terms, SKIP),
                "requiredDuringSchedulingIgnoredDuringExecution",
            ),
            (At::PodAffinity, "preferredDuringSchedulingIgnoredDuringExecution") => (
                list(l.terms, SKIP),
                "preferredDuringSchedulingIgnoredDuringExecution",
            ),
            _ => return None,
        };
        Some((at, name))
    }

    /// Inside the pod's spec: what is no longer read once a list is over its limit.
    fn in_spec(self) -> bool {
        !matches!(
            self,
            At::Review
                | At::Request
                | At::Uid
                | At::Kind
                | At::SubResource
                | At::Operation
                | At::Pod
                | At::Meta
                | At::Labels
                | At::Role
        )
    }
}

/// A JSON path from `spec`, built only when a list is refused.
struct Path<'p> {
    parent: Option<&'p Path<'p>>,
    part: Part,
}

#[derive(Clone, Copy)]
enum Part {
    None,
    Key(&'static str),
    Index(usize),
}

impl Path<'_> {
    const ROOT: Path<'static> = Path {
        parent: None,
        part: Part::None,
    };

    fn child(&self, part: Part) -> Path<'_> {
        Path {
            parent: Some(self),
            part,
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if let Some(parent) = self.parent {
            parent.fmt(f)?;
        }
        match self.part {
            Part::None => Ok(()),
            Part::Key(k) if self.parent.is_none() => f.write_str(k),
            Part::Key(k) => write!(f, ".{k}"),
            Part::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// The value at `at`, read into `scan`.
struct Node<'s, 'p> {
    scan: &'s mut Scan,
    at: At,
    path: &'p Path<'p>,
}

/// The error that ends the read once the review is refused (told apart by `Scan::stopped`).
const STOP: &str = "a list is over its limit";

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let scan = self.scan;
        // One list over its limit is enough: the rest of the spec is not counted.
        if scan.over.is_some() && self.at.in_spec() {
            return d.deserialize_ignored_any(IgnoredAny).map(|_| ());
        }
        match self.at {
            At::Skip => d.deserialize_ignored_any(IgnoredAny).map(|_| ()),
            At::Uid => {
                scan.uid = Option::<String>::deserialize(d)?;
                Ok(())
            }
            At::Kind => {
                let kind = Option::<KindScan>::deserialize(d)?;
                scan.pod_v1 =
                    kind.map(|k| k.group.is_empty() && k.version == "v1" && k.kind == "Pod");
                Ok(())
            }
            At::SubResource => {
                scan.sub_resource = Option::<String>::deserialize(d)?.is_some();
                Ok(())
            }
            At::Operation => {
                scan.create = Option::<String>::deserialize(d)?.as_deref() == Some("CREATE");
                Ok(())
            }
            At::Role => {
                scan.role = match Option::<String>::deserialize(d)?.as_deref() {
                    Some("driver") => Some(SparkRole::Driver),
                    Some("executor") => Some(SparkRole::Executor),
                    _ => None,
                };
                Ok(())
            }
            at => d.deserialize_any(Node {
                scan,
                at,
                path: self.path,
            }),
        }
    }
}

/// The object and list positions (the leaves are read in `deserialize` above).
impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.at {
            At::List { .. } => f.write_str("an array or null"),
            _ => f.write_str("an object or null"),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if let At::List { .. } = self.at {
            return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
        }
        while let Some(child) = map.next_key_seed(Key {
            at: self.at,
            limits: &self.scan.limits,
        })? {
            match child {
                Some((at, name)) => {
                    // Paths start at the spec: the lists' names say where they are from there.
                    let path = match at {
                        At::Spec => Path {
                            parent: None,
                            part: Part::Key(name),
                        },
                        _ => self.path.child(Part::Key(name)),
                    };
                    map.next_value_seed(Node {
                        scan: &mut *self.scan,
                        at,
                        path: &path,
                    })?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let At::List {
            limit,
            item,
            pooled,
        } = self.at
        else {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        };
        let mut n = 0;
        while n < limit {
            if pooled {
                self.scan.container_entries += 1;
                if self.scan.container_entries > self.scan.limits.container_entries {
                    let limit = self.scan.limits.container_entries;
                    return self
                        .scan
                        .over_limit(CONTAINER_ENTRIES_FIELD.to_owned(), limit, seq);
                }
            }
            let path = self.path.child(Part::Index(n));
            let node = Node {
                scan: &mut *self.scan,
                at: *item,
                path: &path,
            };
            if seq.next_element_seed(node)?.is_none() {
                return Ok(());
            }
            n += 1;
        }
        // At the limit: one more entry is one too many.
        if seq.next_element::<IgnoredAny>()?.is_none() {
            return Ok(());
        }
        self.scan.over_limit(self.path.to_string(), limit, seq)
    }
}

/// An object's key, matched against the keys read at `at` without being kept.
struct Key<'l> {
    at: At,
    limits: &'l PodLimits,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<(At, &'static str)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Option<(At, &'static str)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.at.child(key, self.limits))
    }
}

#[derive(Deserialize)]
struct KindScan {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    kind: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::review::{self, Review};
    use crate::engine::{Deadline, Engine, EngineError};
    use crate::matching::PolicySet;
    use proptest::prelude::*;
    use serde_json::{json, Value};
    use std::time::{Duration, Instant};

    /// A review with the request's head first and the pod's metadata before its spec, as
    /// the API server writes it, or (`head_first` false) the object first and the pod's
    /// spec before its metadata: the scan then learns what the pod is only at the end.
    fn review_in_order(labels: &Value, spec: &Value, operation: &str, head_first: bool) -> Vec<u8> {
        let kind = json!({"group": "", "version": "v1", "kind": "Pod"});
        let resource = json!({"group": "", "version": "v1", "resource": "pods"});
        let meta = json!({"name": "p", "labels": labels});
        let text = if head_first {
            format!(
                r#"{{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{{"uid":"u","kind":{kind},"resource":{resource},"namespace":"ns","operation":"{operation}","userInfo":{{"username":"t"}},"object":{{"metadata":{meta},"spec":{spec}}}}}}}"#
            )
        } else {
            format!(
                r#"{{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{{"object":{{"spec":{spec},"metadata":{meta}}},"kind":{kind},"namespace":"ns","operation":"{operation}","resource":{resource},"uid":"u","userInfo":{{"username":"t"}}}}}}"#
            )
        };
        text.into_bytes()
    }

    fn review(labels: Value, spec: Value) -> Vec<u8> {
        review_in_order(&labels, &spec, "CREATE", true)
    }

    fn many(n: usize) -> Value {
        json!((0..n)
            .map(|i| json!({"name": format!("c{i}")}))
            .collect::<Vec<_>>())
    }

    #[test]
    fn counts_agree_with_the_engine_limits_and_name_the_field() {
        let l = PodLimits::default();
        let driver = json!({"spark-role": "driver"});
        assert!(too_large(
            &review(driver.clone(), json!({"containers": many(l.containers)})),
            &l
        )
        .is_none());
        let err = too_large(
            &review(
                driver.clone(),
                json!({"containers": many(l.containers + 1)}),
            ),
            &l,
        );
        assert_eq!(err.as_ref().map(|r| r.uid.as_str()), Some("u"));
        assert_eq!(
            err.map(|r| r.error.to_string()),
            Some(format!(
                "spec.containers has more than {} entries, the most spark-admission accepts in a Spark pod; the pod was not admitted (Spark never creates such a pod: check the pod template)",
                l.containers
            ))
        );
        let env = json!({"containers": [{"name": "a"}, {"name": "b", "env": many(l.env + 1)}]});
        assert_eq!(
            too_large(&review(driver.clone(), env), &l).map(|r| r.error.field),
            Some("spec.containers[1].env".to_owned())
        );
        let terms = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": many(l.terms + 1)}}}});
        assert!(too_large(&review(driver, terms.clone()), &l).is_some());
        // Not a Spark pod, or not JSON: left to the full decode.
        assert!(too_large(&review(json!({"app": "x"}), terms.clone()), &l).is_none());
        assert!(too_large(&review(json!({"spark-role": "other"}), terms), &l).is_none());
        assert!(too_large(b"{not json", &l).is_none());
    }

    /// What makes a refused review cost its first entries only: once the head and the label
    /// are known, nothing after the entry past the limit is read (here: not even JSON).
    /// Without them the rest must be read, and a body that breaks off is the full decode's.
    #[test]
    fn the_read_stops_one_entry_past_the_limit_once_the_pod_is_known() {
        let l = PodLimits::default();
        let driver = json!({"spark-role": "driver"});
        let spec = json!({"containers": many(l.containers + 1)});
        let cut = |body: Vec<u8>| {
            let text = String::from_utf8_lossy(&body).into_owned();
            // Cut the body just after the first entry past the limit.
            let at = text
                .find(&format!(r#"{{"name":"c{}"}}"#, l.containers))
                .map(|i| i + format!(r#"{{"name":"c{}"}}"#, l.containers).len())
                .unwrap_or(text.len());
            format!("{},{{\"name\": broken", &text[..at]).into_bytes()
        };
        let head_first = cut(review_in_order(&driver, &spec, "CREATE", true));
        let refused = too_large(&head_first, &l);
        assert_eq!(
            refused.map(|r| (r.uid, r.role, r.error)),
            Some((
                "u".to_owned(),
                SparkRole::Driver,
                OverLimit {
                    field: "spec.containers".to_owned(),
                    limit: l.containers
                }
            ))
        );
        let object_first = cut(review_in_order(&driver, &spec, "CREATE", false));
        assert!(too_large(&object_first, &l).is_none());
        // Whole, the object-first body is refused all the same, at its end.
        let whole = review_in_order(&driver, &spec, "CREATE", false);
        assert_eq!(
            too_large(&whole, &l).map(|r| r.error.field),
            Some("spec.containers".to_owned())
        );
    }

    /// Small limits, so that bodies around them stay small.
    const LIMITS: PodLimits = PodLimits {
        containers: 3,
        volumes: 4,
        tolerations: 2,
        terms: 3,
        expressions: 2,
        env: 5,
        container_lists: 2,
        arguments: 3,
        // The pod's total is tested on its own: here it never decides.
        container_entries: usize::MAX,
    };

    /// A list's length relative to its limit.
    #[derive(Debug, Clone, Copy)]
    enum Len {
        Absent,
        Below,
        At,
        Over,
        FarOver,
    }

    impl Len {
        fn of(self, limit: usize) -> Option<usize> {
            match self {
                Len::Absent => None,
                Len::Below => Some(limit - 1),
                Len::At => Some(limit),
                Len::Over => Some(limit + 1),
                Len::FarOver => Some(3 * limit + 2),
            }
        }
    }

    fn len() -> impl Strategy<Value = Len> {
        prop_oneof![
            15 => Just(Len::Absent),
            15 => Just(Len::Below),
            1 => Just(Len::At),
            1 => Just(Len::Over),
            1 => Just(Len::FarOver),
        ]
    }

    /// Every list `engine::bounds` counts, plus those it does not (an ephemeral container's
    /// ports, command and args): a list of `n` items made by `item`, nested lists on the
    /// last item of theirs.
    const LISTS: usize = 37;

    /// The spec with these lengths, and the (path, limit) of every list above its limit.
    fn spec_with(lens: &[Len]) -> (Value, Vec<(String, usize)>) {
        let l = LIMITS;
        let mut over = Vec::new();
        let mut it = lens.iter().copied();
        let mut list = |path: &str, limit: usize, counted: bool, item: &dyn Fn(usize) -> Value| {
            let n = it.next().unwrap_or(Len::Absent).of(limit)?;
            if counted && n > limit {
                over.push((path.to_owned(), limit));
            }
            Some((n, json!((0..n).map(item).collect::<Vec<_>>())))
        };
        let named = |p: &'static str| move |i: usize| json!({"name": format!("{p}{i}")});
        let mut spec = json!({});
        // Containers: at least the Spark container; nested lists on the last one.
        for kind in ["containers", "initContainers", "ephemeralContainers"] {
            let ephemeral = kind == "ephemeralContainers";
            let Some((n, mut containers)) =
                list(&format!("spec.{kind}"), l.containers, true, &named("c"))
            else {
                continue;
            };
            if n == 0 {
                continue;
            }
            let last = &mut containers[n - 1];
            let at = |field: &str| format!("spec.{kind}[{}].{field}", n - 1);
            if let Some((_, env)) = list(
                &at("env"),
                l.env,
                true,
                &|i| json!({"name": format!("E{i}"), "value": "v"}),
            ) {
                last["env"] = env;
            }
            if let Some((_, ports)) = list(
                &at("ports"),
                l.container_lists,
                !ephemeral,
                &|i| json!({"containerPort": 1000 + i}),
            ) {
                last["ports"] = ports;
            }
            for field in ["command", "args"] {
                if let Some((_, v)) = list(&at(field), l.arguments, !ephemeral, &|i| {
                    json!(format!("a{i}"))
                }) {
                    last[field] = v;
                }
            }
            if !ephemeral {
                if let Some((_, v)) = list(
                    &at("envFrom"),
                    l.container_lists,
                    true,
                    &|i| json!({"configMapRef": {"name": format!("m{i}")}}),
                ) {
                    last["envFrom"] = v;
                }
                if let Some((_, v)) = list(
                    &at("volumeMounts"),
                    l.container_lists,
                    true,
                    &|i| json!({"name": "v", "mountPath": format!("/m{i}")}),
                ) {
                    last["volumeMounts"] = v;
                }
            }
            spec[kind] = containers;
        }
        if !spec["containers"].is_array() {
            spec["containers"] = json!([{"name": "spark-kubernetes-driver"}]);
        }
        if let Some((_, v)) = list(
            "spec.volumes",
            l.volumes,
            true,
            &|i| json!({"name": format!("v{i}"), "emptyDir": {}}),
        ) {
            spec["volumes"] = v;
        }
        if let Some((_, v)) = list(
            "spec.tolerations",
            l.tolerations,
            true,
            &|i| json!({"key": format!("k{i}"), "operator": "Exists"}),
        ) {
            spec["tolerations"] = v;
        }
        if let Some((_, v)) = list(
            "spec.topologySpreadConstraints",
            l.terms,
            true,
            &|i| json!({"maxSkew": 1, "topologyKey": format!("z{i}"), "whenUnsatisfiable": "DoNotSchedule"}),
        ) {
            spec["topologySpreadConstraints"] = v;
        }
        if let Some((n, mut v)) = list(
            "spec.hostAliases",
            l.terms,
            true,
            &|i| json!({"ip": format!("10.0.0.{i}")}),
        ) {
            if let Some((_, h)) = list(
                &format!("spec.hostAliases[{}].hostnames", n.max(1) - 1),
                l.terms,
                n > 0,
                &|i| json!(format!("h{i}")),
            ) {
                if n > 0 {
                    v[n - 1]["hostnames"] = h;
                }
            }
            spec["hostAliases"] = v;
        }
        if let Some((_, v)) = list("spec.imagePullSecrets", l.terms, true, &named("s")) {
            spec["imagePullSecrets"] = v;
        }
        for (field, item) in [
            (
                "nameservers",
                &(|i: usize| json!(format!("10.1.0.{i}"))) as &dyn Fn(usize) -> Value,
            ),
            ("searches", &|i: usize| json!(format!("s{i}.example"))),
            ("options", &|i: usize| json!({"name": format!("o{i}")})),
        ] {
            if let Some((_, v)) = list(&format!("spec.dnsConfig.{field}"), l.terms, true, item) {
                spec["dnsConfig"][field] = v;
            }
        }
        let expr = |i: usize| json!({"key": "k", "operator": "In", "values": [format!("v{i}")]});
        let field = |i: usize| json!({"key": "metadata.name", "operator": "In", "values": [format!("n{i}")]});
        const REQUIRED: &str = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms";
        if let Some((n, mut terms)) = list(
            REQUIRED,
            l.terms,
            true,
            &|i| json!({"matchExpressions": [expr(i)]}),
        ) {
            let last = format!("{REQUIRED}[{}]", n.max(1) - 1);
            for (key, item) in [
                ("matchExpressions", &expr as &dyn Fn(usize) -> Value),
                ("matchFields", &field),
            ] {
                if let Some((_, v)) = list(&format!("{last}.{key}"), l.expressions, n > 0, item) {
                    if n > 0 {
                        terms[n - 1][key] = v;
                    }
                }
            }
            spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"] = terms;
        }
        const PREFERRED: &str =
            "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution";
        if let Some((n, mut prefs)) = list(
            PREFERRED,
            l.terms,
            true,
            &|i| json!({"weight": 1 + i, "preference": {}}),
        ) {
            if let Some((_, v)) = list(
                &format!("{PREFERRED}[{}].preference.matchExpressions", n.max(1) - 1),
                l.expressions,
                n > 0,
                &expr,
            ) {
                if n > 0 {
                    prefs[n - 1]["preference"]["matchExpressions"] = v;
                }
            }
            spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] =
                prefs;
        }
        for kind in ["podAffinity", "podAntiAffinity"] {
            let required =
                format!("spec.affinity.{kind}.requiredDuringSchedulingIgnoredDuringExecution");
            if let Some((_, v)) = list(
                &required,
                l.terms,
                true,
                &|i| json!({"topologyKey": format!("z{i}")}),
            ) {
                spec["affinity"][kind]["requiredDuringSchedulingIgnoredDuringExecution"] = v;
            }
            let preferred =
                format!("spec.affinity.{kind}.preferredDuringSchedulingIgnoredDuringExecution");
            if let Some((_, v)) = list(
                &preferred,
                l.terms,
                true,
                &|i| json!({"weight": 1, "podAffinityTerm": {"topologyKey": format!("z{i}")}}),
            ) {
                spec["affinity"][kind]["preferredDuringSchedulingIgnoredDuringExecution"] = v;
            }
        }
        (spec, over)
    }

    /// The full path's answer for a pod: decoded, then the engine's own count
    /// (`Some(field, limit)`: refused as too large).
    fn engine_refusal(body: &[u8]) -> Option<(String, usize)> {
        let Ok(Review::PodCreate(create)) = review::decode(body) else {
            return None;
        };
        let engine = Engine {
            limits: LIMITS,
            ..Engine::default()
        };
        let deadline = Deadline::at(Instant::now() + Duration::from_secs(60));
        match engine.validate_within(&PolicySet::new(Vec::new()), &create.pod, "ns", deadline) {
            Err(EngineError::TooLarge(e)) => Some((e.field, e.limit)),
            _ => None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Lists at limit-1, limit, limit+1 and far above, in the API server's key order or
        /// the reverse: the scan refuses exactly the Spark pod creations the full decode and
        /// the engine refuse, naming a list that is over its limit; others it leaves alone.
        #[test]
        fn the_scan_refuses_what_the_full_decode_refuses(
            lens in prop::collection::vec(len(), LISTS),
            role in prop_oneof![Just(Some("driver")), Just(Some("executor")), Just(Some("other")), Just(None)],
            create in any::<bool>(),
            head_first in any::<bool>(),
        ) {
            let (spec, over) = spec_with(&lens);
            let labels = match role {
                Some(r) => json!({"spark-role": r, "app": "a"}),
                None => json!({"app": "a"}),
            };
            let operation = if create { "CREATE" } else { "UPDATE" };
            let body = review_in_order(&labels, &spec, operation, head_first);
            let scanned = too_large(&body, &LIMITS);
            let spark = matches!(role, Some("driver" | "executor"));
            prop_assert_eq!(scanned.is_some(), spark && create && !over.is_empty());
            if let Some(r) = &scanned {
                prop_assert_eq!(r.uid.as_str(), "u");
                prop_assert!(over.contains(&(r.error.field.clone(), r.error.limit)), "{:?} not in {:?}", r.error, over);
            }
            if create {
                let full = engine_refusal(&body);
                prop_assert_eq!(full.is_some(), scanned.is_some(), "engine {:?}, scan {:?}", full, scanned.map(|r| r.error));
                if let Some(f) = full {
                    prop_assert!(over.contains(&f), "{:?} not in {:?}", f, over);
                }
            }
        }
    }

    /// A Spark pod with every list one below its limit, in either key order, is not the
    /// scan's: the full decode plans it as it would any other.
    #[test]
    fn a_pod_below_every_limit_is_left_to_the_full_decode() {
        let (spec, over) = spec_with(&[Len::Below; LISTS]);
        assert!(over.is_empty(), "{over:?}");
        for role in ["driver", "executor"] {
            for head_first in [true, false] {
                let body =
                    review_in_order(&json!({"spark-role": role}), &spec, "CREATE", head_first);
                assert!(too_large(&body, &LIMITS).is_none());
                assert_eq!(engine_refusal(&body), None);
                assert!(matches!(review::decode(&body), Ok(Review::PodCreate(_))));
            }
        }
        // At every limit too; one more entry in any one list is refused by both.
        let (spec, over) = spec_with(&[Len::At; LISTS]);
        assert!(over.is_empty(), "{over:?}");
        let body = review_in_order(&json!({"spark-role": "driver"}), &spec, "CREATE", true);
        assert!(too_large(&body, &LIMITS).is_none());
        assert_eq!(engine_refusal(&body), None);
        for i in 0..LISTS {
            let mut lens = [Len::At; LISTS];
            lens[i] = Len::Over;
            let (spec, over) = spec_with(&lens);
            let body = review_in_order(&json!({"spark-role": "driver"}), &spec, "CREATE", true);
            let scanned = too_large(&body, &LIMITS).map(|r| (r.error.field, r.error.limit));
            assert_eq!(scanned, over.first().cloned(), "list {i}");
            assert_eq!(engine_refusal(&body), over.first().cloned(), "list {i}");
        }
    }
}
