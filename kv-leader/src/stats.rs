//! Counters of an election handle, for measuring herd effects.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one [`Election`](crate::Election) handle (all its candidates), for measuring
/// herd effects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Conditional writes sent to take the leader key (about one per term: only the first
    /// candidate in line races).
    pub cas_attempts: u64,
    /// Of those, the ones another candidate won.
    pub cas_conflicts: u64,
    /// Elections won (terms started).
    pub terms_won: u64,
    /// Leader-key watches started (one per campaign and per observer).
    pub watches: u64,
}

/// The live counters behind [`Stats`], shared by an election handle's clones.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) cas_attempts: AtomicU64,
    pub(crate) cas_conflicts: AtomicU64,
    pub(crate) terms_won: AtomicU64,
    pub(crate) watches: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            cas_attempts: self.cas_attempts.load(Ordering::Relaxed),
            cas_conflicts: self.cas_conflicts.load(Ordering::Relaxed),
            terms_won: self.terms_won.load(Ordering::Relaxed),
            watches: self.watches.load(Ordering::Relaxed),
        }
    }
}
