//! Expected against actual: each difference as a [`Mismatch`] with a readable path
//! (`.spec.containers[name=spark-kubernetes-driver].env[name=TZ].value`).
//!
//! Two ways to compare pods. *Subset* (a partial pod): every field given must be equal,
//! `null` means absent; lists of named items are matched by key (see [`list_key`]), other
//! lists item by item in any order; the pod may have more. *Exact* (a full pod, a patch):
//! both sides must be equal, and differences are reported field by field.

use serde::Serialize;
use serde_json::Value;

/// One expectation that does not hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mismatch {
    /// The expectation: `result`, `refusedBy`, `audited`, `warnings`, `applied`, `pod`, `fullPod`, `patch`.
    pub field: &'static str,
    /// Where inside it; empty for the expectation as a whole.
    pub path: String,
    /// `None`: absent (or, for warnings, nothing expected).
    pub expected: Option<Value>,
    pub actual: Option<Value>,
    /// What the values alone do not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Mismatch {
    pub fn new(field: &'static str, expected: Option<Value>, actual: Option<Value>) -> Self {
        Self {
            field,
            path: String::new(),
            expected,
            actual,
            note: None,
        }
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// The key that identifies items of a list, from the list's field name and the item:
/// `volumeMounts` by `mountPath`, `volumeDevices` by `devicePath`, anything with a string
/// `name` (containers, env, volumes, imagePullSecrets, ports, …) by name.
pub fn list_key(field: Option<&str>, item: &Value) -> Option<&'static str> {
    let key = match field {
        Some("volumeMounts") => "mountPath",
        Some("volumeDevices") => "devicePath",
        _ => "name",
    };
    item.get(key).and_then(Value::as_str).map(|_| key)
}

fn key_of<'v>(field: Option<&str>, item: &'v Value) -> Option<(&'static str, &'v str)> {
    let key = list_key(field, item)?;
    Some((key, item.get(key)?.as_str()?))
}

/// `.a.b`, or `["a.b/c"]` for keys that would not read as one segment.
fn push_key(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        format!("{path}.{key}")
    } else {
        format!("{path}[{key:?}]")
    }
}

/// Partial pod against the pod: mismatches for every field given that does not hold.
pub fn subset(field: &'static str, expected: &Value, actual: &Value) -> Vec<Mismatch> {
    let mut out = Vec::new();
    subset_at(field, "", None, expected, Some(actual), &mut out);
    out
}

fn subset_at(
    field: &'static str,
    path: &str,
    name: Option<&str>,
    expected: &Value,
    actual: Option<&Value>,
    out: &mut Vec<Mismatch>,
) {
    let mismatch = |out: &mut Vec<Mismatch>, note: Option<&str>| {
        out.push(Mismatch {
            field,
            path: path.to_owned(),
            expected: (!expected.is_null()).then(|| expected.clone()),
            actual: actual.filter(|a| !a.is_null()).cloned(),
            note: note.map(str::to_owned),
        })
    };
    match (expected, actual) {
        (Value::Null, None | Some(Value::Null)) => {}
        (Value::Null, Some(_)) => mismatch(out, Some("expected absent")),
        (_, None) => mismatch(out, None),
        (Value::Object(exp), Some(Value::Object(act))) => {
            for (k, v) in exp {
                subset_at(field, &push_key(path, k), Some(k), v, act.get(k), out);
            }
        }
        (Value::Array(exp), Some(Value::Array(act))) => {
            subset_list(field, path, name, exp, act, out)
        }
        (_, Some(a)) if loosely_equal(expected, a) => {}
        _ => mismatch(out, None),
    }
}

