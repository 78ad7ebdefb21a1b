//! A JSON Patch written as JSON bytes: the same bytes `serde_json::to_vec` writes, faster.
//!
//! Most of a patch is strings (images, paths, env values, labels). serde_json checks every
//! byte of every string for escapes one at a time, which measured 55k of the 66k
//! instructions of encoding a 10-policy driver patch. Here a string is first checked as a
//! whole with a loop the compiler vectorises; only a string that needs escaping goes
//! through serde_json. Numbers and the rare operations (move, copy, test) are written by
//! serde_json too, so the output never differs from it (a test checks it does not).

use json_patch::{Patch, PatchOperation};
use serde_json::Value;

/// Appends the patch as JSON to `out`.
pub(super) fn write(patch: &Patch, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    out.push(b'[');
    for (i, op) in patch.0.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let (name, path, value) = match op {
            PatchOperation::Add(a) => ("add", a.path.as_str(), Some(&a.value)),
            PatchOperation::Replace(r) => ("replace", r.path.as_str(), Some(&r.value)),
            PatchOperation::Remove(r) => ("remove", r.path.as_str(), None),
            other => {
                serde_json::to_writer(&mut *out, other)?;
                continue;
            }
        };
        out.extend_from_slice(b"{\"op\":\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\",\"path\":");
        string(path, out)?;
        if let Some(value) = value {
            out.extend_from_slice(b",\"value\":");
            self::value(value, out)?;
        }
        out.push(b'}');
    }
    out.push(b']');
    Ok(())
}

fn value(v: &Value, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => serde_json::to_writer(&mut *out, n)?,
        Value::String(s) => string(s, out)?,
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(k, out)?;
                out.push(b':');
                value(item, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn string(s: &str, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    // The characters JSON requires escaped; serde_json escapes exactly these.
    let plain = s
        .bytes()
        .fold(true, |ok, b| ok & (b >= 0x20 && b != b'"' && b != b'\\'));
    if plain {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(&mut *out, s)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ours(patch: &Patch) -> String {
        let mut out = Vec::new();
        write(patch, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn writes_what_serde_json_writes() {
        let patch: Patch = serde_json::from_value(json!([
            {"op": "add", "path": "/metadata/labels/a~1b", "value": "plain"},
            {"op": "add", "path": "/spec/containers/0/env/-", "value": {
                "name": "QUOTED", "value": "say \"hi\"\\ \t\n\u{1}\u{7f} é \u{1F600} </script>"}},
            {"op": "replace", "path": "/spec/priority", "value": 1000},
            {"op": "add", "path": "/x", "value": [1.5, -2, 1e300, 0, true, false, null, [], {}]},
            {"op": "add", "path": "/y", "value": {"nested": {"deep": ["a", {"b": "c"}]}, "e": ""}},
            {"op": "remove", "path": "/spec/nodeName"},
            {"op": "move", "from": "/a", "path": "/b"},
            {"op": "copy", "from": "/a", "path": "/c"},
            {"op": "test", "path": "/a", "value": "v"},
            {"op": "add", "path": "/k\u{0}ey", "value": {"\"key\"": "\u{1f}"}}
        ]))
        .unwrap();
        assert_eq!(ours(&patch), serde_json::to_string(&patch).unwrap());
        assert_eq!(ours(&Patch(Vec::new())), "[]");
    }

    /// The patches the engine plans for every real pod with the bench policies (sidecars,
    /// init containers, env, affinity, security contexts: every shape a patch takes).
    #[test]
    fn the_engine_s_patches_for_the_fixtures_are_written_as_serde_json_writes_them() {
        use std::sync::Arc;

        use spark_admission_core::engine::{Engine, MutateRequest};
        use spark_admission_core::matching::PolicySet;
        use spark_admission_core::policy::{parse_documents, PolicySource};

        let mut all = Vec::new();
        for (name, text) in spark_admission_testkit::bench_policies::files(100, 10) {
            let parsed = parse_documents(&PolicySource(name), &text).unwrap();
            all.extend(parsed.into_iter().map(Arc::new));
        }
        let set = PolicySet::new(all);
        let mut seen = 0;
        for (name, pod) in spark_admission_testkit::fixtures::all_pods() {
            let pod = serde_json::from_value(pod).unwrap();
            let m = Engine::default()
                .mutate(MutateRequest::new(&set, &pod, "spark-jobs"))
                .unwrap();
            assert_eq!(
                ours(&m.patch),
                serde_json::to_string(&m.patch).unwrap(),
                "{name}"
            );
            seen += usize::from(m.patch.0.len() > 10);
        }
        assert!(
            seen >= 8,
            "only {seen} fixtures got a patch of more than 10 operations"
        );
    }

    #[test]
    fn every_single_byte_string_is_escaped_as_serde_json_escapes_it() {
        for c in (0u32..0x100).filter_map(char::from_u32) {
            let s = format!("a{c}b");
            let mut out = Vec::new();
            string(&s, &mut out).unwrap();
            assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{c:?}");
        }
    }
}
