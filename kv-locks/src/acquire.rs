//! Acquiring a lock: the awaitable [`Acquire`] builder and the protocol behind it.
//!
//! 1. **Fast path** (uncontended: one write). `put(own_key).ttl(ttl).expect_on(<name>.*.*, L)`
//!    where `L` is the lock's last revision at a moment its queue was known to be empty (from
//!    our own previous clean release, or else from a snapshot). Success proves nothing under
//!    the lock changed since `L`: we are alone, and hold it.
//! 2. **Slow path**. Enter the queue (`put(own_key)` conditional on our own key's state, so
//!    a retried write after a lost ack recognises itself by its attempt nonce), then
//!    snapshot the lock's keys (at a revision ≥ our entry's). The live entries with the
//!    lowest tickets hold the lock. Otherwise watch the predecessor only (mutex) or the
//!    queue (semaphore) from the snapshot's revision + 1, so nothing is missed in between;
//!    renewals of other entries are ignored, removals wake us. Lower tickets can only go
//!    away, never appear, so when the last lower entry of a mutex queue goes we hold the
//!    lock without another read or write.
//! 3. While waiting we renew our own entry like a holder does. If it is lost (a renewal
//!    conflicts, or the lease deadline passes) the wait ends with
//!    [`ErrorKind::QueueEntryLost`], never with "acquired".

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kv_core::{Expect, Revision, WatchEvent};
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::entry::{
    is_ambiguous, read_own, remove_own, ticket_of, view, Live, OwnEntry, Renewal, View,
};
use crate::error::{Error, ErrorKind};
use crate::guard::Guard;
use crate::lease::{LeaseConfig, Next};
use crate::shared::{Shared, Slot};
use crate::stats::Stat;
use crate::value::QueueValue;

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
/// Dropping the future (or hitting its timeout or cancellation token) removes our queue
/// entry in the background, on a task owned by the [`Locks`](crate::Locks); the handle's
/// next acquisition waits for that cleanup. If the lock had just been acquired, the guard is
/// dropped and releases it.
#[must_use = "an acquisition does nothing until awaited"]
#[derive(Debug)]
pub struct Acquire {
    shared: Arc<Shared>,
    ttl: Option<Duration>,
    renew_every: Option<Duration>,
    margin: Option<Duration>,
    timeout: Option<Duration>,
    cancel: Option<CancellationToken>,
    attempt: Option<String>,
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
            attempt: None,
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

    /// Test hook: the attempt nonce (normally random per acquisition).
    #[doc(hidden)]
    pub fn attempt_nonce(mut self, nonce: impl Into<String>) -> Self {
        self.attempt = Some(nonce.into());
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
        if cfg.ttl().as_duration() > self.shared.marker_ttl {
            return Err(Error::new(
                ErrorKind::InvalidTtl,
                format!(
                    "lock ttl {:?} exceeds the bucket's marker ttl {:?}: waiters could miss an expiry",
                    cfg.ttl().as_duration(),
                    self.shared.marker_ttl
                ),
            ));
        }
        Ok(cfg)
    }

    /// Tries once: takes the lock if it is free (or, for a semaphore, a permit is free) and
    /// returns `None` otherwise, without waiting. May still cost the fast-path write, and on
    /// a contended semaphore a queue entry that is removed again.
    ///
    /// # Cancel safety
    /// As for awaiting the acquisition: a dropped future's queue entry is removed in the
    /// background.
    pub async fn try_acquire(self) -> Result<Option<Guard>, Error> {
        self.run(true).await
    }

