//! One leadership's state, shared by its [`Leadership`](crate::Leadership) handle, its
//! fencing and loss signals, and health probes: the term, the leader lease, the candidate
//! registration kept while leading, the published value, and why it ended.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kvtk_core::lease::{Lease, Release, SessionId};
use kvtk_core::Revision;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::lost::LostReason;
use crate::metrics::TermMetrics;
use crate::record::{Record, Term};

/// One leadership, shared by its handle, its fencing and loss signals, and health probes.
#[derive(Debug)]
pub(crate) struct Held {
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
    /// The leadership of candidate `id` over the leader key's `lease` in election
    /// `election` of `bucket`, with the candidate's `registration`.
    pub(crate) fn new(
        bucket: &str,
        election: &str,
        id: String,
        value: String,
        lease: Lease,
        registration: Option<Lease>,
    ) -> Held {
        let metrics = TermMetrics::elected(bucket, election);
        let on_end = metrics.clone();
        // A lease lost without our doing (expired, overwritten) ends the term here.
        lease.on_end(move |r| on_end.ended(LostReason::from(r)));
        Held {
            metrics,
            term: Term::new(lease.origin()),
            id,
            lease,
            registration: Mutex::new(registration),
            value: Mutex::new(value),
            ended: Mutex::new(None),
            end: CancellationToken::new(),
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn term(&self) -> Term {
        self.term
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.lease.deadline()
    }

    /// The leader lease: the leader key, its revision, guarded writes.
    pub(crate) fn lease(&self) -> &Lease {
        &self.lease
    }

    pub(crate) fn value(&self) -> String {
        locked(&self.value).clone()
    }

    /// Takes the candidate registration out of the leadership (to campaign again with it).
    pub(crate) fn take_registration(&self) -> Option<Lease> {
        locked(&self.registration).take()
    }

    /// Whether nothing is left to do when the handle goes: ended, and deregistered.
    pub(crate) fn settled(&self) -> bool {
        locked(&self.ended).is_some() && locked(&self.registration).is_none()
    }

    /// Whether we still lead: not ended by us, lease held and before its deadline.
    pub(crate) fn is_valid(&self) -> bool {
        locked(&self.ended).is_none() && self.lease.is_held()
    }

    pub(crate) fn reason(&self) -> Option<LostReason> {
        let own = *locked(&self.ended);
        own.or_else(|| self.lease.loss_reason().map(LostReason::from))
    }

    /// Ends the leadership with `reason` unless it already ended (a lost lease keeps its
    /// own reason); whether it was held until now.
    pub(crate) fn end(&self, reason: LostReason) -> bool {
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

    pub(crate) async fn lost(&self) -> LostReason {
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
        self.release(reason, self.lease.release_shared()).await
    }

    /// Steps down by handing the leader key to `to`, bound to its `session`: one write (the
    /// successor takes it over without one). Returns the hand-over's revision, when it was
    /// written.
    pub(crate) async fn hand_over_bound(&self, to: Record, session: SessionId) -> Option<Revision> {
        let release = self.lease.release_shared();
        let release = release.hand_over_bound(to.to_bytes(), session);
        self.release(LostReason::Resigned, release).await
    }

    /// Ends the leadership with `reason`, then runs `release` (bounded by the lease
    /// deadline) and removes the candidate registration. Returns the revision the release
    /// left, when it left one.
    async fn release(&self, reason: LostReason, release: Release) -> Option<Revision> {
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

    pub(crate) async fn proclaim(&self, value: String) -> Result<(), Error> {
        *locked(&self.value) = value.clone();
        let body = self.record(None).to_bytes();
        if !self.is_valid() {
            return Err(Error::lost("leadership already ended"));
        }
        // `set_value` tries until the write is acknowledged or the lease ends.
        match tokio::time::timeout_at(self.deadline(), self.lease.set_value(body)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == kvtk_core::ErrorKind::LeaseLost => Err(Error::lost(
                "leadership lost before the value was published",
            )),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(Error::lost("lease expired before the write was confirmed")),
        }
    }

    /// Ends the leadership and releases the lease with a hand-over to candidate `to` (whose
    /// registration the caller checked): the record naming `to`, with `transfer_ttl`.
    pub(crate) async fn hand_over(&self, to: &str, transfer_ttl: Duration) -> Result<(), Error> {
        let hand_over = self
            .lease
            .release_shared()
            .hand_over(self.record(Some(to.to_string())).to_bytes(), transfer_ttl);
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
            registration: None,
        }
    }
}
