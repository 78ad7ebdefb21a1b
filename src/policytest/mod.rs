//! `spark-admission test`: policy test cases with expected results, for GitOps CI.
//!
//! A test file names the policies under test, the input pods and, per case, what the
//! webhook must answer. Each case runs through the same engine calls as the webhook (via
//! [`crate::explain`]); nothing here re-implements a merge rule.
//!
//! [`model`] the file format · [`load`] discovery and inputs (bad input = exit 2) ·
//! [`run`] admitting a pod and checking expectations · [`compare`] partial and exact
//! comparison with readable paths · [`report`] text, JSON, JUnit · [`update`] `--update`.

pub mod compare;
pub mod load;
pub mod model;
pub mod report;
pub mod run;
pub mod update;

use std::path::PathBuf;

pub use load::InputError;
pub use model::{test_schema_json, TestFile, TEST_FILE_NAME};
pub use report::{render_junit, render_text, CaseReport, CaseStatus, FileReport, RunReport};

use crate::engine::Engine;

/// How a run ended, as the process exit code says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every expectation held (or was updated).
    Passed,
    /// Some expectation does not hold: exit 1.
    Failed,
    /// Some test file could not be run: exit 2, whatever the other files did.
    BadInput,
}

impl RunReport {
    pub fn outcome(&self) -> Outcome {
        if self.summary.errors > 0 {
            Outcome::BadInput
        } else if self.summary.failed > 0 {
            Outcome::Failed
        } else {
            Outcome::Passed
        }
    }
}

/// Finds and runs every test file under `paths`. Only finding no test file at all is an
/// `Err`; a file that cannot be run is reported in its [`FileReport`] and the others run.
pub fn run_paths(
    paths: &[PathBuf],
    engine: &Engine,
    update: bool,
) -> Result<RunReport, InputError> {
    let files = load::discover(paths)?;
    let mut report = RunReport::default();
    for path in files {
        report.files.push(run_file(&path, engine, update));
    }
    report.tally();
    Ok(report)
}

fn run_file(path: &std::path::Path, engine: &Engine, update: bool) -> FileReport {
    let mut out = FileReport {
        file: path.display().to_string(),
        errors: Vec::new(),
        policy_warnings: Vec::new(),
        cases: Vec::new(),
    };
    let mut test = match load::load(path, update) {
        Ok(t) => t,
        Err(errors) => {
            out.errors = errors;
            return out;
        }
    };
    out.policy_warnings = test.policies.warnings.clone();
    let mut changed = false;
    for (i, case) in test.file.spec.cases.iter_mut().enumerate() {
        // The loader checked that every case names a known pod.
        let Some(pod) = test.pods.get(&case.pod) else {
            continue;
        };
        let actual = match run::admit(engine, &test.policies, pod) {
            Ok(a) => a,
            Err(e) => {
                out.errors.push(InputError {
                    file: out.file.clone(),
                    path: format!("/spec/cases/{i}"),
                    message: e.to_string(),
                });
                continue;
            }
        };
        let mismatches = if case.expect.is_empty() {
            Vec::new()
        } else {
            run::check(&case.expect, &actual)
        };
        let status = if update && (case.expect.is_empty() || !mismatches.is_empty()) {
            case.expect = update::updated(&case.expect, &actual);
            changed = true;
            CaseStatus::Updated
        } else if mismatches.is_empty() {
            CaseStatus::Pass
        } else {
            CaseStatus::Fail
        };
        out.cases.push(CaseReport {
            name: case.name.clone(),
            pod: case.pod.clone(),
            namespace: actual.namespace,
            status,
            mismatches,
        });
    }
    if changed && out.errors.is_empty() {
        if let Err(e) = update::write(path, &test.text, &test.file) {
            out.errors.push(InputError {
                file: out.file.clone(),
                path: "/".to_owned(),
                message: e.to_string(),
            });
        }
    }
    out
}
