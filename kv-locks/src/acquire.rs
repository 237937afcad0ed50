//! Acquiring a lock: the awaitable [`Acquire`] builder and the protocol behind it.
//!
//! 1. **Fast path** (uncontended: one write). Our queue entry is created as a lease with
//!    `expect_on(<name>.*.*, L)`, where `L` is the lock's last revision at a moment its queue
//!    was known to be empty (from our own previous clean release; a try reads it first).
//!    Success proves nothing under the lock changed since `L`: we are alone, and hold it.
//!    On a **quiet** bucket (our last clean release's tombstone `L` came right after the
//!    revision we were alone at: nothing was written anywhere in between) the entry expects
//!    our own key at `L` instead, which costs the server less than a wildcard: landing at
//!    revision `L + 1` proves that nothing at all was written since `L`, so we hold; any
//!    other revision means something was written meanwhile, and the entry, already in the
//!    queue, takes the queue path. Not on replicated buckets, whose servers do not check a
//!    wildcard expectation against writes in flight.
//! 2. **Queue path**. Enter the queue (a lease on our own key), then read the lock's keys
//!    at a revision ≥ our entry's (on a replicated bucket, a consumer's initial values,
//!    read again while they lack our own entry: its replica may lag the leader). The
//!    lock's [rule](crate::rule) says whether we hold and, if not, which entries we wait for
//!    (our predecessor for a mutex). We watch those keys only, so a release wakes the next
//!    waiter and nobody else. When the entry we waited for leaves by a holder's completed
//!    release, the rule may say we hold without another read (tickets below ours can only go
//!    away, never appear); any other departure makes us read the queue again.
//! 3. While we wait, the lease keeper renews our entry like a holder's. If it is lost (taken,
//!    expired, or its deadline passes) the wait ends with [`ErrorKind::QueueEntryLost`],
//!    never with "acquired".

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use kvtk_core::lease::{CreateLease, Lease, LeaseConfig, LostReason};
use kvtk_core::{Backoff, Expect, Revision};
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::checks::{check_kind, check_marker, ensure_permits};
use crate::error::{Error, ErrorKind};
use crate::guard::Guard;
use crate::queue::view;
use crate::rule::Kind;
use crate::shared::{follows, Shared, Slot};
use crate::stats::Stat;
use crate::wait::{reap_all, turn};

/// A pending acquisition; `.await` it (or call [`try_acquire`](Acquire::try_acquire)).
///
/// ```no_run
/// # async fn demo(mutex: kvtk_locks::Mutex) -> Result<(), kvtk_locks::Error> {
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
/// [`Locks`](crate::Locks) — also an entry whose creating write was still unanswered: a
/// lease of its own expires with its TTL, and the keeper removes one bound to a session once
/// it can no longer land. If the lock had just been acquired, the guard is dropped and
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

    /// The lease TTL (whole seconds ≥ 1; default: the handle's,
    /// [`Locks::default_lease`](crate::Locks::default_lease) unless configured on
    /// [`Locks`](crate::Locks): 10 s on one server, 30 s on a replicated bucket). A holder
    /// that stops renewing loses the lock within it.
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

    /// The entry's own lease timing when the acquisition set one (`None`: the handle's
    /// default — its session when it has sessions, else its lease).
    fn own_timing(&self) -> Result<Option<LeaseConfig>, Error> {
        if self.ttl.is_none() && self.margin.is_none() && self.renew_every.is_none() {
            return Ok(None);
        }
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
        check_marker(cfg.ttl().as_duration(), self.shared.marker_ttl)?;
        Ok(Some(cfg))
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
        let cfg = self.own_timing()?;
        let s = self.shared;
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let cancel = self.cancel;
        let span = tracing::info_span!(
            "lock.acquire",
            lock = %s.name,
            kind = s.kind.tag(),
            ttl_s = cfg.unwrap_or(s.lease).ttl().as_secs(),
            session = s.sessions.is_some() && cfg.is_none(),
            path = tracing::field::Empty,
            token = tracing::field::Empty,
            wait_ms = tracing::field::Empty,
        );
        let work = attempt(s.clone(), cfg, try_only).instrument(span);
        if deadline.is_none() && cancel.is_none() {
            // Nothing to race it against: no select polled at every wake-up.
            return work.await;
        }
        tokio::select! {
            biased;
            _ = cancelled_opt(cancel.as_ref()) => Err(Error::new(ErrorKind::Cancelled, format!("acquisition of lock {} cancelled", s.name))),
            _ = sleep_until_opt(deadline) => Err(Error::new(ErrorKind::Timeout, format!("lock {} not acquired within {:?}", s.name, self.timeout.unwrap_or_default()))),
            r = work => r,
        }
    }
}

