//! `--update`: the current answers written as the new expectations, golden style, keeping
//! the shape of each case (a partial pod stays partial, over the same fields) so that a
//! human reviews a small `git diff`.

use std::path::Path;

use serde_json::{Map, Value};

use super::compare::{list_key, match_up};
use super::load::parse_test_file;
use super::model::{Expect, TestFile, Verdict, WarningExpectation};
use super::run::{policy_name, Actual};
use crate::engine::APPLIED_ANNOTATION;

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("{file}: cannot write the updated expectations as YAML: {message}")]
    Serialize { file: String, message: String },
    #[error("{file}: the updated file would not read back as written (not saved): {message}")]
    RoundTrip { file: String, message: String },
    #[error("{file}: cannot write: {source}")]
    Write {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

/// The expectations of a case, rewritten from the actual answer.
pub fn updated(expect: &Expect, actual: &Actual) -> Expect {
    if expect.is_empty() {
        // A new case: the verdict, what the submitter sees, and the fields the patch touched.
        return Expect {
            result: Some(actual.result),
            refused_by: (actual.result == Verdict::Refused).then(|| actual.refused_by.clone()),
            audited: (!actual.audited.is_empty()).then(|| actual.audited.clone()),
            warnings: Some(
                actual
                    .warnings
                    .iter()
                    .cloned()
                    .map(WarningExpectation::Exact)
                    .collect(),
            ),
            applied: Some(
                actual
                    .applied
                    .iter()
                    .map(|t| policy_name(t).to_owned())
                    .collect(),
            ),
            pod: changed_fields(&actual.patch, &actual.pod),
            ..Expect::default()
        };
    }
    Expect {
        result: expect.result.map(|_| actual.result),
        refused_by: expect
            .refused_by
            .as_ref()
            .map(|_| actual.refused_by.clone()),
        audited: expect.audited.as_ref().map(|_| actual.audited.clone()),
        warnings: expect
            .warnings
            .as_ref()
            .map(|w| updated_warnings(w, &actual.warnings)),
        applied: expect.applied.as_ref().map(|a| {
            let pinned = a.iter().any(|e| e.contains('@'));
            actual
                .applied
                .iter()
                .map(|t| {
                    if pinned {
                        t.clone()
                    } else {
                        policy_name(t).to_owned()
                    }
                })
                .collect()
        }),
        pod: expect.pod.as_ref().map(|p| refresh(None, p, &actual.pod)),
        full_pod: expect.full_pod.as_ref().map(|_| actual.pod.clone()),
        patch: expect.patch.as_ref().map(|_| actual.patch.clone()),
    }
}

/// Expectations that still match are kept as written (a `contains` stays one); the
/// warnings left over are added whole.
fn updated_warnings(old: &[WarningExpectation], actual: &[String]) -> Vec<WarningExpectation> {
    let (missing, extra) = match_up(
        old,
        actual,
        |e, a| e.matches(a),
        |e| matches!(e, WarningExpectation::Exact(_)),
    );
    old.iter()
        .enumerate()
        .filter(|(i, _)| !missing.contains(i))
        .map(|(_, e)| e.clone())
        .chain(
            extra
                .into_iter()
                .map(|j| WarningExpectation::Exact(actual[j].clone())),
        )
        .collect()
}

/// The same fields as `old`, with the pod's current values: a field now absent becomes
/// `null` (asserting its absence), a named item now absent is dropped.
fn refresh(name: Option<&str>, old: &Value, actual: &Value) -> Value {
    match (old, actual) {
        (Value::Object(o), Value::Object(a)) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let new = match a.get(k) {
                        Some(av) => refresh(Some(k), v, av),
                        None => Value::Null,
                    };
                    (k.clone(), new)
                })
                .collect(),
        ),
        (Value::Array(o), Value::Array(a)) => Value::Array(
            o.iter()
                .filter_map(|item| match list_key(name, item) {
                    Some(key) => a
                        .iter()
                        .find(|x| x.get(key) == item.get(key))
                        .map(|x| refresh(name, item, x)),
                    // Unnamed items cannot be told apart once changed: keep those that still
                    // match, the others go (the review of the diff shows which).
                    None => a
                        .iter()
                        .find(|x| super::compare::subset("pod", item, x).is_empty())
                        .map(|_| item.clone()),
                })
                .collect(),
        ),
        _ => actual.clone(),
    }
}

/// A partial pod of every field the patch added, replaced or removed (`null`), with the
/// keys that identify list items. The applied annotation is left to `applied`, which does
/// not change with every edit of a policy.
pub fn changed_fields(patch: &Value, pod: &Value) -> Option<Value> {
    let mut partial = Value::Object(Map::new());
    for op in patch.as_array().into_iter().flatten() {
        let Some(path) = op.get("path").and_then(Value::as_str) else {
            continue;
        };
        let tokens: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        let piece = match op.get("op").and_then(Value::as_str) {
            Some("remove") => absent(&tokens),
            _ => project(None, pod, &tokens),
        };
        if let Some(piece) = piece {
            merge(None, &mut partial, piece);
        }
    }
    if let Some(annotations) = partial
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(APPLIED_ANNOTATION);
        if annotations.is_empty() {
            if let Some(meta) = partial
                .pointer_mut("/metadata")
                .and_then(Value::as_object_mut)
            {
                meta.remove("annotations");
                if meta.is_empty() {
                    partial.as_object_mut().map(|p| p.remove("metadata"));
                }
            }
        }
    }
    partial
        .as_object()
        .is_some_and(|p| !p.is_empty())
        .then_some(partial)
}