    async fn run(self, try_only: bool) -> Result<Option<Guard>, Error> {
        let cfg = self.lease_config()?;
        let s = self.shared;
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let cancel = self.cancel.unwrap_or_default();
        let attempt = self
            .attempt
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let span = tracing::info_span!(
            "lock.acquire",
            lock = %s.name,
            permits = s.permits,
            ttl_s = cfg.ttl().as_secs(),
            path = tracing::field::Empty,
            token = tracing::field::Empty,
            wait_ms = tracing::field::Empty,
        );
        let started = Instant::now();
        let work = {
            let s = s.clone();
            async move {
                // One acquisition per handle at a time: they share the handle's queue key.
                let slot = s.slot.clone().lock_owned().await;
                let mut att = Attempt {
                    shared: s,
                    cfg,
                    attempt,
                    slot: Some(slot),
                    entry: None,
                    maybe_written: false,
                    done: false,
                };
                match att.protocol(try_only).await {
                    Ok(Some((alone, path))) => {
                        let span = tracing::Span::current();
                        span.record("path", path);
                        span.record("wait_ms", started.elapsed().as_millis() as u64);
                        let g = att.make_guard(alone)?;
                        span.record("token", g.token().get());
                        att.shared.bump(Stat::Acquired);
                        tracing::info!("acquired");
                        Ok(Some(g))
                    }
                    Ok(None) => {
                        att.abandon().await;
                        Ok(None)
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "acquisition failed");
                        att.abandon().await;
                        Err(e)
                    }
                }
            }
            .instrument(span)
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Error::new(ErrorKind::Cancelled, format!("acquisition of lock {} cancelled", s.name))),
            _ = sleep_until_opt(deadline) => Err(Error::new(ErrorKind::Timeout, format!("lock {} not acquired within {:?}", s.name, self.timeout.unwrap_or_default()))),
            r = work => r,
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
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
            self.run(false)
                .await?
                .ok_or_else(|| Error::new(ErrorKind::Kv, "acquisition ended without the lock"))
        })
    }
}

/// One acquisition in progress. Dropped before completion, it removes its queue entry in
/// the background (the task keeps the handle's slot until done).
struct Attempt {
    shared: Arc<Shared>,
    cfg: LeaseConfig,
    attempt: String,
    slot: Option<OwnedMutexGuard<Slot>>,
    entry: Option<OwnEntry>,
    /// A write of ours may have been applied although we do not know its revision.
    maybe_written: bool,
    done: bool,
}

enum Wake {
    Holder,
    Rescan,
}