fn subset_list(
    field: &'static str,
    path: &str,
    name: Option<&str>,
    expected: &[Value],
    actual: &[Value],
    out: &mut Vec<Mismatch>,
) {
    let mut used = vec![false; actual.len()];
    for item in expected {
        if let Some((key, value)) = key_of(name, item) {
            let found = actual
                .iter()
                .position(|a| a.get(key).and_then(Value::as_str) == Some(value));
            if let Some(i) = found {
                used[i] = true;
            }
            let item_path = format!("{path}[{key}={value}]");
            subset_at(
                field,
                &item_path,
                name,
                item,
                found.map(|i| &actual[i]),
                out,
            );
            continue;
        }
        let found = actual.iter().enumerate().position(|(i, a)| {
            let mut scratch = Vec::new();
            !used[i] && {
                subset_at(field, "", name, item, Some(a), &mut scratch);
                scratch.is_empty()
            }
        });
        match found {
            Some(i) => used[i] = true,
            None => out.push(Mismatch {
                field,
                path: format!("{path}[]"),
                expected: Some(item.clone()),
                actual: Some(Value::Array(actual.to_vec())),
                note: Some("no item of the list matches".to_owned()),
            }),
        }
    }
}

/// YAML authors write `cpu: 2` where the pod has `"2"`: a number or boolean and a string
/// with the same text are equal in a partial pod.
fn loosely_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(s), Value::Number(_) | Value::Bool(_))
        | (Value::Number(_) | Value::Bool(_), Value::String(s)) => {
            let other = if a.is_string() { b } else { a };
            s.as_str() == other.to_string().as_str()
        }
        _ => a == b,
    }
}

/// Whole values, exactly. Named lists are compared by key (and then by order), so one env
/// var too many reads as that var, not as every later index shifted.
pub fn exact(field: &'static str, expected: &Value, actual: &Value) -> Vec<Mismatch> {
    let mut out = Vec::new();
    exact_at(field, "", None, Some(expected), Some(actual), &mut out);
    out
}

fn exact_at(
    field: &'static str,
    path: &str,
    name: Option<&str>,
    expected: Option<&Value>,
    actual: Option<&Value>,
    out: &mut Vec<Mismatch>,
) {
    if expected == actual {
        return;
    }
    match (expected, actual) {
        (Some(Value::Object(exp)), Some(Value::Object(act))) => {
            let keys: std::collections::BTreeSet<&String> = exp.keys().chain(act.keys()).collect();
            for k in keys {
                exact_at(
                    field,
                    &push_key(path, k),
                    Some(k),
                    exp.get(k),
                    act.get(k),
                    out,
                );
            }
        }
        (Some(Value::Array(exp)), Some(Value::Array(act))) => {
            exact_list(field, path, name, exp, act, out)
        }
        _ => out.push(Mismatch {
            field,
            path: path.to_owned(),
            expected: expected.cloned(),
            actual: actual.cloned(),
            note: None,
        }),
    }
}

