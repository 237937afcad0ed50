//! The pure part of a lease: what its holder knows ([`State`]) and the renewal decisions —
//! when to renew, when to demote itself, what a write's or a read-back's result leads to.
//!
//! No I/O: the keeper and the held lease send the writes and hand the results here, so every
//! decision is tested on paused time (`state/tests.rs`). The arithmetic of the deadline is the
//! [`LeaseClock`]'s; this file decides when to consult it, `state/writes.rs` what each
//! write's outcome does to it.

use std::sync::{Arc, Mutex as StdMutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::bound_set::BoundSet;
use super::clock::{LeaseClock, LeaseConfig, Next};
use crate::entry::{Entry, LeaseTag};
use crate::key::Key;
use crate::metrics::LeaseLabels;
use crate::revision::{Revision, Ttl};

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

/// The lease's one write slot, claimed by a value change or a release
/// ([`State::claim`]): given back when dropped, also when the future that holds it is
/// cancelled mid-write, so no later writer waits for it forever.
#[derive(Debug)]
pub(super) struct Slot<'a>(&'a State);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.finish_write();
    }
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

/// What the holder's side of one lease knows and changes, whether bound or not. Only one
/// write of the lease is in flight at a time (`busy`): the keeper's renewal, a value change
/// or the release.
#[derive(Debug)]
struct Live {
    rev: Revision,
    busy: bool,
    /// Renewals stopped for good (a release, an orphan).
    stopped: bool,
    /// A release when the lease is dropped is marked completed (see
    /// [`Lease::complete_on_drop`](super::Lease::complete_on_drop)).
    complete_on_drop: bool,
    reason: Option<LostReason>,
    /// Made by the first who waits on the lease or hooks onto its end; most never do.
    waits: Option<Arc<Waits>>,
}

/// What keeps a lease alive.
#[derive(Debug)]
enum Tie {
    /// A TTL of its own, renewed by the keeper.
    Own(Box<Own>),
    /// Bound to a session (its lease state), in slot `slot` of the session's bound set: no
    /// TTL, no renewal, no value kept (nothing rewrites it but a value change, which brings
    /// its own); the session's nonce, deadline and end.
    Bound { session: Arc<State>, slot: u32 },
}

/// A lease with a TTL of its own: its identity, its metric labels (a bound lease uses its
/// session's, which are its keeper's too) and what its renewals need.
#[derive(Debug)]
struct Own {
    nonce: u128,
    labels: Arc<LeaseLabels>,
    renewal: StdMutex<Renewal>,
}

/// The renewal state of a lease with a TTL of its own; locked after [`Live`], never before.
#[derive(Debug)]
struct Renewal {
    /// What renewals write.
    value: Bytes,
    clock: LeaseClock,
    /// Send time of the first write whose outcome is unknown (it may have been applied).
    ambiguous_since: Option<Instant>,
    /// The keeper holds a timer for the lease's next renewal.
    timer: bool,
    /// A session's bound leases, which end when it ends; made by the first one. Boxed: 8
    /// bytes in every lease instead of an empty set's 48.
    bound: Option<Box<BoundSet<State>>>,
}

/// What waits on a lease or its end.
#[derive(Debug, Default)]
struct Waits {
    /// Cancelled when the lease ends.
    lost: CancellationToken,
    /// Wakes whoever waits for the write slot.
    settled: Notify,
    /// What runs when the lease ends ([`Lease::on_end`](super::Lease::on_end)): added under
    /// the [`Live`] lock only while the lease has not ended (a later one runs at once), so
    /// the end, which records its reason under that lock first, runs each one once.
    on_end: StdMutex<EndHooks>,
}

/// The end hooks of a lease.
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
    pub(super) origin: Revision,
    tie: Tie,
    /// The TTL of the release's tombstone.
    tombstone_ttl: Option<Ttl>,
    /// The `Kv-Format` header of every write that leaves a value (see `crate::format`).
    pub(super) format: Option<u32>,
    live: StdMutex<Live>,
}

impl State {
    /// The state of a lease a creation established, trusted from the creating write's send
    /// time; `(tombstone_ttl, format)`: its release tombstone's TTL and its values' format.
    /// A bound lease keeps no value, no clock and no labels of its own (its session's).
    pub(super) fn new(
        created: Created,
        value: Bytes,
        cfg: LeaseConfig,
        (tombstone_ttl, format): (Option<Ttl>, Option<u32>),
        labels: Arc<LeaseLabels>,
    ) -> Arc<State> {
        let (key, origin, rev) = (created.key, created.origin, created.rev);
        let make = |tie| State {
            key,
            origin,
            tie,
            tombstone_ttl,
            format,
            live: StdMutex::new(Live {
                rev,
                busy: false,
                stopped: false,
                complete_on_drop: false,
                reason: None,
                waits: None,
            }),
        };
        let Some(session) = created.parent else {
            let renewal = Renewal {
                value,
                clock: LeaseClock::new(cfg, created.sent),
                ambiguous_since: None,
                timer: false,
                bound: None,
            };
            let own = Own {
                nonce: created.nonce,
                labels,
                renewal: StdMutex::new(renewal),
            };
            return Arc::new(make(Tie::Own(Box::new(own))));
        };
        let mut ended = None;
        let st = Arc::new_cyclic(|me: &Weak<State>| {
            let (slot, why) = session.join(me.clone());
            ended = why;
            make(Tie::Bound { session, slot })
        });
        if let Some(why) = ended {
            st.lose(why);
        }
        st
    }

