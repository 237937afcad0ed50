//! Counters of the requests the lock protocol sends (for tests and benchmarks). Public only
//! with the `testing` feature; without it the counters are kept but nothing reads them.
#![cfg_attr(not(feature = "testing"), allow(dead_code, unreachable_pub))]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Request counters of one [`Locks`](crate::Locks) and every handle made from it.
#[derive(Debug, Default)]
pub struct Stats {
    acquire_writes: AtomicU64,
    release_writes: AtomicU64,
    snapshots: AtomicU64,
    watches: AtomicU64,
    enqueued: AtomicU64,
    acquired: AtomicU64,
    reaped: AtomicU64,
    quiet_bets: AtomicU64,
    quiet_bets_won: AtomicU64,
    changed: tokio::sync::Notify,
    /// Calls of [`Stats::wait_for`] under way: without one, a bump notifies nobody.
    waiting: AtomicUsize,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Conditional writes that try to enter or take the lock (fast path, queue entry).
    pub acquire_writes: u64,
    /// Deletes of our own entry (release, cancel, give-up).
    pub release_writes: u64,
    /// Renewal writes of the lease keeper (holders and waiters).
    pub renewals: u64,
    /// Snapshots of a lock's keys.
    pub snapshots: u64,
    /// Watches started.
    pub watches: u64,
    /// Entries that went into the queue (slow path).
    pub enqueued: u64,
    /// Acquisitions that succeeded.
    pub acquired: u64,
    /// Entries of ended sessions this client removed from a queue.
    pub reaped: u64,
    /// Fast-path entries that bet on a quiet bucket (expecting only their own key; see the
    /// crate docs' uncontended path).
    pub quiet_bets: u64,
    /// Of those, the ones that landed right after our last tombstone and so took the lock.
    pub quiet_bets_won: u64,
}

impl StatsSnapshot {
    /// Every write sent by the protocol except renewals.
    pub fn cas_writes(&self) -> u64 {
        self.acquire_writes + self.release_writes
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Stat {
    AcquireWrite,
    ReleaseWrite,
    Snapshot,
    Watch,
    Enqueued,
    Acquired,
    Reaped,
    QuietBet,
    QuietBetWon,
}

impl Stats {
    pub(crate) fn bump(&self, s: Stat) {
        let c = match s {
            Stat::AcquireWrite => &self.acquire_writes,
            Stat::ReleaseWrite => &self.release_writes,
            Stat::Snapshot => &self.snapshots,
            Stat::Watch => &self.watches,
            Stat::Enqueued => &self.enqueued,
            Stat::Acquired => &self.acquired,
            Stat::Reaped => &self.reaped,
            Stat::QuietBet => &self.quiet_bets,
            Stat::QuietBetWon => &self.quiet_bets_won,
        };
        c.fetch_add(1, Ordering::SeqCst);
        // A waiter counts itself before it reads the counters: one that this load misses
        // reads the new value.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::SeqCst);
        StatsSnapshot {
            acquire_writes: g(&self.acquire_writes),
            release_writes: g(&self.release_writes),
            renewals: 0,
            snapshots: g(&self.snapshots),
            watches: g(&self.watches),
            enqueued: g(&self.enqueued),
            acquired: g(&self.acquired),
            reaped: g(&self.reaped),
            quiet_bets: g(&self.quiet_bets),
            quiet_bets_won: g(&self.quiet_bets_won),
        }
    }

    /// Waits until `cond` holds for the counters (no timeout: wrap it in one).
    pub async fn wait_for(&self, mut cond: impl FnMut(&StatsSnapshot) -> bool) -> StatsSnapshot {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let s = self.snapshot();
            if cond(&s) {
                return s;
            }
            notified.await;
        }
    }
}

/// Uncounts a waiter when its [`Stats::wait_for`] ends or is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
