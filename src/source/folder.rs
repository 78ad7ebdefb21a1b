//! Policies from a local folder (the embedded default, or a mounted ConfigMap): every
//! `*.yaml`/`*.yml` file directly in it. A broken file keeps its last good version.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet};
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
        if forget_removed(&mut self.files, &paths) {
            report.changed = true;
        }
        // Read and hash every file first; parse the changed ones (in parallel when many
        // changed, as on startup or a bulk rewrite); then record the results in order.
        let mut jobs = Vec::new();
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
            let had_policies = self.files.get(&path).is_some_and(|s| !s.good.is_empty());
            jobs.push(ParseJob {
                source: PolicySource(display_name(&path)),
                path,
                text,
                content_hash,
                had_policies,
            });
        }
        report.reparsed = jobs.len();
        let results = parse_in_parallel(&jobs);
        for (job, parsed) in jobs.into_iter().zip(results) {
            let state = self.files.entry(job.path).or_insert_with(|| FileState {
                content_hash: job.content_hash,
                good: Vec::new(),
                errors: Vec::new(),
            });
            state.content_hash = job.content_hash;
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

/// Drops the state of files no longer in `present`; true if any was dropped. One hash
/// lookup per known file: a list search here made every scan quadratic in the file count.
fn forget_removed<K: Ord + Hash, V>(files: &mut BTreeMap<K, V>, present: &[K]) -> bool {
    let present: HashSet<&K> = present.iter().collect();
    let before = files.len();
    files.retain(|p, _| present.contains(p));
    files.len() != before
}

/// A changed file to parse.
struct ParseJob {
    path: PathBuf,
    source: PolicySource,
    text: String,
    content_hash: u64,
    had_policies: bool,
}

impl ParseJob {
    fn parse(&self) -> Result<Vec<CompiledPolicy>, Vec<PolicyError>> {
        // An empty file is what a non-atomic write looks like halfway; dropping every
        // policy it held on that evidence would be worse than a visible error.
        if self.had_policies && self.text.trim().is_empty() {
            return Err(vec![PolicyError::new(
                self.source.0.clone(),
                "",
                "the file is empty; its last good version keeps serving (delete the file to remove its policies)",
            )]);
        }
        parse_documents(&self.source, &self.text)
    }
}

/// Below this many changed files a scan parses on its own thread: an ordinary edit
/// touches one file, and threads would cost more than they save.
const PARALLEL_FROM_FILES: usize = 8;

/// Parses the jobs, results in the same order. Many changed files (startup, a bulk
/// rewrite of thousands of policies) are split over the machine's cores: YAML parsing is
/// most of a reload, and the files are independent.
fn parse_in_parallel(jobs: &[ParseJob]) -> Vec<Result<Vec<CompiledPolicy>, Vec<PolicyError>>> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    if threads < 2 || jobs.len() < PARALLEL_FROM_FILES {
        return jobs.iter().map(ParseJob::parse).collect();
    }
    let chunk = jobs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    lower_thread_priority();
                    part.iter().map(ParseJob::parse).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(jobs.len());
        for (worker, part) in workers.into_iter().zip(jobs.chunks(chunk)) {
            match worker.join() {
                Ok(results) => out.extend(results),
                // A panic in a parser is a bug; the files it held count as broken, so the
                // last good versions keep serving.
                Err(_) => out.extend(part.iter().map(|job| {
                    Err(vec![PolicyError::new(
                        job.source.0.clone(),
                        "",
                        "internal error while parsing this file",
                    )])
                })),
            }
        }
        out
    })
}

