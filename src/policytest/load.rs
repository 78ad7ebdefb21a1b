//! From paths to ready-to-run test files: discovery, the test file itself (YAML, schema,
//! references), the policies it names (files, folders, ConfigMap manifests) and its pods.
//! Every problem is an [`InputError`] naming the file and the JSON path in it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::Value;

use super::model::{test_schema_validator, TestFile, TEST_FILE_NAME};
use crate::explain::{read_input, Input};
use crate::matching::PolicySet;
use crate::policy::{parse_documents, CompiledPolicy, PolicySource};
use crate::source::configmap::{has_policy_label, is_policy_key, key_source, POLICY_LABEL};
use crate::source::policy_files;
use crate::spark::{role_of, NotSpark};
use crate::yaml;

/// A test file that cannot be run as written: exit code 2, never a failed expectation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("{file}: {}{message}", if path == "/" { String::new() } else { format!("{path}: ") })]
pub struct InputError {
    /// The test file (or the path given on the command line).
    pub file: String,
    /// JSON pointer into the test file; `/` for the file as a whole.
    pub path: String,
    pub message: String,
}

impl InputError {
    fn new(file: &Path, path: impl Into<String>, message: impl Into<String>) -> Self {
        let path = path.into();
        Self {
            file: file.display().to_string(),
            path: if path.is_empty() {
                "/".to_owned()
            } else {
                path
            },
            message: message.into(),
        }
    }
}

/// A pod ready to be admitted.
#[derive(Debug, Clone)]
pub struct LoadedPod {
    pub input: Input,
    pub namespace: String,
    /// `afterOOM`: the raise remembered for the pod's application.
    pub remembered: Option<crate::memory_on_oom::RememberedMemory>,
}

/// A test file with everything it names loaded.
#[derive(Debug)]
pub struct LoadedTest {
    pub path: PathBuf,
    /// The text as read, for `--update` (its leading comments are kept).
    pub text: String,
    pub file: TestFile,
    pub policies: PolicySet,
    pub pods: BTreeMap<String, LoadedPod>,
}

/// Every `spark-admission-test.yaml` under the paths, recursively, in a stable order. A
/// file given by name is taken whatever its name. Finding none is an error: a CI job whose
/// path is mistyped must not pass by testing nothing.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let mut found = BTreeSet::new();
    for p in paths {
        if p.is_file() {
            found.insert(p.clone());
        } else if p.is_dir() {
            let before = found.len();
            walk(p, &mut found).map_err(|e| InputError::new(p, "", e))?;
            if found.len() == before {
                return Err(InputError::new(
                    p,
                    "",
                    format!("no {TEST_FILE_NAME} in this folder or below"),
                ));
            }
        } else {
            return Err(InputError::new(p, "", "no such file or folder"));
        }
    }
    Ok(found.into_iter().collect())
}

fn walk(dir: &Path, found: &mut BTreeSet<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read folder: {e}"))?;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Hidden folders (.git) and build output hold no tests of ours.
        if name.starts_with('.') || name == "target" {
            continue;
        }
        // Linked folders are not followed (a link to a parent would never end); a linked
        // test file is read like any other.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            walk(&path, found)?;
        } else if name == TEST_FILE_NAME && path.is_file() {
            found.insert(path);
        }
    }
    Ok(())
}

