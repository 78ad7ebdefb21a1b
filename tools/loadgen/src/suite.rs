//! The server suite: the no-op baseline and the real server, started from the same binary,
//! measured alternately (closed loop for the maximum rate, then both at half the real
//! server's maximum), over HTTP/1.1 and h2; then a reload of 10,000 policies under load.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};
use spark_admission::duration::parse_duration;

use crate::client::{self, Proto};
use crate::load::{self, Load, Stats};
use crate::spawn::{Memory, ServerOptions, Spawned};
use spark_admission_testkit::bench_policies as policies;

/// Policy documents per file, as an admin would group them.
const PER_FILE: usize = 100;
/// How long the metric poll waits for a reload to be installed.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args)]
pub struct SuiteArgs {
    /// Repetitions of every measurement; the report takes medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Length of each measurement.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Requests in flight in the closed-loop and fixed-rate phases (h1: connections).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// h2 connections (the API server multiplexes its calls to a webhook over one).
    #[arg(long, default_value_t = 1)]
    pub h2_connections: usize,
    /// Policies in the real server (10 of them match the fixtures' namespace).
    #[arg(long, default_value_t = 1000)]
    pub policies: usize,
    /// Policies rewritten in the reload phase.
    #[arg(long, default_value_t = 10_000)]
    pub reload_policies: usize,
    /// Where the results go (input of `loadgen report`).
    #[arg(long, default_value = "target/bench/server.json")]
    pub out: PathBuf,
    /// spark-admission binary (default: next to loadgen).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Folder for the servers' logs (default: discarded; the server still writes them).
    #[arg(long)]
    pub server_logs: Option<PathBuf>,
    /// Measure only the reload phase, at this offered rate (req/s) instead of half the
    /// measured maximum: a quick before/after of latency during a reload.
    #[arg(long)]
    pub reload_only_at: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteResult {
    pub unix_time: u64,
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub runs: usize,
    pub duration_s: f64,
    pub concurrency: usize,
    pub h2_connections: usize,
    pub policies: usize,
    pub reload_policies: usize,
    pub fixtures: Vec<String>,
    pub rows: Vec<Row>,
    pub memory: Vec<MemoryRow>,
    pub reloads: Vec<ReloadRow>,
}

/// One measurement: `phase` is `max` (closed loop), `rate` (fixed offered rate),
/// `reload-steady` or `reload-during`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub phase: String,
    pub proto: String,
    pub server: String,
    pub run: usize,
    pub offered_rps: Option<f64>,
    pub loadavg: String,
    #[serde(flatten)]
    pub stats: Stats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryRow {
    pub server: String,
    pub policies: usize,
    pub startup_ms: f64,
    #[serde(flatten)]
    pub memory: Memory,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadRow {
    pub run: usize,
    pub policies: usize,
    /// From the files being written to the new set being installed (includes up to one
    /// 100 ms poll interval of the folder watcher).
    pub observed_ms: f64,
    pub offered_rps: f64,
}

pub fn describe(s: &Stats) -> String {
    format!(
        "{:>8.0} req/s  p50 {:>7}  p90 {:>7}  p99 {:>7}  p99.9 {:>7}  max {:>7}  errors {}",
        s.rps,
        ms(s.p50_us),
        ms(s.p90_us),
        ms(s.p99_us),
        ms(s.p999_us),
        ms(s.max_us),
        s.errors
    )
}

fn ms(us: u32) -> String {
    format!("{:.2}ms", us as f64 / 1000.0)
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Rewrites every policy file with new content (a changed description), atomically per
/// file as a ConfigMap volume would, so the server recompiles all of them.
pub fn rewrite_policies(
    dir: &Path,
    total: usize,
    per_file: usize,
    generation: usize,
) -> anyhow::Result<()> {
    for (name, text) in policies::files(total, per_file) {
        let text = text.replace(
            "metadata:\n",
            &format!("metadata:\n  description: generation {generation}\n"),
        );
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(&name))?;
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub async fn suite(args: SuiteArgs) -> anyhow::Result<()> {
    let bin = match &args.server_bin {
        Some(p) => p.clone(),
        None => crate::spawn::default_server_bin()?,
    };
    let (names, bodies) = crate::review_bodies(&crate::default_fixtures(), "/mutate")?;
    let path = crate::with_timeout_query("/mutate");
    let log = |label: &str| {
        args.server_logs
            .as_ref()
            .map(|d| d.join(format!("{label}.log")))
    };
    if let Some(d) = &args.server_logs {
        std::fs::create_dir_all(d)?;
    }
    let loadavg_before = loadavg();
    println!("load average before: {loadavg_before}");

    let mut result = SuiteResult {
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        loadavg_before,
        loadavg_after: String::new(),
        runs: args.runs,
        duration_s: args.duration.as_secs_f64(),
        concurrency: args.concurrency,
        h2_connections: args.h2_connections,
        policies: args.policies,
        reload_policies: args.reload_policies,
        fixtures: names,
        rows: Vec::new(),
        memory: Vec::new(),
        reloads: Vec::new(),
    };

    let baseline = Spawned::start(
        &bin,
        ServerOptions {
            label: "baseline",
            baseline: true,
            policies: Vec::new(),
            log: log("baseline"),
            extra_args: Vec::new(),
        },
    )
    .await?;
    let real = Spawned::start(
        &bin,
        ServerOptions {
            label: "real",
            baseline: false,
            policies: policies::files(args.policies, PER_FILE),
            log: log("real"),
            extra_args: Vec::new(),
        },
    )
    .await?;
    let servers = [("baseline", &baseline), ("real", &real)];
    let load_for = |server: &Spawned, proto: Proto, rate: Option<f64>, duration: Duration| {
        anyhow::Ok(Load {
            addr: server.addr,
            tls: client::tls_config(&server.ca_pem, proto)?,
            proto,
            concurrency: args.concurrency,
            h2_connections: args.h2_connections,
            rate,
            duration,
            path: path.clone(),
            bodies: Arc::clone(&bodies),
        })
    };

    // `--reload-only-at`: no warm-up and no runs of the baseline and real servers.
    let runs = if args.reload_only_at.is_some() {
        0
    } else {
        args.runs
    };
    // Warm-up: connection setup, allocator and caches, the blocking pool's threads.
    for (_, server) in servers.iter().take(if runs == 0 { 0 } else { 2 }) {
        for proto in [Proto::H1, Proto::H2] {
            load::run(&load_for(server, proto, None, Duration::from_secs(1))?).await?;
        }
    }

    for run in 1..=runs {
        for proto in [Proto::H1, Proto::H2] {
            // Alternate the order so a drift in machine load hits both servers alike.
            let order = if run % 2 == 1 {
                [servers[0], servers[1]]
            } else {
                [servers[1], servers[0]]
            };
            let mut real_max = 0.0;
            for (label, server) in order {
                let outcome = load::run(&load_for(server, proto, None, args.duration)?).await?;
                let stats = outcome.stats();
                print_row("max", proto, label, run, None, &stats, &outcome);
                if label == "real" {
                    real_max = stats.rps;
                }
                result.rows.push(row("max", proto, label, run, None, stats));
            }
            let rate = (real_max * 0.5).max(1.0);
            for (label, server) in order {
                let outcome =
                    load::run(&load_for(server, proto, Some(rate), args.duration)?).await?;
                let stats = outcome.stats();
                print_row("rate", proto, label, run, Some(rate), &stats, &outcome);
                result
                    .rows
                    .push(row("rate", proto, label, run, Some(rate), stats));
            }
        }
    }
    for (label, server) in servers {
        let memory = server.memory()?;
        result.memory.push(MemoryRow {
            server: label.to_owned(),
            policies: if label == "real" { args.policies } else { 0 },
            startup_ms: server.startup.as_secs_f64() * 1e3,
            memory,
        });
    }
    drop(baseline);
    drop(real);

    // Reload: a server with 10,000 policies under h2 load at half the real maximum; every
    // file is rewritten, and requests due between the write and the install are compared
    // with the steady state around them.
    let rate = if let Some(rate) = args.reload_only_at {
        rate
    } else {
        let h2: Vec<f64> = result
            .rows
            .iter()
            .filter(|r| r.phase == "max" && r.server == "real" && r.proto == "h2")
            .map(|r| r.stats.rps)
            .collect();
        (median(h2) * 0.5).max(1.0)
    };
    let reloading = Spawned::start(
        &bin,
        ServerOptions {
            label: "reload",
            baseline: false,
            policies: policies::files(args.reload_policies, PER_FILE),
            log: log("reload"),
            extra_args: Vec::new(),
        },
    )
    .await?;
    println!(
        "reload server: {} policies compiled and ready in {:.0} ms",
        args.reload_policies,
        reloading.startup.as_secs_f64() * 1e3
    );
    let reload_duration = args.duration.max(Duration::from_secs(6));
    load::run(&load_for(
        &reloading,
        Proto::H2,
        None,
        Duration::from_secs(1),
    )?)
    .await?;
    for run in 1..=args.runs {
        let applied = "result=\"applied\"";
        let metric = "spark_admission_policy_reloads_total";
        let before = reloading.metric(metric, applied).await?;
        let load = load_for(&reloading, Proto::H2, Some(rate), reload_duration)?;
        let started = Instant::now();
        let task = tokio::spawn(async move { load::run(&load).await });
        tokio::time::sleep(reload_duration / 3).await;
        let written = Instant::now();
        rewrite_policies(
            &reloading.policies_dir(),
            args.reload_policies,
            PER_FILE,
            run,
        )?;
        let installed = loop {
            if reloading.metric(metric, applied).await? > before {
                break Instant::now();
            }
            if written.elapsed() > RELOAD_TIMEOUT {
                bail!("the rewritten policies were not installed within {RELOAD_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let outcome = task.await??;
        // Sample times are relative to the load's start, a moment after `started`.
        let from = written.saturating_duration_since(started).as_micros() as u64;
        let to = installed.saturating_duration_since(started).as_micros() as u64;
        let settle = 500_000;
        let during: Vec<u32> = outcome
            .samples
            .iter()
            .filter(|s| s.at_us >= from && s.at_us <= to)
            .map(|s| s.latency_us)
            .collect();
        let steady: Vec<u32> = outcome
            .samples
            .iter()
            .filter(|s| (s.at_us >= settle && s.at_us + settle < from) || s.at_us > to + settle)
            .map(|s| s.latency_us)
            .collect();
        let window = Duration::from_micros(to.saturating_sub(from));
        let steady_time = reload_duration.saturating_sub(window);
        let during_stats = load::stats_of(during.into_iter(), 0, window);
        let steady_stats = load::stats_of(steady.into_iter(), outcome.errors, steady_time);
        let observed_ms = (installed - written).as_secs_f64() * 1e3;
        println!(
            "reload run {run}: {} policies installed {observed_ms:.0} ms after the write",
            args.reload_policies
        );
        print_row(
            "reload-steady",
            Proto::H2,
            "real",
            run,
            Some(rate),
            &steady_stats,
            &outcome,
        );
        print_row(
            "reload-during",
            Proto::H2,
            "real",
            run,
            Some(rate),
            &during_stats,
            &load::Outcome::default(),
        );
        result.rows.push(row(
            "reload-steady",
            Proto::H2,
            "real",
            run,
            Some(rate),
            steady_stats,
        ));
        result.rows.push(row(
            "reload-during",
            Proto::H2,
            "real",
            run,
            Some(rate),
            during_stats,
        ));
        result.reloads.push(ReloadRow {
            run,
            policies: args.reload_policies,
            observed_ms,
            offered_rps: rate,
        });
    }
    let memory = reloading.memory()?;
    result.memory.push(MemoryRow {
        server: "reload".to_owned(),
        policies: args.reload_policies,
        startup_ms: reloading.startup.as_secs_f64() * 1e3,
        memory,
    });
    drop(reloading);

    result.loadavg_after = loadavg();
    for m in &result.memory {
        println!(
            "{:<8} {:>6} policies: peak RSS {:.1} MiB, startup {:.0} ms",
            m.server,
            m.policies,
            m.memory.peak_kib as f64 / 1024.0,
            m.startup_ms
        );
    }
    println!("load average after: {}", result.loadavg_after);
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&result)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("results: {}", args.out.display());
    let errors: u64 = result.rows.iter().map(|r| r.stats.errors).sum();
    if errors > 0 {
        bail!("{errors} request(s) failed during the suite");
    }
    Ok(())
}

fn row(
    phase: &str,
    proto: Proto,
    server: &str,
    run: usize,
    offered_rps: Option<f64>,
    stats: Stats,
) -> Row {
    Row {
        phase: phase.to_owned(),
        proto: proto.as_str().to_owned(),
        server: server.to_owned(),
        run,
        offered_rps,
        loadavg: loadavg(),
        stats,
    }
}

fn print_row(
    phase: &str,
    proto: Proto,
    server: &str,
    run: usize,
    rate: Option<f64>,
    stats: &Stats,
    outcome: &load::Outcome,
) {
    let offered = rate.map_or(String::new(), |r| format!(" @{r:.0}/s"));
    println!(
        "{} {phase:<13} {server:<8} run {run}{offered}: {}",
        proto.as_str(),
        describe(stats)
    );
    for e in &outcome.error_examples {
        println!("  error: {e}");
    }
}
