//! The pure part of a lease: what its holder knows ([`State`]) and the renewal decisions —
//! when to renew, when to demote itself, what a write's or a read-back's result leads to.
//!
//! No I/O: the keeper and the held lease send the writes and hand the results here, so every
//! decision is tested on paused time (`state/tests.rs`). The arithmetic of the deadline is the
//! [`LeaseClock`]'s; this file decides when to consult it and what each outcome does to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::clock::{LeaseClock, LeaseConfig, Next};
use crate::entry::{Entry, LeaseTag, Removal};
use crate::error::{Error, ErrorKind};
use crate::key::Key;
use crate::metrics::LeaseLabels;
use crate::revision::Revision;

/// How often a creation or release whose writes' outcomes stay unknown tries before giving
/// up (a release keeps trying until the deadline, too).
pub(super) const ATTEMPTS: usize = 8;

/// How long a guarded write that conflicted waits for a renewal of ours in flight.
const RENEWAL_WAIT: Duration = Duration::from_secs(2);

/// Why a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LostReason {
    /// No renewal was acknowledged before the local deadline: cut off from the server, the
    /// stream had no leader for too long, or the runtime stalled past the deadline.
    Deadline,
    /// The server expired the key (an expiry marker stands where the lease was).
    Expired,
    /// Someone else deleted, purged or rewrote the key: a forced release, an operator, or a
    /// writer that ignores the protocol.
    Taken,
    /// The lease was released by its holder.
    Released,
    /// The server refused the renewal for lack of permission (revoked, or never granted for
    /// this key): reported at once, not at the deadline. Needs a [`Kv`](crate::Kv) built by
    /// [`Connect`](crate::Connect), which hears the server's permission errors; otherwise
    /// the refusal looks like a timeout and the loss is [`LostReason::Deadline`].
    Permission,
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LostReason::Deadline => "no renewal was acknowledged before the lease deadline",
            LostReason::Expired => "the lease key expired on the server",
            LostReason::Taken => "the lease key was removed or rewritten by someone else",
            LostReason::Released => "the lease was released",
            LostReason::Permission => "the server refused the renewal for lack of permission",
        })
    }
}

/// The outcome of one write of the lease's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Written,
    Retry,
    Gone(LostReason),
}

/// What the result of a write of our key leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterWrite {
    Done(Step),
    /// A conflict: the stream leader must say whether the key really moved. `since` is the
    /// send time of the earliest write of ours that may have been applied.
    AskLeader {
        since: Instant,
    },
}

/// What a creation established: the lease's identity and its first acknowledged write.
#[derive(Debug)]
pub(super) struct Created {
    pub(super) key: Key,
    pub(super) nonce: u128,
    pub(super) origin: Revision,
    pub(super) rev: Revision,
    /// Send time of the creating write (of the earliest one, when an ack was lost).
    pub(super) sent: Instant,
    /// The session the lease is bound to (its lease's state): no TTL, no renewal of its
    /// own, its deadline and its end the session's.
    pub(super) parent: Option<Arc<State>>,
}

/// What the holder's side of one lease knows. Only one write of the lease is in flight at a
/// time (`busy`): the keeper's renewal, a value change or the release.
#[derive(Debug)]
struct Live {
    rev: Revision,
    value: Bytes,
    clock: LeaseClock,
    /// Send time of the first write whose outcome is unknown (it may have been applied).
    ambiguous_since: Option<Instant>,
    busy: bool,
    /// The keeper holds a timer for the lease's next renewal.
    timer: bool,
    /// Renewals stopped for good (a release, an orphan).
    stopped: bool,
    reason: Option<LostReason>,
    on_end: EndHooks,
    /// A session's bound leases, which end when it ends (keyed by their address); made by
    /// the first one. Boxed on purpose: 8 bytes in every lease instead of an empty map's 48.
    #[allow(clippy::box_collection)]
    bound: Option<Box<HashMap<usize, Weak<State>>>>,
}

/// What runs when the lease ends ([`Lease::on_end`](super::Lease::on_end)).
#[derive(Default)]
struct EndHooks(Vec<Box<dyn FnOnce(LostReason) + Send>>);

impl std::fmt::Debug for EndHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} hook(s)", self.0.len())
    }
}

