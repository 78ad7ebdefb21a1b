//! What an on-call admin sees of a replica: why `serve` stopped (as JSON with JSON logs),
//! both ports reachable over IPv4 and IPv6, and which policies it serves.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::Value;

use crate::common::*;
use crate::common::{KillOnDrop, READY_TIMEOUT};
use crate::process::{serve_command, start_webhook};

/// Runs `cmd` to its end (bounded), returning (exit code, stdout, stderr).
fn run_to_exit(mut cmd: Command) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    cmd.stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    let mut child = KillOnDrop(cmd.spawn().unwrap());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < READY_TIMEOUT,
            "serve did not stop: {}",
            std::fs::read_to_string(&out).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code(),
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&err).unwrap(),
    )
}

/// What a `serve` with JSON logs printed when it stopped on an error: exit code 2, nothing
/// on stderr, and stdout's lines, each one JSON.
fn json_lines_of_a_failed_serve(
    (code, stdout, stderr): (Option<i32>, String, String),
) -> Vec<Value> {
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.trim().is_empty(),
        "nothing outside the JSON log: {stderr}"
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

pub fn a_fatal_serve_error_is_the_last_log_line_and_json_when_logs_are_json() {
    // The webhook port is taken: serve starts (certificates, policies), then cannot bind.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    write_policies(
        &dir.path().join("policies"),
        &[("test-labels.yaml", LABEL_POLICY)],
    );
    let serve = |format: &str| {
        let mut cmd = serve_command(dir.path());
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--log-format", format]);
        run_to_exit(cmd)
    };

    let lines = json_lines_of_a_failed_serve(serve("json"));
    assert!(
        lines.len() > 1,
        "the start-up log, then the error: {lines:?}"
    );
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR", "{last}");
    assert_eq!(last["message"], "serve stopped");
    let error = last["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("cannot listen on 127.0.0.1:{port}: ")),
        "the error with its cause: {error}"
    );
    // Shaped like the other lines, so a log pipeline parses it the same way.
    assert!(last["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(last["target"], "spark_admission");

    // Text logs keep the plain line on stderr.
    let (code, _, stderr) = serve("text");
    assert_eq!(code, Some(2));
    assert!(
        stderr
            .lines()
            .last()
            .unwrap_or_default()
            .starts_with(&format!("error: cannot listen on 127.0.0.1:{port}: ")),
        "{stderr}"
    );
    drop(taken);
}

/// A flag or an environment value `serve` refuses (a Deployment's typo): with JSON logs,
/// the default, one JSON line shaped like the log's, naming the flag and clap's tip; with
/// text logs (flag or environment), clap's own text on stderr. Help still prints as help.
pub fn a_refused_command_line_is_one_json_line_when_serve_logs_json() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |args: &[&str], env: Option<&str>| {
        let mut cmd = serve_command(dir.path());
        cmd.args(args);
        if let Some(format) = env {
            cmd.env("SPARK_ADMISSION_LOG_FORMAT", format);
        }
        run_to_exit(cmd)
    };

    let lines = json_lines_of_a_failed_serve(serve(&["--max-body", "3"], None));
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(line["level"], "ERROR", "{line}");
    assert_eq!(line["message"], "serve did not start: invalid command line");
    assert_eq!(line["target"], "spark_admission");
    assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    let error = line["error"].as_str().unwrap();
    assert!(
        error.starts_with("unexpected argument '--max-body' found")
            && error.contains("'--max-body-bytes'"),
        "the flag and clap's tip: {error}"
    );
    assert!(!error.contains("Usage:"), "{error}");

    // A value refused, the log format given by the environment (JSON) and by a flag
    // after it (the flag wins, as clap decides).
    let (code, stdout, _) = serve(&["--listen", "nonsense"], Some("json"));
    assert_eq!(code, Some(2));
    let line: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("'nonsense' for '--listen"),
        "{line}"
    );
    for (args, env) in [
        (
            &["--listen", "nonsense", "--log-format", "text"][..],
            Some("json"),
        ),
        (&["--log-format=text", "--listen", "nonsense"][..], None),
        (&["--listen", "nonsense"][..], Some("text")),
    ] {
        let (code, stdout, stderr) = serve(args, env);
        assert_eq!(code, Some(2), "{args:?}");
        assert!(stdout.trim().is_empty(), "{args:?}: {stdout}");
        assert!(
            stderr.starts_with("error: invalid value 'nonsense' for '--listen"),
            "{args:?} {env:?}: {stderr}"
        );
    }

    // An argument that is not UTF-8 is refused the same way (not a panic).
    let mut cmd = serve_command(dir.path());
    cmd.arg("--listen")
        .arg(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"\xff"));
    let lines = json_lines_of_a_failed_serve(run_to_exit(cmd));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap()
            .contains("invalid UTF-8"),
        "{lines:?}"
    );

    let (code, stdout, _) = serve(&["--help"], None);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("--log-format"), "{stdout}");
}

/// `::1` can be bound on this machine (IPv6 on the loopback interface).
fn has_ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

