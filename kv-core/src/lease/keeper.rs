//! The [`Keeper`]: one task that renews every lease created through it, from a timer queue,
//! and the renewal write itself (also a value change's). It sends the writes; what their
//! results mean is decided by the pure part (`state.rs`, `clock.rs`), the only lease files
//! it imports.
//!
//! New leases reach the task through an [`Inbox`] that wakes it only when a lease is due
//! before the task's next planned look at the inbox: most leases of a busy process (an
//! uncontended lock's queue entry) are released long before their first renewal, and then
//! cost the task neither a wake-up at their creation nor a timer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt as _;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tokio_util::time::DelayQueue;

use super::clock::{LeaseConfig, Next};
use super::state::{refused_for_good, AfterWrite, LostReason, State, Step};
use super::sweeps::Sweeps;
use crate::bucket::Bucket;
use crate::error::{Error, ErrorKind};
use crate::metrics::LeaseLabels;

/// Renews leases. Cheap to clone; the clones and the leases created through them share one
/// task, which stops when the last of them is dropped.
///
/// ```no_run
/// # async fn demo(bucket: kvtk_core::Bucket) -> Result<(), kvtk_core::Error> {
/// use std::time::Duration;
/// use kvtk_core::lease::{Keeper, LeaseConfig};
/// let keeper = Keeper::new(&bucket, LeaseConfig::new(Duration::from_secs(10))?)?;
/// let lease = keeper.lease("workers.w1", "alive").await?;
/// // ... the keeper renews it; lease.lost() completes if it cannot ...
/// lease.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Keeper {
    pub(super) inner: Arc<KeeperInner>,
}

#[derive(Debug)]
pub(super) struct KeeperInner {
    pub(super) bucket: Bucket,
    pub(super) config: LeaseConfig,
    /// The metric labels of its leases.
    pub(super) labels: Arc<LeaseLabels>,
    inbox: Arc<Inbox>,
    /// Renewal writes sent by the task.
    renewals: Arc<AtomicU64>,
    /// Background releases of dropped leases, and removals of abandoned bound creations.
    pub(super) tracker: TaskTracker,
    /// The keys of those removals under way.
    pub(super) sweeps: Sweeps,
    _task: AbortOnDropHandle<()>,
}

impl Keeper {
    /// A keeper for leases on `bucket`, with `config` as their default timing. Its task runs
    /// on the current Tokio runtime ([`ErrorKind::InvalidArgument`] outside one). Its
    /// leases' metrics carry `recipe="lease"` ([`crate::metrics`]).
    pub fn new(bucket: &Bucket, config: LeaseConfig) -> Result<Keeper, Error> {
        Keeper::with_recipe(bucket, config, crate::metrics::RECIPE_LEASE)
    }

    /// As [`Keeper::new`], with `recipe` as the `recipe` label of its leases' metrics (the
    /// toolkit's recipes say `locks`, `leader`, `membership`, `config`). Keep it one of a
    /// few fixed names: every value is a time series.
    pub fn with_recipe(
        bucket: &Bucket,
        config: LeaseConfig,
        recipe: &'static str,
    ) -> Result<Keeper, Error> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::new(
                ErrorKind::InvalidArgument,
                "a lease keeper needs a running tokio runtime",
            )
        })?;
        let inbox = Arc::new(Inbox::default());
        let renewals = Arc::new(AtomicU64::new(0));
        let task = rt.spawn(run(bucket.clone(), inbox.clone(), renewals.clone()));
        Ok(Keeper {
            inner: Arc::new(KeeperInner {
                bucket: bucket.clone(),
                config,
                labels: LeaseLabels::new(bucket.name(), recipe),
                inbox,
                renewals,
                tracker: TaskTracker::new(),
                sweeps: Sweeps::default(),
                _task: AbortOnDropHandle::new(task),
            }),
        })
    }

    /// The bucket.
    pub fn bucket(&self) -> &Bucket {
        &self.inner.bucket
    }

    /// How many renewal writes the keeper has sent.
    pub fn renewals(&self) -> u64 {
        self.inner.renewals.load(Ordering::Relaxed)
    }

    /// The default timing of new leases.
    pub fn config(&self) -> LeaseConfig {
        self.inner.config
    }

    /// Waits for the background releases of dropped leases, and the removals of abandoned
    /// bound creations, to finish. Leases still held keep being renewed.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn shutdown(&self) {
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        self.inner.tracker.reopen();
    }

    /// Hands `st` to the task, which renews it from now on (or ends it when it is due
    /// already).
    pub(super) fn track(&self, st: Arc<State>) {
        self.inner.inbox.put(st, Instant::now());
    }

    /// Rewrites `st`'s key now, off its schedule — with `value` (a value change), or with
    /// the value it has (a renewal someone waits for) — once no other write of it is in
    /// flight, as [`write_own`] does. A lease found gone is lost.
    ///
    /// # Cancel safety
    /// Not cancel safe: the write may be applied although the future was dropped; the next
    /// write recognises it by our nonce. The lease goes back to the task either way.
    pub(super) async fn write_now(
        &self,
        st: &Arc<State>,
        value: Option<Bytes>,
    ) -> Result<Step, Error> {
        // Dropped after the slot: the task skipped a timer that fired while we wrote, so the
        // lease goes back to it once the slot is free.
        let _hand_back = HandBack(self, st);
        let _slot = st.claim().await;
        let step = if st.is_valid() {
            write_own(self.bucket(), st, value).await?
        } else {
            Step::Gone(st.reason().unwrap_or(LostReason::Deadline))
        };
        if let Step::Gone(why) = step {
            st.lose(why);
        }
        Ok(step)
    }
}

