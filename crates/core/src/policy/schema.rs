//! The JSON Schema of the policy format, generated from the Rust model and used to check
//! every document before it is deserialised, so errors carry a JSON path.

use std::sync::OnceLock;

use serde_json::Value;

use super::model::SparkPodPolicy;

/// The schema as shipped in `policies/schema.json`.
pub fn schema_json() -> Value {
    let schema = schemars::schema_for!(SparkPodPolicy);
    let mut value = serde_json::to_value(schema).unwrap_or(Value::Null);
    strip_optional_null(&mut value);
    flatten_one_key_choices(&mut value);
    value
}

/// serde's externally tagged enums (a dependency `source`: exactly one of `configMap`,
/// `download`, ...) come out as `oneOf` one-key objects, and a mistake deep inside one,
/// such as a bad `sha256`, is reported only as "not valid under any of the schemas" at the
/// enum. The same choice as one object of optional keys with exactly one present accepts
/// the same documents and reports each mistake at its own path.
pub fn flatten_one_key_choices(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(properties) = map.get("oneOf").and_then(one_key_branches) {
                map.remove("oneOf");
                map.insert("type".to_owned(), "object".into());
                map.insert("properties".to_owned(), Value::Object(properties));
                map.insert("additionalProperties".to_owned(), false.into());
                map.insert("minProperties".to_owned(), 1.into());
                map.insert("maxProperties".to_owned(), 1.into());
            }
            map.values_mut().for_each(flatten_one_key_choices);
        }
        Value::Array(items) => items.iter_mut().for_each(flatten_one_key_choices),
        _ => {}
    }
}

/// The key -> schema map of a `oneOf` whose every branch is a closed object with exactly one
/// property, required (a branch's description moves onto its property); None otherwise.
fn one_key_branches(one_of: &Value) -> Option<serde_json::Map<String, Value>> {
    let mut out = serde_json::Map::new();
    for branch in one_of.as_array()? {
        let b = branch.as_object()?;
        let allowed = [
            "type",
            "properties",
            "required",
            "additionalProperties",
            "description",
        ];
        if b.keys().any(|k| !allowed.contains(&k.as_str()))
            || b.get("type")? != "object"
            || b.get("additionalProperties")? != false
        {
            return None;
        }
        let props = b.get("properties")?.as_object()?;
        let (key, schema) = props.iter().next().filter(|_| props.len() == 1)?;
        if b.get("required")? != &Value::Array(vec![key.clone().into()]) {
            return None;
        }
        let mut schema = schema.clone();
        if let (Some(d), Some(s)) = (b.get("description"), schema.as_object_mut()) {
            s.entry("description").or_insert(d.clone());
        }
        out.insert(key.clone(), schema);
    }
    (!out.is_empty()).then_some(out)
}

/// schemars writes `Option<T>` as `anyOf: [T, null]`; a mistake inside T then reports only
/// "not valid under any of the schemas" at the parent. Policies never need an explicit
/// null, so the alternative is dropped and errors point at the exact field.
pub fn strip_optional_null(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(any)) = map.get("anyOf") {
                let is_null = |s: &Value| s.get("type").and_then(Value::as_str) == Some("null");
                if any.len() == 2 && any.iter().any(is_null) {
                    if let Some(Value::Object(inner)) = any.iter().find(|s| !is_null(s)).cloned() {
                        map.remove("anyOf");
                        for (k, val) in inner {
                            map.entry(k).or_insert(val);
                        }
                    }
                }
            }
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t.as_str() != Some("null"));
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".to_owned(), only);
                }
            }
            map.values_mut().for_each(strip_optional_null);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_optional_null),
        _ => {}
    }
}

/// A compiled validator for the policy schema.
pub struct SchemaValidator {
    validator: jsonschema::Validator,
}

/// Built once per process: compiling the schema is the expensive part. It comes from our
/// own types, so an error here is a build defect (the schema tests catch it), reported as text.
pub fn schema_validator() -> Result<&'static SchemaValidator, String> {
    static VALIDATOR: OnceLock<Result<SchemaValidator, String>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| {
            SchemaValidator::compile(&schema_json())
                .map_err(|e| format!("the built-in policy schema does not compile: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// One schema violation: where in the document, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaViolation {
    pub path: String,
    pub message: String,
}

impl SchemaValidator {
    /// Compiles a schema generated from our own types (the policy format, the test format).
    pub fn compile(schema: &Value) -> Result<Self, String> {
        jsonschema::options()
            .should_validate_formats(false)
            .build(schema)
            .map(|validator| SchemaValidator { validator })
            .map_err(|e| e.to_string())
    }

    /// All violations, most specific first; empty when the document is valid.
    pub fn check(&self, doc: &Value) -> Vec<SchemaViolation> {
        let mut out: Vec<SchemaViolation> = self
            .validator
            .iter_errors(doc)
            .map(|e| {
                let mut message = shorten(&e.to_string());
                // `enabled: true` where a string was expected; say so (yes/no/on/off are
                // strings since the YAML 1.2 reader, see crate::yaml).
                if e.instance().is_boolean() && message.contains("\"string\"") {
                    message
                        .push_str(" (YAML reads unquoted true/false as booleans: quote the value)");
                } else if message.ends_with("has more than 1 property") {
                    // A choice flattened by `flatten_one_key_choices`.
                    message.push_str(" (set exactly one of them)");
                } else if e.instance().is_number() && message.contains("is not of type \"string\"")
                {
                    // sparkConf values, labels, env: `spark.executor.instances: 2` needs "2".
                    message
                        .push_str(" (YAML reads an unquoted number as a number: quote the value)");
                }
                SchemaViolation {
                    path: e.instance_path().as_str().to_owned(),
                    message,
                }
            })
            .collect();
        // Deeper paths point closer to the mistake.
        out.sort_by(|a, b| {
            b.path
                .matches('/')
                .count()
                .cmp(&a.path.matches('/').count())
                .then(a.path.cmp(&b.path))
        });
        out.dedup();
        out
    }
}

/// jsonschema quotes whole sub-documents in messages; keep lines readable.
fn shorten(message: &str) -> String {
    const MAX: usize = 300;
    if message.len() <= MAX {
        return message.to_owned();
    }
    let mut cut = MAX;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &message[..cut])
}