    fn own(&self) -> Option<&Own> {
        match &self.tie {
            Tie::Own(own) => Some(own),
            Tie::Bound { .. } => None,
        }
    }

    /// The lease's timing (a bound lease's: its session's).
    pub(super) fn config(&self) -> LeaseConfig {
        match &self.tie {
            Tie::Own(own) => *own.renewal().clock.config(),
            Tie::Bound { session, .. } => session.config(),
        }
    }

    /// Whether the lease is bound to a session.
    pub(super) fn is_bound(&self) -> bool {
        matches!(self.tie, Tie::Bound { .. })
    }

    /// The lease's random identity, carried on each of its writes (a bound lease's: its
    /// session's id).
    pub(super) fn nonce(&self) -> u128 {
        match &self.tie {
            Tie::Own(own) => own.nonce,
            Tie::Bound { session, .. } => session.nonce(),
        }
    }

    /// The per-key TTL of the lease's writes; `None` for a lease bound to a session.
    pub(super) fn ttl(&self) -> Option<Duration> {
        let own = self.own()?;
        Some(own.renewal().clock.config().ttl().as_duration())
    }

    /// The TTL of the release's tombstone.
    pub(super) fn tombstone_ttl(&self) -> Option<Duration> {
        self.tombstone_ttl.map(Ttl::as_duration)
    }

