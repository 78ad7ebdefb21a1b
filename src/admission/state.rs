//! What every review shares: the engine, the policy store, the metrics, the limits and
//! the slots and byte budget that bound the work done at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::duration::parse_duration;
use crate::engine::Engine;
use crate::memory::MemoryState;
use crate::metrics::Metrics;
use crate::source::{Drivers, PolicyStore};

/// Per-request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted body; beyond it the answer is 413.
    pub max_body_bytes: usize,
    /// Longest a review may take, from arrival to answer.
    pub request_timeout: Duration,
    /// Reviews evaluated at once; further ones wait within their deadline. A review takes
    /// its slot once its body has arrived.
    pub max_concurrent_requests: usize,
    /// Body bytes held by all requests at once, from the first byte received until the
    /// review is answered; a request that would exceed it waits within its deadline.
    pub max_body_bytes_in_flight: usize,
    /// Longest wait for the next part of a body (nginx's `client_body_timeout`); also the
    /// grace before `min_body_rate` applies.
    pub body_read_timeout: Duration,
    /// Bytes per second a body must average once `body_read_timeout` has passed; 0: none.
    pub min_body_rate: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 3 * 1024 * 1024,
            request_timeout: Duration::from_secs(8),
            max_concurrent_requests: 64,
            max_body_bytes_in_flight: 32 * 1024 * 1024,
            body_read_timeout: Duration::from_secs(2),
            min_body_rate: 64 * 1024,
        }
    }
}

impl Limits {
    /// The deadline of one review: ours, or 80% of the API server's `timeout` if shorter,
    /// so the answer (or a clear error) reaches it before it gives up.
    pub fn budget(&self, query: Option<&str>) -> Duration {
        let theirs = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|kv| kv.strip_prefix("timeout="))
            .and_then(|v| parse_duration(v).ok())
            .filter(|d| !d.is_zero());
        match theirs {
            Some(t) => self.request_timeout.min(t.mul_f64(0.8)),
            None => self.request_timeout,
        }
    }
}

/// What every review needs, shared by all requests.
#[derive(Debug)]
pub struct AppState {
    pub(super) engine: Engine,
    pub(super) store: Arc<PolicyStore>,
    /// Where executors' pins are checked (none: the folder source, every pin unverified).
    pub(super) drivers: Drivers,
    pub(super) metrics: Arc<Metrics>,
    pub(super) limits: Limits,
    pub(super) slots: Semaphore,
    /// Reviews above [`INLINE_BODY_BYTES`] evaluated at once, on the blocking pool.
    pub(super) heavy_slots: Arc<Semaphore>,
    /// Of those, reviews above [`LARGE_BODY_BYTES`] evaluated at once.
    pub(super) large_slots: Arc<Semaphore>,
    /// One permit per body byte held (`Limits::max_body_bytes_in_flight`).
    pub(super) body_bytes: Arc<Semaphore>,
    /// Bodies declared above [`INLINE_BODY_BYTES`] read at once (see `body::receive`).
    pub(super) large_reads: Arc<Semaphore>,
    /// Raises remembered after OOMKilled pods (ConfigMap source only).
    pub(super) memory: Option<Arc<MemoryState>>,
}

impl AppState {
    pub fn new(
        engine: Engine,
        store: Arc<PolicyStore>,
        metrics: Arc<Metrics>,
        limits: Limits,
    ) -> Self {
        let slots = Semaphore::new(limits.max_concurrent_requests.max(1));
        // A review of a few MiB takes up to ~100 MiB to decode and plan. Spark pods are a
        // few KiB, so such reviews are rare or hostile: one at a time keeps a burst of them
        // under the Deployment's memory limit (two at once peaked at 249 MiB).
        let large_slots = Arc::new(Semaphore::new(LARGE_AT_ONCE));
        let heavy_slots = Arc::new(Semaphore::new(heavy_at_once()));
        // At least one whole body must fit, or a review at the limit could never be read.
        let body_bytes = limits
            .max_body_bytes_in_flight
            .max(limits.max_body_bytes)
            .min(Semaphore::MAX_PERMITS);
        let body_bytes = Arc::new(Semaphore::new(body_bytes));
        let large_reads = Arc::new(Semaphore::new(heavy_at_once()));
        Self {
            engine,
            store,
            drivers: Drivers::None,
            metrics,
            limits,
            slots,
            heavy_slots,
            large_slots,
            body_bytes,
            large_reads,
            memory: None,
        }
    }

    /// This state with the raises remembered after OOMKilled pods applied to new pods.
    pub fn with_memory(mut self, memory: Arc<MemoryState>) -> Self {
        self.memory = Some(memory);
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Checks executors' pins against these stored drivers.
    pub fn with_drivers(mut self, drivers: Drivers) -> Self {
        self.drivers = drivers;
        self
    }
}

/// Bodies up to this size are evaluated on the async worker that read them: four times
/// the largest Spark pod review seen (a rich executor, 24 KB pretty-printed).
pub(super) const INLINE_BODY_BYTES: usize = 64 * 1024;
/// Bodies above this size are large (see [`LARGE_AT_ONCE`]).
pub(super) const LARGE_BODY_BYTES: usize = 256 * 1024;
/// Large reviews evaluated at once.
const LARGE_AT_ONCE: usize = 1;

/// Reviews above [`INLINE_BODY_BYTES`] evaluated at once: one core fewer than the machine
/// has (at least one), so that the async workers always have a core for ordinary reviews.
fn heavy_at_once() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .saturating_sub(1)
        .max(1)
}

/// One review's time: when it arrived, its budget and the deadline that makes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    pub(super) started: Instant,
    pub(super) budget: Duration,
    pub(super) deadline: tokio::time::Instant,
}

impl Clock {
    /// Starts the clock of a review with the API server's `query` (its `?timeout=`).
    pub(super) fn start(limits: &Limits, query: Option<&str>) -> Self {
        let started = Instant::now();
        let budget = limits.budget(query);
        Clock {
            started,
            budget,
            deadline: tokio::time::Instant::now() + budget,
        }
    }
}
