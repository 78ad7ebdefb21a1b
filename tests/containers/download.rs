//! The download init container, executed. The engine plans a real Spark pod with a download
//! dependency; the test takes the init container exactly as planned, expands its command and
//! args as the kubelet does (`$(NAME)` from the container's environment, `$$` -> `$`), and
//! runs them against an HTTP server on 127.0.0.1:
//! - with runc, as a kubelet would: the numeric user and group of the securityContext, no
//!   capabilities, no new privileges, a read-only root (the host's /usr and /etc, read-only),
//!   the emptyDir (0777, like the kubelet's) bind-mounted at the container's own path. The
//!   one difference: the host's network namespace, so that 127.0.0.1 reaches the server;
//! - as a plain process with the host's `sh` and `curl`, the emptyDir path (the script's first
//!   argument) pointed at a temporary folder, everything else as planned.
//!
//! Each runs under the host's `sh` (dash on Debian) and, when present, busybox's `sh` and
//! `sha256sum`: curlimages/curl is Alpine, whose shell and tools are busybox.
//! Tools: root, curl, runc and busybox (Debian packages `curl`, `runc`, `busybox`): without
//! them the tier is skipped with one line, and fails when `SPARK_ADMISSION_CONTAINERS=required`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::engine_support::*;

const HEADER: &str = "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\n";

/// Far above what a local transfer of a few bytes takes; only a hang reaches it.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Paths under this one stall after the headers (see [`serve`]).
const STALL_PREFIX: &str = "/stall/";
/// How long a stalled connection is held open: longer than any stall timeout tested.
const STALL_HOLD: Duration = Duration::from_secs(60);

/// A service-link variable, as the kubelet puts one in every container's environment for
/// each Service of the namespace: a tenant chooses its name and value.
const TENANT_VAR: (&str, &str) = ("EVIL_SERVICE_HOST", "attacker.example");

// ---------------------------------------------------------------- the HTTP server

/// Serves fixed bodies by path, one connection at a time, `404` for anything else.
struct Repo {
    port: u16,
}

impl Repo {
    fn start(files: BTreeMap<String, Vec<u8>>) -> Repo {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        let files = Arc::new(files);
        // Lives as long as the test binary: it only ever answers loopback requests.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let files = Arc::clone(&files);
                // One thread a connection: a stalled one must not hold up curl's retries.
                std::thread::spawn(move || serve(stream, &files));
            }
        });
        Repo { port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn serve(stream: TcpStream, files: &BTreeMap<String, Vec<u8>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request_line.split(' ').nth(1).unwrap_or("");
    let mut out = stream;
    if path.starts_with(STALL_PREFIX) {
        // A repository that accepted the request and stopped sending: headers and the first
        // bytes of a body, then nothing while the connection stays open.
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\nPK"
        )?;
        out.flush()?;
        std::thread::sleep(STALL_HOLD);
        return Ok(());
    }
    match files.get(path) {
        Some(body) => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            out.write_all(body)?;
        }
        None => write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
    }
    out.flush()
}

// ---------------------------------------------------------------- what the engine plans

struct Planned {
    command: Vec<String>,
    args: Vec<String>,
    security: Value,
    mount_path: String,
}

/// The download init container the engine adds to a real driver for these `urls` items.
fn planned(urls: &[String]) -> Planned {
    planned_with(urls, "")
}

/// The same, with more `download` settings (YAML lines at the `urls:` indentation).
fn planned_with(urls: &[String], settings: &str) -> Planned {
    let items: String = urls.iter().map(|u| format!("          - {u}\n")).collect();
    let yaml = format!(
        "{HEADER}metadata: {{name: dl}}\nspec:\n  namespaces: [spark-jobs]\n  all:\n    dependencies:\n    - name: jars\n      source:\n        download:\n{settings}          urls:\n{items}"
    );
    let set = policies(&yaml);
    let (_, out) = mutate_checked(
        &set,
        &review_pod("mutate-driver-scala-sparkpi"),
        "spark-jobs",
    );
    let init = &out["spec"]["initContainers"][0];
    assert_eq!(init["name"], "spark-deps-jars");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("not a list: {v}"))
            .iter()
            .map(|s| s.as_str().expect("string").to_owned())
            .collect()
    };
    Planned {
        command: strings(&init["command"]),
        args: strings(&init["args"]),
        security: init["securityContext"].clone(),
        mount_path: init["volumeMounts"][0]["mountPath"]
            .as_str()
            .expect("mountPath")
            .to_owned(),
    }
}