async fn a_review_is_answered(addr: SocketAddr, ca: &[u8]) {
    let mut conn = Conn::connect(addr, ca, Proto::H1, Some("localhost"), None)
        .await
        .unwrap_or_else(|e| panic!("TLS to {addr}: {e}"));
    let (status, body) = conn
        .post("/mutate", fixture("mutate-driver-scala-sparkpi.json"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{addr}");
    let response = response_of(&body);
    assert_eq!(response["allowed"], true, "{addr}");
    assert!(response["patch"].is_string(), "{addr}: the policy applied");
}

pub fn both_ports_listen_on_ipv4_and_ipv6_by_default() {
    crate::runtime().block_on(both_ports_listen());
}

async fn both_ports_listen() {
    let ipv6 = has_ipv6_loopback();
    if !ipv6 {
        eprintln!("no IPv6 on the loopback interface: checking the IPv4 side of [::] only");
    }
    // `[::]` is the default of --listen and --admin-listen (see admission::tests); a free
    // port is passed here, the address is the default's.
    let w = start_webhook("[::]", &["--log-format", "text"]).await;
    let (webhook_port, admin_port) = (w.webhook.port(), w.admin.port());
    let mut hosts = vec![std::net::IpAddr::from([127, 0, 0, 1])];
    if ipv6 {
        hosts.push(std::net::Ipv6Addr::LOCALHOST.into());
    }
    let ca = w.ca_pem();
    for host in hosts {
        let admin = SocketAddr::new(host, admin_port);
        assert_eq!(
            admin_get(admin, "/readyz").await.0,
            StatusCode::OK,
            "{admin}"
        );
        let (status, metrics) = admin_get(admin, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(metrics.contains("spark_admission_ready 1"), "{metrics}");
        a_review_is_answered(SocketAddr::new(host, webhook_port), &ca).await;
    }
}

pub fn the_log_names_the_policies_served_with_their_versions_at_start_and_on_each_change() {
    crate::runtime().block_on(the_log_names_the_policies());
}

async fn the_log_names_the_policies() {
    let w = start_webhook(
        "127.0.0.1",
        &["--log-format", "json", "--policy-poll-interval", "200ms"],
    )
    .await;
    let served = |log: &str| -> Vec<String> {
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == "policies loaded")
            .map(|v| v["names"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let at_start = served(&w.log_text());
    assert_eq!(at_start.len(), 1, "{}", w.log_text());
    let tag = |s: &str| {
        let (name, hash) = s
            .split_once('@')
            .unwrap_or_else(|| panic!("name@version: {s}"));
        assert_eq!(name, "test-labels");
        assert!(
            hash.len() >= 8 && hash.chars().all(|c| c.is_ascii_hexdigit()),
            "{s}"
        );
        hash.to_owned()
    };
    let first = tag(&at_start[0]);
    write_atomic(&w.policies.join("test-labels.yaml"), LABEL_POLICY_V2);
    eventually(
        "a second policies loaded line",
        Duration::from_secs(60),
        || async { served(&w.log_text()).len() == 2 },
    )
    .await;
    let second = tag(&served(&w.log_text())[1]);
    assert_ne!(first, second, "a new version after the change");
}

pub fn a_large_policy_set_is_logged_in_lines_a_log_pipeline_keeps_whole() {
    crate::runtime().block_on(a_large_policy_set_is_logged_in_bounded_lines());
}

/// containerd splits a container's log line longer than 16 KiB into pieces a JSON log
/// pipeline cannot parse: 1,500 policies' names must arrive in whole lines, all of them,
/// with what changed said first.
async fn a_large_policy_set_is_logged_in_bounded_lines() {
    let w = start_webhook(
        "127.0.0.1",
        &["--log-format", "json", "--policy-poll-interval", "200ms"],
    )
    .await;
    // One file of 1,500 documents: installed at once (the folder is read file by file).
    let docs: Vec<String> = (0..1500)
        .map(|i| {
            format!(
                "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata:\n  name: team-{i:04}-defaults\nspec:\n  namespaces: [team-{i:04}]\n  all:\n    labels: {{team: t{i}}}\n"
            )
        })
        .collect();
    write_atomic(&w.policies.join("teams.yaml"), &docs.join("---\n"));
    let loaded = |log: &str| -> Vec<(usize, Value)> {
        log.lines()
            .filter_map(|l| Some((l.len(), serde_json::from_str::<Value>(l).ok()?)))
            .filter(|(_, v)| {
                v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("policies loaded"))
            })
            .collect()
    };
    eventually(
        "the 1,501 policies loaded",
        Duration::from_secs(60),
        || async {
            loaded(&w.log_text())
                .iter()
                .any(|(_, v)| v["message"] == "policies loaded" && v["policies"] == 1501)
        },
    )
    .await;
    let log = w.log_text();
    for line in log.lines() {
        assert!(line.len() < 16 * 1024, "a log line of {} bytes", line.len());
    }
    let lines = loaded(&log);
    let first = lines
        .iter()
        .position(|(_, v)| v["message"] == "policies loaded" && v["policies"] == 1501)
        .unwrap();
    let head = &lines[first].1;
    let count = head["name_lines"].as_u64().unwrap() as usize;
    assert!(count > 1, "{head}");
    let mut names: Vec<String> = Vec::new();
    for (i, (_, v)) in lines[first..first + count].iter().enumerate() {
        if i > 0 {
            assert_eq!(v["message"], "policies loaded (names continued)", "{v}");
            assert_eq!(v["line"], i + 1, "{v}");
            assert_eq!(v["of"], count, "{v}");
        }
        names.extend(v["names"].as_str().unwrap().split(',').map(str::to_owned));
    }
    assert_eq!(names.len(), 1501, "every policy named once");
    for i in [0, 777, 1499] {
        let want = format!("team-{i:04}-defaults@");
        assert!(names.iter().any(|n| n.starts_with(&want)), "{want} missing");
    }
    assert!(names.iter().any(|n| n.starts_with("test-labels@")));
    // What changed, bounded: the first additions, then how many more.
    let changes = head["changes"].as_str().unwrap();
    assert!(
        changes.starts_with("added team-0000-defaults@"),
        "{changes}"
    );
    assert!(changes.contains(" more"), "{changes}");
    assert!(!changes.contains("test-labels"), "unchanged: {changes}");
}
