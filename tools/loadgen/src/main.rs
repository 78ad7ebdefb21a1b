//! `loadgen`: load generator and benchmark suite for the webhook (see BENCHMARKS.md).
//!
//! - `loadgen run`: drive one server — given by `--url`/`--ca` (and `--pid` for its memory),
//!   or started here — at a fixed concurrency or rate, over HTTP/1.1 or h2.
//! - `loadgen suite`: start the real server and the no-op baseline (`loadgen noop-server`:
//!   the same TLS and HTTP stack), measure both, then a reload of 10,000 policies under
//!   load; writes JSON.
//! - `loadgen noop-server`: `serve`'s listener with a fixed answer (the baseline).
//! - `loadgen smoke`: a few seconds of everything, exit status non-zero on any error (CI).
//! - `loadgen report`: criterion results + suite JSON -> the tables in BENCHMARKS.md.
//! - `loadgen slow-clients`: the slow-body attack, with real reviews meanwhile (issue 12).
//! - `loadgen review-body`: a fixture review as the API server sends it (for h2load).
//! - `loadgen crafted-flood` / `crafted-cost`: reviews crafted to be expensive beside
//!   ordinary ones, and one crafted review's cost in-process (issue 25).
//!
//! Reviews are posted as a kube-apiserver sends them: the fixture files are indented for
//! reading, the API server's bodies have no whitespace between tokens (`fixtures::as_sent`).

mod client;
mod crafted;
mod load;
mod noop;
mod report;
mod slow;
mod spawn;
mod suite;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use hyper::body::Bytes;
use spark_admission::duration::parse_duration;
use spark_admission_testkit::bench_policies as policies;
use spark_admission_testkit::fixtures::as_sent;

use client::Proto;
use load::Load;
use spawn::{ServerOptions, Spawned};

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Load generator and benchmark suite for spark-admission"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Drive one server at a fixed concurrency or rate and print rate, latency and memory.
    Run(RunArgs),
    /// Baseline vs real server over h1 and h2, then a 10,000-policy reload under load.
    Suite(suite::SuiteArgs),
    /// About three seconds of every mode against spawned servers; fails on any error.
    Smoke(SmokeArgs),
    /// Writes the results tables of BENCHMARKS.md from criterion and suite results.
    Report(report::ReportArgs),
    /// Writes the benchmark policy set into a folder (to run a server or `explain` on it).
    Policies(PoliciesArgs),
    /// The webhook's TLS listener and HTTP stack answering a fixed `allowed: true` (the
    /// baseline the suite measures against); takes `spark-admission serve`'s flags.
    NoopServer(spark_admission::cli::ServeArgs),
    /// Slow clients trickling bodies while real reviews must be answered within 2 s.
    SlowClients(slow::SlowArgs),
    /// Prints a fixture AdmissionReview as the API server sends it (no indentation).
    ReviewBody(ReviewBodyArgs),
    /// Crafted expensive reviews back to back beside ordinary ones: the ordinary p99.
    CraftedFlood(crafted::FloodArgs),
    /// One crafted (or benign) review of a given size, evaluated in-process (for callgrind).
    CraftedCost(crafted::CostArgs),
}

#[derive(Args)]
struct ReviewBodyArgs {
    /// The fixture file, e.g. tests/fixtures/admission/mutate-driver-rich.json.
    file: PathBuf,
}

#[derive(Args)]
struct PoliciesArgs {
    /// Folder to write the files into (created if needed).
    dir: PathBuf,
    /// Number of policies (10 of them match namespace spark-jobs).
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Policies per file.
    #[arg(long, default_value_t = 100)]
    per_file: usize,
}

#[derive(Args)]
struct RunArgs {
    /// Server to drive, e.g. https://127.0.0.1:8443; without it a server is started here.
    #[arg(long)]
    url: Option<String>,
    /// CA certificate the server's certificate chains to (with --url).
    #[arg(long, default_value = "certs/ca.crt")]
    ca: PathBuf,
    /// Process id of the server given with --url, to read its peak RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// Start the no-op baseline instead of the real server (without --url).
    #[arg(long)]
    baseline: bool,
    /// Policies loaded into a server started here (10 of them match the fixtures).
    #[arg(long, default_value_t = 1000)]
    policies: usize,
    #[arg(long, value_enum, default_value_t = Proto::H2)]
    proto: Proto,
    /// Requests in flight (h1: connections).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// h2: connections the streams share (the API server uses one per webhook).
    #[arg(long, default_value_t = 1)]
    h2_connections: usize,
    /// Fixed offered rate in requests per second; without it, as fast as answered.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// /mutate or /validate (the real reviews of the matching kind are sent).
    #[arg(long, default_value = "/mutate")]
    path: String,
    /// Folder of AdmissionReview fixtures.
    #[arg(long)]
    fixtures: Option<PathBuf>,
    /// spark-admission binary for a server started here (default: next to loadgen).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// File for the log of a server started here (default: discarded).
    #[arg(long)]
    server_log: Option<PathBuf>,
}

