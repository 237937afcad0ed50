//! State shared by a lock handle, its acquisitions and guards.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kvtk_core::lease::{Keeper, LeaseConfig, Sessions};
use kvtk_core::{Bucket, Key, Revision};

use crate::names::LockName;
use crate::rule::Kind;
use crate::stats::{Stat, Stats};
use crate::value::{encode, Identity};

/// What every handle of one [`Locks`](crate::Locks) shares (as configured when the handle
/// was made): one allocation per `Locks`, not per handle.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    pub(crate) bucket: Bucket,
    /// Renews the handles' queue entries (one keeper per [`Locks`](crate::Locks)).
    pub(crate) keeper: Keeper,
    /// The owner's session the queue entries are bound to ([`Locks::bind_to_session`](crate::Locks::bind_to_session)).
    pub(crate) sessions: Option<Sessions>,
    pub(crate) holder: Arc<Identity>,
    pub(crate) lease: LeaseConfig,
    pub(crate) tombstone_ttl: Duration,
    pub(crate) marker_ttl: Duration,
    /// The bucket is replicated: its server checks a wildcard expectation against stored
    /// messages only, not against a matching write still in flight (nats-server 2.15.1), so
    /// the one-write fast path (and the release's empty-queue proof) cannot prove "alone".
    pub(crate) replicated: bool,
    pub(crate) stats: Arc<Stats>,
}

/// One lock handle: a mutex, a semaphore, or one side of a read-write lock, with its own
/// queue key; what its `Locks` configured is in [`Common`] (reached through `Deref`).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) common: Arc<Common>,
    /// The lock's name, carrying this handle's queue key `<name>._q.<handle nonce>`
    /// ([`own_key`](Self::own_key)).
    pub(crate) name: LockName,
    /// [`LockName::all_filter`], made once, by the first fast-path write or clean release
    /// (every later one names it too); a handle that never had one keeps no filter.
    all_filter: OnceLock<Arc<str>>,
    pub(crate) kind: Kind,
    /// The handle's metric labels.
    pub(crate) metrics: crate::metrics::Labels,
    /// One acquisition or guard at a time per handle: they all share `own_key`.
    pub(crate) slot: Arc<tokio::sync::Mutex<Slot>>,
}

impl std::ops::Deref for Shared {
    type Target = Common;
    fn deref(&self) -> &Common {
        &self.common
    }
}

/// What a handle remembers between acquisitions. Only the owner of the slot lock touches it.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// Our own key's revision as far as we know (the tombstone of our last release). Wrong
    /// guesses cost a leader read, never correctness: every write on it is conditional.
    pub(crate) own_last: Option<Revision>,
    /// The fast path's expectation: the lock's last revision at a moment its queue was known
    /// to be empty (taken from our own clean release). Stale values only cause a conflict.
    pub(crate) fast: Option<Revision>,
    /// Nothing was written to the bucket between our last clean release and the fast-path
    /// write after it: the next fast-path write bets on that again, expecting our own key
    /// where a wildcard over the lock's keys costs the server more, and lands at the
    /// revision right after our tombstone if nothing was written meanwhile — the proof that
    /// the queue is still empty (see [`crate::acquire`]).
    pub(crate) quiet_acquire: bool,
    /// Nothing was written to the bucket while we last held alone: our tombstone came right
    /// after the revision we were alone at. The next release bets on that again and
    /// expects our own key only; its tombstone's revision is then the proof.
    pub(crate) quiet_release: bool,
    /// The semaphore's permit count has been checked against the bucket.
    pub(crate) permits_checked: bool,
}

/// `next` is the revision right after `prev`: nothing was written to the bucket between.
pub(crate) fn follows(next: Revision, prev: Revision) -> bool {
    prev.get().checked_add(1) == Some(next.get())
}

impl Shared {
    /// One handle of a lock named `name` (carrying the handle's queue key), of `kind`.
    pub(crate) fn new(
        common: Arc<Common>,
        name: LockName,
        kind: Kind,
        metrics: crate::metrics::Labels,
        slot: Arc<tokio::sync::Mutex<Slot>>,
    ) -> Shared {
        Shared {
            common,
            name,
            all_filter: OnceLock::new(),
            kind,
            metrics,
            slot,
        }
    }

    /// The filter of every key of the lock ([`LockName::all_filter`]), made on first use.
    pub(crate) fn all_filter(&self) -> &Arc<str> {
        self.all_filter
            .get_or_init(|| self.name.all_filter().into())
    }

    /// `<name>._q.<handle nonce>`: this handle's queue entry, reused by every acquisition
    /// (and shared with the lease of each, not copied).
    pub(crate) fn own_key(&self) -> &Key {
        self.name.carried_key()
    }

    pub(crate) fn bump(&self, s: Stat) {
        self.stats.bump(s);
    }

    /// The permit count of a semaphore handle.
    pub(crate) fn permits(&self) -> Option<u32> {
        match self.kind {
            Kind::Permit(n) => Some(n),
            Kind::Exclusive | Kind::Shared => None,
        }
    }

    /// The value of a new queue entry; `multi`: the names of every lock of its multi-lock.
    pub(crate) fn entry_value(&self, multi: &[String]) -> bytes::Bytes {
        let since_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        encode(&self.holder, self.kind.tag(), since_ms, multi)
    }
}
