//! The loop of a watch that only reads: each event in turn until the stop signal, a failed
//! watch logged and retried with kube's backoff. The policy ConfigMaps and the driver cache
//! keep their own loops (they count failures and switch to GETs).

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

/// A watch of `K`, named for its log lines.
pub struct Watch<K> {
    stream: BoxStream<'static, Result<Event<K>, watcher::Error>>,
    what: &'static str,
}

impl<K> Watch<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    /// `what` names it in `"{what} watch failed; retrying"`.
    pub fn new(api: Api<K>, config: watcher::Config, what: &'static str) -> Self {
        Self {
            stream: watcher(api, config).default_backoff().boxed(),
            what,
        }
    }

    /// The next event, or `None` once `stop` is done or the watch ended.
    pub async fn next<S: Future<Output = ()>>(
        &mut self,
        stop: &mut Pin<&mut S>,
    ) -> Option<Event<K>> {
        loop {
            let next = tokio::select! {
                biased;
                () = stop.as_mut() => return None,
                n = self.stream.next() => n,
            };
            match next? {
                Ok(event) => return Some(event),
                Err(e) => tracing::warn!(error = %e, "{} watch failed; retrying", self.what),
            }
        }
    }
}

/// Whether a watched state has been listed once; readiness waits for it, or a fresh replica
/// would serve without what the others already know. Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct Listed(Arc<AtomicBool>);

impl Listed {
    pub fn is_done(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }
}