/// Reads one test file and everything it names. `allow_empty_expectations` is set by
/// `--update`, which fills those in.
pub fn load(path: &Path, allow_empty_expectations: bool) -> Result<LoadedTest, Vec<InputError>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![InputError::new(path, "", format!("cannot read: {e}"))])?;
    let file = parse_test_file(path, &text)?;
    // Every problem of the file at once: references, then policies and pods.
    let mut errors = check_references(path, &file, allow_empty_expectations)
        .err()
        .unwrap_or_default();
    let base = path.parent().unwrap_or(Path::new("."));
    let mut policies = Vec::new();
    for (i, entry) in file.spec.policies.iter().enumerate() {
        match load_policies(&base.join(entry)) {
            Ok(found) => policies.extend(found),
            Err(messages) => errors.extend(
                messages
                    .into_iter()
                    .map(|m| InputError::new(path, format!("/spec/policies/{i}"), m)),
            ),
        }
    }
    let mut pods = BTreeMap::new();
    for (i, pod) in file.spec.pods.iter().enumerate() {
        match load_pod(&base.join(&pod.file), pod) {
            Ok(p) => {
                pods.insert(pod.name.clone(), p);
            }
            Err((field, m)) => {
                errors.push(InputError::new(path, format!("/spec/pods/{i}{field}"), m))
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(LoadedTest {
        path: path.to_owned(),
        text,
        file,
        policies: PolicySet::new(policies),
        pods,
    })
}

/// YAML, then the schema (errors with JSON paths), then the typed model.
pub fn parse_test_file(path: &Path, text: &str) -> Result<TestFile, Vec<InputError>> {
    let doc: Value = yaml::document(text).map_err(|e| {
        vec![InputError::new(
            path,
            "",
            format!("not valid YAML: {}", first_line(&e.to_string())),
        )]
    })?;
    let validator = test_schema_validator().map_err(|e| vec![InputError::new(path, "", e)])?;
    let violations = validator.check(&doc);
    if !violations.is_empty() {
        return Err(violations
            .into_iter()
            .map(|v| InputError::new(path, v.path, v.message))
            .collect());
    }
    serde_json::from_value(doc).map_err(|e| vec![InputError::new(path, "", e.to_string())])
}

/// What the schema cannot say: unique names, cases naming a known pod, and at least one
/// expectation per case (a case that checks nothing cannot fail).
fn check_references(
    path: &Path,
    file: &TestFile,
    allow_empty_expectations: bool,
) -> Result<(), Vec<InputError>> {
    let mut errors = Vec::new();
    let mut pod_names = BTreeSet::new();
    for (i, pod) in file.spec.pods.iter().enumerate() {
        if !pod_names.insert(pod.name.as_str()) {
            errors.push(InputError::new(
                path,
                format!("/spec/pods/{i}/name"),
                format!("pod name {:?} is used twice", pod.name),
            ));
        }
    }
    let mut case_names = BTreeSet::new();
    for (i, case) in file.spec.cases.iter().enumerate() {
        if !case_names.insert(case.name.as_str()) {
            errors.push(InputError::new(
                path,
                format!("/spec/cases/{i}/name"),
                format!("case name {:?} is used twice", case.name),
            ));
        }
        if !pod_names.contains(case.pod.as_str()) {
            errors.push(InputError::new(
                path,
                format!("/spec/cases/{i}/pod"),
                format!(
                    "no pod named {:?} in spec.pods (known: {})",
                    case.pod,
                    pod_names.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if case.expect.is_empty() && !allow_empty_expectations {
            errors.push(InputError::new(
                path,
                format!("/spec/cases/{i}/expect"),
                "the case states no expectation: give at least one of result, refusedBy, audited, warnings, applied, pod, fullPod, patch (or run with --update to fill them in)",
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The policies of one `spec.policies` entry: a folder's files, or one file. Messages are
/// the loader's own (`file#doc (name): /json/path: problem`).
fn load_policies(path: &Path) -> Result<Vec<Arc<CompiledPolicy>>, Vec<String>> {
    let files = if path.is_dir() {
        policy_files(path).map_err(|e| vec![e.to_string()])?
    } else if path.is_file() {
        vec![path.to_owned()]
    } else {
        return Err(vec![format!(
            "{}: no such policy file or folder",
            path.display()
        )]);
    };
    let mut policies = Vec::new();
    let mut errors = Vec::new();
    for file in &files {
        match load_policy_file(file) {
            Ok(found) => policies.extend(found.into_iter().map(Arc::new)),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() && policies.is_empty() {
        errors.push(format!(
            "{}: no policies found (ConfigMaps need the label {POLICY_LABEL}: \"true\" and policies in .yaml/.yml keys)",
            path.display()
        ));
    }
    if errors.is_empty() {
        Ok(policies)
    } else {
        Err(errors)
    }
}

/// A file of SparkPodPolicy documents, or of Kubernetes manifests holding policy
/// ConfigMaps. Manifests are read as the cluster's webhook reads them: only ConfigMaps with
/// the policy label, only `.yaml`/`.yml` keys; other objects are ignored.
fn load_policy_file(path: &Path) -> Result<Vec<CompiledPolicy>, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
    let source = PolicySource(path.display().to_string());
    let docs = yaml::documents(&text).unwrap_or_default();
    let is_manifest = docs
        .iter()
        .any(|d| matches!(kind(d), Some("ConfigMap" | "List" | "ConfigMapList")));
    if !is_manifest {
        // Plain policy documents (or broken YAML, which the policy loader reports).
        return parse_documents(&source, &text)
            .map_err(|errs| errs.iter().map(ToString::to_string).collect());
    }
    let mut objects = Vec::new();
    flatten(docs, &mut objects);
    let mut policies = Vec::new();
    let mut errors = Vec::new();
    for object in objects.iter().filter(|o| kind(o) == Some("ConfigMap")) {
        let cm: ConfigMap = match serde_json::from_value(object.clone()) {
            Ok(cm) => cm,
            Err(e) => {
                errors.push(format!(
                    "{}: a ConfigMap that does not parse: {e}",
                    path.display()
                ));
                continue;
            }
        };
        if !has_policy_label(&cm) {
            continue;
        }
        let namespace = cm.metadata.namespace.as_deref().unwrap_or("default");
        let name = cm.metadata.name.as_deref().unwrap_or("");
        for (key, value) in cm.data.iter().flatten() {
            if !is_policy_key(key) {
                continue;
            }
            match parse_documents(&key_source(namespace, name, key), value) {
                Ok(found) => policies.extend(found),
                Err(errs) => errors.extend(errs.iter().map(|e| format!("{}: {e}", path.display()))),
            }
        }
    }
    if errors.is_empty() {
        Ok(policies)
    } else {
        Err(errors)
    }
}

fn kind(doc: &Value) -> Option<&str> {
    doc.get("kind").and_then(Value::as_str)
}

/// `List`s (what `kubectl get -o yaml` writes) contribute their items.
fn flatten(docs: Vec<Value>, out: &mut Vec<Value>) {
    for doc in docs {
        if matches!(kind(&doc), Some(k) if k == "List" || k.ends_with("List")) {
            if let Some(Value::Array(items)) = doc.get("items") {
                flatten(items.clone(), out);
            }
        } else {
            out.push(doc);
        }
    }
}

/// Reads a pod; the error names the field of `spec.pods[i]` it is about.
fn load_pod(
    path: &Path,
    spec: &super::model::PodInput,
) -> Result<LoadedPod, (&'static str, String)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ("/file", format!("{}: cannot read: {e}", path.display())))?;
    let mut input = read_input(&text).map_err(|e| ("/file", format!("{}: {e}", path.display())))?;
    if !spec.labels.is_empty() {
        set_labels(&mut input, &spec.labels)
            .map_err(|e| ("/labels", format!("{}: {e}", path.display())))?;
    }
    match role_of(&input.pod) {
        Ok(_) => {}
        Err(NotSpark::NoRoleLabel) => {
            return Err((
                "/file",
                format!(
                    "{}: not a Spark pod: it has no spark-role label (spark-submit sets spark-role=driver or executor on every pod it creates)",
                    path.display()
                ),
            ))
        }
        Err(NotSpark::UnknownRole(r)) => {
            return Err((
                "/file",
                format!(
                    "{}: not a Spark pod: spark-role is {r:?}, neither driver nor executor",
                    path.display()
                ),
            ))
        }
    }
    let namespace = spec
        .namespace
        .clone()
        .or_else(|| input.namespace.clone())
        .unwrap_or_else(|| "default".to_owned());
    let remembered = spec.after_oom.as_ref().map(remembered).transpose()?;
    Ok(LoadedPod {
        input,
        namespace,
        remembered,
    })
}

fn remembered(
    a: &super::model::AfterOom,
) -> Result<crate::memory_on_oom::RememberedMemory, (&'static str, String)> {
    let bytes = |field: &'static str, q: &str| {
        crate::quantity::parse(q)
            .filter(|v| *v > 0.0 && *v < u64::MAX as f64)
            .map(|v| v.ceil() as u64)
            .ok_or((
                field,
                format!("\"{q}\" is not a memory quantity (examples: 4320Mi, 6Gi)"),
            ))
    };
    let at: k8s_openapi::jiff::Timestamp = a.at.parse().map_err(|e| {
        (
            "/afterOOM/at",
            format!("\"{}\" is not an RFC 3339 time: {e}", a.at),
        )
    })?;
    Ok(crate::memory_on_oom::RememberedMemory {
        memory: bytes("/afterOOM/memory", &a.memory)?,
        from: bytes("/afterOOM/oomKilledMemory", &a.oom_killed_memory)?,
        oom_pod: a.oom_killed_pod.clone(),
        oom_at: at.as_second(),
        expires: i64::MAX,
    })
}

fn set_labels(input: &mut Input, labels: &BTreeMap<String, String>) -> Result<(), String> {
    let metadata = input
        .pod_json
        .as_object_mut()
        .map(|pod| {
            pod.entry("metadata")
                .or_insert_with(|| Value::Object(Default::default()))
        })
        .and_then(Value::as_object_mut)
        .ok_or("the pod has no metadata object")?;
    let existing = metadata
        .entry("labels")
        .or_insert_with(|| Value::Object(Default::default()))
        .as_object_mut()
        .ok_or("the pod's metadata.labels is not a map")?;
    for (k, v) in labels {
        existing.insert(k.clone(), Value::String(v.clone()));
    }
    input.pod = serde_json::from_value(input.pod_json.clone()).map_err(|e| e.to_string())?;
    Ok(())
}

/// The parser's message is its first line; a code frame follows, which the line and
/// column already point to.
fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s).trim_start_matches("error: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_is_recursive_sorted_and_skips_hidden_folders_and_target() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["b/deep", "a", ".git/x", "target/y", "c"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        for file in ["b/deep", "a", ".git/x", "target/y"] {
            std::fs::write(root.join(file).join(TEST_FILE_NAME), "").unwrap();
        }
        std::fs::write(root.join("c/other-name.yaml"), "").unwrap();
        let found = discover(&[root.to_owned(), root.join("c/other-name.yaml")]).unwrap();
        let rel: Vec<String> = found
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(
            rel,
            [
                "a/spark-admission-test.yaml",
                "b/deep/spark-admission-test.yaml",
                "c/other-name.yaml"
            ]
        );
        let err = discover(&[root.join("c")]).unwrap_err();
        assert!(
            err.message.contains("no spark-admission-test.yaml"),
            "{err}"
        );
        let err = discover(&[root.join("nowhere")]).unwrap_err();
        assert_eq!(err.message, "no such file or folder");
    }
}
