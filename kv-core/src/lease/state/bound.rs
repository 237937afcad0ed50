//! A session's side of the leases bound to it: taking them into its bound set and letting
//! them leave, and its close's wait for the releases of those dropped just before (which a
//! recipe may mark completed). Pure, like the rest of `state.rs`.

use std::sync::{Arc, Weak};

use tokio::time::Instant;

use super::{LostReason, State, Tie, RENEWAL_WAIT};
use crate::key::Key;
use crate::revision::Revision;

impl State {
    /// Takes a bound lease into this session's bound set: its slot there, or the reason
    /// the session ended (then it is not taken in).
    pub(super) fn join(&self, lease: Weak<State>) -> (u32, Option<LostReason>) {
        let l = self.live();
        if l.reason.is_some() {
            return (u32::MAX, l.reason);
        }
        let Some(own) = self.own() else {
            return (u32::MAX, None);
        };
        let mut r = own.renewal();
        let bound = r.bound.get_or_insert_with(Box::default);
        // No slot left (over four billion bound leases) keeps it out of the set.
        (bound.insert(lease).unwrap_or(u32::MAX), None)
    }

    /// A bound lease leaves its session's bound set (a lease that left already, or was
    /// never in it, changes nothing).
    pub(super) fn leave(&self) {
        let Tie::Bound { session, slot } = &self.tie else {
            return;
        };
        let Some(own) = session.own() else { return };
        if let Some(b) = own.renewal().bound.as_mut() {
            b.remove(*slot, self);
        }
    }

    /// A released bound lease's removal is settled (written, found done, or given up): it
    /// leaves its session's bound set. Nothing for a lease of its own.
    pub(in crate::lease) fn settle(&self) {
        self.leave();
    }

    /// Whether a lease bound to this one (a session's) — held, or released and its removal
    /// not yet settled — is the entry on `key` created at `origin`: an entry the session
    /// knows, which a creation must never take for its own lost write.
    pub(in crate::lease) fn binds(&self, key: &Key, origin: Revision) -> bool {
        // Upgraded under the session's lock, dropped after it (a last reference's drop
        // leaves the set, which takes that lock).
        let children: Vec<Arc<State>> = {
            let Some(own) = self.own() else { return false };
            let r = own.renewal();
            let Some(bound) = r.bound.as_ref() else {
                return false;
            };
            bound.iter().filter_map(Weak::upgrade).collect()
        };
        children.iter().any(|c| c.origin == origin && c.key == *key)
    }

    /// Whether leases are bound to this one (a session's).
    pub(in crate::lease) fn has_bound(&self) -> bool {
        self.own().is_some_and(|own| own.renewal().bound.is_some())
    }

    /// Whether the lease's release is under way: renewals stopped, the release not yet
    /// written (or writing).
    fn is_releasing(&self) -> bool {
        let l = self.live();
        l.stopped && (l.busy || l.reason.is_none())
    }

    /// A lease bound to this one (a session's) whose release is under way.
    fn releasing_bound(&self) -> Option<Arc<State>> {
        // Upgraded under the session's lock, checked after it (each child's own lock).
        let children: Vec<Arc<State>> = {
            let own = self.own()?;
            let r = own.renewal();
            r.bound.as_ref()?.iter().filter_map(Weak::upgrade).collect()
        };
        children.into_iter().find(|c| c.is_releasing())
    }

    /// Completes once no lease bound to this session is being released, or after
    /// [`RENEWAL_WAIT`]: a session's close waits for them, so that its end never lands
    /// before a bound entry's own release (observers then see the entry leave, not expire).
    /// Bound leases still held are not waited for: they end with the session.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub(in crate::lease) async fn bound_released(&self) {
        let settled = async {
            while let Some(child) = self.releasing_bound() {
                let waits = child.waits();
                let notified = waits.settled.notified();
                if child.is_releasing() {
                    notified.await;
                }
            }
        };
        if tokio::time::timeout(RENEWAL_WAIT, settled).await.is_err() {
            tracing::debug!(key = %self.key, "closing the session with a bound lease's release still pending");
        }
    }

    /// Completes with `true` once a write of this lease (a session's renewal) sent at or
    /// after `since` was acknowledged — its deadline moved past `since` + TTL − margin —
    /// and with `false` if the lease ends first. Every write sent before `since` on the
    /// same connection has then been applied or dropped by the stream: it cannot land later.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub(in crate::lease) async fn confirmed_after(&self, since: Instant) -> bool {
        let waits = self.waits();
        let lost = self.lost_token();
        loop {
            let written = waits.settled.notified();
            if !self.is_valid() {
                return false;
            }
            if self.renewed_after(since) {
                return true;
            }
            tokio::select! {
                _ = written => {}
                _ = lost.cancelled() => return false,
                _ = tokio::time::sleep_until(self.deadline()) => {}
            }
        }
    }

    /// Whether a write of the lease sent at or after `since` was acknowledged: its deadline
    /// counts from that write's send time.
    pub(in crate::lease) fn renewed_after(&self, since: Instant) -> bool {
        self.deadline() >= since + self.config().validity()
    }

    /// Marks the lease's release when dropped as completed.
    pub(in crate::lease) fn set_complete_on_drop(&self) {
        self.live().complete_on_drop = true;
    }

    /// Whether the lease's release when dropped is marked completed.
    pub(in crate::lease) fn completes_on_drop(&self) -> bool {
        self.live().complete_on_drop
    }

    /// How many leases are bound to this one (a session's). Only for tests.
    #[cfg(test)]
    pub(in crate::lease) fn bound_count(&self) -> usize {
        let Some(own) = self.own() else { return 0 };
        let r = own.renewal();
        r.bound.as_ref().map_or(0, |b| b.len())
    }
}
