//! From YAML text to checked policy documents: parse, schema check, deserialise, compile.

use serde_json::Value;

use super::compiled::CompiledPolicy;
use super::model::SparkPodPolicy;
use super::schema::schema_validator;
use super::PolicyError;

/// Where a policy text came from, used as the prefix of every message about it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicySource(pub String);

impl std::fmt::Display for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A document that passed every check, ready for a `PolicySet`.
pub type LoadedPolicy = CompiledPolicy;

/// Parses every document of one file or ConfigMap key. All-or-nothing: a text with any
/// broken document is rejected whole, so the caller keeps serving its last good version.
pub fn parse_documents(
    source: &PolicySource,
    text: &str,
) -> Result<Vec<LoadedPolicy>, Vec<PolicyError>> {
    let docs: Vec<Value> = match crate::yaml::documents(text) {
        Ok(docs) => docs,
        Err(e) => {
            return Err(vec![PolicyError::new(
                source.0.clone(),
                "",
                format!("not valid YAML: {}", one_line(&e.to_string())),
            )])
        }
    };
    let validator =
        schema_validator().map_err(|e| vec![PolicyError::new(source.0.clone(), "", e)])?;

    let mut policies = Vec::new();
    let mut errors = Vec::new();
    // Empty documents (a leading `---`, a file of comments) are not policies, and
    // `documents` leaves them out, so `#n` counts policies.
    for (idx, doc) in docs.into_iter().enumerate() {
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let origin = match &name {
            Some(n) => format!("{}#{} ({})", source, idx + 1, n),
            None => format!("{}#{}", source, idx + 1),
        };
        let violations = validator.check(&doc);
        if !violations.is_empty() {
            errors.extend(
                violations
                    .into_iter()
                    .map(|v| PolicyError::new(origin.clone(), v.path, v.message)),
            );
            continue;
        }
        let policy: SparkPodPolicy = match serde_json::from_value(doc) {
            Ok(p) => p,
            Err(e) => {
                errors.push(PolicyError::new(origin, "", e.to_string()));
                continue;
            }
        };
        match CompiledPolicy::compile(policy, origin) {
            Ok(p) => policies.push(p),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(policies)
    } else {
        Err(errors)
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