#[derive(Args)]
struct SmokeArgs {
    /// spark-admission binary (default: next to loadgen).
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve`'s own runtime and signal handling: the baseline runs exactly as the webhook does.
    let cli = match cli.command {
        Cmd::NoopServer(args) => {
            let router = noop::noop_router(args.limits.max_body_bytes);
            return match spark_admission::cli::run_with_router(args, Some(router)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        command => Cli { command },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Cmd::Run(args) => run(args).await,
            Cmd::Suite(args) => suite::suite(args).await,
            Cmd::Smoke(args) => smoke(args).await,
            Cmd::Report(args) => report::report(args),
            Cmd::Policies(args) => write_policies(args),
            Cmd::NoopServer(_) => Err(anyhow::anyhow!(
                "noop-server runs before the runtime starts"
            )),
            Cmd::SlowClients(args) => slow::slow_clients(args).await,
            Cmd::ReviewBody(args) => review_body(&args.file),
            Cmd::CraftedFlood(args) => crafted::flood(args).await,
            Cmd::CraftedCost(args) => crafted::cost(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The fixtures folder of this repository (compiled in: the tool runs from a checkout).
pub fn default_fixtures() -> PathBuf {
    spark_admission_testkit::fixtures::dir().join("admission")
}

/// The real AdmissionReviews for an endpoint: `mutate-*.json` for /mutate, and so on.
pub fn review_bodies(dir: &Path, path: &str) -> anyhow::Result<(Vec<String>, Arc<Vec<Bytes>>)> {
    let endpoint = path
        .trim_start_matches('/')
        .split(['?', '/'])
        .next()
        .unwrap_or_default();
    let prefix = format!("{endpoint}-");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".json")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no {prefix}*.json fixtures in {}", dir.display());
    }
    let mut names = Vec::new();
    let mut bodies = Vec::new();
    for f in files {
        names.push(
            f.file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        );
        let file = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
        bodies.push(Bytes::from(as_sent(&file)));
    }
    Ok((names, Arc::new(bodies)))
}

fn review_body(file: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_slice::<serde_json::Value>(&text)
        .with_context(|| format!("{} is not JSON", file.display()))?;
    std::io::stdout()
        .write_all(&as_sent(&text))
        .context("writing the body")
}

/// The path with the query the API server always sends (`timeout=<timeoutSeconds>s`).
pub fn with_timeout_query(path: &str) -> String {
    if path.contains('?') {
        path.to_owned()
    } else {
        format!("{path}?timeout=10s")
    }
}

fn write_policies(args: PoliciesArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let files = policies::files(args.count, args.per_file);
    for (name, text) in &files {
        let path = args.dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "{} policies in {} files in {}",
        args.count,
        files.len(),
        args.dir.display()
    );
    Ok(())
}

fn server_bin(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(p) => Ok(p),
        None => spawn::default_server_bin(),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let (names, bodies) = review_bodies(
        &args.fixtures.clone().unwrap_or_else(default_fixtures),
        &args.path,
    )?;
    let mut started = None;
    let (addr, ca_pem, pid) = match &args.url {
        Some(url) => {
            let addr = resolve(url)?;
            let ca = std::fs::read(&args.ca)
                .with_context(|| format!("reading {}", args.ca.display()))?;
            (addr, ca, args.pid)
        }
        None => {
            let label = if args.baseline { "baseline" } else { "real" };
            let s = Spawned::start(
                &server_bin(args.server_bin.clone())?,
                ServerOptions {
                    label,
                    baseline: args.baseline,
                    policies: if args.baseline {
                        Vec::new()
                    } else {
                        policies::files(args.policies, 100)
                    },
                    log: args.server_log.clone(),
                    extra_args: Vec::new(),
                },
            )
            .await?;
            let out = (s.addr, s.ca_pem.clone(), Some(s.pid));
            started = Some(s);
            out
        }
    };
    let load = Load {
        addr,
        tls: client::tls_config(&ca_pem, args.proto)?,
        proto: args.proto,
        concurrency: args.concurrency,
        h2_connections: args.h2_connections,
        rate: args.rate,
        duration: args.duration,
        path: with_timeout_query(&args.path),
        bodies,
    };
    println!(
        "{} {} over {}: {} fixtures ({}), concurrency {}, {}, {:?}",
        args.path,
        addr,
        args.proto.as_str(),
        names.len(),
        names.join(", "),
        args.concurrency,
        args.rate.map_or("closed loop".to_owned(), |r| format!(
            "{r:.0} req/s offered"
        )),
        args.duration
    );
    let outcome = load::run(&load).await?;
    let stats = outcome.stats();
    println!("{}", suite::describe(&stats));
    for e in &outcome.error_examples {
        println!("  error: {e}");
    }
    if let Some(pid) = pid {
        let m = spawn::memory_of(pid)?;
        println!(
            "server pid {pid}: peak RSS (VmHWM) {:.1} MiB, RSS now {:.1} MiB",
            m.peak_kib as f64 / 1024.0,
            m.rss_kib as f64 / 1024.0
        );
    }
    drop(started);
    if stats.errors > 0 {
        bail!("{} request(s) failed", stats.errors);
    }
    Ok(())
}

fn resolve(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("https://")
        .context("--url must start with https://")?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    hostport
        .to_socket_addrs()
        .with_context(|| format!("resolving {hostport}"))?
        .find(|a| a.ip().is_loopback())
        .with_context(|| format!("{hostport}: loopback addresses only (127.0.0.1, ::1)"))
}

/// CI: both servers, both protocols, closed loop and fixed rate, a policy reload; every
/// response must be a 200 allowing the pod, and the real one must patch every fixture.
async fn smoke(args: SmokeArgs) -> anyhow::Result<()> {
    let bin = server_bin(args.server_bin)?;
    let (names, bodies) = review_bodies(&default_fixtures(), "/mutate")?;
    let baseline = Spawned::start(
        &bin,
        ServerOptions {
            label: "smoke-baseline",
            baseline: true,
            policies: Vec::new(),
            log: None,
            extra_args: Vec::new(),
        },
    )
    .await?;
    let real = Spawned::start(
        &bin,
        ServerOptions {
            label: "smoke-real",
            baseline: false,
            policies: policies::files(100, 50),
            log: None,
            extra_args: Vec::new(),
        },
    )
    .await?;
    let path = with_timeout_query("/mutate");

    // The real server must patch every fixture (10 matching policies), and answer 200.
    for proto in [Proto::H1, Proto::H2] {
        let mut conn =
            client::Conn::connect(real.addr, client::tls_config(&real.ca_pem, proto)?, proto)
                .await?;
        for (name, body) in names.iter().zip(bodies.iter()) {
            let (status, resp) = conn
                .post(
                    &format!("localhost:{}", real.addr.port()),
                    &path,
                    body.clone(),
                )
                .await?;
            if status != 200 || !load::contains(&resp, br#""patchType":"JSONPatch""#) {
                bail!(
                    "{name} over {}: expected a 200 with a patch, got {status}: {}",
                    proto.as_str(),
                    String::from_utf8_lossy(&resp)
                );
            }
        }
    }

    let mut failed = 0u64;
    let mut check = |what: String, outcome: load::Outcome| {
        let stats = outcome.stats();
        println!("{what:<28} {}", suite::describe(&stats));
        for e in &outcome.error_examples {
            println!("  error: {e}");
        }
        failed += stats.errors;
        if stats.requests == 0 {
            failed += 1;
            println!("  error: no request answered");
        }
    };
    for proto in [Proto::H1, Proto::H2] {
        for server in [&baseline, &real] {
            let load = Load {
                addr: server.addr,
                tls: client::tls_config(&server.ca_pem, proto)?,
                proto,
                concurrency: 4,
                h2_connections: 1,
                rate: None,
                duration: Duration::from_millis(500),
                path: path.clone(),
                bodies: Arc::clone(&bodies),
            };
            let label = if server.pid == baseline.pid {
                "baseline"
            } else {
                "real"
            };
            check(
                format!("{} closed loop {label}", proto.as_str()),
                load::run(&load).await?,
            );
        }
    }
    // A fixed rate while every policy file is rewritten: the reload path under load.
    let load = Load {
        addr: real.addr,
        tls: client::tls_config(&real.ca_pem, Proto::H2)?,
        proto: Proto::H2,
        concurrency: 4,
        h2_connections: 1,
        rate: Some(200.0),
        duration: Duration::from_millis(800),
        path: path.clone(),
        bodies: Arc::clone(&bodies),
    };
    let task = tokio::spawn(async move { load::run(&load).await });
    suite::rewrite_policies(&real.policies_dir(), 100, 50, 1)?;
    check("h2 200 req/s + reload".to_owned(), task.await??);
    for s in [&baseline, &real] {
        let m = s.memory()?;
        if m.peak_kib == 0 {
            bail!("cannot read the peak RSS of pid {}", s.pid);
        }
    }
    if failed > 0 {
        bail!("smoke run: {failed} error(s)");
    }
    println!("smoke run: OK");
    Ok(())
}
