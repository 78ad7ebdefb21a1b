//! Scenario 5: the install as an admin runs it, checked by the real API server.

use std::path::Path;

use serde_json::Value;

use crate::cluster;

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let p = e.expect("entry").path();
        let dest = to.join(p.file_name().expect("name"));
        if p.is_dir() {
            copy_tree(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).expect("copy");
        }
    }
}

pub async fn the_deploy_kustomization_and_the_cert_manager_overlay_pass_a_server_dry_run() {
    let env = cluster::env("install");
    let c = env.cluster;
    let client = c.client().await;
    // As on a cluster where it was never installed: an earlier test's registration
    // (url-based) would merge with the shipped service-based clientConfig.
    crate::webhook::unregister(&client).await;
    let deploy = env.dir.join("deploy");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy"),
        &deploy,
    );
    let certs = std::process::Command::new(env!("CARGO_BIN_EXE_spark-admission"))
        .args([
            "certs",
            "--dns",
            "spark-admission.spark-admission.svc",
            "--out",
        ])
        .arg(deploy.join("tls"))
        .output()
        .expect("spark-admission certs");
    assert!(
        certs.status.success(),
        "{}",
        String::from_utf8_lossy(&certs.stderr)
    );

    let deploy_arg = deploy.display().to_string();
    let out = c.kubectl(&["apply", "-k", &deploy_arg, "--dry-run=server"], None);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "kubectl apply -k deploy/ --dry-run=server failed:\n{stderr}"
    );
    for kind in [
        "deployment.apps/spark-admission",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/spark-admission",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/spark-admission",
        "secret/spark-admission-tls",
    ] {
        assert!(
            stdout.contains(kind),
            "{kind} missing from the dry run:\n{stdout}"
        );
    }

    let overlay = deploy.join("cert-manager").display().to_string();
    let built = c.kubectl(&["kustomize", &overlay], None);
    assert!(
        built.status.success(),
        "kubectl kustomize deploy/cert-manager: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&String::from_utf8_lossy(&built.stdout)).expect("YAML");
    let (cert_manager, ours): (Vec<Value>, Vec<Value>) =
        docs.into_iter().filter(|d| !d.is_null()).partition(|d| {
            d["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("cert-manager.io/"))
        });
    assert!(
        cert_manager.len() >= 2,
        "the overlay has no Issuer/Certificate"
    );
    // cert-manager's CRDs are not installed here: the rest must pass on its own.
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": ours});
    let out = c.kubectl(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&list.to_string()),
    );
    assert!(
        out.status.success(),
        "the cert-manager overlay's own objects fail a server dry run:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
