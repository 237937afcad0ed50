//! A won election: the [`Leadership`] handle over the leader key's [`Lease`].
//!
//! Renewal, lost-ack recognition, the local deadline, guarded writes and the fenced release
//! are the kvtk-core lease layer's; this module adds what an election means on top: the term,
//! the published value, resignation, transfer and why a leadership ended.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use kvtk_core::lease::{self, Lease};
use kvtk_core::{Backoff, Revision};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::campaign::Campaign;
use crate::election::{validate_name, Shared};
use crate::error::{Error, ErrorKind};
use crate::health::Health;
use crate::metrics::TermMetrics;
use crate::record::{Record, Term};

/// Why a leadership ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LostReason {
    /// The local lease deadline passed without a confirmed renewal (cut off, stalled, or the
    /// bucket's stream was unavailable for too long), or the server expired the key.
    Expired,
    /// Someone else wrote or removed the leader key (a renewal conflicted).
    Overwritten,
    /// We resigned (explicitly, or by dropping the handle).
    Resigned,
    /// We handed leadership over to another candidate.
    Transferred,
    /// The [`Election`](crate::Election) handle was shut down.
    Shutdown,
}

impl From<lease::LostReason> for LostReason {
    fn from(r: lease::LostReason) -> LostReason {
        match r {
            lease::LostReason::Taken => LostReason::Overwritten,
            lease::LostReason::Released => LostReason::Resigned,
            _ => LostReason::Expired,
        }
    }
}

/// One leadership, shared by its handle, its fencing and loss signals, and health probes.
#[derive(Debug)]
pub(crate) struct Held {
    shared: Arc<Shared>,
    id: String,
    term: Term,
    lease: Lease,
    /// The candidate registration, kept alive while leading.
    registration: Mutex<Option<Lease>>,
    value: Mutex<String>,
    /// Why we ended the leadership ourselves (resign, transfer, shutdown).
    ended: Mutex<Option<LostReason>>,
    end: CancellationToken,
    metrics: Arc<TermMetrics>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere while holding it; the data is plain.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Held {
    pub(crate) fn term(&self) -> Term {
        self.term
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.lease.deadline()
    }

    /// Whether we still lead: not ended by us, lease held and before its deadline.
    pub(crate) fn is_valid(&self) -> bool {
        locked(&self.ended).is_none() && self.lease.is_held()
    }

    fn reason(&self) -> Option<LostReason> {
        let own = *locked(&self.ended);
        own.or_else(|| self.lease.loss_reason().map(LostReason::from))
    }

    /// Ends the leadership with `reason` unless it already ended (a lost lease keeps its
    /// own reason); whether it was held until now.
    fn end(&self, reason: LostReason) -> bool {
        let was_valid = self.is_valid();
        {
            let mut ended = locked(&self.ended);
            if ended.is_some() {
                return false;
            }
            let why = if was_valid {
                reason
            } else {
                self.lease
                    .loss_reason()
                    .map_or(LostReason::Expired, LostReason::from)
            };
            *ended = Some(why);
            self.metrics.ended(why);
        }
        self.end.cancel();
        tracing::debug!(id = %self.id, term = %self.term, ?reason, "leadership ended");
        was_valid
    }

    async fn lost(&self) -> LostReason {
        tokio::select! {
            _ = self.end.cancelled() => {}
            _ = self.lease.lost() => {}
        }
        self.reason().unwrap_or(LostReason::Expired)
    }

    /// Ends the leadership, then removes the leader key if it is still ours (a fenced
    /// delete, bounded by the lease deadline) and the candidate registration.
    /// Returns the revision of the tombstone the resignation left, when it left one.
    pub(crate) async fn resign(&self, reason: LostReason) -> Option<Revision> {
        let release = self.lease.release_shared();
        let mut tombstone = None;
        if self.end(reason) {
            match tokio::time::timeout_at(self.deadline(), release).await {
                Ok(Ok(r)) => tombstone = r.tombstone,
                Ok(Err(e)) => tracing::debug!(error = %e, "resignation failed"),
                Err(e) => {
                    tracing::debug!(error = %e, "resignation not confirmed before the deadline")
                }
            }
        }
        self.deregister().await;
        tombstone
    }

    /// Removes the candidate registration; its tombstone expires after a second.
    async fn deregister(&self) {
        let reg = locked(&self.registration).take();
        if let Some(reg) = reg {
            let _ = tokio::time::timeout(Duration::from_secs(1), reg.release()).await;
        }
    }

    async fn proclaim(&self, value: String) -> Result<(), Error> {
        *locked(&self.value) = value.clone();
        let body = self.record(None).to_bytes();
        if !self.is_valid() {
            return Err(Error::lost("leadership already ended"));
        }
        // An unacknowledged write is carried by the next renewal; retry until the deadline.
        let write = Backoff::DEFAULT.retry(|| self.lease.set_value(body.clone()));
        match tokio::time::timeout_at(self.deadline(), write).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == kvtk_core::ErrorKind::LeaseLost => Err(Error::lost(
                "leadership lost before the value was published",
            )),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(Error::lost("lease expired before the write was confirmed")),
        }
    }

