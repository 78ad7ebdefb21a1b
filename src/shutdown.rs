//! The shutdown signal: set once (SIGTERM, Ctrl-C, or a test), seen by the readiness
//! probe at once, by async tasks through a watch channel and by the watcher threads
//! through a condition variable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::watch;

#[derive(Debug)]
struct Inner {
    triggered: AtomicBool,
    tx: watch::Sender<bool>,
    lock: Mutex<bool>,
    wake: Condvar,
}

/// Cheap to clone; every clone triggers and observes the same shutdown.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    inner: Arc<Inner>,
}

impl Default for ShutdownHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownHandle {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                triggered: AtomicBool::new(false),
                tx,
                lock: Mutex::new(false),
                wake: Condvar::new(),
            }),
        }
    }

    /// Starts the shutdown: readiness is false when this returns; connections drain.
    pub fn trigger(&self) {
        if self.inner.triggered.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.tx.send_replace(true);
        // A poisoned lock only means a watcher thread panicked; the flag is still ours.
        let mut stopped = self
            .inner
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *stopped = true;
        self.inner.wake.notify_all();
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::Acquire)
    }

    /// Resolves once [`trigger`](Self::trigger) has been called.
    pub async fn triggered(&self) {
        let mut rx = self.inner.tx.subscribe();
        // Err only if the sender is gone, which cannot happen while `self` holds it.
        let _ = rx.wait_for(|t| *t).await;
    }

    /// For watcher threads: sleeps up to `period`; true when shutdown was triggered.
    pub fn sleep(&self, period: Duration) -> bool {
        let guard = self
            .inner
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (stopped, _) = self
            .inner
            .wake
            .wait_timeout_while(guard, period, |stopped| !*stopped)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *stopped
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn os_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("interrupt received");
    }
}
