//! YAML text into `serde_json::Value`, the one way every policy-like text is read (policy
//! files and ConfigMap keys, policy tests, `explain` input, exported memory state), so the
//! same text loads the same everywhere.
//!
//! The parser is libyaml's (through `serde_yaml_ng`), ~40% fewer instructions than
//! serde-saphyr's on a policy (BENCHMARKS.md, "Reload, session 9"). The value is built here
//! rather than by `serde_json::Value`'s own visitor, to keep what serde-saphyr did and libyaml
//! alone would not: a duplicate key is an error, `.inf`/`.nan` are refused (JSON has no such
//! number), `<<` merge keys are expanded, an unknown tag is ignored, an integer beyond 64
//! bits becomes a float; and to bound the work an alias can cause. What changed is listed
//! and tested in `tests::scalars_that_read_differently_from_serde_saphyr`.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A text that is not YAML (or builds more values than its size allows).
#[derive(Debug, thiserror::Error)]
#[error("{}", render(.0))]
pub struct YamlError(#[source] serde_yaml_ng::Error);

impl YamlError {
    /// Line and column (1-based) of the error, when the parser knows them.
    pub fn location(&self) -> Option<(usize, usize)> {
        self.0.location().map(|l| (l.line(), l.column()))
    }
}

/// Location first, like the messages the loader gave before ("line 1 column 7: …").
fn render(e: &serde_yaml_ng::Error) -> String {
    let text = e.to_string();
    match e.location() {
        Some(l) => {
            let at = format!(" at line {} column {}", l.line(), l.column());
            // libyaml's own messages name a second place after the first ("…, while
            // parsing a flow sequence at line 1 column 4"): only the first moves.
            let message = text.replacen(&at, "", 1);
            format!("line {} column {}: {}", l.line(), l.column(), message)
        }
        None => text,
    }
}

/// Values one text may build: every value of a text without aliases needs at least one
/// byte of it, so only aliases replayed many times (a "billion laughs") reach this.
fn value_budget(text: &str) -> usize {
    text.len().saturating_add(1024)
}

/// Every non-empty document of a multi-document text, in order. Empty documents (a leading
/// `---`, a file of comments, an explicit `~`) are left out: they are not policies.
pub fn documents(text: &str) -> Result<Vec<Value>, YamlError> {
    let mut budget = value_budget(text);
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value = ValueSeed {
            budget: &mut budget,
        }
        .deserialize(doc)
        .map_err(YamlError)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// The one document of a text (`Null` when it has none); a second document is an error.
pub fn document(text: &str) -> Result<Value, YamlError> {
    let mut budget = value_budget(text);
    ValueSeed {
        budget: &mut budget,
    }
    .deserialize(serde_yaml_ng::Deserializer::from_str(text))
    .map_err(YamlError)
}

/// Builds one value, counting it against the text's budget.
struct ValueSeed<'b> {
    budget: &'b mut usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        match self.budget.checked_sub(1) {
            Some(left) => *self.budget = left,
            None => {
                return Err(de::Error::custom(
                    "the document expands to more values than its size allows (aliases repeated too often)",
                ))
            }
        }
        deserializer.deserialize_any(self)
    }
}