    async fn transfer(&self, to: &str) -> Result<(), Error> {
        let target = self.shared.candidate_key(to);
        let read = self.shared.bucket.get_from_leader(&target);
        match tokio::time::timeout_at(self.deadline(), read).await {
            Ok(Ok(Some(e))) if e.is_value() => {}
            Ok(Ok(_)) => {
                return Err(Error::new(
                    ErrorKind::NotCampaigning,
                    format!("candidate {to:?} is not campaigning"),
                ))
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(Error::lost("lease expired while checking the target")),
        }
        let hand_over = self.lease.release_shared().hand_over(
            self.record(Some(to.to_string())).to_bytes(),
            self.shared.transfer_ttl,
        );
        // Stop being leader before anyone else can be.
        if !self.end(LostReason::Transferred) {
            return Err(Error::lost("leadership already ended"));
        }
        let res = tokio::time::timeout_at(self.deadline(), hand_over).await;
        self.deregister().await;
        match res {
            Ok(Ok(r)) if r.tombstone.is_some() => Ok(()),
            Ok(Ok(_)) => Err(Error::lost(format!(
                "hand-over to {to:?} refused: the leader key was no longer ours"
            ))),
            Ok(Err(e)) => Err(Error::lost(format!(
                "hand-over to {to:?} not confirmed, leadership given up"
            ))
            .with_source(e)),
            Err(_) => Err(Error::lost(format!(
                "hand-over to {to:?} not confirmed before the deadline, leadership given up"
            ))),
        }
    }

    pub(crate) fn record(&self, transfer_to: Option<String>) -> Record {
        Record {
            id: self.id.clone(),
            value: locked(&self.value).clone(),
            transfer_to,
        }
    }
}

/// A cloneable, `'static` view of whether a leadership still holds; see
/// [`Leadership::lost_signal`].
///
/// It compares the lease deadline with the monotonic clock itself, so it reports loss at
/// the deadline even when the lease keeper is starved.
#[derive(Debug, Clone)]
pub struct LostSignal {
    held: Arc<Held>,
}

impl LostSignal {
    /// Whether leadership is lost (or no longer trustworthy) now.
    pub fn is_lost(&self) -> bool {
        !self.held.is_valid()
    }

    /// The local deadline: the lease must be considered lost from this instant on unless a
    /// renewal moves it.
    pub fn deadline(&self) -> Instant {
        self.held.deadline()
    }

    /// Resolves when leadership is lost: at once on a renewal conflict, resignation or
    /// transfer; at the latest at the local deadline.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn lost(&self) -> LostReason {
        self.held.lost().await
    }

    /// Resolves with `None` once the deadline is less than `lead` away, or with the reason
    /// once leadership is lost.
    pub(crate) async fn until(&self, lead: Duration) -> Option<LostReason> {
        loop {
            let deadline = self.held.deadline();
            let at = deadline.checked_sub(lead).unwrap_or(deadline);
            if !self.held.is_valid() {
                return Some(self.held.reason().unwrap_or(LostReason::Expired));
            }
            if Instant::now() >= at {
                return None;
            }
            tokio::select! {
                r = self.held.lost() => return Some(r),
                // Renewals move the deadline: look again.
                _ = tokio::time::sleep_until(at) => {}
            }
        }
    }
}

