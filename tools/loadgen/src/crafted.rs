//! Reviews crafted to be expensive (issue 25), and what they cost.
//!
//! - `loadgen crafted-cost`: builds one review of a given shape and byte size from the real
//!   executor review and evaluates it once in-process as the router does (decode, plan,
//!   encode), so that `valgrind --tool=callgrind --toggle-collect='*crafted*review_once*'`
//!   counts exactly one review. Shapes: `terms` (required nodeSelectorTerms, matching a
//!   policy with required node affinity), `containers` (containers with limits), `env`
//!   (env entries of the Spark container), `args` (its arguments), `wide` (1,000 env entries
//!   in each of up to 64 containers: every list under its limit), and `benign` (the same pod padded with one large annotation).
//! - `loadgen crafted-flood`: clients sending crafted reviews back to back, beside
//!   ordinary reviews at a fixed rate and benign large reviews; reports the ordinary
//!   reviews' latency and every answer's status.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use hyper::body::Bytes;
use serde_json::{json, Value};
use spark_admission::admission::answer::Answer;
use spark_admission::admission::prescan;
use spark_admission::admission::review::{self, Review, AUDIT_APPLIED};
use spark_admission::duration::parse_duration;
use spark_admission::engine::{Deadline, Engine, MutateRequest, PodLimits};
use spark_admission::matching::PolicySet;
use spark_admission::policy::{parse_documents, PolicySource};
use spark_admission_testkit::bench_policies as policies;
use spark_admission_testkit::fixtures::as_sent;
use spark_admission_testkit::key_order::KeyOrder;
use tokio::task::JoinSet;

use crate::client::{self, Proto};
use crate::spawn::target;
use crate::{default_fixtures, load, review_bodies, suite};

/// The review every crafted body starts from: an executor whose application the benchmark
/// policy `gpu-executors` matches (required node affinity, GPU limits).
const BASE: &str = "mutate-executor-rich-1.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shape {
    /// Distinct required nodeSelectorTerms (ANDed with the policy's terms).
    Terms,
    /// Extra containers, each with limits and requests.
    Containers,
    /// More env entries in the Spark container (a list inside a container).
    Env,
    /// More arguments to the Spark container (Spark passes a few; at most 4,096 are accepted).
    Args,
    /// Every list just under its limit: env entries, 1,000 a container, over as many
    /// containers (64 at most) as it takes: the largest pod the limits let through.
    Wide,
    /// The same pod with one annotation as long as it takes: the benign review of that size.
    Benign,
}

/// `Wide`: containers at most (`PodLimits::containers`), env entries a container (under
/// `PodLimits::env`).
const WIDE_CONTAINERS: usize = 64;
const WIDE_ENV: usize = 1000;

/// The base review with `n` items of `shape` (for `Benign`, `n` characters of padding).
fn with_items(base: &Value, shape: Shape, n: usize) -> Value {
    let mut review = base.clone();
    let pod = &mut review["request"]["object"];
    match shape {
        Shape::Terms => {
            let terms: Vec<Value> = (0..n)
                .map(|i| {
                    json!({"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": [format!("zone-{i}")]}]})
                })
                .collect();
            pod["spec"]["affinity"] = json!({"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
            }});
        }
        Shape::Containers => {
            if let Some(list) = pod["spec"]["containers"].as_array_mut() {
                for i in 0..n {
                    list.push(json!({
                        "name": format!("c-{i}"),
                        "image": "busybox",
                        "resources": {
                            "limits": {"cpu": "1", "memory": "1Gi"},
                            "requests": {"cpu": "1", "memory": "1Gi"}
                        }
                    }));
                }
            }
        }
        Shape::Env => {
            if let Some(env) = pod["spec"]["containers"][0]["env"].as_array_mut() {
                for i in 0..n {
                    env.push(json!({"name": format!("EXTRA_{i}"), "value": "1"}));
                }
            }
        }
        Shape::Args => {
            if let Some(args) = pod["spec"]["containers"][0]["args"].as_array_mut() {
                for i in 0..n {
                    args.push(json!(format!("--conf=x{i}")));
                }
            }
        }
        Shape::Wide => {
            if let Some(list) = pod["spec"]["containers"].as_array_mut() {
                // Added containers only: the pod's own keep their env as it is.
                let first = list.len();
                let room = WIDE_CONTAINERS.saturating_sub(first) * WIDE_ENV;
                for i in 0..n.min(room) {
                    let c = first + i / WIDE_ENV;
                    if c == list.len() {
                        list.push(json!({"name": format!("w-{c}"), "image": "busybox", "env": []}));
                    }
                    if let Some(env) = list[c]["env"].as_array_mut() {
                        env.push(json!({"name": format!("W_{i}"), "value": "1"}));
                    }
                }
            }
        }
        Shape::Benign => {
            pod["metadata"]["annotations"]["example.com/padding"] = json!("x".repeat(n));
        }
    }
    review
}

