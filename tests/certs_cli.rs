//! `spark-admission certs`: material for a cluster install, and renewal from the same CA.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_spark-admission");

fn certs(args: &[&str]) -> std::process::Output {
    Command::new(BIN).arg("certs").args(args).output().unwrap()
}

#[test]
fn renew_issues_a_new_serving_certificate_under_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let first = certs(&["--out", out, "--dns", "spark-admission.spark-admission.svc"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let bundle = String::from_utf8(first.stdout).unwrap();
    let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let leaf = std::fs::read(dir.path().join("tls.crt")).unwrap();
    let key = std::fs::read(dir.path().join("tls.key")).unwrap();

    // Without --force or --renew, existing material is never overwritten.
    let again = certs(&["--out", out]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let renewed = certs(&[
        "--out",
        out,
        "--renew",
        "--dns",
        "spark-admission.spark-admission.svc",
    ]);
    assert!(
        renewed.status.success(),
        "{}",
        String::from_utf8_lossy(&renewed.stderr)
    );
    assert_eq!(
        String::from_utf8(renewed.stdout).unwrap(),
        bundle,
        "the caBundle does not change"
    );
    assert_eq!(std::fs::read(dir.path().join("ca.crt")).unwrap(), ca);
    assert_ne!(std::fs::read(dir.path().join("tls.crt")).unwrap(), leaf);
    assert_ne!(std::fs::read(dir.path().join("tls.key")).unwrap(), key);

    // The renewed pair is one the server accepts (the loader `serve` uses: key matches the
    // certificate), for the names asked for.
    use spark_admission::admission::tls;
    let loaded = tls::load_pair(
        &dir.path().join("tls.crt"),
        &dir.path().join("tls.key"),
        &tls::provider(),
    )
    .unwrap();
    assert!(
        loaded
            .names
            .iter()
            .any(|n| n == "spark-admission.spark-admission.svc"),
        "{:?}",
        loaded.names
    );
    assert!(
        loaded.names.iter().any(|n| n == "127.0.0.1"),
        "{:?}",
        loaded.names
    );
}

#[test]
fn renew_without_a_ca_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = certs(&["--out", dir.path().to_str().unwrap(), "--renew"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ca.crt"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
