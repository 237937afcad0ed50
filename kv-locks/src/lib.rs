#![doc = include_str!("../README.md")]
//!
//! ## Protocol
//!
//! Lock `name` lives under `<name>.` in a bucket with history 1 and per-key TTLs (see
//! [`LockName`] for the key layout). Every handle owns one queue key, `<name>._q.<nonce>`,
//! whose value names the holder. The **ticket** of an acquisition is the revision of the
//! write that put it into the queue; the live entries with the lowest tickets hold the lock
//! (a pure rule per kind decides: one for a [`Mutex`] or a writer, N for a [`Semaphore`],
//! every leading reader of a [`RwLock`]). The ticket is the [`Token`]; the ticket is the
//! entry's lease origin, carried on every write of the entry.
//!
//! - **Uncontended (single-node buckets): one write to acquire, one to release.** Acquire is
//!   a write of our entry conditional on the lock's last revision being one at which the
//!   queue was empty (`expect_on(<name>.*.*, L)`); release is a delete conditional on the same
//!   filter, whose success proves the queue is empty again and yields the next `L`. A handle
//!   without a known `L` reads one snapshot first. On a **quiet** bucket — nothing else was
//!   written to it during the handle's last lock + release — both writes expect our own key
//!   only, which costs the server less than a wildcard (measured: 0.5–3.5 % of a lock + release),
//!   and the revision a write lands at is the proof: `L + 1` means nothing at all was
//!   written since `L`. A write that lands later lost that bet: the entry is already in the
//!   queue and reads it (one read more), a release keeps no `L`, and the handle uses the
//!   wildcard until a lock + release sees the bucket quiet again. Replicated buckets have no
//!   fast path: their server checks a wildcard expectation against stored messages only, not
//!   against a matching write still in flight.
//! - **Contended: a queue.** A waiter writes its entry and follows the lock's keys on one
//!   watch (the last value of each key, then every write), taken again until its initial
//!   values hold its own entry — the watch's consumer may sit on a replica that lags the
//!   stream leader —, deciding
//!   again on each event; the next holder needs no further write: the lease keeper has been
//!   renewing its entry all along. On a replicated bucket waiters never decide from a
//!   direct-get snapshot, which any replica may serve and which says nothing of how stale
//!   it is (chaos on R3 found two holders from a snapshot that missed an entry ahead); and
//!   they take the watch's initial values whole, never reading on past them for their own
//!   entry, since a replaced revision of an entry ahead arrives only with its replacement
//!   (two holders in a 15-minute chaos run under a partition). The server places the
//!   watch's R1 consumer on any replica of the stream, so a waiter on a lagging follower
//!   waits for the replica instead of ending with `QueueEntryLost`.
//! - **Leases.** Entries are kvtk-core leases: one keeper per [`Locks`] renews them (CAS on
//!   their own revision). The server expires a dead client's entry; the waiters see the
//!   expiry marker at once.
//!
//! See the `acquire` and `guard` sources for the details and the reasons.
//!
//! ## Design notes (where this differs from the first sketch, and why)
//!
//! - **Key layout by depth.** Keys are `<name>._q.<handle>` and `<name>._s.permits`, and the
//!   lock's filter is `<name>.*.*`. A filter `<name>.>` would also match the keys of a lock
//!   named `<name>.x` (spurious conflicts), and `<name>.q.>` would match the queue of a lock
//!   named `<name>.q`. Name tokens starting with `_` are refused.
//! - **"Alone" revision for the clean release.** A release conditional on the lock filter
//!   being at *our last write* does not prove the queue empty: a waiter may have entered
//!   before our last renewal. The clean release instead expects the revision at which we
//!   *knew* we were alone (our fast-path write, or a snapshot showing only us), and is not
//!   tried after our first renewal. It falls back to a delete conditional on our own
//!   revision.
//! - **A rewritten key is a removed entry.** With history 1, a release followed at once by a
//!   new acquisition from the same handle replaces the tombstone before a watcher reads it;
//!   the watcher then only sees a `Put` with a new, higher ticket. Waiters treat that as the
//!   old entry's removal (renewals keep the ticket and are ignored).
//! - **Tombstones expire.** A release's tombstone carries a TTL (default: the bucket's marker
//!   TTL), so the keys of handles of exited processes disappear instead of growing every
//!   snapshot.
//! - **A recognised lost-ack entry counts from its first send.** Every write of a lease is
//!   conditional and carries the lease's nonce, so an entry found with our nonce was written
//!   by one of our sends, none earlier than the first.
//! - **Every waiter sees every queue event** (one consumer each, as before): events cost no
//!   writes or reads, and only the entry the rule names becomes holder.
//!
//! ## Guarantees and limits
//!
//! - **Which clock decides.** Expiry is decided by the *server's* clock alone. The client
//!   decides when to stop believing it holds the lock on its *monotonic* clock: at
//!   `send time of the last acknowledged write + TTL − margin` ([`kvtk_core::lease`]). The two clocks
//!   are never compared; counting from the send time makes the client's deadline come first
//!   as long as the clocks' rates differ by less than the margin allows.
//! - **TTL** (whole seconds ≥ 1, default 10 s): how long a silent holder keeps the lock.
//!   A crashed holder is replaced within TTL + about one second (the server checks expiry
//!   once a second). **Margin** (default TTL/10, 100 ms..2 s): how much earlier than the
//!   server the client gives up; it must cover clock-rate drift and the time work needs to
//!   notice [`Guard::lost`].
//! - **Mutual exclusion from leases alone is only as good as the margin versus process
//!   pauses.** A holder paused longer than the margin just before a write can write after
//!   it lost the lock. Protected resources should check the [`Token`] ([`Fence`],
//!   [`KvFence`]) or take writes through [`Guard::put_guarded`] (conditional on the
//!   holder's entry, checked by the server).
//! - **Transient outages** shorter than TTL − margin do not lose the lock: renewals retry
//!   quickly until the deadline. Longer ones do, visibly ([`Guard::lost`]).
//! - **Ambiguous acknowledgements** (timeouts, leader failover) never lead to a blind write:
//!   every write is conditional, and a write whose ack was lost is recognised by the attempt
//!   nonce stored in the entry.
//! - **Durability.** Lock entries live in a JetStream stream. On a single-replica server
//!   killed uncleanly, acknowledged writes not yet synced to disk can be lost (including a
//!   release or an expiry); run the lock bucket with 3 replicas where that matters.
//! - **Stale reads** never decide ownership: snapshots are checked to include our own
//!   latest write, and holding is decided only by order of tickets among live entries.
//!
//! ## Errors
//! Every operation returns [`Error`]; match on [`Error::kind`].
//!
//! ## Permissions
//! A user of lock `L` in bucket `b` needs publish rights on `$KV.b.L.*.*` and the JetStream
//! API subjects listed in the table of the workspace's docs/deployment.md (as data:
//! `kvtk_tests::recipes::lock_user`); anything else is refused with
//! [`ErrorKind::PermissionDenied`]. Users of one lock can disturb each other's queue entries
//! (the server cannot tell a renewal from a delete); fencing tokens still strictly increase.
//!
//! ## Metrics
//! Wait, hold and hand-off times through the `metrics` facade, labelled by bucket and kind
//! (lock names only with [`Locks::metrics_per_lock`]): see [`metrics`] and the workspace's
//! docs/metrics.md table.
#![doc(test(attr(deny(warnings), allow(dead_code))))]
// docs.rs (nightly) marks items that need a feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod acquire;
mod checks;
mod error;
mod fence;
mod guard;
mod inspect;
mod locks;
pub mod metrics;
mod multi;
mod names;
mod queue;
mod rule;
mod shared;
#[cfg(feature = "testing")]
pub mod stats;
#[cfg(not(feature = "testing"))]
mod stats;
mod token;
mod value;
mod wait;

pub use acquire::Acquire;
pub use error::{Error, ErrorKind};
pub use fence::{Fence, KvFence};
pub use guard::{Guard, Released};
pub use inspect::{EntryKind, LockInfo, QueueEntry};
pub use kvtk_core::lease::{LeaseConfig, LostReason};
pub use locks::{Locks, Mutex, RwLock, Semaphore, DEFAULT_MARKER_TTL, DEFAULT_TTL};
pub use multi::{AcquireAll, MultiGuard, MultiLock, MAX_MULTI};
pub use names::{LockName, MAX_NAME_LEN};
pub use token::Token;
pub use value::Holder;
