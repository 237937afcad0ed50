//! Joining a group ([`Join`]) and the registration it yields ([`Member`]).

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use kvtk_core::lease::{
    remove_if_dead, CreateLease, Lease, LeaseConfig, LostReason, Reaped, Released, Session,
};
use kvtk_core::{Bucket, Expect, Key, Revision};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use std::sync::Arc;

use crate::error::Error;
use crate::metadata::IntoMetadata;
use crate::names;
use crate::shared::{Shared, DEFAULT_TTL};

/// How often a join re-reads the key after its conditional write conflicted. Each conflict
/// means the key changed under us (a leave, an expiry, a racing join), so a few suffice.
const JOIN_ATTEMPTS: usize = 4;

/// A pending join; `.await` it.
///
/// The member's key is written conditional on holding no live value (never blind), so
/// exactly one of several racing joins with the same id wins; the others fail with
/// [`ErrorKind::AlreadyJoined`](crate::ErrorKind::AlreadyJoined). The write is marked with
/// the lease's nonce, so a join whose acknowledgement was lost recognises itself.
///
/// # Cancel safety
/// Not cancel safe: the registration may be written although the future was dropped; it
/// then expires with its TTL.
#[must_use = "a join does nothing until awaited"]
#[derive(Debug)]
pub struct Join {
    shared: Arc<Shared>,
    /// The group's name.
    group: Arc<str>,
    id: String,
    metadata: Result<Bytes, Error>,
    ttl: Option<Duration>,
}

impl Join {
    pub(crate) fn new(
        shared: Arc<Shared>,
        group: Arc<str>,
        id: String,
        metadata: Result<Bytes, Error>,
    ) -> Join {
        Join {
            shared,
            group,
            id,
            metadata,
            ttl: None,
        }
    }

    /// The member's TTL (whole seconds ≥ 1; default [`DEFAULT_TTL`](crate::DEFAULT_TTL) on a
    /// single-server bucket, [`REPLICATED_TTL`](kvtk_core::lease::REPLICATED_TTL) on a
    /// replicated one): a dead member disappears at most this long after its last renewal.
    /// It is renewed every TTL/3 and reports [`lost`](Member::lost) at TTL − margin after
    /// its last acknowledged renewal. On a replicated bucket a TTL that does not ride
    /// through a stream-leader election is warned about when joining
    /// ([`LeaseConfig::warn_unless_rides_through`]): such members are expelled when the
    /// stream's leader fails.
    pub fn ttl(mut self, ttl: Duration) -> Join {
        self.ttl = Some(ttl);
        self
    }

    /// The member's lease: its own TTL (checked against the bucket's replicas on the first
    /// join with it) or the bucket's default, both through the lease layer's one rule.
    fn lease_config(&self) -> Result<LeaseConfig, Error> {
        let shared = &self.shared;
        let configured = self
            .ttl
            .map(LeaseConfig::new)
            .transpose()
            .map_err(|e| Error::kv("invalid member ttl", e))?;
        if let (Some(lease), Some(ttl)) = (configured, self.ttl) {
            if !shared.checked_ttls.first(ttl) {
                return Ok(lease);
            }
        }
        LeaseConfig::for_bucket(
            configured,
            shared.replicas,
            DEFAULT_TTL,
            shared.keeper.bucket().name(),
            "membership",
        )
        .map_err(|e| Error::kv("invalid member ttl", e))
    }

    /// The creation of the member's lease: bound to the handle's session when it binds
    /// members and the join sets no TTL of its own (with that session, which the member
    /// keeps alive), else a lease of its own.
    async fn create(
        &self,
        key: &Key,
        metadata: &Bytes,
        expect: Expect,
    ) -> Result<(CreateLease, Option<Arc<Session>>), Error> {
        let (create, session) = match (&self.shared.sessions, self.ttl) {
            (Some(sessions), None) => {
                let session = sessions
                    .current()
                    .await
                    .map_err(|e| Error::kv("could not join: no session", e))?;
                (session.bind(key.as_str(), metadata.clone()), Some(session))
            }
            _ => {
                let config = self.lease_config()?;
                let create = self.shared.keeper.lease(key.as_str(), metadata.clone());
                (create.config(config), None)
            }
        };
        let create = create
            .format(kvtk_core::format::RECIPE_FORMAT)
            .expect(expect);
        Ok(match self.shared.tombstone_ttl {
            Some(t) => (create.tombstone_ttl(t), session),
            None => (create, session),
        })
    }

    async fn run(mut self) -> Result<Member, Error> {
        let key = names::member_key(&self.group, &self.id)?;
        let metadata = std::mem::replace(&mut self.metadata, Ok(Bytes::new()))?;
        let bucket = self.shared.keeper.bucket();
        let mut expect = Expect::NoMessage;
        let mut last = None;
        for _ in 0..JOIN_ATTEMPTS {
            let (create, session) = self.create(&key, &metadata, expect).await?;
            match create.await {
                Ok(lease) => {
                    tracing::info!(
                        joined_at = lease.origin().get(),
                        bound = lease.is_bound(),
                        "joined"
                    );
                    if lease.is_bound() {
                        // Dropping the member leaves as `leave()` does: watchers tell its
                        // tombstone from an observer's removal after its session ended.
                        lease.complete_on_drop();
                    }
                    return Ok(Member {
                        lease,
                        session,
                        group: self.group,
                        id: self.id,
                    });
                }
                Err(e) if e.is_conflict() => {
                    expect = free_slot(bucket, &key).await?;
                    last = Some(e);
                }
                Err(e) => return Err(Error::kv("could not join", e)),
            }
        }
        Err(match last {
            Some(e) => Error::kv("could not join: the member key kept changing", e),
            None => Error::new(crate::ErrorKind::Kv, "could not join"),
        })
    }
}