/// One lease, shared by its handle and the keeper task.
#[derive(Debug)]
pub(crate) struct State {
    pub(super) key: Key,
    pub(super) nonce: u128,
    pub(super) origin: Revision,
    /// The per-key TTL of the lease's writes; `None` for a lease bound to a session.
    pub(super) ttl: Option<Duration>,
    parent: Option<Arc<State>>,
    pub(super) tombstone_ttl: Option<Duration>,
    /// The `Kv-Format` header of every write that leaves a value (see `crate::format`).
    pub(super) format: Option<u32>,
    live: StdMutex<Live>,
    /// Cancelled when the lease ends; made on first use (most leases are never waited on).
    lost: OnceLock<CancellationToken>,
    settled: Notify,
    labels: Arc<LeaseLabels>,
}

impl State {
    /// The state of a lease a creation established, trusted from the creating write's send
    /// time; `(tombstone_ttl, format)`: its release tombstone's TTL and its values' format.
    pub(super) fn new(
        created: Created,
        value: Bytes,
        cfg: LeaseConfig,
        (tombstone_ttl, format): (Option<Duration>, Option<u32>),
        labels: Arc<LeaseLabels>,
    ) -> Arc<State> {
        let bound = created.parent.is_some();
        let st = Arc::new(State {
            key: created.key,
            nonce: created.nonce,
            origin: created.origin,
            ttl: created.parent.is_none().then(|| cfg.ttl().as_duration()),
            parent: created.parent,
            tombstone_ttl,
            format,
            live: StdMutex::new(Live {
                rev: created.rev,
                // A bound lease is never renewed: only a value change writes a value again.
                value: if bound { Bytes::new() } else { value },
                clock: LeaseClock::new(cfg, created.sent),
                ambiguous_since: None,
                busy: false,
                timer: false,
                stopped: false,
                reason: None,
                on_end: EndHooks::default(),
                bound: None,
            }),
            lost: OnceLock::new(),
            settled: Notify::new(),
            labels,
        });
        st.join_parent();
        st
    }

    /// A bound lease joins its session's list, or ends at once if the session has.
    fn join_parent(self: &Arc<Self>) {
        let Some(p) = &self.parent else { return };
        let ended = {
            let mut l = p.live();
            if l.reason.is_none() {
                let bound = l.bound.get_or_insert_with(Box::default);
                bound.insert(Arc::as_ptr(self) as usize, Arc::downgrade(self));
            }
            l.reason
        };
        if let Some(why) = ended {
            self.lose(why);
        }
    }

    /// The lease's timing.
    pub(super) fn config(&self) -> LeaseConfig {
        *self.live().clock.config()
    }

