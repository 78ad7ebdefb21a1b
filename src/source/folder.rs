//! Policies from a local folder (the embedded default, or a mounted ConfigMap): every
//! `*.yaml`/`*.yml` file directly in it. A broken file keeps its last good version.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::SourceError;
use crate::matching::PolicySet;
use crate::policy::{parse_documents, CompiledPolicy, PolicyError, PolicySource};

#[derive(Debug)]
struct FileState {
    content_hash: u64,
    /// The last version of this file that loaded without error (empty if none ever did).
    good: Vec<Arc<CompiledPolicy>>,
    /// Errors of the current content, if it is broken.
    errors: Vec<PolicyError>,
}

/// A folder of policy files, rescanned on demand (the server polls it).
#[derive(Debug)]
pub struct FolderSource {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
}

/// What one scan found.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// The set of good policies changed: a new snapshot should be installed.
    pub changed: bool,
    /// Files whose current content was rejected (their last good version still serves).
    pub errors: Vec<PolicyError>,
    /// Files read again because their content changed.
    pub reparsed: usize,
}

impl FolderSource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            files: BTreeMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads the folder; only files whose bytes changed are parsed again.
    pub fn scan(&mut self) -> Result<ScanReport, SourceError> {
        let mut report = ScanReport::default();
        let paths = policy_files(&self.dir)?;
        let before = self.files.len();
        self.files.retain(|p, _| paths.contains(p));
        if self.files.len() != before {
            report.changed = true;
        }
        for path in paths {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                // Vanished between listing and reading (a Secret/ConfigMap volume swap): next scan.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    report.errors.push(PolicyError::new(
                        path.display().to_string(),
                        "",
                        format!("cannot read: {e}"),
                    ));
                    continue;
                }
            };
            let mut h = DefaultHasher::new();
            text.hash(&mut h);
            let content_hash = h.finish();
            if let Some(state) = self.files.get(&path) {
                if state.content_hash == content_hash {
                    report.errors.extend(state.errors.iter().cloned());
                    continue;
                }
            }
            report.reparsed += 1;
            let source = PolicySource(display_name(&path));
            let had_policies = self.files.get(&path).is_some_and(|s| !s.good.is_empty());
            // An empty file is what a non-atomic write looks like halfway; dropping every
            // policy it held on that evidence would be worse than a visible error.
            let parsed = if had_policies && text.trim().is_empty() {
                Err(vec![PolicyError::new(
                    source.0.clone(),
                    "",
                    "the file is empty; its last good version keeps serving (delete the file to remove its policies)",
                )])
            } else {
                parse_documents(&source, &text)
            };
            let state = self.files.entry(path).or_insert_with(|| FileState {
                content_hash,
                good: Vec::new(),
                errors: Vec::new(),
            });
            state.content_hash = content_hash;
            match parsed {
                Ok(policies) => {
                    state.good = policies.into_iter().map(Arc::new).collect();
                    state.errors.clear();
                    report.changed = true;
                }
                Err(errors) => {
                    state.errors = errors.clone();
                    report.errors.extend(errors);
                }
            }
        }
        Ok(report)
    }

    /// A snapshot of every good policy.
    pub fn policy_set(&self) -> PolicySet {
        PolicySet::new(self.files.values().flat_map(|f| f.good.iter().cloned()))
    }
}

/// Loads files and folders strictly (for `check-policies` and `explain`): every error counts.
pub fn load_paths(paths: &[PathBuf]) -> (Vec<Arc<CompiledPolicy>>, Vec<PolicyError>) {
    let mut policies = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        let files = if p.is_dir() {
            match policy_files(p) {
                Ok(f) => f,
                Err(e) => {
                    errors.push(PolicyError::new(p.display().to_string(), "", e.to_string()));
                    continue;
                }
            }
        } else {
            vec![p.clone()]
        };
        for f in files {
            match std::fs::read_to_string(&f) {
                Ok(text) => match parse_documents(&PolicySource(display_name(&f)), &text) {
                    Ok(ps) => policies.extend(ps.into_iter().map(Arc::new)),
                    Err(es) => errors.extend(es),
                },
                Err(e) => errors.push(PolicyError::new(
                    f.display().to_string(),
                    "",
                    format!("cannot read: {e}"),
                )),
            }
        }
    }
    (policies, errors)
}

/// `*.yaml` and `*.yml` directly in `dir`, sorted; hidden entries (such as the `..data`
/// links of a mounted ConfigMap) are skipped.
fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SourceError::Folder {
        path: dir.display().to_string(),
        source,
    })?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.')
                && (name.ends_with(".yaml") || name.ends_with(".yml"))
                && p.is_file()
        })
        .collect();
    out.sort();
    Ok(out)
}

fn display_name(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {name: NAME}\nspec: {namespaces: [a], all: {labels: {x: \"1\"}}}\n";

    fn names(src: &FolderSource) -> Vec<String> {
        src.policy_set()
            .policies()
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    #[test]
    fn a_broken_file_keeps_its_last_good_version_and_a_fix_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("team.yaml");
        std::fs::write(&file, POLICY.replace("NAME", "one")).unwrap();
        let mut src = FolderSource::new(dir.path());
        let r = src.scan().unwrap();
        assert!(r.changed && r.errors.is_empty());
        assert_eq!(names(&src), ["one"]);

        std::fs::write(&file, POLICY.replace("NAME", "two").replace("[a]", "[]")).unwrap();
        let r = src.scan().unwrap();
        assert!(!r.changed);
        assert_eq!(r.errors.len(), 1);
        assert!(
            r.errors[0].to_string().contains("/spec/namespaces"),
            "{}",
            r.errors[0]
        );
        assert_eq!(names(&src), ["one"], "last good version still serves");

        // Unchanged broken content is not parsed again but still reported.
        let r = src.scan().unwrap();
        assert_eq!((r.reparsed, r.errors.len()), (0, 1));

        std::fs::write(&file, POLICY.replace("NAME", "two")).unwrap();
        let r = src.scan().unwrap();
        assert!(r.changed && r.errors.is_empty());
        assert_eq!(names(&src), ["two"]);
    }

    #[test]
    fn an_emptied_file_is_an_error_not_a_silent_removal_and_deleting_removes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("team.yaml");
        std::fs::write(&file, POLICY.replace("NAME", "one")).unwrap();
        let mut src = FolderSource::new(dir.path());
        src.scan().unwrap();
        std::fs::write(&file, "").unwrap();
        let r = src.scan().unwrap();
        assert_eq!(r.errors.len(), 1);
        assert!(r.errors[0].message.contains("empty"));
        assert_eq!(names(&src), ["one"]);

        std::fs::remove_file(&file).unwrap();
        let r = src.scan().unwrap();
        assert!(r.changed);
        assert!(names(&src).is_empty());
    }

    #[test]
    fn hidden_entries_and_other_extensions_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yml"), POLICY.replace("NAME", "a")).unwrap();
        std::fs::write(dir.path().join(".b.yaml"), POLICY.replace("NAME", "b")).unwrap();
        std::fs::write(dir.path().join("schema.json"), "{}").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let mut src = FolderSource::new(dir.path());
        assert!(src.scan().unwrap().errors.is_empty());
        assert_eq!(names(&src), ["a"]);
    }
}
