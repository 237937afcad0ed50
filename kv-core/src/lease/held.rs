//! The held [`Lease`]: what its holder asks (held? until when? lost?), value changes,
//! guarded writes, and the way out (release, orphan, drop).

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::keeper::Keeper;
use super::release::Release;
use super::state::{LostReason, State, Step};
use crate::error::{Error, ErrorKind, Operation};
use crate::key::Key;
use crate::retry::Backoff;
use crate::revision::{Expect, Revision};

/// How often a guarded write tries when renewals of ours keep moving the lease key.
const GUARDED_ATTEMPTS: usize = 3;

/// A key this process keeps alive (see the [module docs](crate::lease)). Dropping it
/// releases it in the background (a task owned by the [`Keeper`]); prefer
/// [`release`](Lease::release), which reports how it went.
#[must_use = "dropping a lease releases it"]
#[derive(Debug)]
pub struct Lease {
    st: Arc<State>,
    keeper: Keeper,
}

impl Lease {
    /// A lease whose creation `st` the keeper already renews.
    pub(super) fn new(st: Arc<State>, keeper: Keeper) -> Lease {
        Lease { st, keeper }
    }

    /// The lease's key.
    pub fn key(&self) -> &Key {
        &self.st.key
    }

    /// The revision of the write that created the lease: a fencing token that strictly
    /// increases between leases on the bucket.
    pub fn origin(&self) -> Revision {
        self.st.origin
    }

    /// The key's latest revision as far as we know (changes with every renewal).
    pub fn revision(&self) -> Revision {
        self.st.revision()
    }

    /// The keeper that made the lease.
    pub(super) fn keeper(&self) -> &Keeper {
        &self.keeper
    }

    /// The lease's shared state.
    pub(super) fn state(&self) -> &Arc<State> {
        &self.st
    }

    /// The lease's timing.
    pub(super) fn config(&self) -> super::clock::LeaseConfig {
        self.st.config()
    }

    /// Whether the lease is bound to a session ([`Session::bind`](super::Session::bind)):
    /// no TTL, no renewal of its own, ended with its session; its [`nonce`](Self::nonce) is
    /// the session's id.
    pub fn is_bound(&self) -> bool {
        self.st.is_bound()
    }

    /// The lease's random identity, carried on each of its writes.
    pub fn nonce(&self) -> u128 {
        self.st.nonce()
    }

    /// The local deadline (monotonic clock): after it the lease must be considered lost.
    pub fn deadline(&self) -> Instant {
        self.st.deadline()
    }

    /// Whether the lease is still held: no loss was signalled and the deadline has not
    /// passed (checked here, so it is right even while the keeper is starved).
    pub fn is_held(&self) -> bool {
        self.st.is_valid()
    }

    /// Why the lease ended, once it did.
    pub fn loss_reason(&self) -> Option<LostReason> {
        self.st.reason()
    }

