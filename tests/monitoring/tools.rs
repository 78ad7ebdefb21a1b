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

/// The tool, or what is missing and where it comes from (the tier's skip line says it).
pub fn asset(name: &str, env: &str, package: &str) -> Result<PathBuf, String> {
    find(name, env)
        .ok_or_else(|| format!("{name} not found (PATH or {env}); it comes with {package}"))
}

pub fn repo_path(rel: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}
