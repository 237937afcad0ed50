//! [`Listing`]: a group's members and events read through any bucket handle, a read-only
//! mirror included.

use std::sync::Arc;

use kvtk_core::{Bucket, ReadOnlyBucket};
use tracing::Instrument as _;

use crate::error::Error;
use crate::follow;
use crate::names;
use crate::roster::{MemberInfo, Observed, Roster};
use crate::watch::MembershipWatch;

/// The read side of a group: its members and a watch of its events, through a read-only
/// handle. [`Group::listing`](crate::Group::listing) gives one on the group's own bucket;
/// [`Listing::new`] one on any handle — typically a mirror of the membership bucket on a
/// leaf node near the readers, in another JetStream domain, while members join on the
/// origin.
///
/// On a mirror the listing is the origin's, revision for revision (joins are the origin's
/// lease origins, leaves its tombstones and expiry markers), as fresh as the mirror: while
/// the link to the origin is cut it shows the members as they were (a mirror expires nothing
/// on its own clock) and catches up when the link heals.
///
/// ```no_run
/// # async fn demo(kv_on_leaf: kvtk_core::Kv) -> Result<(), Box<dyn std::error::Error>> {
/// let mirror = kv_on_leaf.open_read_only("members").await?;
/// let workers = kvtk_membership::Listing::new(&mirror, "workers")?;
/// for m in workers.members().await? {
///     println!("{} since revision {}", m.id(), m.joined_at());
/// }
/// # Ok(()) }
/// ```
///
/// Members bound to sessions ([`Membership::bind_to_session`](crate::Membership::bind_to_session))
/// are listed while their session lives, judged from the stream leader; reading them needs
/// the session keys (`_session.*`) besides the group's. A listing on a writable handle (a
/// [`Group`](crate::Group)'s) removes the keys of members whose session ended.
#[derive(Debug, Clone)]
pub struct Listing {
    bucket: ReadOnlyBucket,
    /// A writable handle on the same bucket, for removing ended sessions' members.
    reaper: Option<Bucket>,
    group: Arc<str>,
}

impl Listing {
    /// The group `group` read through `bucket`. Fails when the group name breaks the key
    /// rules.
    pub fn new(bucket: &ReadOnlyBucket, group: impl Into<String>) -> Result<Listing, Error> {
        let group = group.into();
        names::group(&group)?;
        Ok(Listing {
            bucket: bucket.clone(),
            reaper: None,
            group: group.into(),
        })
    }

    /// The listing of `group` on a writable handle, which removes ended sessions' members.
    pub(crate) fn of(bucket: &Bucket, group: Arc<str>) -> Listing {
        Listing {
            bucket: bucket.read_only(),
            reaper: Some(bucket.clone()),
            group,
        }
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The members registered now, by [`joined_at`](MemberInfo::joined_at). A member whose
    /// process died is listed until the server expires its key (at most its TTL after its
    /// last renewal), or, bound to a session, until its session key expires: the sessions
    /// of bound members are read from the stream leader, one read per session. On
    /// replicated buckets any replica may answer for the member keys, and a mirror answers
    /// with what it has copied, so the list may lag.
    ///
    /// # Cancel safety
    /// Cancel safe: it reads, and at most removes the key of a member whose session ended
    /// (harmless if the future is dropped after it).
    pub async fn members(&self) -> Result<Vec<MemberInfo>, Error> {
        let span = tracing::debug_span!("membership.members", group = %self.group);
        async {
            let snap = self
                .bucket
                .snapshot(names::group_filter(&self.group))
                .await
                .map_err(|e| Error::kv("could not list the members", e))?;
            let mut roster = Roster::default();
            let mut entries = snap.entries;
            entries.sort_by_key(kvtk_core::Entry::revision);
            for e in &entries {
                let obs = Observed::from_entry(&self.group, e)
                    .map_err(|e| Error::kv("refusing to list the members", e))?;
                if let Some(obs) = obs {
                    roster.apply(obs);
                }
            }
            follow::judge_unknown(&self.bucket, &mut roster).await?;
            follow::reap(self.reaper.as_ref(), &mut roster).await;
            Ok(roster.current())
        }
        .instrument(span)
        .await
    }

    /// Watches the group: the current members ([`Present`](crate::MembershipEvent::Present)
    /// each, then [`InitialDone`](crate::MembershipEvent::InitialDone)), then
    /// `Joined`/`Updated`/`Left` events in revision order. See [`MembershipWatch`].
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future leaves at most an idle consumer that the server
    /// removes.
    pub async fn watch(&self) -> Result<MembershipWatch, Error> {
        MembershipWatch::start(&self.bucket, self.reaper.clone(), self.group.clone()).await
    }
}