/// The value at `tokens` in `actual`, wrapped in its parents; list items keep their key.
fn project(name: Option<&str>, actual: &Value, tokens: &[String]) -> Option<Value> {
    let Some((first, rest)) = tokens.split_first() else {
        return Some(actual.clone());
    };
    match actual {
        Value::Object(m) => {
            let inner = project(Some(first), m.get(first)?, rest)?;
            Some(Value::Object(Map::from_iter([(first.clone(), inner)])))
        }
        Value::Array(items) => {
            let idx = if first == "-" {
                items.len().checked_sub(1)?
            } else {
                first.parse().ok()?
            };
            let item = items.get(idx)?;
            let mut inner = project(name, item, rest)?;
            if let (Some(key), Some(obj)) = (list_key(name, item), inner.as_object_mut()) {
                if let Some(k) = item.get(key) {
                    obj.insert(key.to_owned(), k.clone());
                }
            }
            Some(Value::Array(vec![inner]))
        }
        _ => None,
    }
}

/// A removed field as `null` in its parents; removals from lists are not expressible.
fn absent(tokens: &[String]) -> Option<Value> {
    let (last, parents) = tokens.split_last()?;
    if last.parse::<usize>().is_ok() || last == "-" {
        return None;
    }
    let mut v = Value::Object(Map::from_iter([(last.clone(), Value::Null)]));
    for t in parents.iter().rev() {
        if t.parse::<usize>().is_ok() {
            return None;
        }
        v = Value::Object(Map::from_iter([(t.clone(), v)]));
    }
    Some(v)
}

/// Merges two partial pods: objects key by key, list items by key (else by equality).
fn merge(name: Option<&str>, into: &mut Value, piece: Value) {
    match (into, piece) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => merge(Some(&k), existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for item in b {
                let same = list_key(name, &item).and_then(|key| {
                    a.iter()
                        .position(|x| x.get(key).is_some() && x.get(key) == item.get(key))
                });
                if let Some(existing) = same.and_then(|i| a.get_mut(i)) {
                    merge(name, existing, item);
                } else if !a.contains(&item) {
                    a.push(item);
                }
            }
        }
        (slot, piece) => *slot = piece,
    }
}

/// Writes the file with new expectations when they changed. Comments before the first
/// line of YAML (a header, a `yaml-language-server` schema line) are kept; comments inside
/// the document are not (use `description`). Returns whether the file was written.
pub fn write(path: &Path, original_text: &str, file: &TestFile) -> Result<bool, UpdateError> {
    let name = || path.display().to_string();
    let body = serde_saphyr::to_string(file).map_err(|e| UpdateError::Serialize {
        file: name(),
        message: e.to_string(),
    })?;
    // Read back the way `policy-test` will read the file next time (YAML, schema, model).
    let back = parse_test_file(path, &body).map_err(|errors| UpdateError::RoundTrip {
        file: name(),
        message: errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    })?;
    if back != *file {
        return Err(UpdateError::RoundTrip {
            file: name(),
            message: "a value changed when read back".to_owned(),
        });
    }
    let header: String = original_text
        .lines()
        .take_while(|l| l.trim_start().starts_with('#') || l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let text = format!("{header}{body}");
    if text == original_text {
        return Ok(false);
    }
    std::fs::write(path, text).map_err(|source| UpdateError::Write {
        file: name(),
        source,
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_fields_follow_the_patch_and_keep_the_keys_of_list_items() {
        let pod = json!({
            "metadata": {"labels": {"spark-role": "driver", "team": "a"},
                         "annotations": {APPLIED_ANNOTATION: "p@1"}},
            "spec": {"containers": [{"name": "side"}, {"name": "spark", "image": "i",
                     "env": [{"name": "A", "value": "1"}, {"name": "TZ", "value": "UTC"}]}]}
        });
        let patch = json!([
            {"op": "add", "path": "/metadata/labels/team", "value": "a"},
            {"op": "add", "path": "/metadata/annotations", "value": {APPLIED_ANNOTATION: "p@1"}},
            {"op": "add", "path": "/spec/containers/1/env/1", "value": {"name": "TZ", "value": "UTC"}},
            {"op": "remove", "path": "/spec/priority"},
        ]);
        assert_eq!(
            changed_fields(&patch, &pod),
            Some(json!({
                "metadata": {"labels": {"team": "a"}},
                "spec": {"priority": null,
                         "containers": [{"name": "spark", "env": [{"name": "TZ", "value": "UTC"}]}]}
            }))
        );
    }

    #[test]
    fn refresh_keeps_the_fields_of_a_partial_pod_with_current_values() {
        let old = json!({"spec": {"nodeSelector": {"pool": "old"}, "gone": 1,
                         "containers": [{"name": "spark", "image": "a"}, {"name": "removed"}]}});
        let pod = json!({"spec": {"nodeSelector": {"pool": "new", "other": "x"},
                         "containers": [{"name": "spark", "image": "b", "args": []}]}});
        assert_eq!(
            refresh(None, &old, &pod),
            json!({"spec": {"nodeSelector": {"pool": "new"}, "gone": null,
                   "containers": [{"name": "spark", "image": "b"}]}})
        );
    }

    #[test]
    fn warnings_that_still_match_are_kept_as_written() {
        let old = vec![
            WarningExpectation::Contains {
                contains: "already has".into(),
            },
            WarningExpectation::Exact("gone".into()),
        ];
        let actual = vec![
            "node-pool: the pod already has x".to_owned(),
            "new".to_owned(),
        ];
        assert_eq!(
            updated_warnings(&old, &actual),
            vec![old[0].clone(), WarningExpectation::Exact("new".into())]
        );
    }
}