/// A bulk reparse runs beside the request workers on the same cores: at normal priority it
/// took p99 from 3 to 35 ms for the third of a second a 10,000-policy reload lasts. At nice
/// 10 the scheduler gives request threads ~10x its share while both want a core, and the
/// reload still gets every idle cycle. Only these short-lived threads are lowered.
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        // Linux keeps a nice value per thread: this lowers the calling thread only. A
        // failure only leaves the default priority.
        let tid = rustix::thread::gettid();
        let _ = rustix::process::setpriority_process(Some(tid), 10);
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
pub fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
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
    fn a_hostile_yaml_file_is_an_error_and_the_last_good_version_serves() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("team.yaml");
        std::fs::write(&file, POLICY.replace("NAME", "one")).unwrap();
        let mut src = FolderSource::new(dir.path());
        src.scan().unwrap();
        for (what, text) in spark_admission_testkit::hostile_yaml::texts() {
            std::fs::write(&file, text).unwrap();
            let r = src.scan().unwrap();
            assert_eq!(r.errors.len(), 1, "{what}");
            let e = r.errors[0].to_string();
            assert!(
                e.contains("team.yaml: /: not valid YAML: line "),
                "{what}: {e}"
            );
            assert_eq!(
                names(&src),
                ["one"],
                "{what}: last good version still serves"
            );
        }
    }

    #[test]
    fn many_changed_files_parsed_in_parallel_keep_their_own_results() {
        let dir = tempfile::tempdir().unwrap();
        let count = PARALLEL_FROM_FILES * 3;
        for i in 0..count {
            let text = POLICY.replace("NAME", &format!("p{i:02}"));
            std::fs::write(dir.path().join(format!("f{i:02}.yaml")), text).unwrap();
        }
        let mut src = FolderSource::new(dir.path());
        let r = src.scan().unwrap();
        assert_eq!((r.reparsed, r.errors.len()), (count, 0));
        let mut got = names(&src);
        got.sort();
        let want: Vec<String> = (0..count).map(|i| format!("p{i:02}")).collect();
        assert_eq!(got, want);

        // Every file rewritten, two of them broken: the errors name exactly those two
        // files, which keep their last good policies; the others take their new versions.
        for i in 0..count {
            let mut text = POLICY.replace("NAME", &format!("q{i:02}"));
            if i == 3 || i == count - 2 {
                text = text.replace("[a]", "[]");
            }
            std::fs::write(dir.path().join(format!("f{i:02}.yaml")), text).unwrap();
        }
        let r = src.scan().unwrap();
        assert_eq!(r.reparsed, count);
        let broken: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert!(broken[0].contains("/f03.yaml#1 (q03)"), "{broken:?}");
        let last = format!("/f{:02}.yaml#1 (q{:02})", count - 2, count - 2);
        assert!(broken[1].contains(&last), "{broken:?}");
        let mut got = names(&src);
        got.sort();
        let mut want: Vec<String> = (0..count)
            .map(|i| match i {
                3 => "p03".to_owned(),
                i if i == count - 2 => format!("p{i:02}"),
                i => format!("q{i:02}"),
            })
            .collect();
        want.sort();
        assert_eq!(got, want);
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

    thread_local! {
        static COMPARISONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Comparisons of [`Counting`] keys made by `f`.
    fn comparisons(f: impl FnOnce()) -> usize {
        COMPARISONS.with(|c| c.set(0));
        f();
        COMPARISONS.with(|c| c.get())
    }

    /// A file name that counts how often it is compared.
    #[derive(Debug, Clone, Eq)]
    struct Counting(String);

    // Hashes as its name, consistent with `eq` (which only counts, then compares names).
    impl std::hash::Hash for Counting {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            self.0.hash(state);
        }
    }

    impl PartialEq for Counting {
        fn eq(&self, other: &Self) -> bool {
            COMPARISONS.with(|c| c.set(c.get() + 1));
            self.0 == other.0
        }
    }
    impl PartialOrd for Counting {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Counting {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            COMPARISONS.with(|c| c.set(c.get() + 1));
            self.0.cmp(&other.0)
        }
    }

    #[test]
    fn forgetting_removed_files_takes_comparisons_linear_in_the_file_count() {
        // 4,000 files, one of them removed: a rescan must not compare every known file
        // with every listed one (16 million comparisons), only about one per file.
        let n = 4_000;
        let key = |i: usize| Counting(format!("/policies/team-{i:05}.yaml"));
        let mut files: BTreeMap<Counting, ()> = (0..n).map(|i| (key(i), ())).collect();
        let present: Vec<Counting> = (0..n).filter(|i| *i != 17).map(key).collect();
        let mut dropped = false;
        let made = comparisons(|| dropped = forget_removed(&mut files, &present));
        assert!(dropped);
        assert_eq!(files.len(), n - 1);
        assert!(!files.contains_key(&key(17)));
        assert!(
            made <= 4 * n,
            "{made} comparisons for {n} files: not linear"
        );
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
