//! Contended hand-off runs shared by every system: N clients loop acquire → release on one
//! lock, and the run stops after a number of hand-offs or a time limit, whichever first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::stats::{fairness, Handoff, Lat};

/// What every client shares.
pub(crate) struct Shared {
    pub tracker: Handoff,
    /// Acquisitions per client.
    pub counts: Vec<AtomicU64>,
    /// Conditional writes that tried to take the lock (where the system exposes them).
    pub cas: AtomicU64,
}

impl Shared {
    pub(crate) fn new(clients: usize) -> Arc<Shared> {
        Arc::new(Shared {
            tracker: Handoff::default(),
            counts: (0..clients).map(|_| AtomicU64::new(0)).collect(),
            cas: AtomicU64::new(0),
        })
    }

    pub(crate) fn acquired(&self, client: usize) {
        self.tracker.acquired(Instant::now());
        self.counts[client].fetch_add(1, Ordering::Relaxed);
    }
}

/// The outcome of one run.
pub(crate) struct Outcome {
    pub lat: Lat,
    pub handoffs: u64,
    pub secs: f64,
    pub counts: Vec<u64>,
    pub cas: Option<u64>,
    /// Conditional writes seen on the wire (renewals included), where counted.
    pub wire_cas: Option<u64>,
}

impl Outcome {
    pub(crate) fn extra(&self) -> serde_json::Value {
        let (max, min, ratio) = fairness(&self.counts);
        let mut e = json!({
            "handoffs_per_s": self.handoffs as f64 / self.secs,
            "fairness_max_over_min": ratio,
            "acq_max": max,
            "acq_min": min,
        });
        if let Some(c) = self.cas {
            e["cas_per_handoff"] = json!(c as f64 / self.handoffs.max(1) as f64);
        }
        if let Some(c) = self.wire_cas {
            e["wire_cas_per_handoff"] = json!(c as f64 / self.handoffs.max(1) as f64);
        }
        e
    }
}

/// Waits until `target` hand-offs happened or `limit` passed, then aborts the clients.
pub(crate) async fn finish(
    shared: &Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
    target: u64,
    limit: Duration,
    count_cas: bool,
) -> Outcome {
    finish_with(shared, tasks, started, target, limit, count_cas, async {}).await
}

/// Like [`finish`], running `cleanup` after the measurement and before the clients are
/// aborted, then giving them up to 2 s to end by themselves (a waiter aborted in the middle
/// of a blocking server call can leave work behind on the server).
pub(crate) async fn finish_with(
    shared: &Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
    target: u64,
    limit: Duration,
    count_cas: bool,
    cleanup: impl std::future::Future<Output = ()>,
) -> Outcome {
    shared
        .tracker
        .wait_for(
            target,
            tokio::time::Instant::from_std(started) + limit,
            || tasks.iter().all(|t| t.is_finished()),
        )
        .await;
    let secs = started.elapsed().as_secs_f64();
    let handoffs = shared.tracker.handoffs();
    let cas = shared.cas.load(Ordering::Relaxed);
    let lat = shared.tracker.lat();
    let counts = shared
        .counts
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    cleanup.await;
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let ended = futures::future::join_all(tasks);
    tokio::pin!(ended);
    if tokio::time::timeout(Duration::from_secs(2), &mut ended)
        .await
        .is_err()
    {
        aborts.iter().for_each(|a| a.abort());
        ended.await;
    }
    Outcome {
        lat,
        handoffs,
        secs,
        counts,
        cas: count_cas.then_some(cas),
        wire_cas: None,
    }
}
