//! [`Membership`] (a bucket and one lease keeper) and its [`Group`]s.

use std::sync::Arc;
use std::time::Duration;

use kvtk_core::lease::{Keeper, LeaseConfig};
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
            }),
        })
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
    /// Cancel safe: it only reads.
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
        Listing::of(self.membership.bucket().read_only(), self.name.clone())
    }
}
