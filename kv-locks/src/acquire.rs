//! Acquiring a lock: the awaitable [`Acquire`] builder and the protocol behind it.
//!
//! 1. **Fast path** (uncontended: one write). Our queue entry is created as a lease with
//!    `expect_on(<name>.*.*, L)`, where `L` is the lock's last revision at a moment its queue
//!    was known to be empty (from our own previous clean release, or else from a snapshot).
//!    Success proves nothing under the lock changed since `L`: we are alone, and hold it.
//! 2. **Slow path**. Enter the queue (a lease on our own key), then snapshot the lock's keys
//!    at a revision ≥ our entry's. The lock's [rule](crate::rule) says whether we hold and,
//!    if not, which entry to watch; we watch from the snapshot's revision + 1, so nothing is
//!    missed in between. Tickets below ours can only go away, never appear, so when the rule
//!    says the departure of what we wait for is enough, we hold without another read.
//! 3. While we wait, the lease keeper renews our entry like a holder's. If it is lost (taken,
//!    expired, or its deadline passes) the wait ends with [`ErrorKind::QueueEntryLost`],
//!    never with "acquired".

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kv_core::lease::{Lease, LeaseConfig};
use kv_core::{Entry, Include, Revision, WatchEvent};
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::error::{Error, ErrorKind};
use crate::guard::Guard;
use crate::queue::{view, View};
use crate::rule::{decide, Decision, Kind};
use crate::shared::{Shared, Slot};
use crate::stats::Stat;

/// A pending acquisition; `.await` it (or call [`try_acquire`](Acquire::try_acquire)).
///
/// ```no_run
/// # async fn demo(mutex: kv_locks::Mutex) -> Result<(), kv_locks::Error> {
/// use std::time::Duration;
/// let guard = mutex
///     .lock()
///     .ttl(Duration::from_secs(5))
///     .timeout(Duration::from_secs(30))
///     .await?;
/// println!("holding with token {}", guard.token());
/// guard.release().await?;
/// # Ok(()) }
/// ```
///
/// # Cancel safety
/// Dropping the future (or hitting its timeout or cancellation token) releases our queue
/// entry in the background, on a task owned by the lease keeper of the
/// [`Locks`](crate::Locks). If the lock had just been acquired, the guard is dropped and
/// releases it.
#[must_use = "an acquisition does nothing until awaited"]
#[derive(Debug)]
pub struct Acquire {
    shared: Arc<Shared>,
    ttl: Option<Duration>,
    renew_every: Option<Duration>,
    margin: Option<Duration>,
    timeout: Option<Duration>,
    cancel: Option<CancellationToken>,
}

impl Acquire {
    pub(crate) fn new(shared: Arc<Shared>) -> Acquire {
        Acquire {
            shared,
            ttl: None,
            renew_every: None,
            margin: None,
            timeout: None,
            cancel: None,
        }
    }

    /// The lease TTL (whole seconds ≥ 1; default: the handle's, 10 s unless configured on
    /// [`Locks`](crate::Locks)). A holder that stops renewing loses the lock within it.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How often to renew (default TTL/3; must be below TTL − margin).
    pub fn renew_every(mut self, every: Duration) -> Self {
        self.renew_every = Some(every);
        self
    }

    /// The safety margin: the guard reports loss this long before the server could expire
    /// the entry (default TTL/10, clamped to 100 ms..=2 s).
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = Some(margin);
        self
    }

    /// Gives up after `timeout` with [`ErrorKind::Timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Gives up with [`ErrorKind::Cancelled`] when `token` is cancelled.
    pub fn cancel_on(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    fn lease_config(&self) -> Result<LeaseConfig, Error> {
        let mut cfg = match self.ttl {
            Some(t) => LeaseConfig::new(t)?,
            None => self.shared.lease,
        };
        if let Some(m) = self.margin {
            cfg = cfg.with_margin(m)?;
        }
        if let Some(e) = self.renew_every {
            cfg = cfg.with_renew_every(e)?;
        }
        crate::locks::check_marker(cfg.ttl().as_duration(), self.shared.marker_ttl)?;
        Ok(cfg)
    }

    /// Tries once: takes the lock if it is free (for a semaphore or a read lock: if a permit
    /// or a share is free) and returns `None` otherwise, without waiting. May still cost
    /// the fast-path write, and on a contended semaphore or read lock a queue entry that is
    /// removed again.
    ///
    /// # Cancel safety
    /// As for awaiting the acquisition.
    pub async fn try_acquire(self) -> Result<Option<Guard>, Error> {
        self.run(true).await
    }

    async fn run(self, try_only: bool) -> Result<Option<Guard>, Error> {
        let cfg = self.lease_config()?;
        let s = self.shared;
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let cancel = self.cancel.unwrap_or_default();
        let span = tracing::info_span!(
            "lock.acquire",
            lock = %s.name,
            kind = s.kind.tag(),
            ttl_s = cfg.ttl().as_secs(),
            path = tracing::field::Empty,
            token = tracing::field::Empty,
            wait_ms = tracing::field::Empty,
        );
        let work = attempt(s.clone(), cfg, try_only).instrument(span);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Error::new(ErrorKind::Cancelled, format!("acquisition of lock {} cancelled", s.name))),
            _ = sleep_until_opt(deadline) => Err(Error::new(ErrorKind::Timeout, format!("lock {} not acquired within {:?}", s.name, self.timeout.unwrap_or_default()))),
            r = work => r,
        }
    }
}