fn float<E: de::Error>(v: f64) -> Result<Value, E> {
    Number::from_f64(v).map(Value::Number).ok_or_else(|| {
        E::custom(format_args!(
            "the number {v} has no JSON form (.inf and .nan are not allowed)"
        ))
    })
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    // Beyond 64 bits: a float, as serde-saphyr read it.
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        float(v as f64)
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        float(v as f64)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        float(v)
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(ValueSeed {
            budget: &mut *self.budget,
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        // `<<: *defaults` (or a list of them): keys the mapping does not set itself, the
        // first merged mapping winning, applied once every own key is known.
        let mut merged: Vec<Value> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(ValueSeed {
                budget: &mut *self.budget,
            })?;
            if key == "<<" {
                match value {
                    Value::Object(_) => merged.push(value),
                    Value::Array(items) if items.iter().all(Value::is_object) => {
                        merged.extend(items)
                    }
                    _ => {
                        return Err(de::Error::custom(
                            "a merge key `<<` takes a mapping or a list of mappings",
                        ))
                    }
                }
                continue;
            }
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate mapping key: {key}"
                )));
            }
            out.insert(key, value);
        }
        for source in merged {
            if let Value::Object(entries) = source {
                for (k, v) in entries {
                    out.entry(k).or_insert(v);
                }
            }
        }
        Ok(Value::Object(out))
    }

    // A value with a tag the parser does not know (`!secret x`): the tag is ignored.
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (_tag, variant) = data.variant::<de::IgnoredAny>()?;
        de::VariantAccess::newtype_variant_seed(variant, self)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use serde_json::{json, Value};

    use super::{document, documents};

    /// The loader before this module, with the options it used.
    fn saphyr(text: &str) -> Result<Vec<Value>, String> {
        let mut options = serde_saphyr::Options::default();
        options.emit_comments = false;
        serde_saphyr::from_str_multiple_with_options::<Value, Vec<Value>>(text, options)
            .map_err(|e| e.to_string())
    }

    fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                yaml_files(&path, out);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
    }

    #[test]
    fn the_repos_yaml_reads_as_serde_saphyr_read_it() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = Vec::new();
        // Example policies and their tests, policy seeds of the fuzzer, recorded policy
        // ConfigMaps, deploy manifests and rules.
        for dir in [
            "policies",
            "fuzz/seeds",
            "tests/fixtures",
            "deploy",
            "tests/monitoring",
        ] {
            yaml_files(&root.join(dir), &mut files);
        }
        assert!(files.len() > 40, "found only {} YAML files", files.len());
        let mut texts: Vec<(String, String)> = files
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p).expect("readable");
                (p.display().to_string(), text)
            })
            .collect();
        // Every template of the benchmark set, each namespace form.
        texts.extend(spark_admission_testkit::bench_policies::files(40, 10));
        for (name, text) in &texts {
            let old = saphyr(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let new = documents(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!new.is_empty(), "{name}: no documents");
            assert_eq!(new, old, "{name}");
        }
    }

    /// (text, as serde-saphyr read it, as it reads now). A deliberate list: the other
    /// spellings of YAML scalars read the same (see `spellings_that_read_the_same`).
    #[test]
    fn scalars_that_read_differently_from_serde_saphyr() {
        // A value, or a part of the error text.
        type Read = Result<Value, &'static str>;
        let cases: &[(&str, Read, Read)] = &[
            // YAML 1.1 booleans: strings in YAML 1.2, as libyaml-based readers have them.
            ("v: yes", Ok(json!({"v": true})), Ok(json!({"v": "yes"}))),
            ("v: on", Ok(json!({"v": true})), Ok(json!({"v": "on"}))),
            ("v: y", Ok(json!({"v": true})), Ok(json!({"v": "y"}))),
            ("v: no", Ok(json!({"v": false})), Ok(json!({"v": "no"}))),
            ("v: off", Ok(json!({"v": false})), Ok(json!({"v": "off"}))),
            // A leading zero, digit separators: strings now.
            ("v: 017", Ok(json!({"v": 17.0})), Ok(json!({"v": "017"}))),
            (
                "v: 1_000",
                Ok(json!({"v": 1000})),
                Ok(json!({"v": "1_000"})),
            ),
            // `!!binary` is no longer decoded.
            (
                "v: !!binary aGk=",
                Ok(json!({"v": "hi"})),
                Ok(json!({"v": "aGk="})),
            ),
            // A `null` key is the text "null".
            ("{null: a}", Err("null"), Ok(json!({"null": "a"}))),
        ];
        for (text, old, new) in cases {
            let was = saphyr(text).map(|d| d.into_iter().next().unwrap_or(Value::Null));
            match (old, &was) {
                (Ok(v), Ok(w)) => assert_eq!(v, w, "serde-saphyr, {text:?}"),
                (Err(part), Err(e)) => assert!(e.contains(part), "serde-saphyr, {text:?}: {e}"),
                _ => panic!("serde-saphyr, {text:?}: {was:?}"),
            }
            let now = document(text).map_err(|e| e.to_string());
            match (new, &now) {
                (Ok(v), Ok(w)) => assert_eq!(v, w, "{text:?}"),
                (Err(part), Err(e)) => assert!(e.contains(part), "{text:?}: {e}"),
                _ => panic!("{text:?}: {now:?}"),
            }
        }
    }

    /// serde-saphyr's default budget refused texts this reader reads: more than 1,024
    /// documents, more than 250,000 values, nesting deeper than 64 (the limit is now 128;
    /// what bounds a text is its size, see `value_budget`).
    #[test]
    fn limits_that_moved() {
        let many_documents = "a: 1\n---\n".repeat(1_100);
        let many_values = format!("v: [{}]\n", vec!["1"; 300_000].join(", "));
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        for (what, text, count) in [
            ("1,100 documents", many_documents, 1_100),
            ("300,000 values", many_values, 1),
            ("100 levels", deep, 1),
        ] {
            assert!(saphyr(&text).is_err(), "serde-saphyr read {what}");
            assert_eq!(documents(&text).expect(what).len(), count, "{what}");
        }
        let too_deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        let e = documents(&too_deep).expect_err("129 levels").to_string();
        assert!(e.contains("recursion limit exceeded"), "{e}");
    }

    #[test]
    fn spellings_that_read_the_same() {
        let same = [
            "v: true",
            "v: True",
            "v: FALSE",
            "v: 0o17",
            "v: 0x1F",
            "v: 0b101",
            "v: +1",
            "v: -0",
            "v: 1e3",
            "v: 1.50",
            "v: ~",
            "v: null",
            "v: Null",
            "v:",
            "v: '017'",
            "v: \"yes\"",
            "v: !!str 12",
            "v: !!int \"12\"",
            "v: !secret token",
            "v: 2001-12-14",
            "v: 12345678901234567890123",
            "v: -9223372036854775809",
            "v: \"\\u00e9\"",
            "v: 'it''s'",
            "v: |\n  x\n  y\n",
            "v: >-\n  x\n  y\n",
            "v: 1:2",
            "{1: a, true: b}",
            "a: &x {b: 1}\nc: *x",
            // Merge keys: the mapping's own keys win, then the first merged mapping.
            "d: &d {a: 1, b: 1}\ne: &e {b: 2, c: 2}\nv: {<<: [*d, *e], a: 0}",
            "d: &d {a: 1}\nv:\n  a: 0\n  <<: *d\n",
        ];
        for text in same {
            let old = saphyr(text).unwrap_or_else(|e| panic!("serde-saphyr, {text:?}: {e}"));
            assert_eq!(documents(text).expect(text), old, "{text:?}");
        }
        let merged = document("d: &d {a: 1, b: 1}\ne: &e {b: 2, c: 2}\nv: {<<: [*d, *e], a: 0}")
            .expect("merge");
        assert_eq!(merged["v"], json!({"a": 0, "b": 1, "c": 2}));
        // Refused by both, with where.
        for (text, old_part, new_part) in [
            // Where: the mapping that holds the key (serde-saphyr named the key's own column).
            ("{a: 1, a: 2}", "duplicate mapping key: a", "line 1 column 1: duplicate mapping key: a"),
            ("v: .inf", "non-finite", "line 1 column 4: v: the number inf has no JSON form"),
            ("v: -.inf", "non-finite", "has no JSON form"),
            ("v: .nan", "non-finite", "has no JSON form"),
            ("? [a]\n: b", "expected string scalar", "line 1 column 3: invalid type: sequence"),
            (
                "a: [unclosed",
                "line 1",
                "line 2 column 1: did not find expected ',' or ']', while parsing a flow sequence at line 1 column 4",
            ),
        ] {
            let old = saphyr(text).expect_err(text);
            assert!(old.contains(old_part), "serde-saphyr, {text:?}: {old}");
            let new = documents(text).expect_err(text).to_string();
            assert!(new.contains(new_part), "{text:?}: {new}");
        }
    }

    #[test]
    fn empty_documents_and_separators() {
        assert_eq!(documents("").expect("empty"), Vec::<Value>::new());
        assert_eq!(
            documents("# a comment\n").expect("comment"),
            Vec::<Value>::new()
        );
        assert_eq!(documents("---\n").expect("marker"), Vec::<Value>::new());
        assert_eq!(
            documents("---\n~\n---\na: 1\n").expect("null"),
            [json!({"a": 1})]
        );
        assert_eq!(
            documents("a: 1\n...\n---\nb: 2\n---\n").expect("three"),
            [json!({"a": 1}), json!({"b": 2})]
        );
        assert_eq!(document("").expect("empty"), Value::Null);
        let two = document("a: 1\n---\nb: 2\n").expect_err("two documents");
        assert!(two.to_string().contains("more than one document"), "{two}");
        // A broken second document fails the whole text.
        let e = documents("a: 1\n---\nb: [\n").expect_err("broken");
        assert_eq!(e.location().map(|(line, _)| line), Some(4), "{e}");
    }

    #[test]
    fn hostile_texts_end_in_an_error() {
        for (what, text) in spark_admission_testkit::hostile_yaml::texts() {
            let e = documents(&text).expect_err(what).to_string();
            // Where, then why: the budget for aliases, the depth limit (128) or libyaml.
            assert!(e.starts_with("line "), "{what}: {e}");
            if what.contains("alias") {
                assert!(
                    e.contains("more values than its size allows"),
                    "{what}: {e}"
                );
            }
            assert!(
                saphyr(&text).is_err(),
                "{what}: serde-saphyr refused it too"
            );
        }
    }

    #[test]
    fn a_huge_document_is_read_in_linear_work() {
        // 4 MB of one list (beyond the webhook's 3 MiB body limit): read whole.
        let text = format!("v: [{}]\n", vec!["abc"; 1_000_000].join(", "));
        let doc = document(&text).expect("huge");
        assert_eq!(doc["v"].as_array().map(Vec::len), Some(1_000_000));
    }
}