    /// Whether the lease is bound to a session.
    pub(super) fn is_bound(&self) -> bool {
        self.parent.is_some()
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        // A poisoned lock only means a panic elsewhere while holding it; the data is plain.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `Kv-Lease` header of our writes after the creation.
    pub(super) fn tag(&self) -> String {
        LeaseTag::header_value(self.nonce, Some(self.origin))
    }

    /// Whether `e` was written by this lease.
    pub(super) fn is_ours(&self, e: &Entry) -> bool {
        e.lease().is_some_and(|t| t.nonce() == self.nonce)
    }

    /// The key's latest revision as far as we know.
    pub(super) fn revision(&self) -> Revision {
        self.live().rev
    }

    /// Why the lease ended, once it did.
    pub(super) fn reason(&self) -> Option<LostReason> {
        self.live().reason
    }

    /// The local deadline: send time of the last acknowledged write + TTL − margin (of the
    /// session's, for a bound lease).
    pub(super) fn deadline(&self) -> Instant {
        match &self.parent {
            Some(p) => p.deadline(),
            None => self.live().clock.deadline(),
        }
    }

    /// Held: no loss recorded and the deadline not passed.
    pub(super) fn is_valid(&self) -> bool {
        let ended = self.live().reason.is_some();
        !ended && self.in_time(Instant::now())
    }

    /// The deadline has not passed (a bound lease: its session is valid).
    fn in_time(&self, now: Instant) -> bool {
        match &self.parent {
            Some(p) => p.is_valid(),
            None => self.live().clock.is_valid(now),
        }
    }

    /// Why a lease that is out of time ended: its session's reason, or the deadline.
    fn out_of_time_reason(&self) -> LostReason {
        let parent = self.parent.as_ref().and_then(|p| p.reason());
        parent.unwrap_or(LostReason::Deadline)
    }

    /// Renewals stop for good (a release or an orphan); the keeper drops the lease.
    pub(super) fn stop(&self) {
        self.live().stopped = true;
    }

    /// Whether renewals were stopped.
    pub(super) fn is_stopped(&self) -> bool {
        self.live().stopped
    }

    /// A token cancelled when the lease ends.
    pub(super) fn token(&self) -> CancellationToken {
        self.lost_token().child_token()
    }

    /// The token cancelled when the lease ends, made now if nobody asked before (and then
    /// cancelled at once if the lease has ended: `lose` cancels only a token it finds).
    fn lost_token(&self) -> &CancellationToken {
        let t = self.lost.get_or_init(CancellationToken::new);
        if self.reason().is_some() {
            t.cancel();
        }
        t
    }

    /// Runs `hook` when the lease ends, or at once if it has.
    pub(super) fn on_end(&self, hook: impl FnOnce(LostReason) + Send + 'static) {
        let mut l = self.live();
        let Some(reason) = l.reason else {
            l.on_end.0.push(Box::new(hook));
            return;
        };
        drop(l);
        hook(reason);
    }

    /// The keeper's question: when to renew next (`None`: the lease is finished, or already
    /// has a timer).
    pub(super) fn next(&self, now: Instant) -> Option<Next> {
        let mut l = self.live();
        if self.is_bound() || l.stopped || l.reason.is_some() || l.timer {
            return None;
        }
        let next = l.clock.next(now);
        l.timer = matches!(next, Next::RenewAt(_));
        Some(next)
    }

    /// When the keeper must look at the lease next (`None`: the lease is finished, or
    /// already has a timer), without claiming a timer as [`next`](Self::next) does: what a
    /// lease handed to the keeper tells it about how soon it is needed.
    pub(super) fn due(&self, now: Instant) -> Option<Instant> {
        let l = self.live();
        if self.is_bound() || l.stopped || l.reason.is_some() || l.timer {
            return None;
        }
        Some(match l.clock.next(now) {
            Next::RenewAt(at) => at,
            Next::Lost => now,
        })
    }

    /// The keeper's timer fired: claims the lease's one write slot for a renewal.
    pub(super) fn begin_renewal(&self) -> bool {
        let mut l = self.live();
        l.timer = false;
        if l.stopped || l.reason.is_some() || l.busy {
            // A value change or release is writing; it hands the lease back when done.
            return false;
        }
        if !l.clock.is_valid(Instant::now()) {
            drop(l);
            self.lose(LostReason::Deadline);
            return false;
        }
        l.busy = true;
        true
    }

    /// The one place a lease ends: records why, counts the loss, runs the end hooks, then
    /// wakes `lost()`.
    /// A session's end ends every lease bound to it, with the session's reason.
    pub(super) fn lose(&self, reason: LostReason) {
        let (hooks, bound) = {
            let mut l = self.live();
            if l.reason.is_some() {
                return;
            }
            l.reason = Some(reason);
            (
                std::mem::take(&mut l.on_end.0),
                std::mem::take(&mut l.bound),
            )
        };
        if let Some(p) = &self.parent {
            if let Some(b) = p.live().bound.as_mut() {
                b.remove(&(self as *const State as usize));
            }
        }
        if reason != LostReason::Released {
            tracing::warn!(key = %self.key, origin = self.origin.get(), %reason, "lease lost");
        }
        self.labels.lost(reason);
        for hook in hooks {
            hook(reason);
        }
        if let Some(t) = self.lost.get() {
            t.cancel();
        }
        let bound = bound.map(|b| b.into_values()).into_iter().flatten();
        for child in bound.filter_map(|w| w.upgrade()) {
            child.lose(reason);
        }
    }

    /// Waits until no write of the lease is in flight, then claims the slot.
    ///
    /// # Cancel safety
    /// Cancel safe: the slot is claimed only when the future completes.
    pub(super) async fn claim(&self) {
        loop {
            let settled = self.settled.notified();
            {
                let mut l = self.live();
                if !l.busy {
                    l.busy = true;
                    return;
                }
            }
            settled.await;
        }
    }

    /// Gives the write slot back.
    pub(super) fn finish_write(&self) {
        self.live().busy = false;
        self.settled.notify_waiters();
    }

    /// A renewal the keeper drove ended: with its step, or `None` when the deadline passed
    /// first (the write may still land; a release recognises it by our nonce).
    pub(super) fn renewal_done(&self, step: Option<Step>) {
        self.finish_write();
        match step {
            Some(Step::Written | Step::Retry) => {}
            Some(Step::Gone(why)) => self.lose(why),
            None => self.lose(LostReason::Deadline),
        }
    }

    /// Before a write of our key (the caller holds the slot): takes the new value, if any,
    /// and returns the revision to expect and the value to write.
    pub(super) fn to_write(&self, value: Option<Bytes>) -> (Revision, Bytes) {
        let mut l = self.live();
        if let Some(v) = value {
            l.value = v;
        }
        (l.rev, l.value.clone())
    }

    /// A write of our key sent at `sent`, conditional on our revision, came back with `res`.
    pub(super) fn written(&self, res: Result<Revision, Error>, sent: Instant) -> AfterWrite {
        let mut l = self.live();
        match res {
            Ok(r) => {
                self.labels.renewal_slack(l.clock.slack(Instant::now()));
                l.rev = r;
                // A CAS on our last known revision succeeded, so none of the earlier
                // unacknowledged writes was applied: this send time is the one that counts.
                l.ambiguous_since = None;
                l.clock.renewed(sent);
                tracing::trace!(key = %self.key, revision = r.get(), "lease renewed");
                AfterWrite::Done(Step::Written)
            }
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                tracing::warn!(key = %self.key, error = %e, "lease renewal refused");
                AfterWrite::Done(Step::Gone(LostReason::Permission))
            }
            // Also without a pending write of ours: on a replicated stream the server may
            // refuse a renewal with a conflict although the key is still at our revision
            // (nats-server #7281), so the stream leader says whether it really moved.
            Err(e) if e.is_conflict() => AfterWrite::AskLeader {
                since: l.ambiguous_since.unwrap_or(sent),
            },
            Err(e) => {
                if e.outcome_unknown() {
                    l.ambiguous_since.get_or_insert(sent);
                }
                l.clock.renewal_failed();
                tracing::debug!(key = %self.key, error = %e, "lease renewal failed, will retry");
                AfterWrite::Done(Step::Retry)
            }
        }
    }