/// Completes when `token` is cancelled; never without one (no token is made for nothing).
async fn cancelled_opt(token: Option<&CancellationToken>) {
    match token {
        Some(t) => t.cancelled().await,
        None => futures::future::pending().await,
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
        // A map, not an async block: the block would hold the acquisition's future once
        // more in its own state.
        Box::pin(self.run(false).map(|held| {
            held?.ok_or_else(|| {
                Error::new(ErrorKind::Internal, "acquisition ended without the lock")
            })
        }))
    }
}

/// One acquisition: takes the handle's slot, runs the protocol, makes the guard.
async fn attempt(
    s: Arc<Shared>,
    cfg: Option<LeaseConfig>,
    try_only: bool,
) -> Result<Option<Guard>, Error> {
    let started = Instant::now();
    // One acquisition per handle at a time: they share the handle's queue key.
    // Free, as it mostly is: taken without making and polling a waiter.
    let mut slot = match s.slot.clone().try_lock_owned() {
        Ok(slot) => slot,
        Err(_) => s.slot.clone().lock_owned().await,
    };
    let held = protocol(&s, &mut slot, cfg, try_only)
        .await
        .and_then(still_held);
    let span = tracing::Span::current();
    match held {
        Ok(Some(Won {
            lease,
            alone,
            path,
            handoff,
        })) => {
            let waited = started.elapsed();
            s.metrics.waited(waited, path);
            if let Some(h) = handoff {
                s.metrics.handed_off(h);
            }
            span.record("path", path);
            span.record("wait_ms", waited.as_millis() as u64);
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

/// The lock is handed over only with a lease that is still held: the decision to hold may
/// come with the lease's end (its deadline passed while the waiter's runtime stalled, the
/// last blocker's release seen in the same wake-up); the entry is then released (dropped)
/// and the acquisition fails (chaos on R3: a waiter returned the lock 50 ms after its
/// session's deadline).
fn still_held(held: Held) -> Result<Held, Error> {
    match held {
        Some(won) if !won.lease.is_held() => {
            let why = won.lease.loss_reason().unwrap_or(LostReason::Deadline);
            Err(crate::wait::entry_lost(why))
        }
        other => Ok(other),
    }
}

/// An acquisition that got the lock.
struct Won {
    lease: Lease,
    /// The lock's last revision when we were alone in it.
    alone: Option<Revision>,
    /// `fast` or `queue`.
    path: &'static str,
    /// After waiting: from seeing the last blocker leave to holding.
    handoff: Option<Duration>,
}

type Held = Option<Won>;

async fn protocol(
    s: &Arc<Shared>,
    slot: &mut OwnedMutexGuard<Slot>,
    cfg: Option<LeaseConfig>,
    try_only: bool,
) -> Result<Held, Error> {
    // The slow paths' futures (permit check, queue read, enqueue, the wait with its watch)
    // are boxed: an acquisition's future is allocated and moved at every call, and would
    // otherwise be as large as the largest of them even when the fast path alone runs.
    if s.permits().is_some() && !slot.permits_checked {
        Box::pin(ensure_permits(s)).await?;
        slot.permits_checked = true;
    }
    // Without a remembered expectation the fast path would read the queue first, and the
    // queue path costs the same (a write and a read) without the read going to waste when
    // the lock is busy; a try still looks first, so a busy lock costs it no write.
    let fast = if slot.fast.is_some() || try_only {
        fast_path(s, slot, cfg, try_only).await?
    } else {
        Fast::Queue
    };
    let (entered, busy) = match fast {
        Fast::Held(lease) => {
            let alone = Some(lease.origin());
            return Ok(Some(Won {
                lease,
                alone,
                path: "fast",
                handoff: None,
            }));
        }
        Fast::Entered(lease) => (Some(lease), false),
        Fast::Busy => (None, true),
        Fast::Queue => (None, false),
    };
    if try_only && busy && s.kind == Kind::Exclusive {
        return Ok(None);
    }
    let lease = match entered {
        Some(lease) => lease,
        None => Box::pin(enqueue(s, cfg, slot.own_last)).await?,
    };
    s.bump(Stat::Enqueued);
    let mut departed = None;
    // Dropping the lease (a try that found the lock busy) releases our entry.
    let Some(alone) = Box::pin(turn(s, &lease, try_only, &mut departed)).await? else {
        return Ok(None);
    };
    Ok(Some(Won {
        lease,
        alone,
        path: "queue",
        handoff: departed.map(|t: Instant| t.elapsed()),
    }))
}

enum Fast {
    Held(Lease),
    /// A quiet bucket's fast-path entry landed after another write: we are in the queue.
    Entered(Lease),
    /// Someone holds or waits: queue.
    Busy,
    /// Free permits or shares may be left: queue and look.
    Queue,
}

/// One conditional write when the lock's queue is empty: proven by the expectation we
/// remember from our last clean release, else by a read of the queue first.
async fn fast_path(
    s: &Shared,
    slot: &mut Slot,
    cfg: Option<LeaseConfig>,
    try_only: bool,
) -> Result<Fast, Error> {
    if s.replicated {
        // A wildcard expectation is not atomic on a replicated stream (see `Shared`): chaos
        // on R3 found a fast-path holder beside the waiter whose entry was still in flight.
        return Ok(Fast::Queue);
    }
    if let Some(last) = slot.fast.take() {
        if let Some(fast) = remembered(s, slot, cfg, last, try_only).await? {
            return Ok(fast);
        }
    }
    // Boxed: a try, or a remembered expectation that conflicted (see `protocol`).
    Box::pin(looked(s, cfg)).await
}

/// The fast path from our clean release's tombstone `last`: on a quiet bucket (see
/// [`Slot::quiet_acquire`]) our entry expects our own key at `last`, else every key of the
/// lock. `None`: the expectation conflicted (something changed under the lock).
async fn remembered(
    s: &Shared,
    slot: &mut Slot,
    cfg: Option<LeaseConfig>,
    last: Revision,
    try_only: bool,
) -> Result<Option<Fast>, Error> {
    s.bump(Stat::AcquireWrite);
    let create = new_entry(s, cfg, &[]).await?;
    // Not for a try: a busy lock costs a try no queue entry.
    let quiet = slot.quiet_acquire && !try_only;
    let create = match quiet {
        true => create.expect(Expect::Revision(last)),
        false => create.expect_on(&**s.all_filter(), Expect::Revision(last)),
    };
    if quiet {
        s.bump(Stat::QuietBet);
    }
    let res = create.send().await;
    slot.quiet_acquire = res.as_ref().is_ok_and(|l| follows(l.origin(), last));
    if quiet && slot.quiet_acquire {
        s.bump(Stat::QuietBetWon);
    }
    match res {
        Ok(lease) if quiet && !slot.quiet_acquire => Ok(Some(Fast::Entered(lease))),
        Ok(lease) => Ok(Some(Fast::Held(lease))),
        Err(e) if e.is_conflict() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The fast path after reading the queue: a write expecting the lock's keys as read, if
/// they were an empty queue.
async fn looked(s: &Shared, cfg: Option<LeaseConfig>) -> Result<Fast, Error> {
    let mut reaped = false;
    loop {
        let v = view(s, None).await?;
        check_kind(s, &v)?;
        if !v.queue.is_empty() && !std::mem::replace(&mut reaped, true) {
            // A holder whose session ended is removed, then the queue read again.
            if Box::pin(reap_all(s, &v, &v.queue)).await?.is_some() {
                continue;
            }
        }
        if !v.queue.is_empty() {
            return Ok(if s.kind == Kind::Exclusive {
                Fast::Busy
            } else {
                Fast::Queue
            });
        }
        s.bump(Stat::AcquireWrite);
        let res = new_entry(s, cfg, &[])
            .await?
            .expect_on(&**s.all_filter(), v.expect_empty())
            .send()
            .await;
        return match res {
            Ok(lease) => Ok(Fast::Held(lease)),
            Err(e) if e.is_conflict() => Ok(Fast::Busy),
            Err(e) => Err(e.into()),
        };
    }
}

/// Our queue entry's creation; `multi`: the names of every lock of our multi-lock. Bound to
/// the handle's session when it has sessions and the acquisition set no timing of its own
/// (`own`), else a lease with its own TTL.
pub(crate) async fn new_entry(
    s: &Shared,
    own: Option<LeaseConfig>,
    multi: &[String],
) -> Result<CreateLease, kvtk_core::Error> {
    let value = s.entry_value(multi);
    let create = match (&s.sessions, own) {
        (Some(sessions), None) => match sessions.try_current() {
            Some(session) => session.bind(s.own_key(), value),
            // Boxed: making a session is rare, and its future would grow every acquisition's.
            None => Box::pin(sessions.binding(s.own_key(), value)).await?,
        },
        (_, cfg) => s
            .keeper
            .lease(s.own_key(), value)
            .config(cfg.unwrap_or(s.lease)),
    };
    Ok(create.tombstone_ttl(s.tombstone_ttl))
}

/// Enters the queue: our own key, replacing whatever it held (a tombstone of ours, or
/// nothing), conditional on that state (`previous`, re-learned on a conflict).
async fn enqueue(
    s: &Shared,
    cfg: Option<LeaseConfig>,
    previous: Option<Revision>,
) -> Result<Lease, Error> {
    s.bump(Stat::AcquireWrite);
    let create = || async move {
        new_entry(s, cfg, &[])
            .await?
            .previous(previous)
            .send()
            .await
    };
    Backoff::DEFAULT.retry(create).await.map_err(Error::from)
}