    fn labels(&self) -> &LeaseLabels {
        match &self.tie {
            Tie::Own(own) => &own.labels,
            Tie::Bound { session, .. } => session.labels(),
        }
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        // A poisoned lock only means a panic elsewhere while holding it; the data is plain.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The waiters' part, made now if nobody waited before.
    fn waits(&self) -> Arc<Waits> {
        self.live().waits.get_or_insert_with(Arc::default).clone()
    }

    /// The `Kv-Lease` header of our writes after the creation.
    pub(super) fn tag(&self) -> String {
        LeaseTag::header_value(self.nonce(), Some(self.origin))
    }

    /// Whether `e` was written by this lease: our nonce and our origin. A bound lease's
    /// nonce is its session's, shared by the session's other entries — among them a later
    /// binding of the same key, which a stale release of ours must never remove.
    pub(super) fn is_ours(&self, e: &Entry) -> bool {
        let nonce = self.nonce();
        e.lease()
            .is_some_and(|t| t.nonce() == nonce && t.origin() == self.origin)
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
        match &self.tie {
            Tie::Own(own) => own.renewal().clock.deadline(),
            Tie::Bound { session, .. } => session.deadline(),
        }
    }

    /// Held: no loss recorded and the deadline not passed.
    pub(super) fn is_valid(&self) -> bool {
        let ended = self.live().reason.is_some();
        !ended && self.in_time(Instant::now())
    }

    /// The deadline has not passed (a bound lease: its session is valid).
    fn in_time(&self, now: Instant) -> bool {
        match &self.tie {
            Tie::Own(own) => own.renewal().clock.is_valid(now),
            Tie::Bound { session, .. } => session.is_valid(),
        }
    }

    /// Why a lease that is out of time ended: its session's reason, or the deadline.
    fn out_of_time_reason(&self) -> LostReason {
        match &self.tie {
            Tie::Bound { session, .. } => session.reason().unwrap_or(LostReason::Deadline),
            Tie::Own(_) => LostReason::Deadline,
        }
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
    fn lost_token(&self) -> CancellationToken {
        let t = self.waits().lost.clone();
        if self.reason().is_some() {
            t.cancel();
        }
        t
    }

    /// Runs `hook` when the lease ends, or at once if it has.
    pub(super) fn on_end(&self, hook: impl FnOnce(LostReason) + Send + 'static) {
        let mut l = self.live();
        let Some(reason) = l.reason else {
            let w = l.waits.get_or_insert_with(Arc::default);
            hooks(w).0.push(Box::new(hook));
            return;
        };
        drop(l);
        hook(reason);
    }

    /// The keeper's question: when to renew next (`None`: the lease is finished, already
    /// has a timer, or is bound to a session).
    pub(super) fn next(&self, now: Instant) -> Option<Next> {
        let own = self.own()?;
        let l = self.live();
        let mut r = own.renewal();
        if l.stopped || l.reason.is_some() || r.timer {
            return None;
        }
        let next = r.clock.next(now);
        r.timer = matches!(next, Next::RenewAt(_));
        Some(next)
    }

    /// When the keeper must look at the lease next (`None`: the lease is finished, already
    /// has a timer, or is bound to a session), without claiming a timer as
    /// [`next`](Self::next) does: what a lease handed to the keeper tells it about how soon
    /// it is needed.
    pub(super) fn due(&self, now: Instant) -> Option<Instant> {
        let own = self.own()?;
        let l = self.live();
        let r = own.renewal();
        if l.stopped || l.reason.is_some() || r.timer {
            return None;
        }
        Some(match r.clock.next(now) {
            Next::RenewAt(at) => at,
            Next::Lost => now,
        })
    }

    /// The keeper's timer fired: claims the lease's one write slot for a renewal.
    pub(super) fn begin_renewal(&self) -> bool {
        let Some(own) = self.own() else { return false };
        let mut l = self.live();
        let mut r = own.renewal();
        r.timer = false;
        if l.stopped || l.reason.is_some() || l.busy {
            // A value change or release is writing; it hands the lease back when done.
            return false;
        }
        if !r.clock.is_valid(Instant::now()) {
            drop(r);
            drop(l);
            self.lose(LostReason::Deadline);
            return false;
        }
        l.busy = true;
        true
    }

    /// The one place a lease ends: records why, counts the loss, runs the end hooks, then
    /// wakes `lost()`.
    /// A session's end ends every lease bound to it, with the session's reason. A bound
    /// lease released by its holder stays in its session's bound set until its removal is
    /// settled ([`settle`](Self::settle)): until then the session knows the entry as its own.
    pub(super) fn lose(&self, reason: LostReason) {
        let (waits, bound) = {
            let mut l = self.live();
            if l.reason.is_some() {
                return;
            }
            l.reason = Some(reason);
            let bound = self.own().and_then(|own| own.renewal().bound.take());
            (l.waits.clone(), bound)
        };
        if reason != LostReason::Released {
            self.leave();
            tracing::warn!(key = %self.key, origin = self.origin.get(), %reason, "lease lost");
        }
        self.labels().lost(reason);
        if let Some(w) = waits {
            // No hook comes in after the reason was set: `on_end` runs late ones at once.
            for hook in std::mem::take(&mut hooks(&w).0) {
                hook(reason);
            }
            w.lost.cancel();
        }
        let bound = bound.into_iter().flat_map(|b| b.drain());
        for child in bound.filter_map(|w| w.upgrade()) {
            child.lose(reason);
        }
    }

    /// Claims the write slot if it is free; whether it did.
    fn try_claim(&self) -> bool {
        !std::mem::replace(&mut self.live().busy, true)
    }

    /// Waits until no write of the lease is in flight, then claims the slot, which the
    /// returned [`Slot`] gives back when dropped.
    ///
    /// # Cancel safety
    /// Cancel safe: the slot is claimed only when the future completes.
    pub(super) async fn claim(&self) -> Slot<'_> {
        if self.try_claim() {
            return Slot(self);
        }
        let waits = self.waits();
        loop {
            let notified = waits.settled.notified();
            if self.try_claim() {
                return Slot(self);
            }
            notified.await;
        }
    }

    /// Gives the write slot back.
    fn finish_write(&self) {
        let waits = {
            let mut l = self.live();
            l.busy = false;
            l.waits.clone()
        };
        if let Some(w) = waits {
            w.settled.notify_waiters();
        }
    }

    /// Completes when the lease ends — at the latest at its deadline, which it checks itself,
    /// so a starved keeper cannot keep a lease alive past it.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(super) async fn ended(self: Arc<Self>) -> LostReason {
        let lost = self.lost_token();
        loop {
            let deadline = self.deadline();
            tokio::select! {
                _ = lost.cancelled() => break,
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

/// The end hooks of `w`.
fn hooks(w: &Waits) -> MutexGuard<'_, EndHooks> {
    // As `State::live`: a poisoned lock's data is plain.
    w.on_end.lock().unwrap_or_else(|p| p.into_inner())
}

impl Own {
    fn renewal(&self) -> MutexGuard<'_, Renewal> {
        // As `State::live`: a poisoned lock's data is plain.
        self.renewal.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for State {
    /// A bound lease dropped without having ended (its release never ran) leaves its
    /// session's bound set all the same, so that nothing piles up there.
    fn drop(&mut self) {
        self.leave();
    }
}

mod bound;
mod writes;
pub(super) use writes::refused_for_good;

#[cfg(test)]
mod tests;