    /// The stream leader's answer after a write that expected `expected` conflicted; `since`
    /// is what [`AfterWrite::AskLeader`] said.
    ///
    /// Only a write of ours *newer than the revision we expected* is one of our
    /// unacknowledged writes: an older one means the read was stale (an outdated leader may
    /// answer during an election), and taking it for a renewal would extend the deadline past
    /// the server's expiry; the key still at the revision we expected means the conflict was
    /// spurious. Both retry, without extending the deadline.
    pub(super) fn read_back(
        &self,
        found: Result<Option<Entry>, Error>,
        since: Instant,
        expected: Revision,
    ) -> Step {
        match found {
            Ok(Some(e)) if self.is_ours(&e) && e.revision() <= expected => {
                tracing::debug!(key = %self.key, revision = e.revision().get(), "stale read of the lease key, retrying");
                self.live().clock.renewal_failed();
                Step::Retry
            }
            Ok(Some(e)) if e.is_value() && self.is_ours(&e) => {
                let mut l = self.live();
                l.rev = e.revision();
                l.ambiguous_since = None;
                l.clock.renewed(since);
                tracing::debug!(key = %self.key, revision = e.revision().get(), "an unacknowledged lease write had been applied");
                Step::Written
            }
            Ok(e) => Step::Gone(reason_of(e.as_ref())),
            Err(e) => {
                tracing::debug!(key = %self.key, error = %e, "could not read the lease key back");
                self.live().clock.renewal_failed();
                Step::Retry
            }
        }
    }

    /// After a guarded write conflicted at `rev`: whether our own renewal moved the key,
    /// waiting for one in flight up to the deadline or [`RENEWAL_WAIT`].
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub(super) async fn renewed_past(&self, rev: Revision) -> bool {
        let give_up = self.deadline().min(Instant::now() + RENEWAL_WAIT);
        loop {
            let settled = self.settled.notified();
            {
                let l = self.live();
                if l.rev != rev {
                    return true;
                }
                if !l.busy {
                    return false;
                }
            }
            if tokio::time::timeout_at(give_up, settled).await.is_err() {
                return false;
            }
        }
    }

    /// Completes when the lease ends — at the latest at its deadline, which it checks itself,
    /// so a starved keeper cannot keep a lease alive past it.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(super) async fn ended(self: Arc<Self>) -> LostReason {
        loop {
            let deadline = self.deadline();
            tokio::select! {
                _ = self.lost_token().cancelled() => break,
                _ = tokio::time::sleep_until(deadline) => {
                    if !self.in_time(Instant::now()) {
                        self.lose(self.out_of_time_reason());
                        break;
                    }
                }
            }
        }
        self.reason().unwrap_or(LostReason::Deadline)
    }
}

/// Why a lease whose key is no longer ours ended, from what the key holds now.
fn reason_of(e: Option<&Entry>) -> LostReason {
    match e.and_then(Entry::removal) {
        Some(Removal::Expired) => LostReason::Expired,
        _ => LostReason::Taken,
    }
}

#[cfg(test)]
mod tests;