fn exact_list(
    field: &'static str,
    path: &str,
    name: Option<&str>,
    expected: &[Value],
    actual: &[Value],
    out: &mut Vec<Mismatch>,
) {
    // Keyed only when every item has a key and no key repeats; else by index.
    let keys = |items: &[Value]| -> Option<Vec<(&'static str, String)>> {
        let keys: Vec<(&'static str, String)> = items
            .iter()
            .map(|i| key_of(name, i).map(|(k, v)| (k, v.to_owned())))
            .collect::<Option<_>>()?;
        let unique: std::collections::BTreeSet<_> = keys.iter().collect();
        (unique.len() == keys.len()).then_some(keys)
    };
    let (Some(exp_keys), Some(act_keys)) = (keys(expected), keys(actual)) else {
        for i in 0..expected.len().max(actual.len()) {
            exact_at(
                field,
                &format!("{path}[{i}]"),
                name,
                expected.get(i),
                actual.get(i),
                out,
            );
        }
        return;
    };
    let before = out.len();
    let find = |keys: &[(&'static str, String)], k: &(&'static str, String)| {
        keys.iter().position(|x| x == k)
    };
    for (i, k) in exp_keys.iter().enumerate() {
        let other = find(&act_keys, k).map(|j| &actual[j]);
        let item_path = format!("{path}[{}={}]", k.0, k.1);
        exact_at(field, &item_path, name, Some(&expected[i]), other, out);
    }
    for (j, k) in act_keys.iter().enumerate() {
        if find(&exp_keys, k).is_none() {
            let item_path = format!("{path}[{}={}]", k.0, k.1);
            exact_at(field, &item_path, name, None, Some(&actual[j]), out);
        }
    }
    if out.len() == before {
        // Same items, another order: order matters (env references, container start).
        let order = |keys: &[(&'static str, String)]| {
            Value::Array(keys.iter().map(|k| Value::String(k.1.clone())).collect())
        };
        out.push(Mismatch {
            field,
            path: path.to_owned(),
            expected: Some(order(&exp_keys)),
            actual: Some(order(&act_keys)),
            note: Some("same items in another order".to_owned()),
        });
    }
}

/// Of `expected` and `actual` lists matched one to one by `matches`: the indices left
/// unmatched on each side. Exact expectations are placed first so that a `contains` does
/// not take the item an exact one needs.
pub fn match_up<E, A>(
    expected: &[E],
    actual: &[A],
    matches: impl Fn(&E, &A) -> bool,
    exact_first: impl Fn(&E) -> bool,
) -> (Vec<usize>, Vec<usize>) {
    let mut used = vec![false; actual.len()];
    let mut missing = Vec::new();
    let order: Vec<usize> = (0..expected.len())
        .filter(|&i| exact_first(&expected[i]))
        .chain((0..expected.len()).filter(|&i| !exact_first(&expected[i])))
        .collect();
    for i in order {
        match (0..actual.len()).find(|&j| !used[j] && matches(&expected[i], &actual[j])) {
            Some(j) => used[j] = true,
            None => missing.push(i),
        }
    }
    missing.sort_unstable();
    let extra = (0..actual.len()).filter(|&j| !used[j]).collect();
    (missing, extra)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(m: &[Mismatch]) -> Vec<&str> {
        m.iter().map(|m| m.path.as_str()).collect()
    }

    #[test]
    fn a_partial_pod_matches_when_every_field_given_is_equal_and_ignores_the_rest() {
        let pod = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
            "spec": {"containers": [{"name": "side", "image": "x"},
                                    {"name": "spark", "env": [{"name": "A", "value": "1"}, {"name": "TZ", "value": "UTC"}]}]}});
        let partial = json!({"metadata": {"labels": {"b": "2"}},
            "spec": {"containers": [{"name": "spark", "env": [{"name": "TZ", "value": "UTC"}]}]}});
        assert_eq!(subset("pod", &partial, &pod), vec![]);
    }

    #[test]
    fn named_items_are_found_by_name_and_differences_name_the_item() {
        let pod = json!({"spec": {"containers": [{"name": "side"}, {"name": "spark", "env": [{"name": "TZ", "value": "UTC"}]}]}});
        let partial = json!({"spec": {"containers": [{"name": "spark", "env": [{"name": "TZ", "value": "CET"}, {"name": "X", "value": "1"}]}]}});
        let m = subset("pod", &partial, &pod);
        assert_eq!(
            paths(&m),
            [
                ".spec.containers[name=spark].env[name=TZ].value",
                ".spec.containers[name=spark].env[name=X]"
            ]
        );
        assert_eq!(m[0].expected, Some(json!("CET")));
        assert_eq!(m[0].actual, Some(json!("UTC")));
        assert_eq!(m[1].actual, None, "absent");
    }

    #[test]
    fn volume_mounts_are_matched_by_mount_path() {
        let pod = json!({"volumeMounts": [{"name": "v", "mountPath": "/a"}, {"name": "v", "mountPath": "/b", "readOnly": true}]});
        assert_eq!(
            subset(
                "pod",
                &json!({"volumeMounts": [{"mountPath": "/b", "readOnly": true}]}),
                &pod
            ),
            vec![]
        );
        let m = subset(
            "pod",
            &json!({"volumeMounts": [{"mountPath": "/b", "readOnly": false}]}),
            &pod,
        );
        assert_eq!(paths(&m), [".volumeMounts[mountPath=/b].readOnly"]);
    }

    #[test]
    fn unnamed_items_match_any_item_once_in_any_order() {
        let pod = json!({"tolerations": [{"key": "a", "effect": "NoExecute"}, {"key": "b", "operator": "Exists"}]});
        assert_eq!(
            subset(
                "pod",
                &json!({"tolerations": [{"key": "b"}, {"key": "a"}]}),
                &pod
            ),
            vec![]
        );
        let m = subset(
            "pod",
            &json!({"tolerations": [{"key": "a"}, {"key": "a"}]}),
            &pod,
        );
        assert_eq!(
            paths(&m),
            [".tolerations[]"],
            "one actual item cannot match twice"
        );
        assert_eq!(m[0].note.as_deref(), Some("no item of the list matches"));
    }

    #[test]
    fn null_means_absent_and_numbers_equal_strings_of_the_same_text() {
        let pod = json!({"spec": {"priority": 0, "resources": {"limits": {"cpu": "2"}}}});
        assert_eq!(
            subset(
                "pod",
                &json!({"spec": {"resources": {"limits": {"cpu": 2}}, "x": null}}),
                &pod
            ),
            vec![]
        );
        let m = subset("pod", &json!({"spec": {"priority": null}}), &pod);
        assert_eq!(paths(&m), [".spec.priority"]);
        assert_eq!(m[0].note.as_deref(), Some("expected absent"));
    }

    #[test]
    fn keys_with_dots_or_slashes_are_quoted_in_paths() {
        let m = subset(
            "pod",
            &json!({"metadata": {"annotations": {"a.io/b": "x"}}}),
            &json!({"metadata": {"annotations": {}}}),
        );
        assert_eq!(paths(&m), [".metadata.annotations[\"a.io/b\"]"]);
    }

    #[test]
    fn exact_comparison_reports_extra_and_missing_fields_and_named_items() {
        let exp = json!({"a": 1, "env": [{"name": "A"}, {"name": "B"}], "args": ["x", "y"]});
        let act =
            json!({"a": 1, "b": 2, "env": [{"name": "B"}, {"name": "C"}], "args": ["x", "z"]});
        let m = exact("fullPod", &exp, &act);
        assert_eq!(
            paths(&m),
            [".args[1]", ".b", ".env[name=A]", ".env[name=C]"]
        );
        assert_eq!(
            (m[1].expected.clone(), m[1].actual.clone()),
            (None, Some(json!(2)))
        );
    }

    #[test]
    fn exact_comparison_of_repeated_names_goes_by_index() {
        let m = exact(
            "fullPod",
            &json!({"env": [{"name": "A"}]}),
            &json!({"env": [{"name": "A"}, {"name": "A"}]}),
        );
        assert_eq!(paths(&m), [".env[1]"]);
        assert_eq!(
            (m[0].expected.clone(), m[0].actual.clone()),
            (None, Some(json!({"name": "A"})))
        );
    }

    #[test]
    fn exact_comparison_reports_a_changed_order_of_named_items() {
        let m = exact(
            "fullPod",
            &json!({"env": [{"name": "A"}, {"name": "B"}]}),
            &json!({"env": [{"name": "B"}, {"name": "A"}]}),
        );
        assert_eq!(paths(&m), [".env"]);
        assert_eq!(m[0].note.as_deref(), Some("same items in another order"));
    }

    #[test]
    fn match_up_gives_exact_expectations_first_pick() {
        #[derive(Debug)]
        enum E {
            Exact(&'static str),
            Contains(&'static str),
        }
        let expected = [E::Contains("volume"), E::Exact("volume x exists")];
        let actual = ["volume x exists", "volume y exists"];
        let (missing, extra) = match_up(
            &expected,
            &actual,
            |e, a| match e {
                E::Exact(s) => s == a,
                E::Contains(s) => a.contains(s),
            },
            |e| matches!(e, E::Exact(_)),
        );
        assert_eq!((missing, extra), (vec![], vec![]));
    }
}