/// The kubelet's expansion of a container's command and args: `$$` is a literal `$`,
/// `$(NAME)` is the variable's value when the environment defines it and stays as written
/// otherwise (an unclosed `$(` too), any other `$` stays.
fn kubelet_expand(input: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(reference) = after.strip_prefix('(') {
            match reference.find(')') {
                Some(close) => {
                    let name = &reference[..close];
                    match env.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &reference[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = reference;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

pub fn kubelet_expansion_as_specified() {
    let env = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
    for (input, expected) in [
        ("$(A)", "1"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$1"),
        ("$(B)", "$(B)"),
        ("$(A", "$(A"),
        ("a$b$", "a$b$"),
        ("${A}", "${A}"),
        ("$$$$", "$$"),
    ] {
        assert_eq!(kubelet_expand(input, &env), expected, "{input}");
    }
}

// ---------------------------------------------------------------- how it runs

/// The container's environment: the image's PATH, HOME as the kubelet sets it for a uid
/// the image does not know, and one tenant-chosen service-link variable.
fn container_env(path: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("PATH".to_owned(), path.to_owned()),
        ("HOME".to_owned(), "/".to_owned()),
        (TENANT_VAR.0.to_owned(), TENANT_VAR.1.to_owned()),
    ])
}

#[derive(Clone, Copy, Debug)]
enum Shell {
    /// The host's `sh` and `sha256sum`.
    Host,
    /// busybox's `sh` and `sha256sum` ahead on PATH, as in the Alpine-based image.
    Busybox,
}

/// What the tier runs the container with: every shell, and runc when it can.
#[derive(Clone)]
pub struct Tools {
    shells: Vec<Shell>,
    runc: Option<PathBuf>,
    busybox: Option<PathBuf>,
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// The tools of this tier, or what is missing: all of them, so that a run that passed ran
/// the container every way (a kubelet's runc, Alpine's busybox, Debian's dash).
pub fn tools() -> Result<Tools, String> {
    let mut missing: Vec<&str> = ["curl", "sh", "sha256sum", "runc", "busybox"]
        .into_iter()
        .filter(|t| which(t).is_none())
        .collect();
    if !std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        missing.push("root (runc runs the container as a kubelet would)");
    }
    if !missing.is_empty() {
        return Err(format!("missing {}", missing.join(", ")));
    }
    Ok(Tools {
        shells: vec![Shell::Host, Shell::Busybox],
        runc: which("runc"),
        busybox: which("busybox"),
    })
}

/// What came of one run: the exit status, the emptyDir's files, what the script said.
struct Outcome {
    status: ExitStatus,
    /// From the start of the process (or of runc) to its exit.
    elapsed: Duration,
    files: BTreeMap<String, Vec<u8>>,
    owners: Vec<(u32, u32, u32)>,
    stderr: String,
}

impl Outcome {
    fn describe(&self) -> String {
        format!(
            "status {:?}, files {:?}, stderr:\n{}",
            self.status.code(),
            self.files.keys().collect::<Vec<_>>(),
            self.stderr
        )
    }
}

fn wait_bounded(mut child: Child, on_timeout: impl FnOnce()) -> (ExitStatus, String, Duration) {
    let mut stderr = child.stderr.take().expect("stderr piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > RUN_LIMIT {
            on_timeout();
            let _ = child.kill();
            panic!("the download did not finish within {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap_or_default(), start.elapsed())
}

fn empty_dir(parent: &Path) -> PathBuf {
    let dir = parent.join("emptydir");
    std::fs::create_dir(&dir).expect("emptyDir");
    // The kubelet creates an emptyDir world-writable.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    dir
}

fn collect(dir: &Path, status: ExitStatus, stderr: String, elapsed: Duration) -> Outcome {
    let mut files = BTreeMap::new();
    let mut owners = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read emptyDir").flatten() {
        let meta = entry.metadata().expect("metadata");
        owners.push((meta.uid(), meta.gid(), meta.mode() & 0o777));
        files.insert(
            entry.file_name().to_string_lossy().into_owned(),
            std::fs::read(entry.path()).expect("read file"),
        );
    }
    Outcome {
        status,
        elapsed,
        files,
        owners,
        stderr,
    }
}

/// A folder of busybox applets to put first on PATH.
fn busybox_bin(parent: &Path, busybox: &Path) -> PathBuf {
    let bin = parent.join("busybox-bin");
    std::fs::create_dir_all(&bin).expect("busybox bin");
    for applet in ["sh", "sha256sum"] {
        let link = bin.join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink(busybox, &link).expect("symlink");
        }
    }
    bin
}

/// The planned command and args as a plain process: only the emptyDir's path differs.
fn run_process(p: &Planned, tools: &Tools, shell: Shell) -> Outcome {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = empty_dir(work.path());
    let path = match (shell, &tools.busybox) {
        (Shell::Busybox, Some(bb)) => format!(
            "{}:/usr/local/bin:/usr/bin:/bin",
            busybox_bin(work.path(), bb).display()
        ),
        _ => "/usr/local/bin:/usr/bin:/bin".to_owned(),
    };
    let env = container_env(&path);
    let command: Vec<String> = p.command.iter().map(|c| kubelet_expand(c, &env)).collect();
    let mut args: Vec<String> = p.args.iter().map(|a| kubelet_expand(a, &env)).collect();
    assert_eq!(
        args[0], p.mount_path,
        "the script's first argument is the emptyDir"
    );
    args[0] = dir.display().to_string();
    let child = Command::new(&command[0])
        .args(&command[1..])
        .args(&args)
        .env_clear()
        .envs(&env)
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", command[0]));
    let (status, stderr, elapsed) = wait_bounded(child, || {});
    collect(&dir, status, stderr, elapsed)
}

static RUNS: AtomicUsize = AtomicUsize::new(0);

/// The planned container under runc, as a kubelet would start it.
fn run_runc(p: &Planned, tools: &Tools, runc: &Path, shell: Shell) -> Outcome {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = empty_dir(work.path());
    let bundle = work.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    // The image: the host's userland, read-only (a merged-/usr Debian: /bin, /lib are links).
    for d in ["usr", "etc", "proc", "dev", "sys", "tmp", "busybox-bin"] {
        std::fs::create_dir_all(rootfs.join(d)).expect("rootfs");
    }
    for link in ["bin", "sbin", "lib", "lib64"] {
        let target = Path::new("/").join(link);
        if let Ok(to) = std::fs::read_link(&target) {
            std::os::unix::fs::symlink(to, rootfs.join(link)).expect("symlink");
        } else if target.is_dir() {
            std::fs::create_dir_all(rootfs.join(link)).expect("rootfs dir");
        }
    }
    let mut path = "/usr/local/bin:/usr/bin:/bin".to_owned();
    let ro = json!(["rbind", "ro", "nosuid", "nodev"]);
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/usr", "type": "bind", "source": "/usr", "options": ro}),
        json!({"destination": "/etc", "type": "bind", "source": "/etc", "options": ro}),
    ];
    for link in ["bin", "sbin", "lib", "lib64"] {
        let target = Path::new("/").join(link);
        if std::fs::read_link(&target).is_err() && target.is_dir() {
            mounts.push(json!({"destination": format!("/{link}"), "type": "bind",
                               "source": target, "options": ro}));
        }
    }
    if let (Shell::Busybox, Some(bb)) = (shell, &tools.busybox) {
        let bin = busybox_bin(work.path(), bb);
        mounts.push(json!({"destination": "/busybox-bin", "type": "bind",
                           "source": bin, "options": ro}));
        path = format!("/busybox-bin:{path}");
    }
    // The emptyDir, writable, where the container mounts it.
    std::fs::create_dir_all(rootfs.join(p.mount_path.trim_start_matches('/')))
        .expect("mount point");
    mounts.push(
        json!({"destination": p.mount_path, "type": "bind", "source": dir,
                       "options": ["rbind", "rw", "nosuid", "nodev"]}),
    );

    let env = container_env(&path);
    let argv: Vec<String> = p
        .command
        .iter()
        .chain(&p.args)
        .map(|a| kubelet_expand(a, &env))
        .collect();
    let sc = &p.security;
    let uid = sc["runAsUser"].as_u64().expect("a numeric runAsUser");
    let gid = sc["runAsGroup"].as_u64().expect("a numeric runAsGroup");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    let no_caps: Vec<String> = Vec::new();
    let config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": argv,
            "env": env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "cwd": "/",
            "capabilities": {"bounding": no_caps, "effective": no_caps, "permitted": no_caps,
                             "inheritable": no_caps, "ambient": no_caps},
            "noNewPrivileges": sc["allowPrivilegeEscalation"] == json!(false),
        },
        "root": {"path": "rootfs", "readonly": sc["readOnlyRootFilesystem"] == json!(true)},
        "hostname": "spark-deps",
        "mounts": mounts,
        "linux": {
            // No network namespace: the test's server listens on the host's loopback.
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    });
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&config).expect("JSON"),
    )
    .expect("config.json");
    let state = work.path().join("runc-state");
    let id = format!(
        "spark-admission-dl-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    );
    let child = Command::new(runc)
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start runc");
    let (status, stderr, elapsed) = wait_bounded(child, || {
        let _ = Command::new(runc)
            .arg("--root")
            .arg(&state)
            .args(["kill", &id, "KILL"])
            .status();
    });
    assert!(
        !stderr.contains("runc run failed"),
        "runc could not start the container: {stderr}"
    );
    collect(&dir, status, stderr, elapsed)
}