    /// Completes when the lease is lost or released — at the latest at its deadline, also
    /// while the keeper is starved.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub fn lost(&self) -> impl Future<Output = LostReason> + Send + 'static {
        self.st.clone().ended()
    }

    /// A token cancelled when the lease is lost or released: hand it to work that must
    /// stop then.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.st.token()
    }

    /// Runs `hook` once, with the reason, when the lease ends — lost or released — before
    /// [`lost`](Lease::lost) completes; at once if it has already ended. It runs on whichever
    /// task notices the end (often the keeper's), so it must be quick and must not block:
    /// update a gauge, send on a channel. A lease whose deadline passed ends when the keeper
    /// or a `lost()` waiter notices, at the latest at its next renewal time.
    pub fn on_end(&self, hook: impl FnOnce(LostReason) + Send + 'static) {
        self.st.on_end(hook);
    }

    /// Rewrites the lease's value now (conditional on our revision, like a renewal, which it
    /// also is); later renewals carry the new value. A write whose answer was lost, or that
    /// met a spurious conflict on a replicated bucket, is tried again (the [default
    /// backoff](crate::Backoff::DEFAULT)) until it is acknowledged or the lease ends, which
    /// fails with [`ErrorKind::LeaseLost`]. A value the server refuses for good (too large,
    /// say) fails at once with the server's error, and the lease keeps its value.
    ///
    /// # Cancel safety
    /// Not cancel safe: the write may be applied although the future was dropped; the next
    /// renewal then recognises it. The lease itself is unharmed: its write slot is given
    /// back and its renewals go on.
    pub async fn set_value(&self, value: impl Into<Bytes>) -> Result<Revision, Error> {
        let value = value.into();
        let mut retrying = Backoff::DEFAULT.start();
        loop {
            match self.keeper.write_now(&self.st, Some(value.clone())).await {
                Ok(Step::Written) => return Ok(self.revision()),
                Ok(Step::Gone(_)) => return Err(self.lost_error()),
                Ok(Step::Retry) => {
                    let next = retrying.next_attempt().min(self.deadline());
                    tokio::time::sleep_until(next).await;
                }
                Err(e) => return Err(e.with_op(Operation::Lease)),
            }
        }
    }

    fn lost_error(&self) -> Error {
        let why = self.loss_reason().unwrap_or(LostReason::Deadline);
        Error::new(ErrorKind::LeaseLost, format!("lease lost: {why}"))
            .with_op(Operation::Lease)
            .with_key(self.st.key.as_str())
    }

    /// Writes `key` only while the lease is held: the write is conditional on the lease
    /// key's revision, so once the lease was removed or expired — even before we noticed —
    /// it fails with [`ErrorKind::LeaseLost`]. A renewal landing in between is waited for and
    /// the write retried.
    ///
    /// # Cancel safety
    /// Not cancel safe: the write may be applied even if the future is dropped.
    pub async fn put_guarded(
        &self,
        key: impl AsRef<str>,
        value: impl Into<Bytes>,
    ) -> Result<Revision, Error> {
        let value = value.into();
        let key = key.as_ref();
        for _ in 0..GUARDED_ATTEMPTS {
            if !self.is_held() {
                return Err(self.lost_error());
            }
            let rev = self.revision();
            let res = self
                .keeper
                .bucket()
                .put(key, value.clone())
                .expect_on(self.st.key.as_str(), Expect::Revision(rev))
                .await;
            match res {
                Err(e) if e.is_conflict() => {
                    if !self.st.renewed_past(rev).await {
                        return Err(self.lost_error());
                    }
                }
                other => return other,
            }
        }
        Err(self.lost_error())
    }

    /// Marks the release that dropping the lease starts as completed
    /// ([`Release::completed`]): for a recipe whose handle's drop is a deliberate departure
    /// (a member), so that observers tell it from a removal by someone else.
    pub fn complete_on_drop(&self) {
        self.st.set_complete_on_drop();
    }

    /// Starts releasing the lease; `.await` it. See [`Release`].
    pub fn release(self) -> Release {
        self.release_shared()
    }

    /// Starts releasing a lease that is shared (behind an `Arc`); `.await` it. Renewals stop
    /// at once, even if the release is never awaited. Afterwards the lease is not held, its
    /// guarded writes fail, and dropping it does nothing more.
    pub fn release_shared(&self) -> Release {
        self.st.stop();
        Release::new(self.st.clone(), self.keeper.clone())
    }

    /// Stops renewing the lease without removing its key, which the server then expires
    /// after its TTL (etcd's `Orphan`).
    pub fn orphan(self) {
        self.st.stop();
        self.st.lose(LostReason::Released);
        self.st.settle();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Released or orphaned already: both stop the renewals first.
        if self.st.is_stopped() {
            return;
        }
        let mut release = self.release_shared();
        if self.st.completes_on_drop() {
            release = release.completed();
        }
        if self.st.has_bound() {
            // A session's: its bound leases dropped with it are released first.
            release = release.after_bound_releases();
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                self.keeper.inner.tracker.spawn_on(
                    async move {
                        let _ = release.await;
                    },
                    &rt,
                );
            }
            // No runtime: nothing renews it any more; the key expires by its TTL.
            Err(_) => {
                self.st.lose(LostReason::Released);
                self.st.settle();
            }
        }
    }
}

impl crate::txn::Txn {
    /// Commits only while `lease` is still held: the transaction is conditional on the
    /// lease key being at our revision (etcd's `IsOwner`). A renewal landing between this
    /// call and the commit makes the commit conflict; build the transaction again then.
    pub fn if_held(self, lease: &Lease) -> Self {
        self.check(lease.key().as_str(), Expect::Revision(lease.revision()))
    }
}
