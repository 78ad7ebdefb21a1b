//! The policy format: serde/schemars model, schema check with JSON paths, loading, compiled form.

mod compiled;
mod kube_names;
mod load;
pub mod model;
mod pattern;
mod schema;
pub mod template;

pub use compiled::{CompiledPatch, CompiledPolicy, CompiledRules, Site, Templated};
pub use load::{parse_documents, LoadedPolicy, PolicySource};
pub use model::{SparkPodPolicy, API_VERSION, KIND};
pub use pattern::Pattern;
pub use schema::strip_optional_null;
pub use schema::{schema_json, schema_validator, SchemaValidator, SchemaViolation};

/// A policy document that cannot be used, with enough context for an admin to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {path}: {message}")]
pub struct PolicyError {
    /// Where the document came from: `file.yaml#2 (name)` or `configmap ns/cm key.yaml#1 (name)`.
    pub origin: String,
    /// JSON pointer into the document (`/spec/namespaces/0`); `/` for the document itself.
    pub path: String,
    pub message: String,
}

impl PolicyError {
    pub fn new(
        origin: impl Into<String>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let path = path.into();
        Self {
            origin: origin.into(),
            path: if path.is_empty() {
                "/".to_owned()
            } else {
                path
            },
            message: message.into(),
        }
    }
}
