//! A held lock: the [`Guard`] over the queue entry's lease, and its release.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use kvtk_core::lease::{Lease, LostReason};
use kvtk_core::{Expect, Revision};
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind};
use crate::metrics::HoldTimer;
use crate::shared::{Shared, Slot};
use crate::token::Token;

/// How a release went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Released {
    /// The lock was held until the release, and our entry was removed.
    Released,
    /// The lock had already been lost (loss was signalled before the release): work done
    /// under it may have overlapped with another holder's. Nothing of another holder's was
    /// touched.
    AlreadyLost,
}

/// A held lock (a mutex, a semaphore permit, or a read or write lock). Dropping it releases
/// in the background; prefer [`release`](Guard::release), which reports how it went.
///
/// The lock's queue entry is a [`Lease`] that the lease keeper of the
/// [`Locks`](crate::Locks) renews every `renew_every`; loss (see [`lost`](Guard::lost)) is
/// reported at the latest at the lease deadline — the send time of the last successful
/// write plus TTL − margin on the monotonic clock — also when the network is gone, and at once when
/// the entry turns out to have been removed (a forced release) or expired. A runtime stalled
/// past the deadline sees loss when it wakes; it never renews late.
#[must_use = "dropping the guard releases the lock at once"]
#[derive(Debug)]
pub struct Guard {
    shared: Arc<Shared>,
    lease: Lease,
    /// The lock's last revision when we took it alone (the release can then prove the queue
    /// empty again and keep the next acquisition on the fast path).
    alone: Option<Revision>,
    /// The handle's slot: one acquisition or guard at a time per handle.
    slot: OwnedMutexGuard<Slot>,
    /// Times the hold ([`crate::metrics::LOCK_HOLD`]), also when the guard is dropped.
    hold: HoldTimer,
}

impl Guard {
    pub(crate) fn new(
        shared: Arc<Shared>,
        lease: Lease,
        slot: OwnedMutexGuard<Slot>,
        alone: Option<Revision>,
    ) -> Guard {
        Guard {
            lease,
            alone,
            hold: HoldTimer::start(shared.metrics.clone()),
            shared,
            slot,
        }
    }

    /// The fencing token: pass it with every write to the protected resource, which rejects
    /// tokens lower than the highest it has seen ([`Fence`](crate::Fence)).
    pub fn token(&self) -> Token {
        Token::new(self.lease.origin())
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        self.shared.name.as_str()
    }

    /// Whether the lock is still held: loss has not been signalled and the lease deadline
    /// (monotonic clock) has not passed — checked here, so it is right even while the
    /// keeper is starved.
    pub fn is_held(&self) -> bool {
        self.lease.is_held()
    }

    /// The current lease deadline: after it the lock must be considered lost.
    pub fn deadline(&self) -> Instant {
        self.lease.deadline()
    }

    /// Why the lock was lost, once it was.
    pub fn loss_reason(&self) -> Option<LostReason> {
        self.lease.loss_reason()
    }

    /// Completes when the lock is lost (or released), with the reason.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub fn lost(&self) -> impl Future<Output = LostReason> + Send + 'static {
        self.lease.lost()
    }

    /// A token cancelled when the lock is lost or the guard is released or dropped: hand it
    /// to work that must stop then.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.lease.cancellation_token()
    }

    /// The queue entry's lease (for guarded transactions: `txn.if_held(guard.lease())`).
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Runs `work` while the lock is held: returns its output, or [`ErrorKind::Lost`] (and
    /// drops `work`) as soon as the lock is lost.
    ///
    /// # Cancel safety
    /// Cancel safe as far as the lock goes; `work` is dropped with it.
    pub async fn run_while_held<F: Future>(&self, work: F) -> Result<F::Output, Error> {
        if !self.is_held() {
            return Err(self.lost_error());
        }
        tokio::select! {
            biased;
            _ = self.lease.lost() => Err(self.lost_error()),
            out = work => Ok(out),
        }
    }

    fn lost_error(&self) -> Error {
        Error::new(
            ErrorKind::Lost,
            format!(
                "lock {} lost: {}",
                self.shared.name,
                self.loss_reason().unwrap_or(LostReason::Deadline)
            ),
        )
    }

    /// Writes `key` only while we still hold the lock: the write is conditional on our own
    /// queue entry's revision, so after our entry was removed or expired — even if we did
    /// not notice yet — it fails with [`ErrorKind::Lost`].
    ///
    /// The key must not be one of the lock's own keys.
    ///
    /// # Cancel safety
    /// Not cancel safe: the write may be applied even if the future is dropped.
    pub async fn put_guarded(
        &self,
        key: impl AsRef<str>,
        value: impl Into<Bytes>,
    ) -> Result<Revision, Error> {
        self.lease
            .put_guarded(key, value)
            .await
            .map_err(|e| match e.kind() {
                kvtk_core::ErrorKind::LeaseLost => self.lost_error(),
                _ => e.into(),
            })
    }

    /// Releases the lock: deletes our entry, conditional on its revision (never a blind
    /// delete; another holder's entry cannot be touched). A delete whose acknowledgement was
    /// lost is recognised by the tombstone it left.
    ///
    /// # Cancel safety
    /// Not cancel safe: the delete may be applied even if the future is dropped; the handle's
    /// next acquisition copes with either outcome.
    pub async fn release(self) -> Result<Released, Error> {
        let Guard {
            shared,
            lease,
            alone,
            mut slot,
            hold,
        } = self;
        let token = lease.origin().get();
        // Alone and never renewed: the lock's keys are still where we left them, so the
        // release can prove the queue empty for the next fast path.
        let alone = alone.filter(|_| lease.revision() == lease.origin());
        let mut release = lease.release().completed();
        // On a quiet bucket the tombstone's revision is the proof (see `Slot::quiet_release`).
        if let Some(a) = alone.filter(|_| !slot.quiet_release) {
            release = release.first_expect_on(shared.all_filter().clone(), Expect::Revision(a));
        }
        let held_ms = hold.elapsed().as_millis() as u64;
        shared.bump(crate::stats::Stat::ReleaseWrite);
        // Unboxed: the guard's release is an `async fn`, and awaiting the `Release` would
        // allocate its future once more.
        let r = release.send().await.map_err(|e| {
            tracing::warn!(lock = %shared.name, token, error = %e, "release failed; kvtk-core's warning for the entry says how it ends (its ttl, or its session)");
            Error::from(e)
        })?;
        slot.own_last = r.tombstone;
        slot.quiet_release = alone
            .zip(r.tombstone)
            .is_some_and(|(a, t)| crate::shared::follows(t, a));
        slot.fast = (r.first_expectation_met || slot.quiet_release)
            .then_some(r.tombstone)
            .flatten();
        hold.finish(if r.was_held { "released" } else { "lost" });
        if r.was_held {
            tracing::info!(lock = %shared.name, token, held_ms, clean = slot.fast.is_some(), "released");
            Ok(Released::Released)
        } else {
            tracing::info!(lock = %shared.name, token, held_ms, "released after loss");
            Ok(Released::AlreadyLost)
        }
    }
}