/// A review of `shape` of about `bytes` bytes (within one item), as the API server sends it:
/// no whitespace, keys in the API server's order (the request's uid, kind and operation
/// before its object; the pod's metadata before its spec), or with `sorted_keys` in
/// serde_json's sorted order (`object` before `operation` and `uid`).
pub fn body(shape: Shape, bytes: usize, sorted_keys: bool) -> anyhow::Result<Vec<u8>> {
    let file = default_fixtures().join(BASE);
    let text =
        as_sent(&std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?);
    let base: Value = serde_json::from_slice(&text).context("the base review")?;
    let order = KeyOrder::of(&text).context("the base review")?;
    let write = |v: &Value| {
        if sorted_keys {
            serde_json::to_vec(v)
        } else {
            order.write(v)
        }
    };
    let size = |n| write(&with_items(&base, shape, n)).map(|v| v.len());
    let empty = size(0)?;
    if bytes <= empty {
        return Ok(write(&with_items(&base, shape, 0))?);
    }
    // Items are all about the same size: measure one hundred, then correct once.
    let per = (size(100)?.saturating_sub(empty) as f64 / 100.0).max(1.0);
    let mut n = ((bytes - empty) as f64 / per) as usize;
    let got = size(n)?;
    if got < bytes {
        n += ((bytes - got) as f64 / per).ceil() as usize;
    }
    Ok(write(&with_items(&base, shape, n))?)
}

