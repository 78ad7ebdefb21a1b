//! Apache Spark's own `spark-submit`, from the pyspark venvs `scripts/e2e-assets.sh`
//! installs (`SPARK_ADMISSION_E2E_PYSPARK`, space-separated folders).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The variable naming the venvs.
pub const VENVS_VAR: &str = "SPARK_ADMISSION_E2E_PYSPARK";

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
    pub fn command(&self, dir: &Path) -> Command {
        let mut cmd = Command::new(&self.spark_submit);
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

impl Pyspark {
    /// The driver container's entrypoint, as Spark's image runs it: `spark-submit` in
    /// client mode with `dir/spark.properties` standing for the file spark-submit wrote,
    /// running `dir/app.py`, `SPARK_SUBMIT_OPTS` as the pod's env gives it, output to
    /// `dir/stdout` and `dir/stderr` (Spark logs more than a pipe holds). Append the app's
    /// arguments, then spawn.
    pub fn driver_in_client_mode(&self, dir: &Path, submit_opts: &str) -> std::io::Result<Command> {
        let out = std::fs::File::create(dir.join("stdout"))?;
        let err = std::fs::File::create(dir.join("stderr"))?;
        let mut cmd = self.command(dir);
        // The JVM decodes its environment with the locale's charset: a UTF-8 one, as in a
        // container image, so that non-ASCII values can arrive at all.
        cmd.env("LANG", "C.UTF-8")
            .env("SPARK_SUBMIT_OPTS", submit_opts)
            .args(["--master", "local[1]", "--deploy-mode", "client"])
            .arg("--properties-file")
            .arg(dir.join("spark.properties"))
            .arg(dir.join("app.py"))
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err);
        Ok(cmd)
    }
}

/// Every venv the variable names, or why there is none to use. A listed folder that is
/// not a pyspark venv is an error too: a half-installed asset must not shrink the run.
pub fn venvs() -> Result<Vec<Pyspark>, String> {
    let list = std::env::var(VENVS_VAR).unwrap_or_default();
    if list.split_whitespace().next().is_none() {
        return Err(format!("{VENVS_VAR} names no pyspark venv"));
    }
    list.split_whitespace()
        .map(|v| {
            venv(Path::new(v)).ok_or_else(|| format!("{v} (in {VENVS_VAR}) is not a pyspark venv"))
        })
        .collect()
}

fn venv(dir: &Path) -> Option<Pyspark> {
    let spark_submit = dir.join("bin/spark-submit");
    let python = dir.join("bin/python");
    if !spark_submit.is_file() || !python.is_file() {
        return None;
    }
    // The version is in the package's own metadata: no JVM start needed to read it.
    let out = Command::new(&python)
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
