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

use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use ::metrics::{Key, Label, Level, Metadata, SharedString};
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

/// What `histogram!` in this module would say about its call site.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The labels of one lock handle, as the metric keys it records under: made once, and
/// shared by every handle with the same labels, so a recorded value builds no label list.
/// The key is looked up in the recorder in place at every record, as `histogram!` does.
#[derive(Debug, Clone)]
pub(crate) struct Labels {
    keys: Arc<Keys>,
}

#[derive(Debug)]
struct Keys {
    bucket: Arc<str>,
    kind: &'static str,
    lock: Option<Arc<str>>,
    wait_fast: Key,
    wait_queue: Key,
    handoff: Key,
    held: [Key; 3],
}

/// The outcomes of a hold, in the order of [`Keys::held`].
const OUTCOMES: [&str; 3] = ["released", "lost", "dropped"];

/// The keys of handles without a `lock` label, while some handle uses them: one entry per
/// bucket and kind. (With a `lock` label each handle has its own: few, fixed names.)
static SHARED: StdMutex<Vec<Weak<Keys>>> = StdMutex::new(Vec::new());

impl Labels {
    pub(crate) fn new(bucket: &str, kind: Kind, lock: Option<&str>) -> Labels {
        let kind = match kind {
            Kind::Exclusive => "exclusive",
            Kind::Shared => "shared",
            Kind::Permit(_) => "permits",
        };
        if let Some(lock) = lock {
            let keys = Keys::new(bucket.into(), kind, Some(lock.into()));
            return Labels {
                keys: Arc::new(keys),
            };
        }
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        shared.retain(|w| w.strong_count() > 0);
        let found = shared
            .iter()
            .filter_map(Weak::upgrade)
            .find(|k| &*k.bucket == bucket && k.kind == kind);
        let keys = found.unwrap_or_else(|| {
            let k = Arc::new(Keys::new(bucket.into(), kind, None));
            shared.push(Arc::downgrade(&k));
            k
        });
        Labels { keys }
    }

    pub(crate) fn waited(&self, wait: Duration, path: &'static str) {
        let k = &self.keys;
        match path {
            "fast" => record(&k.wait_fast, wait),
            "queue" => record(&k.wait_queue, wait),
            _ => record(&k.key(LOCK_WAIT, Some(("path", path))), wait),
        }
    }

    pub(crate) fn handed_off(&self, d: Duration) {
        record(&self.keys.handoff, d);
    }

    fn held(&self, outcome: &'static str, d: Duration) {
        let k = &self.keys;
        match OUTCOMES.iter().position(|o| *o == outcome) {
            Some(i) => record(&k.held[i], d),
            None => record(&k.key(LOCK_HOLD, Some(("outcome", outcome))), d),
        }
    }
}

impl Keys {
    fn new(bucket: Arc<str>, kind: &'static str, lock: Option<Arc<str>>) -> Keys {
        let key = |name, extra| labelled(&bucket, kind, lock.as_ref(), name, extra);
        let wait_fast = key(LOCK_WAIT, Some(("path", "fast")));
        let wait_queue = key(LOCK_WAIT, Some(("path", "queue")));
        let handoff = key(LOCK_HANDOFF, None);
        let held = OUTCOMES.map(|o| key(LOCK_HOLD, Some(("outcome", o))));
        Keys {
            bucket,
            kind,
            lock,
            wait_fast,
            wait_queue,
            handoff,
            held,
        }
    }

    /// The key of `name` with these labels and `extra`.
    fn key(&self, name: &'static str, extra: Option<(&'static str, &'static str)>) -> Key {
        labelled(&self.bucket, self.kind, self.lock.as_ref(), name, extra)
    }
}

/// The key of `name` with the labels `bucket`, `kind`, `extra` and `lock`, in that order.
fn labelled(
    bucket: &Arc<str>,
    kind: &'static str,
    lock: Option<&Arc<str>>,
    name: &'static str,
    extra: Option<(&'static str, &'static str)>,
) -> Key {
    let mut v = Vec::with_capacity(4);
    v.push(Label::new("bucket", SharedString::from(bucket.clone())));
    v.push(Label::new("kind", kind));
    if let Some((k, val)) = extra {
        v.push(Label::new(k, val));
    }
    if let Some(l) = lock {
        v.push(Label::new("lock", SharedString::from(l.clone())));
    }
    Key::from_parts(name, v)
}

/// Records `d` into the histogram `key` of the recorder in place (none: nothing).
fn record(key: &Key, d: Duration) {
    ::metrics::with_recorder(|r| r.register_histogram(key, &METADATA)).record(d.as_secs_f64());
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
            self.labels.held(outcome, self.elapsed());
        }
    }
}

impl Drop for HoldTimer {
    fn drop(&mut self) {
        self.record("dropped");
    }
}