pub(crate) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => futures::future::pending().await,
    }
}

impl IntoFuture for Acquire {
    type Output = Result<Guard, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            self.run(false).await?.ok_or_else(|| {
                Error::new(ErrorKind::Internal, "acquisition ended without the lock")
            })
        })
    }
}

/// One acquisition: takes the handle's slot, runs the protocol, makes the guard.
async fn attempt(s: Arc<Shared>, cfg: LeaseConfig, try_only: bool) -> Result<Option<Guard>, Error> {
    let started = Instant::now();
    // One acquisition per handle at a time: they share the handle's queue key.
    let mut slot = s.slot.clone().lock_owned().await;
    let held = protocol(&s, &mut slot, cfg, try_only).await;
    let span = tracing::Span::current();
    match held {
        Ok(Some((lease, alone, path))) => {
            span.record("path", path);
            span.record("wait_ms", started.elapsed().as_millis() as u64);
            span.record("token", lease.origin().get());
            s.bump(Stat::Acquired);
            tracing::info!("acquired");
            Ok(Some(Guard::new(s, lease, slot, alone)))
        }
        Ok(None) => Ok(None),
        Err(e) => {
            tracing::info!(error = %e, "acquisition failed");
            Err(e)
        }
    }
}

/// The lease we hold, the lock's last revision when we were alone in it, and the path taken.
type Held = Option<(Lease, Option<Revision>, &'static str)>;

async fn protocol(
    s: &Arc<Shared>,
    slot: &mut OwnedMutexGuard<Slot>,
    cfg: LeaseConfig,
    try_only: bool,
) -> Result<Held, Error> {
    if s.permits().is_some() && !slot.permits_checked {
        crate::locks::ensure_permits(s).await?;
        slot.permits_checked = true;
    }
    let busy = match fast_path(s, slot, cfg).await? {
        Fast::Held(lease) => {
            let alone = Some(lease.origin());
            return Ok(Some((lease, alone, "fast")));
        }
        Fast::Busy => true,
        Fast::Queue => false,
    };
    if try_only && busy && s.kind == Kind::Exclusive {
        return Ok(None);
    }
    let lease = enqueue(s, cfg, slot.own_last).await?;
    s.bump(Stat::Enqueued);
    loop {
        match wait_turn(s, &lease, try_only).await? {
            Turn::Held(alone) => return Ok(Some((lease, alone, "queue"))),
            // Dropping the lease releases our entry.
            Turn::NotNow => return Ok(None),
            Turn::Again => {}
        }
    }
}

enum Fast {
    Held(Lease),
    /// Someone holds or waits: queue.
    Busy,
    /// Free permits or shares may be left: queue and look.
    Queue,
}

/// One conditional write when the lock's queue is empty.
async fn fast_path(s: &Shared, slot: &mut Slot, cfg: LeaseConfig) -> Result<Fast, Error> {
    if s.replicated {
        // A wildcard expectation is not atomic on a replicated stream (see `Shared`): chaos
        // on R3 found a fast-path holder beside the waiter whose entry was still in flight.
        return Ok(Fast::Queue);
    }
    let mut expect = slot.fast.take();
    let mut from_cache = expect.is_some();
    loop {
        let e = match expect.take() {
            Some(e) => e,
            None => {
                let v = view(s, None).await?;
                crate::locks::check_kind(s, &v)?;
                if !v.queue.is_empty() {
                    return Ok(if s.kind == Kind::Exclusive {
                        Fast::Busy
                    } else {
                        Fast::Queue
                    });
                }
                v.expect_empty()
            }
        };
        s.bump(Stat::AcquireWrite);
        let res = new_entry(s, cfg).expect_on(s.name.all_filter(), e).await;
        match res {
            Ok(lease) => return Ok(Fast::Held(lease)),
            Err(e) if e.is_conflict() && from_cache => from_cache = false,
            Err(e) if e.is_conflict() => return Ok(Fast::Busy),
            Err(e) => return Err(e.into()),
        }
    }
}

pub(crate) fn new_entry(s: &Shared, cfg: LeaseConfig) -> kv_core::lease::CreateLease {
    s.keeper
        .lease(&s.own_key, s.entry_value())
        .config(cfg)
        .tombstone_ttl(s.tombstone_ttl)
}

/// Enters the queue: our own key, replacing whatever it held (a tombstone of ours, or
/// nothing), conditional on that state (`previous`, re-learned on a conflict).
async fn enqueue(s: &Shared, cfg: LeaseConfig, previous: Option<Revision>) -> Result<Lease, Error> {
    s.bump(Stat::AcquireWrite);
    kv_core::Backoff::DEFAULT
        .retry(|| new_entry(s, cfg).previous(previous).into_future())
        .await
        .map_err(Error::from)
}

fn entry_lost(why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::QueueEntryLost,
        format!("our queue entry was lost while waiting: {why}"),
    )
}

