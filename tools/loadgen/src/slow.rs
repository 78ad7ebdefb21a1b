//! `loadgen slow-clients`: the slow-body attack of issue 12. Persistent TLS clients each
//! announce a body (half small, half large) and send one byte every `--drip-every`; on a
//! cut they connect again. Meanwhile real AdmissionReviews go out on fresh connections,
//! as the API server sends them. Reports how many real reviews got a 200 with a patch
//! within `--deadline`, their latency, and what became of the slow requests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::client::conn::{http1, http2};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use spark_admission::duration::parse_duration;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

use crate::client::{self, Proto};
use crate::spawn::target;
use crate::{default_fixtures, load, review_bodies, suite};

#[derive(Args)]
pub struct SlowArgs {
    /// Server to attack, e.g. https://127.0.0.1:8443; without it one is started here.
    #[arg(long)]
    url: Option<String>,
    /// CA certificate the server's certificate chains to (with --url).
    #[arg(long, default_value = "certs/ca.crt")]
    ca: PathBuf,
    /// Slow clients (alternately HTTP/1.1 and h2; even ones announce --small-bytes).
    #[arg(long, default_value_t = 160)]
    clients: usize,
    #[arg(long, default_value_t = 16 * 1024)]
    small_bytes: usize,
    #[arg(long, default_value_t = 2_000_000)]
    large_bytes: usize,
    /// Each slow client sends one byte this often.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    drip_every: Duration,
    /// Real reviews sent during the attack, one every --review-every, each on a new h2
    /// connection.
    #[arg(long, default_value_t = 30)]
    reviews: usize,
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    review_every: Duration,
    /// How long the slow clients run before the first real review.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    warmup: Duration,
    /// A real review must be answered (200 with its patch) within this, connecting included.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    deadline: Duration,
    /// spark-admission binary for a server started here (default: next to loadgen).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Extra arguments for a server started here (e.g. --min-body-rate=0 to compare).
    #[arg(long, allow_hyphen_values = true, num_args = 1..)]
    server_args: Vec<String>,
}

/// What happened to the slow clients' requests.
#[derive(Default)]
struct SlowCounts {
    /// Requests sent (each announcing a body it never finishes).
    started: AtomicU64,
    /// Answered with a status (408, 503, ...): the server cut it and said so.
    answered: AtomicU64,
    /// The connection failed or was closed under it.
    dropped: AtomicU64,
    /// Total time the cut requests were held, in milliseconds.
    held_ms: AtomicU64,
}

pub async fn slow_clients(args: SlowArgs) -> anyhow::Result<()> {
    let (_, bodies) = review_bodies(&default_fixtures(), "/mutate")?;
    let (addr, ca_pem, started) = target(
        args.url.as_deref(),
        &args.ca,
        "slow-clients",
        args.server_bin.clone(),
        args.server_args.clone(),
    )
    .await?;
    println!(
        "{} slow clients against {addr} (half announcing {} bytes, half {}; one byte every {:?}), then {} real reviews, one every {:?}, each due within {:?}",
        args.clients,
        args.small_bytes,
        args.large_bytes,
        args.drip_every,
        args.reviews,
        args.review_every,
        args.deadline
    );

    let counts = Arc::new(SlowCounts::default());
    let mut attackers = JoinSet::new();
    for i in 0..args.clients {
        let proto = if i % 4 < 2 { Proto::H1 } else { Proto::H2 };
        let declared = if i % 2 == 0 {
            args.small_bytes
        } else {
            args.large_bytes
        };
        let tls = client::tls_config(&ca_pem, proto)?;
        let counts = Arc::clone(&counts);
        let every = args.drip_every;
        attackers.spawn(async move { trickle(addr, tls, proto, declared, every, &counts).await });
    }
    tokio::time::sleep(args.warmup).await;

    let tls = client::tls_config(&ca_pem, Proto::H2)?;
    let path = crate::with_timeout_query("/mutate");
    let mut reviews = JoinSet::new();
    let began = Instant::now();
    for i in 0..args.reviews {
        let body = bodies[i % bodies.len()].clone();
        let (tls, path, deadline) = (Arc::clone(&tls), path.clone(), args.deadline);
        reviews.spawn(async move {
            let t = Instant::now();
            let answer = tokio::time::timeout(deadline, async move {
                let mut conn = client::Conn::connect(addr, tls, Proto::H2).await?;
                conn.post(&format!("localhost:{}", addr.port()), &path, body)
                    .await
            })
            .await;
            (t.elapsed(), answer)
        });
        tokio::time::sleep(args.review_every).await;
    }
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    while let Some(joined) = reviews.join_next().await {
        let (took, answer) = joined.context("review task")?;
        match answer {
            Ok(Ok((200, body))) if load::contains(&body, br#""patchType":"JSONPatch""#) => {
                latencies.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
            }
            Ok(Ok((status, body))) => failures.push(format!(
                "{status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(120)])
            )),
            Ok(Err(e)) => failures.push(format!("{e:#}")),
            Err(_) => failures.push(format!("no answer within {:?}", args.deadline)),
        }
    }
    let elapsed = began.elapsed();
    attackers.shutdown().await;

    let stats = load::stats_of(latencies.into_iter(), failures.len() as u64, elapsed);
    println!(
        "real reviews: {} of {} answered 200 with a patch within {:?}; {}",
        stats.requests,
        args.reviews,
        args.deadline,
        suite::describe(&stats)
    );
    for f in failures.iter().take(5) {
        println!("  failed: {f}");
    }
    let cut = counts.answered.load(Ordering::Relaxed) + counts.dropped.load(Ordering::Relaxed);
    println!(
        "slow requests: {} sent, {} cut with an answer, {} cut by closing, held {:.2} s on average before the cut",
        counts.started.load(Ordering::Relaxed),
        counts.answered.load(Ordering::Relaxed),
        counts.dropped.load(Ordering::Relaxed),
        if cut > 0 {
            counts.held_ms.load(Ordering::Relaxed) as f64 / cut as f64 / 1000.0
        } else {
            0.0
        }
    );
    if let Some(s) = &started {
        for reason in ["header", "body_idle", "body_rate"] {
            let n = s
                .metric(
                    "spark_admission_slow_clients_total",
                    &format!("reason=\"{reason}\""),
                )
                .await?;
            // The sum of no series is -0.0; print counts as counts.
            let n = n.max(0.0) as u64;
            println!("server: spark_admission_slow_clients_total{{reason=\"{reason}\"}} {n}");
        }
    }
    drop(started);
    if !failures.is_empty() {
        bail!(
            "{} of {} real reviews missed {:?}",
            failures.len(),
            args.reviews,
            args.deadline
        );
    }
    Ok(())
}

