//! A won election: the [`Leadership`] handle over the leader key's lease, and the views of
//! it handed to the work done while leading ([`LostSignal`], [`Fencing`]).
//!
//! Renewal, lost-ack recognition, the local deadline, guarded writes and the fenced release
//! are the kvtk-core lease layer's; `Held` (held.rs) adds what an election means on top:
//! the term, the published value, resignation, transfer and why a leadership ended.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kvtk_core::lease::Lease;
use kvtk_core::Revision;
use tokio::time::Instant;

use crate::error::{Error, ErrorKind};
use crate::health::Health;
use crate::held::Held;
use crate::lost::LostReason;
use crate::names::validate_name;
use crate::record::Term;
use crate::shared::Shared;

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
        self.held.term()
    }

    /// The leader key (`<election>.leader`).
    pub fn leader_key(&self) -> &str {
        self.held.lease().key().as_str()
    }

    /// The leader key's revision as of our last confirmed write (changes with renewals).
    pub fn revision(&self) -> Revision {
        self.held.lease().revision()
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
        match self.held.lease().put_guarded(key, value).await {
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
    shared: Arc<Shared>,
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
        let held = Arc::new(Held::new(
            shared.bucket.name(),
            &shared.name,
            id,
            value,
            lease,
            registration,
        ));
        shared.register_leadership(&held);
        Leadership { held, shared }
    }

    /// Our identity.
    pub fn id(&self) -> &str {
        self.held.id()
    }

    /// The term (fencing token): strictly greater than every earlier term of this election.
    pub fn term(&self) -> Term {
        self.held.term()
    }

    /// The leader key's current revision (changes with every renewal).
    pub fn revision(&self) -> Revision {
        self.held.lease().revision()
    }

    /// The value we publish.
    pub fn value(&self) -> String {
        self.held.value()
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

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
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
    /// future is dropped before the key was removed, the key expires by its TTL — or, bound
    /// to a session (which gives it no TTL), the session's keeper goes on removing it in
    /// the background while the session lives. Either way a later campaign leads in a new
    /// term.
    pub async fn resign(self) -> Result<(), Error> {
        self.held.resign(LostReason::Resigned).await;
        Ok(())
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
        if id == self.held.id() {
            return Err(Error::invalid("cannot transfer leadership to ourselves"));
        }
        if !self.held.is_valid() {
            return Err(Error::lost("leadership already ended"));
        }
        self.check_campaigning(&id).await?;
        self.held.hand_over(&id, self.shared.transfer_ttl).await
    }

    /// Checks, before the lease deadline, that candidate `to` has a live registration.
    async fn check_campaigning(&self, to: &str) -> Result<(), Error> {
        let target = self.shared.candidate_key(to);
        let read = self.shared.bucket.get_from_leader(&target);
        match tokio::time::timeout_at(self.held.deadline(), read).await {
            Ok(Ok(Some(e))) if e.is_value() => Ok(()),
            Ok(Ok(_)) => Err(Error::new(
                ErrorKind::NotCampaigning,
                format!("candidate {to:?} is not campaigning"),
            )),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(Error::lost("lease expired while checking the target")),
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if self.held.settled() {
            return;
        }
        let held = self.held.clone();
        match tokio::runtime::Handle::try_current() {
            // The election's tracker owns the resignation; Election::shutdown waits for it.
            Ok(rt) => {
                self.shared.tracker.spawn_on(
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