type Held = Option<(Option<Revision>, &'static str)>;

enum Step {
    Done(Held),
    Again,
}

/// Errors that a wait should ride out: the server or the network is briefly away.
fn is_transient(e: &Error) -> bool {
    use kv_core::ErrorKind as K;
    e.kind() == ErrorKind::Kv
        && matches!(
            e.core_kind(),
            Some(K::Timeout | K::Connection | K::BucketNotFound | K::Server)
        )
}

/// Retries `f` while it fails transiently (the caller's timeout bounds the whole wait).
async fn retry_transient<T, F, Fut>(mut f: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut backoff = Duration::from_millis(50);
    loop {
        match f().await {
            Err(e) if is_transient(&e) => {
                tracing::debug!(error = %e, "transient failure, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

fn missing_slot() -> Error {
    Error::new(ErrorKind::Kv, "internal: acquisition without its slot")
}

fn entry_lost(why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::QueueEntryLost,
        format!("our queue entry was lost while waiting: {why}"),
    )
}

impl Attempt {
    fn value(&self, ticket: Option<Revision>) -> bytes::Bytes {
        QueueValue {
            holder: self.shared.holder.clone(),
            attempt: self.attempt.clone(),
            ticket: ticket.map(Revision::get),
        }
        .encode()
    }

    /// Runs the protocol: `Some((alone, path))` once held, `None` for a try that found the
    /// lock busy.
    async fn protocol(&mut self, try_only: bool) -> Result<Held, Error> {
        let s = self.shared.clone();
        if s.permits > 1 {
            let slot = self.slot.as_mut().ok_or_else(missing_slot)?;
            if !slot.permits_checked {
                crate::locks::ensure_permits(&s).await?;
                slot.permits_checked = true;
            }
        }

        // Fast path.
        let slot = self.slot.as_mut().ok_or_else(missing_slot)?;
        let mut expect = slot.fast.take();
        let mut from_cache = expect.is_some();
        let mut busy = false;
        loop {
            if expect.is_none() {
                let v = retry_transient(|| view(&s, None)).await?;
                check_permits(&s, &v)?;
                if v.live.is_empty() {
                    expect = Some(v.expect_empty());
                } else {
                    busy = v.live.len() >= s.permits as usize;
                }
            }
            let Some(l) = expect.take() else { break };
            let sent = Instant::now();
            self.maybe_written = true;
            s.bump(Stat::AcquireWrite);
            let res = s
                .bucket
                .put(&s.own_key, self.value(None))
                .ttl(self.cfg.ttl().as_duration())
                .expect_on(s.name.all_filter(), l)
                .await;
            match res {
                Ok(rev) => {
                    self.maybe_written = false;
                    if let Some(slot) = self.slot.as_mut() {
                        slot.own_last = Some(rev);
                    }
                    self.entry = Some(OwnEntry::new(
                        s.clone(),
                        self.cfg,
                        sent,
                        rev,
                        rev,
                        self.attempt.clone(),
                    ));
                    return Ok(Some((Some(rev), "fast")));
                }
                Err(e) if e.is_conflict() => {
                    self.maybe_written = false;
                    if from_cache {
                        // The cached revision was stale: look once more before queueing.
                        from_cache = false;
                        continue;
                    }
                    busy = true;
                    break;
                }
                // Unknown outcome: the queue entry write below recognises it.
                Err(e) if is_ambiguous(&e) => break,
                Err(e) => {
                    self.maybe_written = false;
                    return Err(e.into());
                }
            }
        }
        if try_only && busy && s.permits == 1 {
            return Ok(None);
        }

        // Slow path.
        self.enqueue().await?;
        s.bump(Stat::Enqueued);
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.queue_step(try_only).await {
                Ok(Step::Done(r)) => return Ok(r),
                Ok(Step::Again) => backoff = Duration::from_millis(50),
                Err(e) if is_transient(&e) => {
                    // A failover or a network blip: keep our entry alive and look again.
                    tracing::debug!(lock = %s.name, error = %e, "transient failure while queued, retrying");
                    let entry = self.entry.as_mut().ok_or_else(missing_slot)?;
                    let at = match entry.clock.next(Instant::now()) {
                        Next::Lost => {
                            return Err(entry_lost("its lease ran out before a renewal succeeded"))
                        }
                        Next::RenewAt(at) => at,
                    };
                    if at <= Instant::now() {
                        if let Renewal::Gone(why) = entry.renew().await {
                            return Err(entry_lost(why));
                        }
                    } else {
                        tokio::time::sleep_until(at.min(Instant::now() + backoff)).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One look at the queue from the slow path, and the wait that follows.
    async fn queue_step(&mut self, try_only: bool) -> Result<Step, Error> {
        let s = self.shared.clone();
        let entry = self.entry.as_mut().ok_or_else(missing_slot)?;
        let v = view(&s, Some(entry.rev)).await?;
        check_permits(&s, &v)?;
        let Some(pos) = v.live.iter().position(|l| l.key == s.own_key) else {
            return Err(entry_lost(
                "it is no longer in the queue (expired or removed)",
            ));
        };
        if !entry.clock.is_valid(Instant::now()) {
            return Err(entry_lost("its lease ran out"));
        }
        let lower: Vec<Live> = v.live[..pos].to_vec();
        if lower.len() < s.permits as usize {
            let alone = if v.live.len() == 1 { v.last } else { None };
            return Ok(Step::Done(Some((alone, "queue"))));
        }
        if try_only {
            return Ok(Step::Done(None));
        }
        match self.wait(&lower, &v).await? {
            Wake::Holder => Ok(Step::Done(Some((None, "queue")))),
            Wake::Rescan => Ok(Step::Again),
        }
    }

    /// Writes our queue entry: conditional on our own key's state. After a lost ack the
    /// retry conflicts, and the leader shows our own attempt nonce: that entry is ours
    /// (never wait for ourselves), so we take it over with a renewal, keeping its ticket.
    async fn enqueue(&mut self) -> Result<(), Error> {
        let s = self.shared.clone();
        let ttl = self.cfg.ttl().as_duration();
        let mut expect = self
            .slot
            .as_ref()
            .and_then(|sl| sl.own_last)
            .map_or(Expect::NoMessage, Expect::Revision);
        let mut ambiguous = self.maybe_written;
        let mut check_first = ambiguous;
        let mut last_err = None;
        for _ in 0..8 {
            if check_first {
                match read_own(&s, &self.attempt).await {
                    Ok(Some((rev, true))) => {
                        // Ours: renew it to learn a send time to count the lease from.
                        let sent = Instant::now();
                        self.maybe_written = true;
                        s.bump(Stat::AcquireWrite);
                        match s
                            .bucket
                            .update(&s.own_key, self.value(Some(rev)), rev)
                            .ttl(ttl)
                            .await
                        {
                            Ok(r) => {
                                tracing::info!(lock = %s.name, ticket = rev.get(), "recognised our own queue entry after a lost acknowledgement");
                                self.entry = Some(OwnEntry::new(
                                    s.clone(),
                                    self.cfg,
                                    sent,
                                    r,
                                    rev,
                                    self.attempt.clone(),
                                ));
                                self.maybe_written = false;
                                return Ok(());
                            }
                            Err(e) if e.is_conflict() => {
                                self.maybe_written = ambiguous;
                                expect = e
                                    .current_revision()
                                    .map_or(Expect::NoMessage, Expect::Revision);
                                check_first = true;
                                continue;
                            }
                            Err(e) if is_ambiguous(&e) => {
                                ambiguous = true;
                                check_first = true;
                                last_err = Some(e.into());
                                continue;
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Ok(Some((rev, false))) => expect = Expect::Revision(rev),
                    Ok(None) => expect = Expect::NoMessage,
                    Err(e) => {
                        check_first = true;
                        last_err = Some(e);
                        continue;
                    }
                }
            }
            let sent = Instant::now();
            self.maybe_written = true;
            s.bump(Stat::AcquireWrite);
            match s
                .bucket
                .put(&s.own_key, self.value(None))
                .ttl(ttl)
                .expect(expect)
                .await
            {
                Ok(rev) => {
                    self.maybe_written = false;
                    if let Some(slot) = self.slot.as_mut() {
                        slot.own_last = Some(rev);
                    }
                    self.entry = Some(OwnEntry::new(
                        s.clone(),
                        self.cfg,
                        sent,
                        rev,
                        rev,
                        self.attempt.clone(),
                    ));
                    return Ok(());
                }
                Err(e) if e.is_conflict() => {
                    self.maybe_written = ambiguous;
                    check_first = true;
                }
                Err(e) if is_ambiguous(&e) => {
                    ambiguous = true;
                    check_first = true;
                    last_err = Some(e.into());
                }
                Err(e) => {
                    self.maybe_written = ambiguous;
                    return Err(e.into());
                }
            }
        }
        Err(last_err.unwrap_or_else(|| {
            Error::new(
                ErrorKind::Kv,
                "could not enter the queue: our key kept changing",
            )
        }))
    }

    /// Waits until the entries below ours are gone (or one more rescan is needed), renewing
    /// our own entry meanwhile.
    async fn wait(&mut self, lower: &[Live], v: &View) -> Result<Wake, Error> {
        let s = self.shared.clone();
        let entry = self.entry.as_mut().ok_or_else(missing_slot)?;
        let permits = s.permits as usize;
        // Lower entries by key, with their tickets.
        let mut below: HashMap<String, Revision> =
            lower.iter().map(|l| (l.key.clone(), l.ticket)).collect();
        // A mutex waiter watches only its predecessor (herd-free). A semaphore waiter must
        // see any lower entry go, so it watches the queue and counts.
        let filter = if permits == 1 {
            lower
                .last()
                .map(|l| l.key.clone())
                .ok_or_else(missing_slot)?
        } else {
            s.name.queue_filter()
        };
        let from = v
            .as_of
            .and_then(|r| Revision::new(r.get() + 1))
            .ok_or_else(missing_slot)?;
        s.bump(Stat::Watch);
        let mut watch = s
            .bucket
            .watch([filter.as_str()])
            .from_revision(from)
            // Only removals matter here; a compacted revision is never one we wait for.
            .skip_compacted()
            .await?;
        tracing::debug!(lock = %s.name, watching = %filter, ahead = lower.len(), ticket = entry.ticket.get(), "waiting");
        loop {
            let at = match entry.clock.next(Instant::now()) {
                Next::Lost => {
                    return Err(entry_lost("its lease ran out before a renewal succeeded"))
                }
                Next::RenewAt(at) => at,
            };
            tokio::select! {
                biased;
                ev = watch.next() => match ev {
                    Some(Ok(WatchEvent::Entry(e))) => {
                        tracing::trace!(lock = %s.name, key = %e.key(), revision = e.revision().get(), op = ?e.operation(), below = below.len(), "queue event");
                        // A lower entry is gone when its key is removed — or rewritten with
                        // another ticket: with history 1 a release followed at once by a new
                        // acquisition of the same handle replaces the tombstone before a
                        // watcher can read it, so the watch only shows the new entry (whose
                        // ticket is above ours). Renewals keep the ticket and are ignored.
                        let gone = match below.get(e.key().as_str()) {
                            None => false,
                            Some(_) if !e.is_value() => true,
                            Some(t) => ticket_of(&e) != *t,
                        };
                        if gone && below.remove(e.key().as_str()).is_some() {
                            if below.len() < permits {
                                if !entry.clock.is_valid(Instant::now()) {
                                    return Err(entry_lost("its lease ran out"));
                                }
                                return Ok(Wake::Holder);
                            }
                            if permits == 1 {
                                return Ok(Wake::Rescan);
                            }
                        }
                    }
                    Some(Ok(WatchEvent::InitialDone)) => {}
                    Some(Err(e)) => {
                        tracing::debug!(lock = %s.name, error = %e, "watch error, rescanning");
                        return Ok(Wake::Rescan);
                    }
                    None => return Ok(Wake::Rescan),
                },
                _ = tokio::time::sleep_until(at) => {
                    if !entry.clock.is_valid(Instant::now()) {
                        return Err(entry_lost("its lease ran out before a renewal succeeded"));
                    }
                    match entry.renew().await {
                        Renewal::Renewed | Renewal::Retry(_) => {}
                        Renewal::Gone(why) => return Err(entry_lost(why)),
                    }
                }
            }
        }
    }

    fn make_guard(&mut self, alone: Option<Revision>) -> Result<Guard, Error> {
        let slot = self.slot.take().ok_or_else(missing_slot)?;
        let entry = self.entry.take().ok_or_else(missing_slot)?;
        self.done = true;
        Ok(Guard::start(entry, slot, alone))
    }

    /// Removes our entry (if any) now.
    async fn abandon(&mut self) {
        self.done = true;
        let Some(mut slot) = self.slot.take() else {
            return;
        };
        let known = self.entry.take().map(|e| e.rev);
        if known.is_none() && !self.maybe_written {
            return;
        }
        if let Err(e) = remove_own(&self.shared, &mut slot, &self.attempt, known).await {
            tracing::warn!(lock = %self.shared.name, error = %e, "could not remove our queue entry; it expires with its ttl");
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Some(mut slot) = self.slot.take() else {
            return;
        };
        let known = self.entry.take().map(|e| e.rev);
        if known.is_none() && !self.maybe_written {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let s = self.shared.clone();
        let attempt = std::mem::take(&mut self.attempt);
        s.tracker.clone().spawn_on(
            async move {
                if let Err(e) = remove_own(&s, &mut slot, &attempt, known).await {
                    tracing::warn!(lock = %s.name, error = %e, "could not remove the queue entry of a cancelled acquisition; it expires with its ttl");
                }
            },
            &rt,
        );
    }
}

/// A mutex must not share a name with a semaphore (and vice versa): compares the stored
/// permit count, when there is one.
pub(crate) fn check_permits(s: &Shared, v: &View) -> Result<(), Error> {
    let Some(e) = &v.permits else { return Ok(()) };
    if !e.is_value() {
        return Ok(());
    }
    let stored = std::str::from_utf8(e.value())
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok());
    if stored != Some(s.permits) {
        return Err(Error::new(
            ErrorKind::PermitMismatch,
            format!(
                "lock {} has {} permits in the bucket, this handle expects {}",
                s.name,
                stored.map_or_else(|| "an unreadable number of".to_string(), |n| n.to_string()),
                s.permits
            ),
        ));
    }
    Ok(())
}