/// One slow client, forever: connect, announce `declared` bytes, send a byte every
/// `every`; when the request ends (cut), send another, on a new connection if needed.
async fn trickle(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    proto: Proto,
    declared: usize,
    every: Duration,
    counts: &SlowCounts,
) {
    loop {
        let Ok(mut conn) = SlowConn::connect(addr, Arc::clone(&tls), proto).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        loop {
            let drip = futures::stream::unfold(0usize, move |sent| async move {
                if sent >= declared {
                    return None;
                }
                if sent > 0 {
                    tokio::time::sleep(every).await;
                }
                Some((
                    Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b" "))),
                    sent + 1,
                ))
            });
            let body = StreamBody::new(drip).boxed();
            let req = Request::post(format!(
                "https://localhost:{}/mutate?timeout=10s",
                addr.port()
            ))
            .header(hyper::header::HOST, format!("localhost:{}", addr.port()))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::CONTENT_LENGTH, declared)
            .body(body);
            let Ok(req) = req else { return };
            let t = Instant::now();
            let sent = conn.send(req).await;
            let held = u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX);
            match sent {
                Sent::Answered => {
                    counts.started.fetch_add(1, Ordering::Relaxed);
                    counts.answered.fetch_add(1, Ordering::Relaxed);
                    counts.held_ms.fetch_add(held, Ordering::Relaxed);
                }
                Sent::Dropped => {
                    counts.started.fetch_add(1, Ordering::Relaxed);
                    counts.dropped.fetch_add(1, Ordering::Relaxed);
                    counts.held_ms.fetch_add(held, Ordering::Relaxed);
                    break;
                }
                // The server closed the connection after its last answer: connect again.
                Sent::Closed => break,
            }
        }
    }
}

type SlowBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// A connection for streamed request bodies (the load client sends whole ones).
enum SlowConn {
    H1(http1::SendRequest<SlowBody>),
    H2(http2::SendRequest<SlowBody>),
}

impl SlowConn {
    async fn connect(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        proto: Proto,
    ) -> anyhow::Result<SlowConn> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::IpAddress(addr.ip().into());
        let stream = TlsConnector::from(tls).connect(name, tcp).await?;
        let io = TokioIo::new(stream);
        Ok(match proto {
            Proto::H1 => {
                let (sender, conn) = http1::handshake(io).await?;
                tokio::spawn(conn);
                SlowConn::H1(sender)
            }
            Proto::H2 => {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(conn);
                SlowConn::H2(sender)
            }
        })
    }

    /// Sends the request and reads the answer.
    async fn send(&mut self, req: Request<SlowBody>) -> Sent {
        let ready = match self {
            SlowConn::H1(s) => s.ready().await,
            SlowConn::H2(s) => s.ready().await,
        };
        if ready.is_err() {
            return Sent::Closed;
        }
        let resp = match self {
            SlowConn::H1(s) => s.send_request(req).await,
            SlowConn::H2(s) => s.send_request(req).await,
        };
        let Ok(resp) = resp else {
            return Sent::Dropped;
        };
        match resp.into_body().collect().await {
            Ok(_) => Sent::Answered,
            Err(_) => Sent::Dropped,
        }
    }
}

/// What became of one slow request.
enum Sent {
    /// The server answered (408 when it cut the body).
    Answered,
    /// The connection failed under the request.
    Dropped,
    /// The connection was already closed; nothing was sent.
    Closed,
}