#[derive(Args)]
pub struct CostArgs {
    #[arg(long, value_enum)]
    shape: Shape,
    /// Body size in bytes.
    #[arg(long)]
    bytes: usize,
    /// Plan without the list limits (measures the merges themselves).
    #[arg(long)]
    unbounded: bool,
    /// Write the body's keys sorted (`request.object` before `operation` and `uid`)
    /// rather than in the API server's order: the scan of a large body cannot stop early.
    #[arg(long)]
    sorted_keys: bool,
    /// Reviews evaluated (the first also warms up); the time printed is the median.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

/// Bodies above this size are counted before decoding (the router's `INLINE_BODY_BYTES`).
const SCANNED_ABOVE: usize = 64 * 1024;

/// One `/mutate` review as the router answers it, minus metrics and the log line.
#[inline(never)]
fn review_once(engine: &Engine, set: &PolicySet, body: &[u8]) -> anyhow::Result<(Vec<u8>, String)> {
    if body.len() > SCANNED_ABOVE {
        if let Some(refused) = prescan::too_large(body, &engine.limits) {
            let mut answer = Answer::allow(refused.uid.as_str());
            answer.deny(
                422,
                "Invalid",
                format!("spark-admission: {}", refused.error),
            );
            return Ok((
                answer.to_review_json()?,
                format!("refused before decoding: {}", refused.error),
            ));
        }
    }
    let review = review::decode(body).context("the body does not decode")?;
    let (answer, outcome) = match &review {
        Review::PassThrough { uid, .. } => {
            (Answer::allow(uid.as_str()), "passed through".to_owned())
        }
        // The crafted shapes are CREATE reviews: an UPDATE is no shape measured here.
        Review::PodUpdate(update) => (
            Answer::allow(update.new.uid.as_str()),
            "an UPDATE, not measured".to_owned(),
        ),
        Review::PodCreate(create) => {
            let mut answer = Answer::allow(create.uid.as_str());
            match engine.mutate(
                MutateRequest::new(set, &create.pod, &create.namespace)
                    .within(Deadline::at(Instant::now() + Duration::from_secs(60))),
            ) {
                Ok(mutation) => {
                    answer.set_patch(&mutation.patch)?;
                    if !mutation.applied.is_empty() {
                        answer
                            .audit_annotations
                            .insert(AUDIT_APPLIED.to_owned(), mutation.applied.join(","));
                    }
                    let outcome = format!("{} patch operations", mutation.patch.len());
                    answer.warnings = mutation.warnings;
                    (answer, outcome)
                }
                Err(e) => {
                    answer.deny(422, "Invalid", format!("spark-admission: {e}"));
                    (answer, format!("refused: {e}"))
                }
            }
        }
    };
    Ok((answer.to_review_json()?, outcome))
}

pub fn cost(args: CostArgs) -> anyhow::Result<()> {
    let body = body(args.shape, args.bytes, args.sorted_keys)?;
    let mut all = Vec::new();
    for (name, text) in policies::files(100, 100) {
        all.extend(
            parse_documents(&PolicySource(name), &text)
                .map_err(|e| anyhow::anyhow!("benchmark policies: {e:?}"))?
                .into_iter()
                .map(Arc::new),
        );
    }
    let set = PolicySet::new(all);
    let mut engine = Engine::default();
    if args.unbounded {
        engine.limits = PodLimits::unlimited();
    }
    let mut times = Vec::new();
    let mut outcome = String::new();
    for _ in 0..args.repeat.max(1) {
        let t = Instant::now();
        let (answer, o) = review_once(&engine, &set, &body)?;
        times.push(t.elapsed());
        std::hint::black_box(answer);
        outcome = o;
    }
    times.sort();
    let outcome: String = outcome.chars().take(160).collect();
    println!(
        "{:?} {} bytes{}{}: {:.2} ms (median of {}); {outcome}",
        args.shape,
        body.len(),
        if args.unbounded {
            " (no list limits)"
        } else {
            ""
        },
        if args.sorted_keys {
            ", keys sorted"
        } else {
            ""
        },
        times[times.len() / 2].as_secs_f64() * 1e3,
        times.len()
    );
    Ok(())
}

#[derive(Args)]
pub struct FloodArgs {
    /// Server to drive, e.g. https://127.0.0.1:8443; without it one is started here with
    /// the 100-policy benchmark set.
    #[arg(long)]
    url: Option<String>,
    /// CA certificate the server's certificate chains to (with --url).
    #[arg(long, default_value = "certs/ca.crt")]
    ca: PathBuf,
    /// Clients sending crafted reviews back to back, each on its own h2 connection;
    /// client i sends shape i mod 2 (terms, containers) at size i mod len(--crafted-bytes).
    #[arg(long, default_value_t = 24)]
    attackers: usize,
    #[arg(long, value_delimiter = ',', default_value = "259000,1000000,3000000")]
    crafted_bytes: Vec<usize>,
    /// Ordinary reviews (the real fixtures) per second, each on a shared h2 connection.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Benign large reviews (one annotation padding the pod) sent one after another.
    #[arg(long, default_value_t = 400_000)]
    benign_bytes: usize,
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// How long the crafted clients run before ordinary reviews start.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// spark-admission binary for a server started here (default: next to loadgen).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Extra arguments for a server started here.
    #[arg(long, allow_hyphen_values = true, num_args = 1..)]
    server_args: Vec<String>,
}

/// Answers by kind, for one class of review.
#[derive(Default)]
struct Tally {
    allowed: AtomicU64,
    refused: AtomicU64,
    busy: AtomicU64,
    other: AtomicU64,
}

impl Tally {
    fn count(&self, answer: &anyhow::Result<(u16, Bytes)>) {
        let slot = match answer {
            Ok((200, body)) if load::contains(body, br#""allowed":true"#) => &self.allowed,
            Ok((200, _)) => &self.refused,
            Ok((503, _)) => &self.busy,
            _ => &self.other,
        };
        slot.fetch_add(1, Ordering::Relaxed);
    }

    fn describe(&self) -> String {
        format!(
            "{} allowed, {} refused in the review, {} answered 503, {} other",
            self.allowed.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.busy.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed)
        )
    }
}

pub async fn flood(args: FloodArgs) -> anyhow::Result<()> {
    if args.rate <= 0.0 {
        bail!("--rate must be positive");
    }
    let (_, ordinary) = review_bodies(&default_fixtures(), "/mutate")?;
    let (addr, ca_pem, started) = target(
        args.url.as_deref(),
        &args.ca,
        "crafted-flood",
        args.server_bin.clone(),
        args.server_args.clone(),
    )
    .await?;
    let mut crafted = Vec::new();
    for i in 0..args.attackers {
        let shape = if i % 2 == 0 {
            Shape::Terms
        } else {
            Shape::Containers
        };
        let bytes = args.crafted_bytes[i % args.crafted_bytes.len().max(1)];
        crafted.push(Bytes::from(body(shape, bytes, false)?));
    }
    let benign = Bytes::from(body(Shape::Benign, args.benign_bytes, false)?);
    println!(
        "{} crafted clients against {addr} (shapes terms/containers, sizes {:?} bytes, back to back), ordinary reviews at {}/s and benign {}-byte reviews one after another for {:?}",
        args.attackers,
        args.crafted_bytes,
        args.rate,
        benign.len(),
        args.duration
    );

    let tls = client::tls_config(&ca_pem, Proto::H2)?;
    let path = crate::with_timeout_query("/mutate");
    let stop = Arc::new(AtomicBool::new(false));
    let crafted_tally = Arc::new(Tally::default());
    let benign_tally = Arc::new(Tally::default());
    let mut background = JoinSet::new();
    for body in crafted {
        let (tls, path, stop, tally) = (
            Arc::clone(&tls),
            path.clone(),
            Arc::clone(&stop),
            Arc::clone(&crafted_tally),
        );
        background.spawn(async move { send_loop(addr, tls, &path, body, &stop, &tally).await });
    }
    tokio::time::sleep(args.warmup).await;
    {
        let (tls, path, stop, tally) = (
            Arc::clone(&tls),
            path.clone(),
            Arc::clone(&stop),
            Arc::clone(&benign_tally),
        );
        let benign = benign.clone();
        background.spawn(async move { send_loop(addr, tls, &path, benign, &stop, &tally).await });
    }

    // Ordinary reviews at a fixed rate on one h2 connection, as the API server sends them.
    let conn = client::Conn::connect(addr, Arc::clone(&tls), Proto::H2).await?;
    let authority = format!("localhost:{}", addr.port());
    let every = Duration::from_secs_f64(1.0 / args.rate);
    let mut ordinary_tasks = JoinSet::new();
    let began = Instant::now();
    let mut next = tokio::time::Instant::now();
    let mut i = 0usize;
    while began.elapsed() < args.duration {
        let mut conn = conn.share().context("h2 connections share")?;
        let body = ordinary[i % ordinary.len()].clone();
        let (path, authority) = (path.clone(), authority.clone());
        ordinary_tasks.spawn(async move {
            let t = Instant::now();
            let answer = conn.post(&authority, &path, body).await;
            (t.elapsed(), answer)
        });
        i += 1;
        next += every;
        tokio::time::sleep_until(next).await;
    }
    let mut latencies = Vec::new();
    let ordinary_tally = Tally::default();
    let mut failures = Vec::new();
    while let Some(joined) = ordinary_tasks.join_next().await {
        let (took, answer) = joined.context("ordinary review task")?;
        ordinary_tally.count(&answer);
        match &answer {
            Ok((200, body)) if load::contains(body, br#""patchType":"JSONPatch""#) => {
                latencies.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
            }
            Ok((status, body)) => failures.push(format!(
                "{status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(160)])
            )),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    let elapsed = began.elapsed();
    stop.store(true, Ordering::Relaxed);
    background.shutdown().await;

    let stats = load::stats_of(latencies.into_iter(), failures.len() as u64, elapsed);
    println!("ordinary reviews: {}", suite::describe(&stats));
    for f in failures.iter().take(5) {
        println!("  failed: {f}");
    }
    println!("  answers: {}", ordinary_tally.describe());
    println!("benign large reviews: {}", benign_tally.describe());
    println!("crafted reviews: {}", crafted_tally.describe());
    println!("load average: {}", suite::loadavg());
    drop(started);
    Ok(())
}

/// Sends `body` one request after another on one h2 connection until `stop`, counting the
/// answers; reconnects after a connection error.
async fn send_loop(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    path: &str,
    body: Bytes,
    stop: &AtomicBool,
    tally: &Tally,
) {
    let authority = format!("localhost:{}", addr.port());
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut conn) = client::Conn::connect(addr, Arc::clone(&tls), Proto::H2).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            let answer = conn.post(&authority, path, body.clone()).await;
            tally.count(&answer);
            if answer.is_err() {
                break;
            }
        }
    }
}
