//! The harness of the test tiers that need something from outside the repository (a
//! kube-apiserver, Apache Spark's `spark-submit`), on libtest-mimic.
//!
//! A tier whose asset is missing is skipped with **one** line on stderr for the whole run
//! (what is missing, and the command that fills it), and each of its tests is reported as
//! ignored, so cargo's own summary line counts them. With the tier's `…=required`
//! variable set, a missing asset fails every test of the tier instead.

use libtest_mimic::{Arguments, Failed, Trial};

/// An outside asset a group of tests needs.
pub struct Asset<T> {
    /// Short name in the skip line and the CI tier table, e.g. `e2e (kube-apiserver)`.
    pub tier: &'static str,
    /// What was found, or why it is missing.
    pub found: Result<T, String>,
    /// `true` when a missing asset must fail the tests (e.g. `SPARK_ADMISSION_E2E=required`).
    pub required: bool,
    /// The command that provides it, for the skip line.
    pub fill: &'static str,
}

impl<T: Clone + Send + 'static> Asset<T> {
    /// A test that needs this asset: run with it, ignored without it (failed when required).
    pub fn test(&self, name: &str, body: impl FnOnce(T) + Send + 'static) -> Trial {
        match &self.found {
            Ok(asset) => {
                let asset = asset.clone();
                Trial::test(name, move || {
                    body(asset);
                    Ok(())
                })
            }
            Err(why) if self.required => {
                let msg = format!("{}: {why} (required here); {}", self.tier, self.fill);
                Trial::test(name, move || Err(Failed::from(msg)))
            }
            Err(_) => Trial::test(name, || Ok(())).with_ignored_flag(true),
        }
    }

    /// The one line that says the tier did not run, when it did not.
    fn skip_line(&self, count: usize) -> Option<String> {
        match &self.found {
            Err(why) if count > 0 && !self.required => Some(format!(
                "tier {}: skipped {count} test(s): {why}; to run them: {}",
                self.tier, self.fill
            )),
            _ => None,
        }
    }
}

/// A test that needs nothing from outside.
pub fn plain(name: &str, body: impl FnOnce() + Send + 'static) -> Trial {
    Trial::test(name, move || {
        body();
        Ok(())
    })
}

/// The tests of one tier, gathered per asset so the skip line can count them.
#[derive(Default)]
pub struct Suite {
    trials: Vec<Trial>,
    skip_lines: Vec<String>,
}

impl Suite {
    pub fn new() -> Suite {
        Suite::default()
    }

    /// Adds the tests that need `asset`, built by `tests` from the asset.
    pub fn with<T: Clone + Send + 'static>(
        mut self,
        asset: &Asset<T>,
        tests: impl FnOnce(&Asset<T>) -> Vec<Trial>,
    ) -> Suite {
        let trials = tests(asset);
        if let Some(line) = asset.skip_line(trials.len()) {
            self.skip_lines.push(line);
        }
        self.trials.extend(trials);
        self
    }

    /// Adds tests that need nothing from outside.
    pub fn plain(mut self, trials: Vec<Trial>) -> Suite {
        self.trials.extend(trials);
        self
    }

    /// Prints the skip lines (when the run is not just listing tests), runs, and exits
    /// with libtest's status.
    pub fn run(self) -> ! {
        let args = Arguments::from_args();
        if !args.list {
            // Straight to stderr, unbuffered: the one line a reader must see.
            use std::io::Write;
            let mut err = std::io::stderr().lock();
            for line in &self.skip_lines {
                let _ = writeln!(err, "{line}");
            }
        }
        libtest_mimic::run(&args, self.trials).exit()
    }
}

/// `true` when the variable holds `required`.
pub fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "required")
}
