//! State shared by a lock handle, its acquisitions, guards and background tasks.

use std::sync::Arc;
use std::time::Duration;

use kv_core::{Bucket, Expect, Revision};
use tokio_util::task::TaskTracker;

use crate::lease::LeaseConfig;
use crate::names::LockName;
use crate::stats::{Stat, Stats};
use crate::value::Holder;

/// One lock handle: a mutex (1 permit) or a semaphore, with its own queue key.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) bucket: Bucket,
    pub(crate) name: LockName,
    pub(crate) permits: u32,
    /// `<name>._q.<handle nonce>`: this handle's queue entry, reused by every acquisition.
    pub(crate) own_key: String,
    pub(crate) holder: Holder,
    pub(crate) lease: LeaseConfig,
    pub(crate) tombstone_ttl: Duration,
    pub(crate) marker_ttl: Duration,
    pub(crate) tracker: TaskTracker,
    pub(crate) stats: Arc<Stats>,
    /// One acquisition or guard at a time per handle: they all share `own_key`.
    pub(crate) slot: Arc<tokio::sync::Mutex<Slot>>,
}

/// What a handle remembers between acquisitions. Only the owner of the slot lock touches it.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// Best guess of our own key's latest revision (a tombstone, usually). Wrong guesses
    /// cost one leader read and a retry, never correctness: every write on it is conditional.
    pub(crate) own_last: Option<Revision>,
    /// The fast path's expectation: the lock's last revision at a moment its queue was known
    /// to be empty (taken from our own clean release). Stale values only cause a conflict.
    pub(crate) fast: Option<Expect>,
    /// The semaphore's permit count has been checked against the bucket.
    pub(crate) permits_checked: bool,
}

impl Shared {
    pub(crate) fn bump(&self, s: Stat) {
        self.stats.bump(s);
    }
}
