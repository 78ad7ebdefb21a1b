//! The webhook listener: accepting within the connection limit, the TLS handshake, HTTP/1.1
//! or h2 per connection, and the drain at shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::metrics::{Metrics, SlowClient};
use crate::shutdown::ShutdownHandle;

/// Pings on idle HTTP/2 connections find dead peers; the API server keeps connections open.
const H2_KEEPALIVE: Duration = Duration::from_secs(20);

/// What each webhook connection needs.
pub(super) struct Connections {
    pub(super) acceptor: TlsAcceptor,
    pub(super) router: Router,
    pub(super) handshake_timeout: Duration,
    pub(super) header_read_timeout: Duration,
    pub(super) metrics: Arc<Metrics>,
}

pub(super) async fn accept_loop(
    listener: TcpListener,
    connections: Arc<Connections>,
    max_connections: usize,
    grace: Duration,
    shutdown: ShutdownHandle,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut tasks = JoinSet::new();
    let stop = shutdown.triggered();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::warn!(%peer, max_connections, "connection limit reached; connection closed");
                    continue;
                };
                let watcher = graceful.watcher();
                let connections = Arc::clone(&connections);
                tasks.spawn(async move {
                    serve_connection(tcp, peer, &connections, watcher).await;
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        grace_seconds = grace.as_secs_f64(),
        "shutting down: unready, no new connections, draining"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace elapsed; closing the remaining connections");
    } else {
        tracing::info!("all connections drained");
    }
    tasks.shutdown().await;
}

async fn serve_connection(tcp: TcpStream, peer: SocketAddr, c: &Connections, watcher: Watcher) {
    // Reviews are small request/response pairs: send them without Nagle's delay.
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(c.handshake_timeout, c.acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            log_handshake_error(peer, &e);
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let io = TokioIo::new(tls);
    let result = if h2 {
        // hyper's h2 server waits for the client preface without a limit, and its
        // keep-alive pings start only after it: a client that negotiates h2 and then says
        // nothing would hold a connection slot forever. Like HTTP/1.1's header read
        // timeout, the first request must arrive in time.
        let spoke = Arc::new(AtomicBool::new(false));
        let heard = Arc::clone(&spoke);
        let router =
            c.router
                .clone()
                .map_request(move |req: http::Request<hyper::body::Incoming>| {
                    heard.store(true, Ordering::Relaxed);
                    req
                });
        let service = TowerToHyperService::new(router);
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(H2_KEEPALIVE))
            .keep_alive_timeout(H2_KEEPALIVE);
        let conn = watcher.watch(builder.serve_connection(io, service));
        tokio::pin!(conn);
        let silent = async {
            tokio::time::sleep(c.header_read_timeout).await;
            if spoke.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = &mut conn => result,
            () = silent => {
                c.metrics.record_slow_client(SlowClient::Header);
                tracing::debug!(%peer, "h2 connection sent no request in time; closed");
                return;
            }
        }
    } else {
        let service = TowerToHyperService::new(c.router.clone());
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(c.header_read_timeout)
            .keep_alive(true)
            // Answers to pipelined requests go out in one TLS write instead of one each.
            .pipeline_flush(true);
        watcher.watch(builder.serve_connection(io, service)).await
    };
    if let Err(e) = result {
        if e.is_timeout() {
            // HTTP/1.1 headers not complete within --header-read-timeout.
            c.metrics.record_slow_client(SlowClient::Header);
        }
        tracing::debug!(%peer, error = %e, "connection closed with an error");
    }
}

fn log_handshake_error(peer: SocketAddr, e: &std::io::Error) {
    let alert = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| matches!(r, rustls::Error::AlertReceived(_)));
    if alert {
        // The client refused us: almost always a caBundle that does not match our CA.
        tracing::warn!(%peer, error = %e, "TLS handshake refused by the client; check the webhook caBundle");
    } else {
        tracing::debug!(%peer, error = %e, "TLS handshake failed");
    }
}
