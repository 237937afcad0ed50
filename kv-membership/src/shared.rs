//! What a [`Membership`](crate::Membership)'s clones, groups and members share: the lease
//! keeper, what joining needs to know about the bucket, and the members' default TTL.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use kvtk_core::lease::{Keeper, Sessions};

/// The TTL of a member that does not choose one on a single-server bucket. On a
/// replicated bucket the default is [`REPLICATED_TTL`](kvtk_core::lease::REPLICATED_TTL)
/// (30 s), which rides through a stream-leader election (see
/// [`LeaseConfig::default_for`](kvtk_core::lease::LeaseConfig::default_for)): a member whose server is healthy is not expelled when
/// another server, or the stream's leader, fails.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// The one lease keeper of a membership handle and its clones, and what joining needs to
/// know about the bucket.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) keeper: Keeper,
    /// How long a leave's tombstone stays: the bucket's expiry-marker TTL, so a departure
    /// is visible as long as an expiry would be.
    pub(crate) tombstone_ttl: Option<Duration>,
    /// The bucket's replicas, for checking a member's own TTL.
    pub(crate) replicas: usize,
    /// The members' own TTLs checked so far: each is checked (and warned about) once per
    /// handle, not on every join (a fleet that joins and leaves often would log a warning
    /// per join).
    pub(crate) checked_ttls: CheckedTtls,
    /// The one session members joined through this handle are bound to, when it binds
    /// them ([`Membership::bind_to_session`](crate::Membership::bind_to_session)).
    pub(crate) sessions: Option<Sessions>,
}

/// The members' own TTLs a handle has checked.
#[derive(Debug, Default)]
pub(crate) struct CheckedTtls(Mutex<HashSet<Duration>>);

impl CheckedTtls {
    /// Whether `ttl` is checked for the first time (and remembers it).
    pub(crate) fn first(&self, ttl: Duration) -> bool {
        let mut checked = self.0.lock().unwrap_or_else(|p| p.into_inner());
        checked.insert(ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_own_ttl_is_checked_once() {
        let checked = CheckedTtls::default();
        let twelve = Duration::from_secs(12);
        assert!(checked.first(twelve));
        assert!(!checked.first(twelve));
        assert!(checked.first(Duration::from_secs(5)));
    }
}