/// After a conflicting join: the expectation under which the key is free to take, or
/// `AlreadyJoined` when a live member holds it. Asks the stream leader (a replica may lag).
/// A member bound to a session that ended is not live: it is removed first (by
/// compare-and-set, [`remove_if_dead`]) and its tombstone taken over.
async fn free_slot(bucket: &Bucket, key: &Key) -> Result<Expect, Error> {
    let found = bucket
        .get_from_leader(key)
        .await
        .map_err(|e| Error::kv("could not join: reading the member key failed", e))?;
    let e = match found {
        Some(e) if e.is_value() => e,
        // A tombstone or expiry marker: take its place.
        Some(e) => return Ok(Expect::Revision(e.revision())),
        None => return Ok(Expect::NoMessage),
    };
    let reaped = remove_if_dead(bucket, &e)
        .await
        .map_err(|err| Error::kv("could not join: judging the member's session failed", err))?;
    match reaped {
        Reaped::Removed { tombstone } => Ok(Expect::Revision(tombstone)),
        // Someone else removed or rewrote it meanwhile: the next attempt looks again.
        Reaped::Moved => Ok(Expect::Revision(e.revision())),
        _ => Err(Error::already_joined(
            key.as_str(),
            e.lease().map_or(e.revision(), |t| t.origin()),
        )),
    }
}

impl IntoFuture for Join {
    type Output = Result<Member, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        let span = tracing::info_span!("membership.join", group = %self.group, id = %self.id);
        Box::pin(self.run().instrument(span))
    }
}

/// A registration this process keeps alive: a lease on `<group>.<id>` renewed by the
/// membership's keeper. Dropping it leaves the group in the background (a task owned by the
/// keeper, see [`Membership::shutdown`](crate::Membership::shutdown)); prefer
/// [`leave`](Member::leave), which reports how it went.
#[must_use = "dropping a member leaves the group"]
#[derive(Debug)]
pub struct Member {
    /// Dropped first: its release is under way before the session may close (which waits
    /// for it).
    lease: Lease,
    /// The session the member is bound to: it lives at least as long as the member.
    session: Option<Arc<Session>>,
    /// The group's name.
    group: Arc<str>,
    id: String,
}

impl Member {
    /// The instance id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The revision of the registering write: this incarnation's identity, as watchers see
    /// it in [`MemberInfo::joined_at`](crate::MemberInfo::joined_at).
    pub fn joined_at(&self) -> Revision {
        self.lease.origin()
    }

    /// Whether the registration is still held (checked against the local deadline too).
    pub fn is_alive(&self) -> bool {
        self.lease.is_held()
    }

    /// Completes when the registration is lost — at the latest at the local deadline
    /// (`send time of the last acknowledged renewal + TTL − margin`), before the server
    /// can expire the key — or when the member leaves.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub fn lost(&self) -> impl Future<Output = LostReason> + Send + 'static {
        self.lease.lost()
    }

    /// A token cancelled when the registration ends: hand it to work that must stop then.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.lease.cancellation_token()
    }

    /// The session the member is bound to
    /// ([`Membership::bind_to_session`](crate::Membership::bind_to_session)), if it is: its
    /// id is the one [`MemberInfo::session`](crate::MemberInfo::session) shows.
    pub fn session(&self) -> Option<kvtk_core::lease::SessionId> {
        self.session.as_ref().map(|s| s.id())
    }

    /// The underlying lease, for writes conditional on still being a member
    /// ([`Lease::put_guarded`], [`kvtk_core::Txn::if_held`]).
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Replaces the member's metadata (a write conditional on the registration's revision;
    /// watchers see [`Updated`](crate::MembershipEvent::Updated)). Fails with
    /// [`ErrorKind::Lost`](crate::ErrorKind::Lost) once the registration is gone.
    ///
    /// # Cancel safety
    /// Not cancel safe: the write may be applied although the future was dropped; the next
    /// renewal recognises it.
    pub async fn update(&self, metadata: impl IntoMetadata) -> Result<Revision, Error> {
        let metadata = metadata.into_metadata()?;
        self.lease
            .set_value(metadata)
            .instrument(
                tracing::debug_span!("membership.update", group = %self.group, id = %self.id),
            )
            .await
            .map_err(|e| Error::kv("could not update the member metadata", e))
    }

    /// Leaves the group: stops the renewals and deletes the key conditional on our own
    /// revision (never someone else's registration). `was_held` in the result is false when
    /// the registration had already been lost.
    ///
    /// # Cancel safety
    /// Not cancel safe: the delete may be applied although the future was dropped; if not,
    /// the key expires with its TTL.
    pub async fn leave(self) -> Result<Released, Error> {
        let span = tracing::debug_span!("membership.leave", group = %self.group, id = %self.id);
        let bound = self.lease.is_bound();
        let release = self.lease.release();
        drop(self.session);
        // A bound member's tombstone carries its session's mark, as an observer's removal
        // of it after the session ended does: `completed` tells its own leave apart.
        let release = if bound { release.completed() } else { release };
        release
            .into_future()
            .instrument(span)
            .await
            .map_err(|e| Error::kv("could not leave", e))
    }
}