/// What one watch of the queue ended with.
enum Turn {
    /// We hold; with the lock's last revision when we were alone in it.
    Held(Option<Revision>),
    /// A try found the lock busy.
    NotNow,
    /// The watch broke: open another.
    Again,
}

/// Follows the lock's keys on one watch until the rule says we hold.
///
/// The watch is a consumer on the stream leader: its initial last-per-key delivery and every
/// write after it arrive in order, so the rule decides on a view that no lagging replica can
/// falsify (a direct-get snapshot, served by any replica, can — chaos runs on R3 buckets
/// found overlapping holders that way). After the initial state, every event is decided on
/// again, locally; the lease keeper renews our entry meanwhile.
async fn wait_turn(s: &Shared, lease: &Lease, try_only: bool) -> Result<Turn, Error> {
    let mut watch = open_watch(s, lease).await?;
    let lost = lease.lost();
    tokio::pin!(lost);
    let mut keys: HashMap<String, Entry> = HashMap::new();
    let mut ready = false;
    loop {
        let ev = tokio::select! {
            biased;
            why = &mut lost => return Err(entry_lost(why)),
            ev = watch.next() => ev,
        };
        match ev {
            Some(Ok(WatchEvent::Entry(e))) => {
                keys.insert(e.key().as_str().to_string(), e);
            }
            Some(Ok(WatchEvent::InitialDone)) => ready = true,
            Some(Err(e)) => {
                tracing::debug!(lock = %s.name, error = %e, "queue watch broke, watching again");
                return Ok(Turn::Again);
            }
            None => return Ok(Turn::Again),
        }
        if !ready {
            continue;
        }
        let v = View::of(&s.name, keys.values(), None);
        crate::locks::check_kind(s, &v)?;
        let Some(me) = v.position(&s.own_key, lease.origin()) else {
            return Err(entry_lost(
                "it is no longer in the queue (expired or removed)",
            ));
        };
        if !lease.is_held() {
            return Err(entry_lost("its lease ran out"));
        }
        match decide(&v.queue, me, s.kind) {
            Decision::Hold => {
                let alone = (v.queue.len() == 1 && !s.replicated)
                    .then_some(v.last)
                    .flatten();
                return Ok(Turn::Held(alone));
            }
            Decision::Wait(_) if try_only => return Ok(Turn::NotNow),
            Decision::Wait(w) => {
                tracing::trace!(lock = %s.name, ticket = lease.origin().get(), blockers = w.blockers.len(), "waiting");
            }
        }
    }
}

/// Whether `lease`'s entry holds its lock right now, by the rule, on the lock's state read
/// from the stream leader (a multi-lock's check after its transaction: a wildcard
/// expectation alone does not prove a replicated lock free).
pub(crate) async fn holds_now(s: &Shared, lease: &Lease) -> Result<bool, Error> {
    let mut watch = open_watch(s, lease).await?;
    let mut keys: HashMap<String, Entry> = HashMap::new();
    loop {
        match watch.next().await {
            Some(Ok(WatchEvent::Entry(e))) => {
                keys.insert(e.key().as_str().to_string(), e);
            }
            Some(Ok(WatchEvent::InitialDone)) => break,
            Some(Err(e)) => return Err(e.into()),
            None => return Ok(false),
        }
    }
    let v = View::of(&s.name, keys.values(), None);
    Ok(v.position(&s.own_key, lease.origin())
        .is_some_and(|me| decide(&v.queue, me, s.kind) == Decision::Hold))
}

/// Opens the queue watch (last value per key, then every write), riding out a stream-leader
/// failover while our entry lives.
async fn open_watch(s: &Shared, lease: &Lease) -> Result<kv_core::Watch, Error> {
    s.bump(Stat::Watch);
    let filter = s.name.all_filter();
    let start = || {
        s.bucket
            .watch([filter.as_str()])
            .include(Include::LastPerKey)
            .into_future()
    };
    tokio::select! {
        why = lease.lost() => Err(entry_lost(why)),
        w = kv_core::Backoff::DEFAULT.retry(start) => Ok(w?),
    }
}
