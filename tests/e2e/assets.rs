//! What the suite runs against, found the envtest way, and what happens when it is missing.
//!
//! `KUBEBUILDER_ASSETS` names a folder with `kube-apiserver`, `etcd` and `kubectl` (what
//! `scripts/e2e-assets.sh` prepares, or `setup-envtest use 1.32 -p path` prints).
//! `SPARK_ADMISSION_E2E_PYSPARK` lists pyspark venvs, space-separated. Without them a test
//! says in one line why it did not run and passes; with `SPARK_ADMISSION_E2E=required` a
//! missing asset fails the test, so CI can never skip the suite silently.

use std::path::{Path, PathBuf};

/// The Kubernetes binaries of one `KUBEBUILDER_ASSETS` folder.
#[derive(Debug, Clone)]
pub struct KubeAssets {
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
    pub kubectl: PathBuf,
}

/// A pyspark installation: its `spark-submit` and the Spark version it brings.
#[derive(Debug, Clone)]
pub struct Pyspark {
    pub venv: PathBuf,
    pub spark_submit: PathBuf,
    pub python: PathBuf,
    pub version: String,
}

impl Pyspark {
    /// `spark-submit` of this venv, run as from an activated venv (it finds its Spark home
    /// through `python3`), in `dir`, on loopback.
    pub fn command(&self, dir: &Path) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.spark_submit);
        cmd.current_dir(dir)
            .env_remove("SPARK_HOME")
            .env_remove("SPARK_CONF_DIR")
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.venv.join("bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("PYSPARK_PYTHON", &self.python)
            .env("SPARK_LOCAL_IP", "127.0.0.1");
        cmd
    }
}

pub fn required() -> bool {
    std::env::var("SPARK_ADMISSION_E2E").is_ok_and(|v| v == "required")
}

/// Skips (one line on stderr) or, in required mode, fails.
fn missing(test: &str, why: &str) {
    if required() {
        panic!("{test}: {why} (SPARK_ADMISSION_E2E=required); run: eval \"$(bash scripts/e2e-assets.sh)\"");
    }
    // Straight to stderr: the harness captures eprintln! of passing tests, and this line
    // must be seen.
    use std::io::Write;
    let line = format!(
        "e2e {test}: not run: {why}; to run it: eval \"$(bash scripts/e2e-assets.sh)\" && cargo test --test e2e\n"
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The apiserver, etcd and kubectl, or `None` after saying why the test does not run.
pub fn kube(test: &str) -> Option<KubeAssets> {
    let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|d| !d.is_empty()) else {
        missing(test, "KUBEBUILDER_ASSETS is not set");
        return None;
    };
    let dir = PathBuf::from(dir);
    let find = |name: &str| -> Option<PathBuf> {
        let p = dir.join(name);
        p.is_file().then_some(p)
    };
    match (find("kube-apiserver"), find("etcd"), find("kubectl")) {
        (Some(kube_apiserver), Some(etcd), Some(kubectl)) => Some(KubeAssets {
            kube_apiserver,
            etcd,
            kubectl,
        }),
        _ => {
            missing(
                test,
                &format!("{} lacks kube-apiserver, etcd or kubectl", dir.display()),
            );
            None
        }
    }
}

/// Every pyspark venv of `SPARK_ADMISSION_E2E_PYSPARK`, or an empty list after saying why.
pub fn pyspark(test: &str) -> Vec<Pyspark> {
    let list = std::env::var("SPARK_ADMISSION_E2E_PYSPARK").unwrap_or_default();
    let venvs: Vec<Pyspark> = list
        .split_whitespace()
        .filter_map(|v| venv(Path::new(v)))
        .collect();
    if venvs.is_empty() {
        missing(test, "SPARK_ADMISSION_E2E_PYSPARK names no pyspark venv");
    } else if venvs.len() != list.split_whitespace().count() {
        missing(
            test,
            &format!("not every folder of SPARK_ADMISSION_E2E_PYSPARK ({list}) is a pyspark venv"),
        );
    }
    venvs
}

fn venv(dir: &Path) -> Option<Pyspark> {
    let spark_submit = dir.join("bin/spark-submit");
    let python = dir.join("bin/python");
    if !spark_submit.is_file() || !python.is_file() {
        return None;
    }
    // The version is in the package's own metadata: no JVM start needed to read it.
    let out = std::process::Command::new(&python)
        .args(["-c", "import pyspark; print(pyspark.__version__)"])
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !version.is_empty()).then(|| Pyspark {
        venv: dir.to_path_buf(),
        spark_submit,
        python,
        version,
    })
}
