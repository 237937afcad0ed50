//! The state a reader's handles share with its background loop: the current snapshot,
//! change notification, events, health and metrics.

use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use kvtk_core::Revision;
use tokio::sync::{broadcast, watch};

use crate::error::Rejection;
use crate::metrics::ReaderMetrics;
use crate::snapshot::{ConfigEvent, Health, Snapshot};

/// How many events a slow subscriber may fall behind before it gets [`ConfigEvent::Lagged`].
const EVENT_CAPACITY: usize = 256;

/// State shared by the reader handles and the background task.
pub(crate) struct Shared<T> {
    pub(crate) current: ArcSwap<Snapshot<T>>,
    pub(crate) generation: watch::Sender<u64>,
    pub(crate) ready: watch::Sender<bool>,
    pub(crate) events: broadcast::Sender<ConfigEvent<T>>,
    health: Mutex<Health>,
    pub(crate) metrics: ReaderMetrics,
}

impl<T> Shared<T> {
    /// The shared state of a reader starting with `snapshot` and `health`, and the receiver
    /// of its change generations; `ready` once it has synced with the KV.
    pub(crate) fn new(
        snapshot: Snapshot<T>,
        health: Health,
        ready: bool,
        metrics: ReaderMetrics,
    ) -> (Shared<T>, watch::Receiver<u64>) {
        let (generation, generation_rx) = watch::channel(0u64);
        let shared = Shared {
            current: ArcSwap::from_pointee(snapshot),
            generation,
            ready: watch::channel(ready).0,
            events: broadcast::channel(EVENT_CAPACITY).0,
            health: Mutex::new(health),
            metrics,
        };
        (shared, generation_rx)
    }

    fn health_lock(&self) -> MutexGuard<'_, Health> {
        // A panic while holding this lock cannot leave Health inconsistent (plain fields).
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn health(&self) -> Health {
        self.health_lock().clone()
    }

    /// Records a rejection; returns false when it repeats the one already recorded.
    pub(crate) fn reject(&self, r: Rejection) -> bool {
        {
            let mut h = self.health_lock();
            if h.rejected.as_ref() == Some(&r) {
                return false;
            }
            h.rejected = Some(r.clone());
            h.last_sync = Some(SystemTime::now());
        }
        self.metrics.rejected(&r, self.current.load().revision);
        let _ = self.events.send(ConfigEvent::Rejected(r));
        true
    }

    pub(crate) fn synced(&self, rev: Option<Revision>) {
        self.metrics.synced();
        let mut h = self.health_lock();
        h.applied = rev;
        h.rejected = None;
        h.stale = false;
        h.last_sync = Some(SystemTime::now());
    }
}
