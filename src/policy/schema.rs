//! The JSON Schema of the policy format, generated from the Rust model and used to check
//! every document before it is deserialised, so errors carry a JSON path.

use std::sync::OnceLock;

use serde_json::Value;

use super::model::SparkPodPolicy;

/// The schema as shipped in `policies/schema.json`.
pub fn schema_json() -> Value {
    let schema = schemars::schema_for!(SparkPodPolicy);
    serde_json::to_value(schema).unwrap_or(Value::Null)
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
            jsonschema::options()
                .should_validate_formats(false)
                .build(&schema_json())
                .map(|validator| SchemaValidator { validator })
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
    /// All violations, most specific first; empty when the document is valid.
    pub fn check(&self, doc: &Value) -> Vec<SchemaViolation> {
        let mut out: Vec<SchemaViolation> = self
            .validator
            .iter_errors(doc)
            .map(|e| SchemaViolation {
                path: e.instance_path().as_str().to_owned(),
                message: shorten(&e.to_string()),
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
