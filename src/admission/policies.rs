//! Keeps the policy store in step with the policy folder, off the request path.
//!
//! Before the first install, a set is installed only when every file is good: a typo at
//! startup keeps the server unready instead of silently serving without that policy.
//! Afterwards a broken file keeps its last good version (FolderSource's rule) and the
//! other files' changes still go live.

use std::path::Path;
use std::sync::Arc;

use crate::metrics::{Metrics, ReloadResult};
use crate::source::install::{Gate, Installer};
use crate::source::{FolderSource, PolicyStore, SourceError};

#[derive(Debug)]
pub struct PolicyWatcher {
    source: FolderSource,
    installer: Installer,
    metrics: Arc<Metrics>,
    /// The folder could not be read on the last scan (to log the failure once).
    folder_failing: bool,
}

impl PolicyWatcher {
    pub fn new(dir: &Path, store: Arc<PolicyStore>, metrics: Arc<Metrics>) -> Self {
        Self {
            source: FolderSource::new(dir),
            installer: Installer::new(
                store,
                Arc::clone(&metrics),
                format!("folder {}", dir.display()),
            ),
            metrics,
            folder_failing: false,
        }
    }

    pub fn dir(&self) -> &Path {
        self.source.dir()
    }

    /// The startup scan: an unreadable folder is an error, broken files are logged.
    pub fn initial_load(&mut self) -> Result<(), SourceError> {
        let report = self.source.scan()?;
        self.apply(report.changed, report.reparsed, &report.errors);
        if !self.installer.store().is_loaded() {
            tracing::error!(
                folder = %self.dir().display(),
                errors = report.errors.len(),
                "policies have errors: the webhook stays unready until they are fixed"
            );
        }
        Ok(())
    }

    /// One scan: installs a new snapshot when the good set changed.
    pub fn poll(&mut self) {
        match self.source.scan() {
            Ok(report) => {
                if self.folder_failing {
                    tracing::info!(folder = %self.dir().display(), "policy folder readable again");
                    self.folder_failing = false;
                }
                self.apply(report.changed, report.reparsed, &report.errors);
            }
            Err(e) => {
                if !self.folder_failing {
                    tracing::error!(
                        error = %e,
                        "cannot read the policy folder; the current policies keep serving"
                    );
                    self.metrics.record_policy_reload(ReloadResult::Failed);
                    self.folder_failing = true;
                }
            }
        }
    }

    fn apply(&mut self, changed: bool, reparsed: usize, errors: &[crate::policy::PolicyError]) {
        self.installer.changed(changed);
        if changed {
            self.installer.change_seen();
        }
        self.metrics.set_policy_errors(errors.len());
        // Unchanged broken files are reported by every scan; log them only when something
        // was read again, so a broken file shows up once per edit, not once per poll.
        if reparsed > 0 {
            for e in errors {
                tracing::error!(error = %e, "policy rejected; its last good version (if any) keeps serving");
            }
        }
        match self.installer.gate(true, errors.len()) {
            Gate::Install => {
                let set = self.source.policy_set();
                for w in &set.warnings {
                    tracing::warn!(warning = w.as_str(), "policy set");
                }
                // The folder source sends no Events; the install logs the same line.
                let _ = self.installer.install(set, errors.len());
            }
            Gate::Wait | Gate::Unready => {
                if reparsed > 0 && !errors.is_empty() {
                    self.metrics.record_policy_reload(ReloadResult::Rejected);
                }
            }
        }
    }
}
