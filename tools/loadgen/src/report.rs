//! `loadgen report`: the generated part of BENCHMARKS.md, between two marker lines; the
//! hand-written findings around it are kept.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use crate::suite::{Row, SuiteResult};

const BEGIN: &str = "<!-- loadgen report: generated from here -->";
const END: &str = "<!-- loadgen report: generated up to here -->";

#[derive(Args)]
pub struct ReportArgs {
    /// A criterion output folder (CRITERION_HOME) per engine-bench run.
    #[arg(long = "criterion")]
    pub criterion: Vec<PathBuf>,
    /// The suite's JSON results.
    #[arg(long, default_value = "target/bench/server.json")]
    pub server: PathBuf,
    /// Lines `label: load1 load5 load15` recorded by scripts/bench.sh.
    #[arg(long)]
    pub loads: Option<PathBuf>,
    /// The command that produced the figures, quoted in the report.
    #[arg(long, default_value = "scripts/bench.sh")]
    pub command: String,
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
}

pub fn report(args: ReportArgs) -> anyhow::Result<()> {
    let criterion = read_criterion(&args.criterion)?;
    let suite: Option<SuiteResult> = match std::fs::read(&args.server) {
        Ok(bytes) => Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", args.server.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", args.server.display())),
    };
    let loads = match &args.loads {
        Some(p) => std::fs::read_to_string(p).unwrap_or_default(),
        None => String::new(),
    };
    let generated = render(&args, &criterion, suite.as_ref(), &loads);
    let existing = std::fs::read_to_string(&args.out).unwrap_or_default();
    let text = match (existing.find(BEGIN), existing.find(END)) {
        (Some(b), Some(e)) if b < e => format!(
            "{}{BEGIN}\n{generated}{END}{}",
            &existing[..b],
            &existing[e + END.len()..]
        ),
        _ => format!("# Benchmarks\n\n{BEGIN}\n{generated}{END}\n"),
    };
    std::fs::write(&args.out, text).with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}

/// Criterion medians (ns) by benchmark id, one value per run folder.
fn read_criterion(dirs: &[PathBuf]) -> anyhow::Result<BTreeMap<String, Vec<f64>>> {
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for dir in dirs {
        let mut stack = vec![dir.clone()];
        // Bounded walk: criterion's tree is a few levels deep per benchmark.
        let mut visited = 0usize;
        while let Some(d) = stack.pop() {
            visited += 1;
            if visited > 100_000 {
                break;
            }
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    if p.file_name().is_some_and(|n| n == "new") {
                        if let Some((id, median)) = read_estimate(&p) {
                            out.entry(id).or_default().push(median);
                        }
                    } else if p.file_name().is_none_or(|n| n != "base" && n != "report") {
                        stack.push(p);
                    }
                }
            }
        }
    }
    Ok(out)
}

fn read_estimate(dir: &Path) -> Option<(String, f64)> {
    let bench: Value =
        serde_json::from_slice(&std::fs::read(dir.join("benchmark.json")).ok()?).ok()?;
    let est: Value =
        serde_json::from_slice(&std::fs::read(dir.join("estimates.json")).ok()?).ok()?;
    let id = bench.get("full_id")?.as_str()?.to_owned();
    let median = est.pointer("/median/point_estimate")?.as_f64()?;
    Some((id, median))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn us(ns: Option<f64>) -> String {
    match ns {
        Some(ns) if ns >= 100_000.0 => format!("{:.0}", ns / 1e3),
        Some(ns) => format!("{:.1}", ns / 1e3),
        None => "–".to_owned(),
    }
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "- CPU: {model}, nproc {nproc}\n- memory: {:.1} GiB\n- kernel: {}\n- {rustc}\n",
        mem_kib / 1024.0 / 1024.0,
        kernel.trim()
    )
}

struct Verdicts(Vec<(String, bool, String)>);

impl Verdicts {
    fn add(&mut self, target: &str, met: bool, figure: String) {
        self.0.push((target.to_owned(), met, figure));
    }
}