/// Guarded writes for the work done while leading: the lease's guarded write on the leader
/// key.
///
/// A write made with [`Fencing::put`] is conditional on the leader key still being at our
/// revision (`Nats-Expected-Last-Subject-Sequence-Subject`): the server rejects it once
/// anyone else has written the leader key, however late the write arrives.
#[derive(Debug, Clone)]
pub struct Fencing {
    held: Arc<Held>,
}

impl Fencing {
    /// The term (fencing token) of this leadership.
    pub fn term(&self) -> Term {
        self.held.term
    }

    /// The leader key (`<election>.leader`).
    pub fn leader_key(&self) -> &str {
        &self.held.shared.leader_key
    }

    /// The leader key's revision as of our last confirmed write (changes with renewals).
    pub fn revision(&self) -> Revision {
        self.held.lease.revision()
    }

    /// Writes `value` under `key` in the election's bucket, only while this leadership
    /// lasts. A conflict caused by our own concurrent renewal is retried; once the
    /// leadership is over (even before we noticed) it fails with [`ErrorKind::Lost`].
    ///
    /// # Cancel safety
    /// Not cancel safe: the write may take effect after the future is dropped (but only
    /// while the leader key is still at our revision).
    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<Revision, Error> {
        if !self.held.is_valid() {
            return Err(Error::lost("leadership lost; write not sent"));
        }
        match self.held.lease.put_guarded(key, value).await {
            Err(e) if e.kind() == kvtk_core::ErrorKind::LeaseLost => Err(Error::lost(format!(
                "leadership lost; guarded write to {key:?} rejected"
            ))),
            other => Ok(other?),
        }
    }
}

/// A won election, kept alive by the election's lease keeper until it is lost, resigned,
/// transferred or dropped.
///
/// - [`term`](Self::term) is the fencing token; [`fencing`](Self::fencing) makes writes
///   that the server rejects once this leadership is over.
/// - [`lost`](Self::lost) resolves at the local deadline (send time of the last confirmed
///   write + TTL − margin, on the monotonic clock) unless renewed, and at once when a renewal
///   conflicts because someone else wrote the leader key.
/// - Dropping the handle resigns in the background (revision-fenced, never blind); call
///   [`resign`](Self::resign) to wait for it.
#[must_use = "dropping a Leadership resigns at once"]
#[derive(Debug)]
pub struct Leadership {
    held: Arc<Held>,
}

