#![doc = include_str!("../README.md")]
//!
//! ## How it works
//!
//! A member is a [`kvtk_core::lease::Lease`] on the key `<group>.<instance id>`; the value is
//! its metadata. All members of a [`Membership`] handle are renewed by one keeper task
//! (compare-and-set on their own revision). The [`Member`] reports [`lost`](Member::lost)
//! on its monotonic clock at `last acknowledged renewal + TTL − margin`, before the server
//! can expire the key; the server expires a dead member's key at its TTL and writes an
//! expiry marker, which watchers see as `Left { reason: Expired }`.
//!
//! - **Joining is conditional**: the key must hold no live value, so one instance id has at
//!   most one live registration ([`ErrorKind::AlreadyJoined`] otherwise, see [`Group`]).
//! - **Incarnations**: [`MemberInfo::joined_at`] is the revision of the registering write
//!   (the lease origin, carried on every renewal). A member that lost its registration and
//!   joins again is a new `Joined` with a higher `joined_at`.
//! - **Leaving is fenced**: a delete conditional on the member's own revision, marked with
//!   its lease nonce, so watchers tell a leave (`Left`) from an operator's delete
//!   (`Removed`); its tombstone expires like an expiry marker.
//! - **Watches** ride on kvtk-core's gap-free watch; see [`MembershipWatch`] for recovery.
//!   [`Group::members`] and the watch's initial snapshot apply the same rule to the same
//!   keys, so they agree.
//!
//! ## Default TTL and server failures
//!
//! A member that does not choose a TTL ([`Join::ttl`]) gets the lease layer's default for
//! its bucket ([`kvtk_core::lease::LeaseConfig::default_for`]): [`DEFAULT_TTL`] (10 s) on a
//! single server, [`REPLICATED_TTL`](kvtk_core::lease::REPLICATED_TTL) (30 s) on a
//! replicated bucket, so that a stream-leader election — no renewal lands for up to ~10 s
//! when the server leading the bucket's stream fails — expels no healthy member. A TTL of its
//! own that does not ride through such an election is warned about (`tracing`) when joining
//! on a replicated bucket. [`Membership::default_lease`] shows the default.
//!
//! ## When a member is lost
//!
//! A member whose registration is lost (cut off past its TTL, or removed by someone else)
//! **stays out**; nothing joins again on its behalf. The application gets a clear signal:
//! [`Member::lost`] completes with the [`LostReason`] and [`Member::cancellation_token`] is
//! cancelled (at the latest at `last acknowledged renewal + TTL − margin`, before the server
//! expires the key), [`Member::is_alive`] turns false, and [`Member::update`] fails with
//! [`ErrorKind::Lost`]; watchers see `Left { reason: Expired }` (or `Removed`). To come
//! back, the application joins again with the same id — a new incarnation, `Joined` with a
//! higher [`joined_at`](MemberInfo::joined_at); a join before the server expired the old
//! key fails with [`ErrorKind::AlreadyJoined`], so retry it after the TTL.
//!
//! Why not rejoin silently: a membership is what others act on. By the time a member learns
//! it was lost, watchers may already have moved its work (shards, partitions, leases it
//! granted) elsewhere; a member that came back by itself would keep working on assignments
//! that are no longer its own, and the application would never learn there was a gap. This
//! is the contract of ZooKeeper's ephemeral nodes after a session expiry and of etcd's
//! session `Done()`, and the same as a lost lock or leadership in this toolkit.
//!
//! ## Members bound to sessions
//!
//! [`Membership::bind_to_session`] binds the members joined through a handle to one
//! [session](kvtk_core::lease::Session): each member key is written without a TTL, carrying
//! the session's id, and the handle's keeper renews only the session key — one write per
//! renewal interval for any number of members. A bound member is a member while its session
//! lives: watchers follow the session keys of the members they see (judging any session they
//! have not seen from the stream leader), and when a session ends — its key expired on the
//! server's clock, or closed — its members leave with [`LeaveReason::Expired`]; a watcher or
//! [`Group::members`] on a writable handle removes their keys by compare-and-set
//! ([`kvtk_core::lease::remove_if_dead`]). A bound member that lost its session stays out like
//! any lost member; joining again makes a new session, and removes its own dead entry if
//! nobody did. The formats are in the workspace's docs/protocol.md ("Membership").
//!
//! The bucket needs per-key TTLs ([`Membership::bucket_config`]); it may be shared with
//! other recipes as long as the group names do not overlap their keys.
//!
//! ## Permissions
//! A member of group `G` in bucket `b` needs publish rights on `$KV.b.G.*` and the JetStream
//! API subjects in the table of the workspace's docs/deployment.md (as data:
//! `kvtk_tests::recipes::member`); members of one group can remove each other's keys. A
//! member bound to a session needs the session owner's set too (`kvtk_tests::recipes::bound`),
//! and so does an observer of a group that holds bound members (it watches `_session.*`).
// Doc examples define `async fn demo(..)` bodies that are compiled, not called.
#![doc(test(attr(deny(warnings), allow(dead_code))))]

mod error;
mod follow;
mod listing;
mod member;
mod membership;
mod metadata;
mod names;
mod roster;
mod shared;
mod watch;

pub use error::{Error, ErrorKind};
pub use kvtk_core::lease::{LostReason, Released};
pub use listing::Listing;
pub use member::{Join, Member};
pub use membership::{Group, Membership};
pub use metadata::{IntoMetadata, Json};
pub use roster::{LeaveReason, MemberInfo, MembershipEvent};
pub use shared::DEFAULT_TTL;
pub use watch::MembershipWatch;