fn render(
    args: &ReportArgs,
    criterion: &BTreeMap<String, Vec<f64>>,
    suite: Option<&SuiteResult>,
    loads: &str,
) -> String {
    let mut s = String::new();
    let mut verdicts = Verdicts(Vec::new());
    let get = |id: &str| criterion.get(id).cloned().and_then(median);
    let runs = criterion.values().map(Vec::len).max().unwrap_or(0);

    let _ = writeln!(s, "\n## Machine and conditions\n\n{}", machine());
    let _ = writeln!(
        s,
        "Produced by `{}`. Engine figures: criterion medians, then the median over {runs} \
         criterion run(s). Server figures: medians over the suite's runs. The load generator \
         runs on the same 2 cores as the server, so it takes part of the CPU the server could use.\n",
        args.command
    );
    if !loads.trim().is_empty() {
        let _ = writeln!(
            s,
            "Load average (1/5/15 min) at each step:\n\n```\n{}```\n",
            loads
        );
    }

    // Engine: mutate per fixture and policy count.
    let counts = ["1", "10", "100", "1000", "10000"];
    let fixtures: Vec<String> = {
        let mut f: Vec<String> = criterion
            .keys()
            .filter_map(|k| k.strip_prefix("mutate/"))
            .filter_map(|k| k.rsplit_once('/').map(|(f, _)| f.to_owned()))
            .collect();
        f.dedup();
        f
    };
    if !fixtures.is_empty() {
        let _ = writeln!(
            s,
            "## Engine: `Engine::mutate` on a decoded Pod (µs, median)\n\n\
             Policies loaded: spread over 10,000 namespaces; 10 match the pod's namespace \
             (with 1 loaded: that one). `spark/` are the raw pods spark-submit sent, \
             `admission/` the pods inside real AdmissionReviews (after API-server defaulting).\n"
        );
        let _ = writeln!(
            s,
            "| fixture | 1 | 10 | 100 | 1,000 | 10,000 | max/min 10…10,000 |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        let mut worst_flat: f64 = 0.0;
        for f in &fixtures {
            let vals: Vec<Option<f64>> = counts
                .iter()
                .map(|n| get(&format!("mutate/{f}/{n}")))
                .collect();
            // Flatness over 10 … 10,000 loaded: the same 10 policies match; with 1 loaded
            // only one matches, so that column does less work.
            let present: Vec<f64> = vals.iter().skip(1).flatten().copied().collect();
            let ratio = match (
                present.iter().copied().reduce(f64::max),
                present.iter().copied().reduce(f64::min),
            ) {
                (Some(hi), Some(lo)) if lo > 0.0 => hi / lo,
                _ => 0.0,
            };
            worst_flat = worst_flat.max(ratio);
            let cells: Vec<String> = vals.iter().map(|v| us(*v)).collect();
            let _ = writeln!(s, "| {f} | {} | {ratio:.2}× |", cells.join(" | "));
        }
        let drivers: Vec<f64> = fixtures
            .iter()
            .filter(|f| f.contains("driver"))
            .filter_map(|f| get(&format!("mutate/{f}/10")))
            .collect();
        let worst_driver = drivers.iter().copied().reduce(f64::max);
        if let Some(w) = worst_driver {
            verdicts.add(
                "engine ≤ 20 µs median, real driver pod, 10 matching policies",
                w <= 20_000.0,
                format!("slowest driver fixture {} µs", us(Some(w))),
            );
        }
        verdicts.add(
            "engine flat within 2× from 10 to 10,000 loaded policies (10 matching)",
            worst_flat <= 2.0,
            format!("worst max/min over the counts {worst_flat:.2}×"),
        );
        s.push('\n');
    }

    let review: Vec<String> = fixtures
        .iter()
        .filter(|f| f.starts_with("admission/"))
        .cloned()
        .collect();
    if !review.is_empty() {
        let _ = writeln!(
            s,
            "## Engine: the whole review (µs, median)\n\n\
             decode the AdmissionReview body + mutate + build and encode the response, \
             as the `/mutate` handler does (without metrics and the log line). `decode` alone \
             and `Engine::validate` on the same pods for comparison.\n"
        );
        let _ = writeln!(
            s,
            "| fixture | 1 | 10 | 100 | 1,000 | 10,000 | decode | validate 10 | validate 10,000 |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for f in &review {
            let cells: Vec<String> = counts
                .iter()
                .map(|n| us(get(&format!("review/{f}/{n}"))))
                .collect();
            let _ = writeln!(
                s,
                "| {f} | {} | {} | {} | {} |",
                cells.join(" | "),
                us(get(&format!("decode/{f}"))),
                us(get(&format!("validate/{f}/10"))),
                us(get(&format!("validate/{f}/10000")))
            );
        }
        s.push('\n');
    }

    let compile_10k = get("compile/10000");
    let reload_10k = get("reload/10000");
    if compile_10k.is_some() || reload_10k.is_some() {
        let ms = |v: Option<f64>| v.map_or("–".to_owned(), |ns| format!("{:.0}", ns / 1e6));
        let _ = writeln!(
            s,
            "## Reload cost (ms, median)\n\n`compile`: `parse_documents` (YAML, schema check, \
             deserialise, compile) over files of 100 policies on one thread, then \
             `PolicySet::new`. `reload`: what the server does on startup or when every file \
             changed: a scan of the policy folder (read, hash, parse the changed files over \
             the machine's cores, compile) and the new set.\n\n\
             | policies | compile, one thread | reload (folder scan) |\n|---:|---:|---:|\n\
             | 1,000 | {} | {} |\n| 10,000 | {} | {} |\n",
            ms(get("compile/1000")),
            ms(get("reload/1000")),
            ms(compile_10k),
            ms(reload_10k)
        );
        if let Some(c) = reload_10k.or(compile_10k) {
            verdicts.add(
                "reload of 10,000 policies < 0.5 s",
                c < 5e8,
                format!("full folder scan {:.0} ms", c / 1e6),
            );
        }
    }
    if let (Some(inline), Some(blocking)) = (get("runtime/inline"), get("runtime/spawn_blocking")) {
        let _ = writeln!(
            s,
            "## Hand-off to the blocking pool\n\n`tokio::task::spawn_blocking` + await from a \
             runtime task: {:.1} µs (an empty loop iteration: {:.3} µs). The router pays it \
             only for bodies over 256 KiB; ordinary reviews are evaluated on the worker that \
             read them.\n",
            blocking / 1e3,
            inline / 1e3
        );
    }

    if let Some(suite) = suite {
        render_server(&mut s, suite, &mut verdicts);
    }

    if !verdicts.0.is_empty() {
        let _ = writeln!(s, "## Targets\n\n| target | met | figure |\n|---|---|---|");
        for (t, met, fig) in &verdicts.0 {
            let _ = writeln!(
                s,
                "| {t} | {} | {fig} |",
                if *met { "yes" } else { "**no**" }
            );
        }
        s.push('\n');
    }
    s
}

fn pick<'a>(rows: &'a [Row], phase: &str, proto: &str, server: &str) -> Vec<&'a Row> {
    rows.iter()
        .filter(|r| r.phase == phase && r.proto == proto && r.server == server)
        .collect()
}

