//! [`Membership`] (a bucket and one lease keeper) and its [`Group`]s.

use std::sync::Arc;
use std::time::Duration;

use kvtk_core::lease::{Keeper, LeaseConfig, Sessions};
use kvtk_core::{Bucket, BucketConfig, Kv, Ttl};

use crate::error::{Error, ErrorKind};
use crate::listing::Listing;
use crate::member::Join;
use crate::metadata::IntoMetadata;
use crate::names;
use crate::roster::MemberInfo;
use crate::shared::{Shared, DEFAULT_TTL};
use crate::watch::MembershipWatch;

/// Group membership in one bucket. Cheap to clone; the clones and the members joined
/// through them share one [`Keeper`], whose task renews every member and stops with the
/// last of them.
#[derive(Debug, Clone)]
pub struct Membership {
    shared: Arc<Shared>,
}

impl Membership {
    /// Opens membership in the existing bucket `bucket` (see [`Membership::new`]).
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn open(kv: &Kv, bucket: &str) -> Result<Membership, Error> {
        let b = kv
            .open(bucket)
            .await
            .map_err(|e| Error::kv(format!("could not open bucket {bucket:?}"), e))?;
        Membership::new(&b).await
    }

    /// Membership in `bucket`, which needs per-key TTLs (members are leases that the server
    /// expires); [`Membership::bucket_config`] makes a fitting one. Fails with
    /// [`ErrorKind::BadBucket`] otherwise.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn new(bucket: &Bucket) -> Result<Membership, Error> {
        let st = bucket
            .status()
            .await
            .map_err(|e| Error::kv("could not read the bucket status", e))?;
        let Some(marker_ttl) = st.per_key_ttl else {
            return Err(Error::new(
                ErrorKind::BadBucket,
                format!(
                    "bucket {:?} has no per-key TTL; create it with Membership::bucket_config",
                    st.bucket
                ),
            ));
        };
        let config = LeaseConfig::default_for(st.replicas, DEFAULT_TTL)
            .map_err(|e| Error::kv("invalid default lease config", e))?;
        let keeper = Keeper::with_recipe(bucket, config, "membership")
            .map_err(|e| Error::kv("could not start the lease keeper", e))?;
        let tombstone_ttl = Ttl::new(marker_ttl).ok().map(Ttl::as_duration);
        Ok(Membership {
            shared: Arc::new(Shared {
                keeper,
                tombstone_ttl,
                checked_ttls: Default::default(),
                replicas: st.replicas,
                sessions: None,
            }),
        })
    }

    /// Binds the members joined from now on through this handle (and its clones made after)
    /// to **one session**, made at the first join and renewed by one write per renewal
    /// interval however many members it holds; a member's key is written without a TTL and
    /// needs no renewal of its own. The session's timing is [`Membership::default_lease`];
    /// [`bind_to_session_with`](Self::bind_to_session_with) chooses another. A join that
    /// sets its own TTL ([`Join::ttl`](crate::Join::ttl)) still gets a lease of its own.
    ///
    /// What changes for a member: it is lost when the session is (at the session's local
    /// deadline, or when its renewal finds it gone), with the session's reason; watchers see
    /// it leave with [`LeaveReason::Expired`](crate::LeaveReason::Expired) once its session
    /// ended, judged from the stream leader, and an observer removes its key by
    /// compare-and-set. Joining again after that makes a new session. Observers must be of
    /// this version or newer (an older one lists a dead session's member until someone
    /// removes it). With least-privilege permissions, add the session owner's set
    /// (`kvtk_tests::recipes::bound`, the workspace's docs/deployment.md); observers of a
    /// group with bound members need to read `_session.*` too.
    pub fn bind_to_session(self) -> Membership {
        let config = self.default_lease();
        self.bind_to_session_with(config)
    }

    /// [`bind_to_session`](Self::bind_to_session) with the session's own timing. On a
    /// replicated bucket a TTL that does not ride through a stream-leader election is warned
    /// about ([`LeaseConfig::warn_unless_rides_through`]).
    pub fn bind_to_session_with(self, session: LeaseConfig) -> Membership {
        let s = &self.shared;
        session.warn_unless_rides_through(s.replicas, s.keeper.bucket().name(), "membership");
        let sessions =
            Sessions::new(&s.keeper, session).name(format!("membership/{}", std::process::id()));
        Membership {
            shared: Arc::new(Shared {
                keeper: s.keeper.clone(),
                tombstone_ttl: s.tombstone_ttl,
                replicas: s.replicas,
                checked_ttls: Default::default(),
                sessions: Some(sessions),
            }),
        }
    }

    /// Whether members joined through this handle are bound to a session.
    pub fn is_bound(&self) -> bool {
        self.shared.sessions.is_some()
    }

    /// A bucket configuration fit for membership: one revision per key and per-key TTLs
    /// whose expiry markers (and leave tombstones) stay for a minute.
    pub fn bucket_config(name: impl Into<String>) -> BucketConfig {
        BucketConfig::new(name)
            .history(1)
            .per_key_ttl(Duration::from_secs(60))
    }

    /// The group `name`: any valid KV key (dots allowed, no wildcards). Its members live at
    /// `<name>.<instance id>`.
    pub fn group(&self, name: impl Into<String>) -> Result<Group, Error> {
        let name = name.into();
        names::group(&name)?;
        Ok(Group {
            membership: self.clone(),
            name: name.into(),
        })
    }

    /// The bucket.
    pub fn bucket(&self) -> &Bucket {
        self.shared.keeper.bucket()
    }

    /// The lease of members that do not choose a TTL: [`DEFAULT_TTL`] on a single-server
    /// bucket, [`REPLICATED_TTL`](kvtk_core::lease::REPLICATED_TTL) on a replicated one.
    pub fn default_lease(&self) -> LeaseConfig {
        self.shared.keeper.config()
    }

    /// Waits for the background leaves of dropped members to finish. Members still held
    /// stay registered.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn shutdown(&self) {
        self.shared.keeper.shutdown().await;
    }
}

