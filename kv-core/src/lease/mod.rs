//! Leases: keys this process keeps alive, the layer under every recipe.
//!
//! A [`Lease`] is a key written with a per-key TTL and rewritten (renewed) by a [`Keeper`]
//! before it expires. It is the one place where the toolkit's lease rules live; lock queue
//! entries, leaderships, candidate registrations, membership and configuration
//! acknowledgements are all leases:
//!
//! - **Renewal is compare-and-set on the lease's own revision**, so a lease that someone
//!   else removed or rewrote is never resurrected: the renewal conflicts and the lease is
//!   lost at once ([`LostReason::Taken`] or [`LostReason::Expired`]).
//! - **Every write of a lease is marked** with the lease's random nonce (the `Kv-Lease`
//!   header, see [`Entry::lease`](crate::Entry::lease)), so a write whose acknowledgement was
//!   lost is recognised as our own on the next look — for renewals, creations and releases
//!   alike. A release whose acknowledgement was lost finds its own tombstone and reports
//!   success, not loss.
//! - **Self-demotion uses the monotonic clock** ([`LeaseClock`]): the lease is trusted until
//!   `send time of the last acknowledged write + TTL − margin`, which is before the server
//!   can expire it; `lost()` fires then at the latest, also while the keeper is starved.
//! - **The lease's origin** (the revision of the write that created it) is carried on every
//!   later write, so watchers learn a lease's fencing token from any of its revisions.
//! - **Guarded writes** ([`Lease::put_guarded`], [`Txn::if_held`](crate::Txn::if_held)) are
//!   conditional on the lease key still being at our revision: they fail once the lease is
//!   gone, even before we noticed.
//!
//! One [`Keeper`] renews all leases created through it from one task and a timer queue, so
//! a held lease costs a few hundred bytes and no task of its own.
//!
//! A [`Session`] ([`Keeper::session`]) is a lease on `_session.<id>` that other entries
//! are bound to ([`Session::bind`]): they carry the session's id in their mark, have no TTL
//! and need no renewal — one renewal per session, whatever number of entries it holds.
//! When the session ends (its key expired on the server's clock, or it was closed), every
//! bound entry ends with it for everyone: [`SessionState::read`] asks the stream leader,
//! [`remove_if_dead`] removes such an entry by compare-and-set. The workspace's
//! `docs/protocol.md` describes the formats for implementers in other languages.

// The files, by role: `clock.rs`, `state.rs` (with `state/writes.rs`) and `bound_set.rs`
// are the pure part (the deadline arithmetic; what the holder knows and the renewal
// decisions; the slab of a session's bound leases), which is all `keeper.rs` (the renewing
// task and the renewal write) imports, with `sweeps.rs` (the keys on which an abandoned bound
// creation is being removed); `create.rs` makes leases (`create/unsure.rs`: the removal of
// what a bound creation given up before its outcome may have left), `held.rs` is the held
// `Lease`, `release.rs` ends one, `remove.rs` removes an entry its owner left. Sessions sit
// on top: `session.rs` (ids, the session key's value and format version, the judgement of a
// leader read, the held `Session`, a lease the keeper renews) and `bound.rs` (entries bound
// to a session, and their removal once it ended); `book.rs` what an observer following the
// session keys knows of them (pure).
// No circle: bound → session → create → held → release/keeper → state → clock, bound_set;
// bound, create → remove; keeper → sweeps.
mod book;
mod bound;
mod bound_set;
mod clock;
mod create;
mod held;
mod keeper;
mod owner;
mod release;
mod remove;
mod session;
mod state;
mod sweeps;

pub use book::{sessions_of, SessionBook, KNOWN_ENDED};
pub use bound::{remove_if_dead, CONFIRM_TTL};
pub use clock::{LeaseClock, LeaseConfig, Next, REPLICATED_TTL, STREAM_LEADER_ELECTION};
pub use create::{create_all, CreateLease};
pub use held::Lease;
pub use keeper::Keeper;
pub use owner::Sessions;
pub use release::{Release, Released};
pub use remove::{remove_marked, Reaped};
pub use session::{
    in_session_space, CreateSession, Session, SessionId, SessionState, SESSION_FORMAT,
    SESSION_PREFIX,
};
pub use state::LostReason;