fn med(rows: &[&Row], f: impl Fn(&Row) -> f64) -> f64 {
    median(rows.iter().map(|r| f(r)).collect()).unwrap_or(0.0)
}

fn range(rows: &[&Row], f: impl Fn(&Row) -> f64) -> String {
    let v: Vec<f64> = rows.iter().map(|r| f(r)).collect();
    match (
        v.iter().copied().reduce(f64::min),
        v.iter().copied().reduce(f64::max),
    ) {
        (Some(lo), Some(hi)) => format!("{lo:.0}–{hi:.0}"),
        _ => "–".to_owned(),
    }
}

fn render_server(s: &mut String, suite: &SuiteResult, verdicts: &mut Verdicts) {
    let _ = writeln!(
        s,
        "## Server: real webhook vs no-op baseline\n\n\
         Same TLS (rustls, ring) and HTTP stack; the baseline (`loadgen noop-server`, the \
         webhook's listener) reads each body and answers a fixed `allowed: true`. The real \
         server has {} policies (10 match) and logs one JSON line per review (to /dev/null). \
         Load: `POST /mutate?timeout=10s` with the {} real AdmissionReviews in turn, {} requests \
         in flight (h1: {} keep-alive connections; h2: {} connection(s)), {} s per \
         measurement, {} run(s), baseline and real alternating. Load average before/after: \
         {} / {}.\n",
        suite.policies,
        suite.fixtures.len(),
        suite.concurrency,
        suite.concurrency,
        suite.h2_connections,
        suite.duration_s,
        suite.runs,
        suite.loadavg_before,
        suite.loadavg_after
    );
    let _ = writeln!(
        s,
        "### Maximum rate (closed loop)\n\n| proto | baseline req/s | real req/s | real/baseline | real p50 ms | real p99 ms | errors |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let mut worst_ratio: Option<f64> = None;
    for proto in ["h1", "h2"] {
        let b = pick(&suite.rows, "max", proto, "baseline");
        let r = pick(&suite.rows, "max", proto, "real");
        if b.is_empty() || r.is_empty() {
            continue;
        }
        let (bm, rm) = (med(&b, |x| x.stats.rps), med(&r, |x| x.stats.rps));
        let ratio = if bm > 0.0 { rm / bm } else { 0.0 };
        worst_ratio = Some(worst_ratio.map_or(ratio, |w: f64| w.min(ratio)));
        let errors: u64 = b.iter().chain(r.iter()).map(|x| x.stats.errors).sum();
        let _ = writeln!(
            s,
            "| {proto} | {bm:.0} ({}) | {rm:.0} ({}) | {ratio:.2} | {:.2} | {:.2} | {errors} |",
            range(&b, |x| x.stats.rps),
            range(&r, |x| x.stats.rps),
            med(&r, |x| x.stats.p50_us as f64) / 1e3,
            med(&r, |x| x.stats.p99_us as f64) / 1e3,
        );
    }
    if let Some(w) = worst_ratio {
        verdicts.add(
            "server throughput ≥ 0.8 × no-op baseline",
            w >= 0.8,
            format!("real/baseline {w:.2} (lower of h1, h2)"),
        );
    }
    let _ = writeln!(
        s,
        "\n(req/s: median, with the range over runs in parentheses.)\n\n\
         ### Latency at half the real server's maximum rate (fixed offered rate)\n\n\
         Latency counts from each request's scheduled send time (no coordinated omission).\n\n\
         | proto | server | offered req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | errors |\n|---|---|---:|---:|---:|---:|---:|---:|"
    );
    let mut worst_p99: Option<f64> = None;
    for proto in ["h1", "h2"] {
        for server in ["baseline", "real"] {
            let rows = pick(&suite.rows, "rate", proto, server);
            if rows.is_empty() {
                continue;
            }
            let p99 = med(&rows, |x| x.stats.p99_us as f64) / 1e3;
            if server == "real" {
                worst_p99 = Some(worst_p99.map_or(p99, |w: f64| w.max(p99)));
            }
            let errors: u64 = rows.iter().map(|x| x.stats.errors).sum();
            let _ = writeln!(
                s,
                "| {proto} | {server} | {:.0} | {:.2} | {:.2} | {p99:.2} | {:.2} | {errors} |",
                med(&rows, |x| x.offered_rps.unwrap_or(0.0)),
                med(&rows, |x| x.stats.p50_us as f64) / 1e3,
                med(&rows, |x| x.stats.p90_us as f64) / 1e3,
                med(&rows, |x| x.stats.p999_us as f64) / 1e3,
            );
        }
    }
    if let Some(p) = worst_p99 {
        verdicts.add(
            "server p99 < 2 ms at half the max rate",
            p < 2.0,
            format!("real p99 {p:.2} ms (higher of h1, h2)"),
        );
    }

    let _ = writeln!(
        s,
        "\n### Memory (peak RSS, VmHWM of the server process over its whole run)\n\n| server | policies | peak RSS MiB | startup to ready ms |\n|---|---:|---:|---:|"
    );
    for m in &suite.memory {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {:.0} |",
            m.server,
            m.policies,
            m.memory.peak_kib as f64 / 1024.0,
            m.startup_ms
        );
    }
    if let Some(m) = suite.memory.iter().find(|m| m.server == "real") {
        let mib = m.memory.peak_kib as f64 / 1024.0;
        verdicts.add(
            "server peak RSS < 50 MiB under load",
            mib < 50.0,
            format!("{mib:.1} MiB with {} policies", m.policies),
        );
    }

    if !suite.reloads.is_empty() {
        let observed = median(suite.reloads.iter().map(|r| r.observed_ms).collect()).unwrap_or(0.0);
        let steady = pick(&suite.rows, "reload-steady", "h2", "real");
        let during = pick(&suite.rows, "reload-during", "h2", "real");
        let (sp50, sp99) = (
            med(&steady, |x| x.stats.p50_us as f64) / 1e3,
            med(&steady, |x| x.stats.p99_us as f64) / 1e3,
        );
        let (dp50, dp99) = (
            med(&during, |x| x.stats.p50_us as f64) / 1e3,
            med(&during, |x| x.stats.p99_us as f64) / 1e3,
        );
        let _ = writeln!(
            s,
            "\n### Reload of {} policies under load\n\n\
             h2 at {:.0} req/s; every policy file rewritten at once. Observed reload: write \
             to the new set being installed (includes up to one 100 ms folder poll), median \
             {observed:.0} ms (runs: {}).\n\n\
             | requests | count | p50 ms | p99 ms |\n|---|---:|---:|---:|\n\
             | steady state | {:.0} | {sp50:.2} | {sp99:.2} |\n\
             | during the reload | {:.0} | {dp50:.2} | {dp99:.2} |\n",
            suite.reload_policies,
            median(suite.reloads.iter().map(|r| r.offered_rps).collect()).unwrap_or(0.0),
            suite
                .reloads
                .iter()
                .map(|r| format!("{:.0}", r.observed_ms))
                .collect::<Vec<_>>()
                .join(", "),
            med(&steady, |x| x.stats.requests as f64),
            med(&during, |x| x.stats.requests as f64),
        );
        verdicts.add(
            "latency during a 10,000-policy reload within 2× of steady state",
            sp99 > 0.0 && dp99 <= 2.0 * sp99 && dp50 <= 2.0 * sp50,
            format!("p50 {dp50:.2} vs {sp50:.2} ms, p99 {dp99:.2} vs {sp99:.2} ms"),
        );
    }
    s.push('\n');
}