/// Hands a lease back to its keeper's task when dropped (see [`Keeper::write_now`]).
struct HandBack<'a>(&'a Keeper, &'a Arc<State>);

impl Drop for HandBack<'_> {
    fn drop(&mut self) {
        self.0.track(self.1.clone());
    }
}

/// How many leases the inbox holds at most before the task takes them in, whenever they
/// are due: leases released before their first renewal are dropped then, so a process that
/// creates and releases many keeps few of them.
const INBOX_LIMIT: usize = 256;

/// Leases handed to the keeper task and not yet taken in, and when the task looks next.
#[derive(Debug, Default)]
struct Inbox {
    st: StdMutex<InboxState>,
    /// Wakes the task: a lease is due before its planned look, or the inbox is full.
    wake: Notify,
}

#[derive(Debug, Default)]
struct InboxState {
    leases: Vec<Arc<State>>,
    /// The earliest instant a lease in the inbox is due (`None`: the inbox is empty).
    look_at: Option<Instant>,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        // A poisoned lock only means a panic elsewhere while holding it; the data is plain.
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a lease; wakes the task when it must look earlier than it planned.
    fn put(&self, st: Arc<State>, now: Instant) {
        // Finished, or on the timer queue already: nothing to do.
        let Some(due) = st.due(now) else { return };
        let mut i = self.lock();
        i.leases.push(st);
        let due = if i.leases.len() >= INBOX_LIMIT {
            now
        } else {
            due
        };
        if i.look_at.is_some_and(|at| at <= due) {
            return;
        }
        i.look_at = Some(due);
        drop(i);
        // A permit is kept when the task is not waiting yet: no wake-up is lost.
        self.wake.notify_one();
    }

    /// When the task must take the inbox in.
    fn look_at(&self) -> Option<Instant> {
        self.lock().look_at
    }

    /// Everything in the inbox, which is empty afterwards.
    fn take(&self) -> Vec<Arc<State>> {
        let mut i = self.lock();
        i.look_at = None;
        std::mem::take(&mut i.leases)
    }
}

/// The keeper task: a timer per lease at its next renewal, renewals in flight concurrently,
/// new leases taken in from the inbox when the first of them is due.
async fn run(bucket: Bucket, inbox: Arc<Inbox>, renewals: Arc<AtomicU64>) {
    let mut timers: DelayQueue<Arc<State>> = DelayQueue::new();
    let mut inflight = FuturesUnordered::new();
    loop {
        let look_at = inbox.look_at();
        tokio::select! {
            // Something changed the plan: read it again.
            _ = inbox.wake.notified() => {}
            _ = sleep_until_opt(look_at) => {
                for st in inbox.take() {
                    schedule(&mut timers, st);
                }
            }
            Some(due) = timers.next(), if !timers.is_empty() => {
                let st = due.into_inner();
                if st.begin_renewal() {
                    renewals.fetch_add(1, Ordering::Relaxed);
                    inflight.push(renew(bucket.clone(), st));
                }
            }
            Some(st) = inflight.next(), if !inflight.is_empty() => schedule(&mut timers, st),
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Puts a lease on the timer queue at its next renewal, or ends it.
fn schedule(timers: &mut DelayQueue<Arc<State>>, st: Arc<State>) {
    let now = Instant::now();
    match st.next(now) {
        None => {}
        Some(Next::Lost) => st.lose(LostReason::Deadline),
        Some(Next::RenewAt(at)) => {
            timers.insert_at(st, at);
        }
    }
}

/// One renewal, driven by the keeper: a CAS on our revision, bounded by the deadline.
/// Returns the state for rescheduling.
async fn renew(bucket: Bucket, st: Arc<State>) -> Arc<State> {
    let deadline = st.deadline();
    let step = tokio::time::timeout_at(deadline, write_own(&bucket, &st, None)).await;
    st.renewal_done(step.ok().map(|written| written.unwrap_or(Step::Retry)));
    st
}

/// Rewrites our key (with `value`, or the current value) conditional on our revision,
/// recognising an earlier write of ours whose acknowledgement was lost. The caller holds
/// the write slot. Fails only when the server refused the write for good
/// ([`refused_for_good`]); the lease then keeps the value it had.
///
/// # Cancel safety
/// Not cancel safe: the write may be applied although the future was dropped; the next
/// write recognises it by our nonce.
pub(super) async fn write_own(
    bucket: &Bucket,
    st: &State,
    value: Option<Bytes>,
) -> Result<Step, Error> {
    let kept = value.as_ref().and_then(|_| st.kept_value());
    let (rev, value) = st.to_write(value);
    let sent = Instant::now();
    let res = bucket
        .update(&st.key, value, rev)
        .ttl_opt(st.ttl())
        .lease_tag(st.tag())
        .format_opt(st.format)
        .send()
        .await;
    let res = match res {
        Err(e) if refused_for_good(&e) => {
            st.refused(kept, &e);
            return Err(e);
        }
        res => res,
    };
    Ok(match st.written(res, sent) {
        AfterWrite::Done(step) => step,
        AfterWrite::AskLeader { since } => {
            let found = bucket.get_from_leader(&st.key).await;
            st.read_back(found, since, rev)
        }
    })
}
