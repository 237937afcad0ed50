//! Lock metrics through the [`metrics`] facade: wait, hold and hand-off times.
//!
//! Nothing is exported unless the application installs a recorder. Every metric of the toolkit,
//! with its labels, is in the one table of the workspace's
//! [docs/metrics.md](https://github.com/kv-toolkit/kv-toolkit/blob/main/docs/metrics.md). Losses of
//! held locks (and of waiters' queue entries) are the lease layer's
//! [`kv_lease_lost_total`](kvtk_core::metrics::LEASE_LOST) with `recipe="locks"`, renewal slack its
//! [`kv_lease_renewal_slack_seconds`](kvtk_core::metrics::LEASE_RENEWAL_SLACK).
//!
//! Labels are `bucket` and `kind` (`exclusive`: mutexes and writers; `shared`: readers;
//! `permits`: semaphores), so the number of series does not grow with the number of lock
//! names. [`Locks::metrics_per_lock`](crate::Locks::metrics_per_lock) adds a `lock` label
//! for deployments with few, fixed names.

use std::sync::Arc;
use std::time::Duration;

use ::metrics::{histogram, Label, SharedString};
use tokio::time::Instant;

use crate::rule::Kind;

/// Histogram (seconds): from the start of an acquisition to holding the lock (waiting for
/// the handle's slot, the queue and the hand-off included). Labels `bucket`, `kind`, `path`
/// (`fast`: one write; `queue`), and `lock` when opted in.
pub const LOCK_WAIT: &str = "kv_lock_wait_seconds";

/// Histogram (seconds): from acquiring a lock to the end of holding it. Labels `bucket`,
/// `kind`, `outcome` (`released`; `lost`: loss was signalled before the release; `dropped`:
/// the guard was dropped or its release failed, and the entry expires), and `lock` when
/// opted in.
pub const LOCK_HOLD: &str = "kv_lock_hold_seconds";

/// Histogram (seconds): for an acquisition that waited, from seeing the entry it waited for
/// leave (on its watch) to holding the lock — the waiter's share of a hand-off (no clock of
/// another process is read). Labels `bucket`, `kind`, and `lock` when opted in.
pub const LOCK_HANDOFF: &str = "kv_lock_handoff_seconds";

/// The labels of one lock handle.
#[derive(Debug, Clone)]
pub(crate) struct Labels {
    bucket: Arc<str>,
    kind: &'static str,
    lock: Option<Arc<str>>,
}

impl Labels {
    pub(crate) fn new(bucket: &str, kind: Kind, lock: Option<&str>) -> Labels {
        Labels {
            bucket: bucket.into(),
            kind: match kind {
                Kind::Exclusive => "exclusive",
                Kind::Shared => "shared",
                Kind::Permit(_) => "permits",
            },
            lock: lock.map(Arc::from),
        }
    }

    fn with(&self, extra: Option<(&'static str, &'static str)>) -> Vec<Label> {
        // Room for every label at once: no reallocation per recorded value.
        let mut v = Vec::with_capacity(4);
        v.push(Label::new(
            "bucket",
            SharedString::from(self.bucket.clone()),
        ));
        v.push(Label::new("kind", self.kind));
        if let Some((k, val)) = extra {
            v.push(Label::new(k, val));
        }
        if let Some(l) = &self.lock {
            v.push(Label::new("lock", SharedString::from(l.clone())));
        }
        v
    }

    pub(crate) fn waited(&self, wait: Duration, path: &'static str) {
        histogram!(LOCK_WAIT, self.with(Some(("path", path)))).record(wait.as_secs_f64());
    }

    pub(crate) fn handed_off(&self, d: Duration) {
        histogram!(LOCK_HANDOFF, self.with(None)).record(d.as_secs_f64());
    }
}

/// Times one hold of a lock; records it once, as `dropped` unless finished.
#[derive(Debug)]
pub(crate) struct HoldTimer {
    labels: Labels,
    since: Instant,
    done: bool,
}

impl HoldTimer {
    pub(crate) fn start(labels: Labels) -> HoldTimer {
        HoldTimer {
            labels,
            since: Instant::now(),
            done: false,
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.since.elapsed()
    }

    /// Records the hold with `outcome` (`released` or `lost`).
    pub(crate) fn finish(mut self, outcome: &'static str) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: &'static str) {
        if !std::mem::replace(&mut self.done, true) {
            histogram!(LOCK_HOLD, self.labels.with(Some(("outcome", outcome))))
                .record(self.elapsed().as_secs_f64());
        }
    }
}

impl Drop for HoldTimer {
    fn drop(&mut self) {
        self.record("dropped");
    }
}