/// Runs the planned container every way this machine allows.
fn run_everywhere(p: &Planned, tools: &Tools, check: impl Fn(&str, &Outcome)) {
    // The runs are independent (own folders, own runc ids): at once, so a test waiting on
    // curl's timeouts waits once, not once a run. Checked in a fixed order afterwards.
    let outcomes: Vec<(String, Outcome)> = std::thread::scope(|scope| {
        let mut runs = Vec::new();
        for &shell in &tools.shells {
            runs.push(scope.spawn(move || {
                (
                    format!("process, {shell:?} sh"),
                    run_process(p, tools, shell),
                )
            }));
            if let Some(runc) = &tools.runc {
                runs.push(scope.spawn(move || {
                    (
                        format!("runc, {shell:?} sh"),
                        run_runc(p, tools, runc, shell),
                    )
                }));
            }
        }
        runs.into_iter()
            .map(|run| run.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    for (how, out) in &outcomes {
        eprintln!("{how}: exit {:?}", out.status.code());
        check(how, out);
    }
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn repo() -> (Repo, Vec<u8>, Vec<u8>) {
    let aws = b"PK\x03\x04 stands in for hadoop-aws".to_vec();
    let sdk = b"PK\x03\x04 stands in for the SDK bundle".to_vec();
    let files = BTreeMap::from([
        ("/maven2/hadoop-aws-3.3.4.jar".to_owned(), aws.clone()),
        ("/maven2/aws-sdk-bundle.jar".to_owned(), sdk.clone()),
        ("/maven2/empty.jar".to_owned(), Vec::new()),
        ("/x$(EVIL_SERVICE_HOST)/odd.jar".to_owned(), b"odd".to_vec()),
    ]);
    (Repo::start(files), aws, sdk)
}

// ---------------------------------------------------------------- the cases

pub fn every_url_fine_gives_exit_0_and_every_file_readable_by_spark(tools: Tools) {
    let (repo, aws, sdk) = repo();
    let p = planned(&[
        format!(
            "{{url: \"{}\", sha256: \"{}\"}}",
            repo.url("/maven2/hadoop-aws-3.3.4.jar"),
            sha256(&aws)
        ),
        format!("\"{}\"", repo.url("/maven2/aws-sdk-bundle.jar")),
    ]);
    run_everywhere(&p, &tools, |how, out| {
        assert!(out.status.success(), "{how}: {}", out.describe());
        assert_eq!(
            out.files,
            BTreeMap::from([
                ("hadoop-aws-3.3.4.jar".to_owned(), aws.clone()),
                ("aws-sdk-bundle.jar".to_owned(), sdk.clone()),
            ]),
            "{how}"
        );
        for &(uid, gid, mode) in &out.owners {
            // Spark (uid 185) reads them: its own files, and readable by all.
            if how.starts_with("runc") {
                assert_eq!((uid, gid), (185, 185), "{how}");
            }
            assert_eq!(mode & 0o444, 0o444, "{how}: mode {mode:o}");
        }
    });
}

pub fn one_url_answering_404_fails_the_container_wherever_it_is_in_the_list(tools: Tools) {
    let (repo, _, _) = repo();
    let ok = format!("\"{}\"", repo.url("/maven2/hadoop-aws-3.3.4.jar"));
    let missing = format!("\"{}\"", repo.url("/maven2/missing-1.0.jar"));
    // First: curl without --fail-early exited 0 here. Last: it always failed.
    for urls in [[missing.clone(), ok.clone()], [ok, missing]] {
        let p = planned(&urls);
        run_everywhere(&p, &tools, |how, out| {
            // 22 is curl's own status for an HTTP error: `--fail-early` stopped it there.
            // (Without it, the script's file check would still fail the run, with 1.)
            assert_eq!(
                out.status.code(),
                Some(22),
                "{how}: {urls:?}: {}",
                out.describe()
            );
            assert!(out.stderr.contains("404"), "{how}: {}", out.describe());
        });
    }
}

pub fn a_checksum_mismatch_fails_the_container(tools: Tools) {
    let (repo, _, sdk) = repo();
    let wrong = sha256(b"another jar");
    let p = planned(&[
        format!(
            "{{url: \"{}\", sha256: \"{wrong}\"}}",
            repo.url("/maven2/hadoop-aws-3.3.4.jar")
        ),
        format!(
            "{{url: \"{}\", sha256: \"{}\"}}",
            repo.url("/maven2/aws-sdk-bundle.jar"),
            sha256(&sdk).to_uppercase()
        ),
    ]);
    run_everywhere(&p, &tools, |how, out| {
        assert_eq!(out.status.code(), Some(1), "{how}: {}", out.describe());
        assert!(
            out.stderr.contains(&format!(
                "hadoop-aws-3.3.4.jar from {} has SHA-256",
                repo.url("/maven2/hadoop-aws-3.3.4.jar")
            )) && out.stderr.contains(&wrong),
            "{how}: {}",
            out.describe()
        );
        assert!(
            !out.stderr.contains("aws-sdk-bundle.jar"),
            "{how}: the matching (upper-case) checksum passes: {}",
            out.describe()
        );
    });
}

pub fn an_empty_download_fails_the_container(tools: Tools) {
    let (repo, _, _) = repo();
    let p = planned(&[
        format!("\"{}\"", repo.url("/maven2/hadoop-aws-3.3.4.jar")),
        format!("\"{}\"", repo.url("/maven2/empty.jar")),
    ]);
    run_everywhere(&p, &tools, |how, out| {
        assert_eq!(out.status.code(), Some(1), "{how}: {}", out.describe());
        assert!(
            out.stderr.contains("left no file or an empty one"),
            "{how}: {}",
            out.describe()
        );
    });
}

pub fn a_tenant_variable_cannot_change_what_the_container_runs(tools: Tools) {
    let (repo, _, _) = repo();
    // An admin URL that happens to contain `$(NAME)`: the kubelet would substitute a
    // tenant's service-link variable into it (here: fetch /xattacker.example/odd.jar)
    // unless the engine escaped it.
    let p = planned(&[format!(
        "\"{}\"",
        repo.url("/x$(EVIL_SERVICE_HOST)/odd.jar")
    )]);
    run_everywhere(&p, &tools, |how, out| {
        assert!(out.status.success(), "{how}: {}", out.describe());
        assert_eq!(
            out.files,
            BTreeMap::from([("odd.jar".to_owned(), b"odd".to_vec())]),
            "{how}"
        );
    });
}

pub fn a_stalled_repository_fails_the_container_after_the_stall_timeout(tools: Tools) {
    let (repo, _, _) = repo();
    let stall_secs = 1;
    let p = planned_with(
        &[
            format!("\"{}\"", repo.url("/maven2/hadoop-aws-3.3.4.jar")),
            format!("\"{}\"", repo.url("/stall/aws-sdk-bundle.jar")),
        ],
        &format!("          stallTimeoutSeconds: {stall_secs}\n"),
    );
    run_everywhere(&p, &tools, |how, out| {
        // 28 is curl's status for a timeout: each of the 4 tries (3 retries) gave up after
        // `stall_secs` without a byte, instead of waiting for the server for ever.
        assert_eq!(out.status.code(), Some(28), "{how}: {}", out.describe());
        assert!(
            out.stderr.contains("(28)"),
            "{how}: curl says why: {}",
            out.describe()
        );
        assert!(
            out.elapsed >= Duration::from_secs(stall_secs),
            "{how}: gave up after {:?}, before the stall timeout",
            out.elapsed
        );
    });
}