impl Leadership {
    /// A leadership over the leader key's `lease`, with the candidate's `registration`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        id: String,
        value: String,
        lease: Lease,
        registration: Option<Lease>,
    ) -> Leadership {
        let metrics = TermMetrics::elected(shared.bucket.name(), &shared.name);
        let on_end = metrics.clone();
        // A lease lost without our doing (expired, overwritten) ends the term here.
        lease.on_end(move |r| on_end.ended(LostReason::from(r)));
        let held = Arc::new(Held {
            metrics,
            term: Term::new(lease.origin()),
            shared: shared.clone(),
            id,
            lease,
            registration: Mutex::new(registration),
            value: Mutex::new(value),
            ended: Mutex::new(None),
            end: CancellationToken::new(),
        });
        shared.register_leadership(&held);
        Leadership { held }
    }

    /// Our identity.
    pub fn id(&self) -> &str {
        &self.held.id
    }

    /// The term (fencing token): strictly greater than every earlier term of this election.
    pub fn term(&self) -> Term {
        self.held.term
    }

    /// The leader key's current revision (changes with every renewal).
    pub fn revision(&self) -> Revision {
        self.held.lease.revision()
    }

    /// The value we publish.
    pub fn value(&self) -> String {
        locked(&self.held.value).clone()
    }

    /// The local deadline of the lease (moves with every renewal).
    pub fn deadline(&self) -> Instant {
        self.held.deadline()
    }

    /// Whether we still lead: not lost, resigned or transferred, and before the deadline.
    pub fn is_leader(&self) -> bool {
        self.held.is_valid()
    }

    /// Resolves when leadership is lost; see [`LostSignal::lost`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn lost(&self) -> LostReason {
        self.held.lost().await
    }

    /// A cloneable `'static` loss signal to hand to the work done while leading.
    pub fn lost_signal(&self) -> LostSignal {
        LostSignal {
            held: self.held.clone(),
        }
    }

    /// Guarded writes for the work done while leading.
    pub fn fencing(&self) -> Fencing {
        Fencing {
            held: self.held.clone(),
        }
    }

    /// A readiness signal: ready while this lease is fresh.
    pub fn health(&self) -> Health {
        Health::of(self.held.clone())
    }

    pub(crate) fn held(&self) -> Arc<Held> {
        self.held.clone()
    }

    /// Publishes a new value while leading: a conditional write on our revision (a renewal
    /// that carries the value), retried on transient errors until the local deadline.
    /// Fails with [`ErrorKind::Lost`] if leadership is (or gets) lost.
    ///
    /// # Cancel safety
    /// Not cancel safe: the value may be published (now or with the next renewal) even if
    /// the future is dropped.
    pub async fn proclaim(&self, value: impl Into<String>) -> Result<(), Error> {
        self.held.proclaim(value.into()).await
    }

    /// Resigns: marks the leadership lost, then deletes the leader key if it is still at our
    /// revision. Candidates see the tombstone at once and the next one takes over within
    /// milliseconds. Resigning a lost leadership does nothing and succeeds.
    ///
    /// Stop the work done while leading *before* resigning.
    ///
    /// # Cancel safety
    /// Cancel safe: the leadership has ended once the future was first polled; if the
    /// future is dropped before the key was removed, the key expires by its TTL.
    pub async fn resign(self) -> Result<(), Error> {
        self.held.resign(LostReason::Resigned).await;
        Ok(())
    }

    /// Steps down and returns the campaign to lead again, keeping our candidate
    /// registration: the cheapest graceful failover (one write, the resignation; none to
    /// register again). We stand in line behind every candidate that registered before we
    /// stepped down, so leadership rotates through the waiting candidates in order.
    ///
    /// ```no_run
    /// # async fn demo(leadership: kvtk_leader::Leadership) -> Result<(), kvtk_leader::Error> {
    /// // Rotate: let the next candidate lead, and queue to lead again.
    /// let again = leadership.step_down().await.await?;
    /// # drop(again);
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// As [`resign`](Leadership::resign); if the future is dropped after the resignation,
    /// the registration is dropped with it and expires within one TTL.
    pub async fn step_down(self) -> Campaign {
        let registration = locked(&self.held.registration).take();
        let value = locked(&self.held.value).clone();
        let campaign = Campaign::before_step_down(
            self.held.shared.clone(),
            self.held.id.clone(),
            value,
            registration,
        )
        .await;
        let led_until = self.held.lease.revision();
        let tombstone = self.held.resign(LostReason::Resigned).await;
        campaign.stepped_down(tombstone.unwrap_or(led_until))
    }

    /// Hands leadership over to candidate `id`, which must be campaigning. Only `id` can take
    /// the key; if it does not within the transfer TTL, the key expires and the normal race
    /// resumes. Our leadership ends (as [`LostReason::Transferred`]) before the hand-over is
    /// written. Stop the work done while leading *before* transferring.
    ///
    /// Fails with [`ErrorKind::NotCampaigning`] (and we keep leading) when `id` has no fresh
    /// registration, and with [`ErrorKind::Lost`] when leadership was already lost. After a
    /// successful transfer this handle reports [`LostReason::Transferred`].
    ///
    /// # Cancel safety
    /// Not cancel safe: once leadership has ended for the transfer, dropping the future may
    /// leave the hand-over unwritten; the leader key then expires and the normal race
    /// resumes.
    pub async fn transfer_to(&self, id: impl Into<String>) -> Result<(), Error> {
        let id = id.into();
        validate_name("transfer target", &id)?;
        if id == self.held.id {
            return Err(Error::invalid("cannot transfer leadership to ourselves"));
        }
        if !self.held.is_valid() {
            return Err(Error::lost("leadership already ended"));
        }
        self.held.transfer(&id).await
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if locked(&self.held.ended).is_some() && locked(&self.held.registration).is_none() {
            return;
        }
        let held = self.held.clone();
        match tokio::runtime::Handle::try_current() {
            // The election's tracker owns the resignation; Election::shutdown waits for it.
            Ok(rt) => {
                self.held.shared.tracker.spawn_on(
                    async move {
                        held.resign(LostReason::Resigned).await;
                    },
                    &rt,
                );
            }
            // No runtime: nothing renews the keys any more; they expire by their TTL.
            Err(_) => {
                held.end(LostReason::Resigned);
            }
        }
    }
}
