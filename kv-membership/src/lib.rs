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
//! The bucket needs per-key TTLs ([`Membership::bucket_config`]); it may be shared with
//! other recipes as long as the group names do not overlap their keys.
//!
//! ## Permissions
//! A member of group `G` in bucket `b` needs publish rights on `$KV.b.G.*` and the JetStream
//! API subjects in the table of the workspace's docs/deployment.md (as data:
//! `kvtk_tests::recipes::member`); members of one group can remove each other's keys.
// Doc examples define `async fn demo(..)` bodies that are compiled, not called.
#![doc(test(attr(deny(warnings), allow(dead_code))))]

mod error;
mod listing;
mod member;
mod membership;
mod metadata;
mod names;
mod roster;
mod watch;

pub use error::{Error, ErrorKind};
pub use kvtk_core::lease::{LostReason, Released};
pub use listing::Listing;
pub use member::{Join, Member};
pub use membership::{Group, Membership, DEFAULT_TTL};
pub use metadata::{IntoMetadata, Json};
pub use roster::{LeaveReason, MemberInfo, MembershipEvent};
pub use watch::MembershipWatch;