/// A named group of members.
///
/// **One registration per instance id.** Joining with an id that a live member already
/// holds — in this process or another — fails with [`ErrorKind::AlreadyJoined`]: two
/// processes believing they are the same instance is the bug that membership exists to
/// expose. An id becomes free when its member leaves or its key expires; a member that lost
/// its registration (cut off past its TTL) joins again after the server expired the old
/// one, as a new incarnation with a higher [`joined_at`](MemberInfo::joined_at).
#[derive(Debug, Clone)]
pub struct Group {
    membership: Membership,
    name: Arc<str>,
}

impl Group {
    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts registering instance `id` (one key token: `A-Z a-z 0-9 - _ = /`, no `.`) with
    /// `metadata`; `.await` it. See [`Join`].
    pub fn join(&self, id: impl Into<String>, metadata: impl IntoMetadata) -> Join {
        Join::new(
            self.membership.shared.clone(),
            self.name.clone(),
            id.into(),
            metadata.into_metadata(),
        )
    }

    /// The members registered now, by [`joined_at`](MemberInfo::joined_at): see
    /// [`Listing::members`].
    ///
    /// # Cancel safety
    /// Cancel safe: it reads, and at most removes the key of a member whose session ended
    /// (harmless if the future is dropped after it).
    pub async fn members(&self) -> Result<Vec<MemberInfo>, Error> {
        self.listing().members().await
    }

    /// Watches the group: see [`Listing::watch`].
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future leaves at most an idle consumer that the server
    /// removes.
    pub async fn watch(&self) -> Result<MembershipWatch, Error> {
        self.listing().watch().await
    }

    /// The read side of the group on its own bucket.
    pub fn listing(&self) -> Listing {
        Listing::of(self.membership.bucket(), self.name.clone())
    }
}
