//! Bound creations that end without their outcome (the future dropped mid-write, or an
//! error after a write whose acknowledgement was lost): [`Unsure`] hands the entry a write
//! of ours may have left to the keeper, which removes it in the background while the
//! session lives. A lease of its own needs none of this: its key expires with its TTL. A
//! bound entry has no TTL, and left alone it would stay for as long as its session — for a
//! lock's queue entry, blocking everyone behind it while its process lives.

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use super::super::keeper::Keeper;
use super::super::remove::remove_marked;
use super::super::state::State;
use super::mine::Mine;
use crate::bucket::Bucket;
use crate::key::Key;
use crate::retry::Backoff;

/// The entries a creation under way may leave; armed from the moment a write may have been
/// applied until the caller holds the lease or the write is known not to have been. Dropped
/// armed, it starts their removal on the keeper ([`Sweep`]). Empty (nothing cloned, nothing
/// to do) for leases of their own, the uncontended path.
#[derive(Default)]
pub(super) struct Unsure {
    /// The keeper, once a bound creation is followed.
    keeper: Option<Keeper>,
    orphans: Vec<Orphan>,
    armed: bool,
}

/// A write of ours that may have been applied: what recognises it once read back.
struct Orphan {
    key: Key,
    nonce: u128,
    value: Bytes,
    session: Arc<State>,
    /// The lowest revision its write (or writes) expected (0: no message).
    after: u64,
}

impl Orphan {
    fn mine(&self) -> Mine<'_> {
        Mine {
            nonce: self.nonce,
            value: &self.value,
            parent: Some(&self.session),
            after: self.after,
        }
    }
}

impl Unsure {
    /// Follows `keeper`'s creation of `key` with `nonce` and `value` if it is bound to
    /// `session` (nothing for a lease of its own); `after`: the revision its write expects.
    pub(super) fn add(
        &mut self,
        keeper: &Keeper,
        key: &Key,
        (nonce, value): (u128, &Bytes),
        session: Option<&Arc<State>>,
        after: u64,
    ) {
        if let Some(session) = session {
            self.keeper.get_or_insert_with(|| keeper.clone());
            self.orphans.push(Orphan {
                key: key.clone(),
                nonce,
                value: value.clone(),
                session: session.clone(),
                after,
            });
        }
    }

    /// A write expecting revision `after` (0: no message) is about to be sent: from now on
    /// it may be applied without our knowing.
    pub(super) fn sent(&mut self, after: u64) {
        self.armed = true;
        for o in &mut self.orphans {
            o.after = o.after.min(after);
        }
    }

    /// The outcome is known: the caller holds the lease, or nothing of ours was applied.
    pub(super) fn settled(&mut self) {
        self.armed = false;
    }
}

impl Drop for Unsure {
    fn drop(&mut self) {
        let Some(keeper) = self.keeper.as_ref().filter(|_| self.armed) else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let sweep = Sweep::new(keeper, std::mem::take(&mut self.orphans));
        keeper
            .inner
            .tracker
            .spawn_on(sweep.run(Instant::now()), &rt);
    }
}

/// The removal of an abandoned creation's entries, registered with the keeper's sweeps
/// (a new creation on one of its keys waits for it) until it is dropped.
struct Sweep {
    keeper: Keeper,
    orphans: Vec<Orphan>,
}

impl Sweep {
    fn new(keeper: &Keeper, orphans: Vec<Orphan>) -> Sweep {
        for o in &orphans {
            keeper.inner.sweeps.begin(&o.key);
        }
        Sweep {
            keeper: keeper.clone(),
            orphans,
        }
    }

    /// For each entry: renews its session now and waits until a renewal sent after `since`
    /// was acknowledged — our writes went out before it on the same connection, so none of
    /// them can land any more — then removes it if the stream leader shows it as one of
    /// ours. Nothing once the session ended: its entries ended with it.
    async fn run(self, since: Instant) {
        for o in &self.orphans {
            renew_now(&self.keeper, &o.session, since).await;
            if o.session.confirmed_after(since).await {
                remove(self.keeper.bucket(), o).await;
            }
        }
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        for o in &self.orphans {
            self.keeper.inner.sweeps.end(&o.key);
        }
    }
}

/// Renews `session` at once, unless a renewal sent after `since` was acknowledged already:
/// the sweep (and a new binding of the same key, which waits for it) then waits a round
/// trip, not up to the session's renewal interval. A renewal that fails leaves the wait to
/// the scheduled ones.
async fn renew_now(keeper: &Keeper, session: &Arc<State>, since: Instant) {
    if session.renewed_after(since) || !session.is_valid() {
        return;
    }
    let renewal = keeper.write_now(session, None);
    if let Ok(Err(e)) = tokio::time::timeout_at(session.deadline(), renewal).await {
        tracing::debug!(key = %session.key, error = %e, "renewing the session for a sweep failed; the scheduled renewal confirms it");
    }
}

/// Removes `o`'s entry if the stream leader shows it (conditionally on its revision, with
/// its own mark, as anyone removes an entry its owner left), retrying reads while the
/// session lives.
async fn remove(bucket: &Bucket, o: &Orphan) {
    let mut retrying = Backoff::DEFAULT.start();
    while o.session.is_valid() {
        let found = match bucket.get_from_leader(&o.key).await {
            Ok(found) => found,
            Err(e) if e.is_transient() => {
                retrying.pause().await;
                continue;
            }
            Err(e) => return warn(o, &e),
        };
        let Some(e) = found.filter(|e| o.mine().wrote(e)) else {
            return;
        };
        match remove_marked(bucket, &e).await {
            Ok(r) => {
                tracing::info!(key = %o.key, revision = e.revision().get(), outcome = ?r, "removed the entry of an abandoned creation")
            }
            Err(err) => warn(o, &err),
        }
        return;
    }
}

fn warn(o: &Orphan, e: &crate::error::Error) {
    tracing::warn!(key = %o.key, error = %e, "could not remove the entry of an abandoned creation; it ends with its session");
}
