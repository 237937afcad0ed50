#![doc = include_str!("../README.md")]
//!
//! ## The API
//!
//! - **Campaign** ([`Election::campaign`]): wait until elected, get a [`Leadership`] with a
//!   strictly increasing [`Term`] (fencing token), a [`lost`](Leadership::lost) signal that
//!   self-demotes on the monotonic clock before the server can expire the lease,
//!   [`resign`](Leadership::resign) (the next candidate takes over within milliseconds),
//!   [`proclaim`](Leadership::proclaim) and [`transfer_to`](Leadership::transfer_to).
//! - **Observe** ([`Election::observe`]): every leader change, including
//!   [`Observed::NoLeader`]; [`Election::leader`] reads the present leader from the stream
//!   leader.
//! - **Run as leader** ([`Election::elector`]): campaign, run the work while leading, stop it
//!   before the lease can run out, release, campaign again; events for started/stopped
//!   leading and new leaders; graceful shutdown from any signal future.
//! - **Health** ([`Health`]): ready only while the lease is fresh.
//!
//! No polling: candidates wait on a watch of the leader key.
//!
//! **Default lease**: without [`ElectionBuilder::ttl`], [`DEFAULT_TTL`] on one server and
//! [`REPLICATED_TTL`](kvtk_core::lease::REPLICATED_TTL) on a replicated bucket (the lease
//! layer's [`LeaseConfig::default_for`]), decided when the first campaign or elector checks
//! the bucket; a TTL of its own that does not ride through a stream-leader election is
//! warned about then ([`LeaseConfig::warn_unless_rides_through`]).
//!
//! ## Protocol
//!
//! One bucket with history 1 and per-key TTLs ([`Election::bucket_config`]) holds, per
//! election `E`:
//!
//! - `E.leader`: JSON `{"id", "value", "transfer_to"?}`, the leader's
//!   [lease](kvtk_core::lease) (written with the lease TTL, marked with the lease's nonce and
//!   origin).
//! - `E.cand.<id>`: JSON `{"id", "value"}`, one lease per campaigning candidate (candidate
//!   list, transfer checks).
//!
//! Both are [`kvtk_core::lease::Lease`]s renewed by one [`kvtk_core::lease::Keeper`] per
//! [`Election`] handle (shared by its clones, created by the first campaign): kvtk-leader has
//! no renewal loop of its own.
//!
//! **Sessions** ([`ElectionBuilder::bind_to_session`]): registrations are bound to one
//! session per handle instead (the session's one renewal keeps them all), and
//! [`Leadership::step_down`] hands the leader key to the first live candidate in line in one
//! write, bound to that candidate's session, which takes it over without writing. The first
//! in line removes what ended sessions left. The workspace's docs/protocol.md ("Elections")
//! has the rules. Candidates then also need the session owner's permissions
//! (`kvtk_tests::recipes::bound`; docs/deployment.md).
//!
//! **Election.** Candidates watch `E.leader` (last value, then every change). When it holds no
//! live value — never written, a resignation's tombstone, an expiry marker — each candidate
//! creates the leader lease with one write expecting exactly that revision (or no message).
//! The server accepts one. The **term** is the lease's origin, the revision of the winning
//! write; every later write of the leadership carries it in its lease mark, and observers
//! read it from there ([`kvtk_core::Entry::lease`], never above the entry's own revision).
//! Since revisions of a bucket only grow, terms strictly increase. Only one candidate races:
//! registrations `E.cand.<id>` are leases whose origins order the candidates, and every
//! campaign's watch follows them with the leader key. When the key is free, the first live
//! registration other than the outgoing leader's races at once; each later place waits one
//! succession grace longer (`ElectionBuilder::succession_grace`, default the margin capped
//! at 250 ms), and after one TTL everyone races. A failover costs one write (counted in
//! [`Stats`]); a dead or cut-off successor delays it by about one grace, and its watched
//! expiry moves the line at once. A creating write whose acknowledgement was lost is recognised by the lease's
//! nonce, so a lost acknowledgement never looks like a lost election.
//!
//! **Lease.** The keeper rewrites the key every TTL/3, expecting its own last revision. The
//! local deadline is the send time of the last confirmed write + TTL − margin
//! ([`kvtk_core::lease::LeaseClock`]), on the monotonic clock; the server cannot expire the key
//! before send time + TTL. [`Leadership::lost`] fires at the deadline, and as soon as a
//! renewal conflicts because someone else wrote or removed the key.
//!
//! **Resign** marks the leadership lost, then releases the lease: a delete *expecting our
//! revision* (never blind): candidates see the tombstone at once. A crashed leader's key
//! expires after the TTL; the server's expiry marker wakes the candidates.
//!
//! **Transfer** checks that the target's registration is live, marks our leadership lost,
//! then releases the lease with a hand-over instead of a tombstone: the record with
//! `transfer_to`, expecting our revision, with the short transfer TTL. Candidates treat that
//! live value as taken, except the target, which takes it by a conditional write on that
//! revision. If the target does not, the key expires and the normal race resumes.
//!
//! **Fencing.** [`Fencing::put`] is the lease's guarded write
//! ([`Lease::put_guarded`](kvtk_core::lease::Lease::put_guarded)): the server rejects it as soon
//! as anyone else has written the leader key. [`Fence`] is the same check in memory for
//! resources that receive the term.
//!
//! ## Timing
//! With TTL `t`, a crashed leader is replaced after `t` plus the server's expiry tick (up to
//! about a second) from its last renewal; a resignation hands over in about a millisecond
//! on a local server.
//!
//! ## Permissions
//! A candidate in election `E` of bucket `b` needs publish rights on `$KV.b.E.>`; an observer
//! only reads `E.leader`. The exact lists (as data: `kvtk_tests::recipes::election_candidate`
//! and `election_observer`) and the trust model are in the workspace's docs/deployment.md,
//! "Security and deployment": candidates can depose each other, terms still strictly increase.
//!
//! ## Metrics
//! Whether this process leads (a gauge) and its transitions, through the `metrics` facade:
//! see [`metrics`] and the workspace's docs/metrics.md table.
// Doc examples define `async fn demo(..)` bodies that are compiled, not called.
#![doc(test(attr(deny(warnings), allow(dead_code))))]

mod campaign;
mod election;
mod elector;
mod error;
mod fence;
mod health;
mod held;
mod leadership;
mod lease_opts;
mod line;
mod lost;
pub mod metrics;
mod names;
mod observe;
mod record;
mod shared;
mod stats;

pub use campaign::Campaign;
pub use election::{CandidateInfo, Election, ElectionBuilder};
pub use elector::{ElectorBuilder, ElectorEvent, LeaderContext, Run, StopReason};
pub use error::{Error, ErrorKind};
pub use fence::Fence;
pub use health::{Health, HealthStatus};
pub use kvtk_core::lease::LeaseConfig;
pub use leadership::{Fencing, Leadership, LostSignal};
pub use lease_opts::DEFAULT_TTL;
pub use line::Line;
pub use lost::LostReason;
pub use names::MAX_NAME_LEN;
pub use observe::Observer;
pub use record::{LeaderInfo, Observed, Term};
pub use stats::Stats;
