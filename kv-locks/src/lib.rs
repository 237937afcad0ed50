//! # kv-locks
//!
//! Distributed mutex and semaphore on a NATS JetStream KV bucket: server-side leases with
//! renewal, self-demotion before the server can expire them, fencing tokens, and fair FIFO
//! hand-off without polling or herds.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use kv_core::Kv;
//! use kv_locks::{Fence, Locks, Released};
//!
//! let kv = Kv::connect("nats://127.0.0.1:4222").await?;
//! let locks = Locks::open(&kv, "locks").await?;
//! let reindex = locks.mutex("jobs.reindex")?;
//!
//! let guard = reindex.lock().ttl(Duration::from_secs(10)).await?;
//! let fence = Fence::new(); // lives with the protected resource
//! guard
//!     .run_while_held(async {
//!         // every write to the resource carries the token
//!         fence.admit(guard.token())
//!     })
//!     .await??;
//! assert_eq!(guard.release().await?, Released::Released);
//! # Ok(()) }
//! ```
//!
//! ## Protocol
//!
//! Lock `name` lives under `<name>.` in a bucket with history 1 and per-key TTLs (see
//! [`LockName`] for the key layout). Every handle owns one queue key, `<name>._q.<nonce>`,
//! whose value names the holder. The **ticket** of an acquisition is the revision of the
//! write that put it into the queue; the live entries with the lowest tickets hold the lock
//! (one for a [`Mutex`], N for a [`Semaphore`]). The ticket is the [`Token`].
//!
//! - **Uncontended: one write to acquire, one to release.** Acquire is a write of our entry
//!   conditional on the lock's last revision being one at which the queue was empty
//!   (`expect_on(<name>.*.*, L)`); release is a delete conditional on the same filter, whose
//!   success proves the queue is empty again and yields the next `L`. A handle without a
//!   known `L` reads one snapshot first.
//! - **Contended: a queue.** A waiter writes its entry, takes one snapshot, and watches only
//!   its predecessor. One release wakes exactly one waiter, which becomes holder without any
//!   further write: it has been renewing its own entry all along.
//! - **Leases.** Entries carry a TTL; holders and waiters renew them (CAS on their own
//!   revision). The server expires a dead client's entry; the next waiter sees the expiry
//!   marker at once.
//!
//! See the `acquire` and `guard` sources for the details and the reasons.
//!
//! ## Guarantees and limits
//!
//! - **Which clock decides.** Expiry is decided by the *server's* clock alone. The client
//!   decides when to stop believing it holds the lock on its *monotonic* clock: at
//!   `send time of the last acknowledged write + TTL − margin` ([`lease`]). The two clocks
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
#![doc(test(attr(deny(warnings), allow(dead_code))))]

mod acquire;
mod entry;
pub mod error;
mod fence;
mod guard;
pub mod lease;
mod locks;
mod names;
mod shared;
#[doc(hidden)]
pub mod stats;
mod token;
mod value;

pub use acquire::Acquire;
pub use error::{Error, ErrorKind};
pub use fence::{Fence, KvFence};
pub use guard::{Guard, Released};
pub use lease::LeaseConfig;
pub use locks::{Locks, Mutex, Semaphore, DEFAULT_MARKER_TTL, DEFAULT_TTL};
pub use names::{LockName, MAX_NAME_LEN};
pub use token::Token;
pub use value::Holder;
