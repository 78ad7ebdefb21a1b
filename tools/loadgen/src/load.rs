//! The load itself: `concurrency` workers POSTing real AdmissionReviews for a fixed
//! duration, either back to back (closed loop: the maximum rate) or on a fixed schedule
//! (open loop: latency at an offered rate, measured from the scheduled send time so a slow
//! server cannot hide its queueing — no coordinated omission).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};

use crate::client::{Conn, Proto};

/// A review that takes longer than the API server's own timeout counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds on every loop besides the deadline.
const MAX_REQUESTS_PER_WORKER: u64 = 2_000_000;
const MAX_RECONNECTS_PER_WORKER: u32 = 20;
const MAX_ERROR_EXAMPLES: usize = 5;

/// What to send, how, and for how long.
#[derive(Clone)]
pub struct Load {
    pub addr: SocketAddr,
    pub tls: Arc<rustls::ClientConfig>,
    pub proto: Proto,
    /// Requests in flight at once (h1: also the number of connections).
    pub concurrency: usize,
    /// h2 only: connections the streams are spread over.
    pub h2_connections: usize,
    /// Requests per second across all workers; `None`: as fast as the server answers.
    pub rate: Option<f64>,
    pub duration: Duration,
    /// Path and query, e.g. `/mutate?timeout=10s` (the API server always sends the query).
    pub path: String,
    /// Request bodies, used in turn.
    pub bodies: Arc<Vec<Bytes>>,
}

/// One answered request: when it was due (µs after the start) and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at_us: u64,
    pub latency_us: u32,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub samples: Vec<Sample>,
    pub errors: u64,
    pub error_examples: Vec<String>,
    pub elapsed: Duration,
}

/// Latency percentiles in microseconds, and the rate actually achieved.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_us: u32,
    pub p90_us: u32,
    pub p99_us: u32,
    pub p999_us: u32,
    pub max_us: u32,
}

impl Outcome {
    pub fn stats(&self) -> Stats {
        stats_of(
            self.samples.iter().map(|s| s.latency_us),
            self.errors,
            self.elapsed,
        )
    }
}

/// Stats of a set of latencies observed over `elapsed`.
pub fn stats_of(latencies: impl Iterator<Item = u32>, errors: u64, elapsed: Duration) -> Stats {
    let mut v: Vec<u32> = latencies.collect();
    v.sort_unstable();
    let pct = |q: f64| -> u32 {
        if v.is_empty() {
            return 0;
        }
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    };
    let secs = elapsed.as_secs_f64();
    Stats {
        requests: v.len() as u64,
        errors,
        rps: if secs > 0.0 {
            v.len() as f64 / secs
        } else {
            0.0
        },
        p50_us: pct(0.50),
        p90_us: pct(0.90),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
        max_us: v.last().copied().unwrap_or(0),
    }
}

struct WorkerResult {
    samples: Vec<Sample>,
    errors: u64,
    examples: Vec<String>,
}

/// Opens the connections, then runs the load; handshakes are not part of the timing.
pub async fn run(load: &Load) -> anyhow::Result<Outcome> {
    let load = Arc::new(load.clone());
    let workers = load.concurrency.max(1);
    let conns = match load.proto {
        Proto::H1 => workers,
        Proto::H2 => load.h2_connections.clamp(1, workers),
    };
    let mut opened = Vec::with_capacity(conns);
    for _ in 0..conns {
        opened.push(Some(
            Conn::connect(load.addr, Arc::clone(&load.tls), load.proto)
                .await
                .context("opening the load connections")?,
        ));
    }
    let start = Instant::now();
    let deadline = start + load.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..workers {
        // h1: one connection per worker; h2: workers share the connections.
        let conn = match load.proto {
            Proto::H1 => opened[id].take(),
            Proto::H2 => opened[id % conns].as_ref().and_then(Conn::share),
        }
        .context("no connection for a load worker")?;
        let load = Arc::clone(&load);
        tasks.spawn(worker(id, load, conn, start, deadline));
    }
    drop(opened);
    let mut out = Outcome::default();
    while let Some(joined) = tasks.join_next().await {
        let r = joined.context("load worker panicked")?;
        out.samples.extend(r.samples);
        out.errors += r.errors;
        for e in r.examples {
            if out.error_examples.len() < MAX_ERROR_EXAMPLES && !out.error_examples.contains(&e) {
                out.error_examples.push(e);
            }
        }
    }
    // Requests still in flight at the deadline finish (within the request timeout) and
    // count; the achieved rate divides by the scheduled duration.
    out.elapsed = load.duration;
    out.samples.sort_unstable_by_key(|s| s.at_us);
    Ok(out)
}

async fn worker(
    id: usize,
    load: Arc<Load>,
    mut conn: Conn,
    start: Instant,
    deadline: Instant,
) -> WorkerResult {
    let workers = load.concurrency.max(1);
    let authority = format!("localhost:{}", load.addr.port());
    // Each worker sends every `workers / rate` seconds, offset so the schedule is even.
    let interval = load
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(workers as f64 / r));
    let offset = interval.map(|i| i.mul_f64(id as f64 / workers as f64));
    let mut result = WorkerResult {
        samples: Vec::new(),
        errors: 0,
        examples: Vec::new(),
    };
    let mut reconnects = 0u32;
    for k in 0..MAX_REQUESTS_PER_WORKER {
        let sent_at = match (interval, offset) {
            (Some(i), Some(o)) => {
                let due = start + o + i.mul_f64(k as f64);
                if due >= deadline {
                    break;
                }
                let now = Instant::now();
                if now >= due {
                    // Behind schedule because the server was slow: the wait counts.
                    due
                } else {
                    // Ahead: the timer's own lateness (≈1 ms granularity) must not count.
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                }
            }
            _ => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                now
            }
        };
        let body = load.bodies[(id + k as usize * workers) % load.bodies.len()].clone();
        let outcome =
            tokio::time::timeout(REQUEST_TIMEOUT, conn.post(&authority, &load.path, body)).await;
        let latency = sent_at.elapsed();
        let error = match outcome {
            Ok(Ok((200, resp))) if contains(&resp, br#""allowed":true"#) => None,
            Ok(Ok((status, resp))) => Some((
                false,
                format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&resp[..resp.len().min(200)]).trim()
                ),
            )),
            Ok(Err(e)) => Some((true, format!("{e:#}"))),
            Err(_) => Some((true, format!("no answer within {REQUEST_TIMEOUT:?}"))),
        };
        match error {
            None => result.samples.push(Sample {
                at_us: sent_at.saturating_duration_since(start).as_micros() as u64,
                latency_us: latency.as_micros().min(u32::MAX as u128) as u32,
            }),
            Some((broken, message)) => {
                result.errors += 1;
                if result.examples.len() < MAX_ERROR_EXAMPLES {
                    result.examples.push(message);
                }
                if broken {
                    // The connection may be gone: open a new one (bounded), else stop.
                    reconnects += 1;
                    if reconnects > MAX_RECONNECTS_PER_WORKER || Instant::now() >= deadline {
                        break;
                    }
                    match Conn::connect(load.addr, Arc::clone(&load.tls), load.proto).await {
                        Ok(c) => conn = c,
                        Err(e) => {
                            result.errors += 1;
                            result.examples.push(format!("reconnect: {e:#}"));
                            break;
                        }
                    }
                }
            }
        }
    }
    result
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
