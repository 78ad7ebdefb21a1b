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
    for local in ["localhost", "127.0.0.1", "::1"] {
        assert!(
            loaded.names.iter().any(|n| n == local),
            "{local} missing: {:?}",
            loaded.names
        );
    }
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

/// `certs::write_file`: each write replaces the file whole, with the mode it asks for.
#[cfg(unix)]
mod write_file {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Arc, Barrier};

    use spark_admission::certs::write_file;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_leftover_world_readable_temp_file_does_not_make_the_key_world_readable() {
        let dir = tempfile::tempdir().unwrap();
        // What an interrupted earlier write (or someone else) may have left behind.
        let leftover = dir.path().join(".tls.key.tmp");
        std::fs::write(&leftover, b"old").unwrap();
        std::fs::set_permissions(&leftover, std::fs::Permissions::from_mode(0o666)).unwrap();

        let key = dir.path().join("tls.key");
        write_file(&key, b"-----BEGIN PRIVATE KEY-----\n", true).unwrap();
        assert_eq!(
            format!("{:o}", mode(&key)),
            "600",
            "a key is readable by its owner only"
        );
        assert_eq!(
            std::fs::read(&key).unwrap(),
            b"-----BEGIN PRIVATE KEY-----\n"
        );

        let cert = dir.path().join("tls.crt");
        write_file(&cert, b"cert", false).unwrap();
        assert_eq!(
            format!("{:o}", mode(&cert)),
            "644",
            "a certificate is world-readable"
        );
    }

    #[test]
    fn two_concurrent_writers_both_succeed_and_leave_one_complete_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join("tls.crt"));
        let contents = [vec![b'a'; 512 * 1024], vec![b'b'; 256 * 1024]];
        for _round in 0..10 {
            let start = Arc::new(Barrier::new(2));
            let writers: Vec<_> = contents
                .iter()
                .cloned()
                .map(|data| {
                    let (path, start) = (Arc::clone(&path), Arc::clone(&start));
                    std::thread::spawn(move || {
                        start.wait();
                        write_file(&path, &data, false)
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap().expect("every writer succeeds");
            }
            let now = std::fs::read(&*path).unwrap();
            assert!(
                contents.contains(&now),
                "the file is one writer's whole content, not a mix ({} bytes)",
                now.len()
            );
        }
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["tls.crt"], "no temporary file is left behind");
    }
}
