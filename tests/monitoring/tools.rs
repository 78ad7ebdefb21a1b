//! External tools the tests run, and what happens when one is missing.

use std::path::PathBuf;

/// `name` from the environment variable `env` (a path), else from PATH.
pub fn find(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env).map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The tool, or None after one line saying what is missing. Under CI=true a missing tool
/// fails the test: CI installs it (`package`).
pub fn require(name: &str, env: &str, package: &str) -> Option<PathBuf> {
    let found = find(name, env);
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "{name} not found (PATH or {env}); CI installs it: {package}"
        );
        eprintln!("skipped: {name} not found (PATH or {env}); install {package} to run this test");
    }
    found
}

pub fn repo_path(rel: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}
