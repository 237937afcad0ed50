//! Entries bound to a session: [`Bind`] (a conditional write carrying the session's mark and
//! no TTL, with lost-ack recognition), [`Session::unbind`] (a delete conditional on the
//! entry's revision), and [`remove_if_dead`] (anyone's compare-and-set removal of an entry
//! whose session ended).

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

use super::session::{Session, SessionId, SessionState};
use super::state::ATTEMPTS;
use crate::bucket::Bucket;
use crate::entry::Entry;
use crate::error::{Error, ErrorKind, Operation};
use crate::key::Key;
use crate::retry::{Backoff, Retrying};
use crate::revision::{Expect, Revision};

/// An entry bound to a session: plain data about the write that bound it. It needs no
/// renewal; it lives as long as its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    key: Key,
    session: SessionId,
    origin: Revision,
    revision: Revision,
}

impl Bound {
    /// The entry's key.
    pub fn key(&self) -> &Key {
        &self.key
    }
    /// The session it is bound to.
    pub fn session(&self) -> SessionId {
        self.session
    }
    /// The revision of the write that created the entry (a lock ticket, a term): carried in
    /// the mark of every later write of the entry.
    pub fn origin(&self) -> Revision {
        self.origin
    }
    /// The entry's latest revision as far as we know.
    pub fn revision(&self) -> Revision {
        self.revision
    }
}

impl Session {
    /// Starts binding `value` under `key` to this session; `.await` it. See [`Bind`].
    pub fn bind(&self, key: impl AsRef<str>, value: impl Into<Bytes>) -> Bind<'_> {
        Bind {
            session: self,
            key: Key::new(key.as_ref()),
            value: value.into(),
            expect: Expect::NoMessage,
        }
    }

    /// Removes a bound entry of ours: a delete conditional on its revision, carrying the
    /// session's mark, so a removal whose acknowledgement was lost finds its own tombstone.
    /// Returns the revision of the tombstone carrying the session's mark (ours, or a
    /// remover's once the session ended), or `None` when the key holds something else.
    /// Works also after the session ended.
    ///
    /// # Cancel safety
    /// Not cancel safe: the delete may be applied although the future was dropped.
    pub async fn unbind(&self, bound: Bound) -> Result<Option<Revision>, Error> {
        let mark = self.mark(Some(bound.origin));
        let mut rev = bound.revision;
        let mut retrying = Backoff::DEFAULT.start();
        for _ in 0..ATTEMPTS {
            let del = self.bucket().delete(&bound.key).revision(rev);
            match del.lease_tag(mark.clone()).await {
                Ok(t) => return Ok(Some(t)),
                Err(e) if e.is_conflict() || e.outcome_unknown() => {}
                Err(e) if e.is_transient() => {
                    retrying.pause().await;
                    continue;
                }
                Err(e) => return Err(e.with_op(Operation::Lease)),
            }
            match self.bucket().get_from_leader(&bound.key).await {
                Ok(Some(f)) if SessionId::bound_by(&f) == Some(self.id) => rev = f.revision(),
                Ok(Some(f))
                    if !f.is_value() && f.lease().map(|t| t.nonce()) == Some(self.id.get()) =>
                {
                    return Ok(Some(f.revision()))
                }
                Ok(_) => return Ok(None),
                Err(_) => retrying.pause().await,
            }
        }
        Err(
            Error::new(ErrorKind::Timeout, "could not remove the bound entry")
                .with_op(Operation::Lease)
                .with_key(bound.key.as_str()),
        )
    }
}

/// A pending binding; `.await` it.
///
/// The write is `put(key, value)` with the session's mark (`Kv-Lease: <session id>`) and no
/// TTL, conditional on [`expect`](Bind::expect) (default: the key holds no message at all).
/// It is refused with [`ErrorKind::LeaseLost`] once the session is past its deadline. When
/// its outcome is unknown (timeout, connection lost), the stream leader is asked whether the
/// key holds our value bound to our session before the same conditional write is sent again,
/// so a lost acknowledgement neither fails the binding nor creates a second entry.
///
/// # Cancel safety
/// Not cancel safe: the write may be applied although the future was dropped; the entry is
/// then bound to the session and ends with it.
#[must_use = "an entry is not bound until awaited"]
#[derive(Debug)]
pub struct Bind<'a> {
    session: &'a Session,
    key: Result<Key, Error>,
    value: Bytes,
    expect: Expect,
}

impl<'a> Bind<'a> {
    /// Makes the write conditional on the key's latest revision (default
    /// [`Expect::NoMessage`]); e.g. the revision of a tombstone or expiry marker it replaces.
    pub fn expect(mut self, expect: impl Into<Expect>) -> Self {
        self.expect = expect.into();
        self
    }

    async fn run(mut self) -> Result<Bound, Error> {
        let taken = Err(Error::new(ErrorKind::Internal, "taken"));
        let key =
            std::mem::replace(&mut self.key, taken).map_err(|e| e.with_op(Operation::Lease))?;
        let mut retrying = Backoff::DEFAULT.start();
        let mut ambiguous = false;
        for _ in 0..ATTEMPTS {
            if !self.session.is_alive() {
                return Err(self.session.lost_error(key.as_str()));
            }
            let put = self.session.bucket().put(&key, self.value.clone());
            let res = put
                .expect(self.expect)
                .lease_tag(self.session.mark(None))
                .await;
            let conflict = match res {
                Ok(rev) => return Ok(self.bound(key, rev, rev)),
                Err(e) if e.outcome_unknown() => {
                    ambiguous = true;
                    retrying.pause().await;
                    None
                }
                Err(e) if e.is_conflict() && ambiguous => Some(e),
                Err(e) if e.is_transient() => {
                    retrying.pause().await;
                    continue;
                }
                Err(e) => return Err(e.with_op(Operation::Lease)),
            };
            if let Some(bound) = self.look(&key, conflict, &mut retrying).await? {
                return Ok(bound);
            }
        }
        Err(Error::new(
            ErrorKind::Timeout,
            "could not bind the entry: its writes went unanswered",
        )
        .with_op(Operation::Lease)
        .with_key(key.as_str()))
    }

    /// After a write whose outcome was unknown (or a conflict after one): our binding if the
    /// stream leader shows it, the conflict if not, or `None` to write again.
    async fn look(
        &self,
        key: &Key,
        conflict: Option<Error>,
        retrying: &mut Retrying,
    ) -> Result<Option<Bound>, Error> {
        match self.session.bucket().get_from_leader(key).await {
            Ok(Some(f)) if self.is_ours(&f) => {
                let origin = f.lease().map_or(f.revision(), |t| t.origin());
                Ok(Some(self.bound(key.clone(), origin, f.revision())))
            }
            Ok(_) => match conflict {
                Some(e) => Err(e.with_op(Operation::Lease)),
                None => Ok(None),
            },
            Err(_) => {
                retrying.pause().await;
                Ok(None)
            }
        }
    }

    /// Whether `f` is this binding's write: our value, bound to our session.
    fn is_ours(&self, f: &Entry) -> bool {
        SessionId::bound_by(f) == Some(self.session.id()) && f.value() == &self.value
    }

    fn bound(&self, key: Key, origin: Revision, revision: Revision) -> Bound {
        tracing::debug!(key = %key, session = %self.session.id(), origin = origin.get(), "entry bound to session");
        Bound {
            key,
            session: self.session.id(),
            origin,
            revision,
        }
    }
}

impl<'a> IntoFuture for Bind<'a> {
    type Output = Result<Bound, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// The TTL of the tombstone [`remove_if_dead`] writes on a session key that had no message
/// at all, to make "the session ended" a fact before acting on it.
pub const CONFIRM_TTL: Duration = Duration::from_secs(60);

/// What [`remove_if_dead`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reaped {
    /// The entry's session had ended, and our conditional delete removed the entry.
    Removed {
        /// The tombstone's revision.
        tombstone: Revision,
    },
    /// The entry's session is alive (the stream leader says so): nothing was written.
    Alive,
    /// The entry is not bound to a session (a plain value, a lease with its own TTL, a
    /// removal): nothing was written.
    NotBound,
    /// The entry was no longer at the revision given: someone else removed it (another
    /// remover, or an earlier attempt of ours whose acknowledgement was lost) or rewrote it.
    Moved,
}

/// Removes `entry` (as read, at its revision) if it is bound to a session that ended: the
/// session is judged from the stream leader ([`SessionState::read`]), then the entry is
/// deleted conditional on its revision (a key with no message at all is first confirmed
/// ended by a conditional write on the session key, see [`CONFIRM_TTL`]) — so of concurrent removers exactly one succeeds and
/// the others see [`Reaped::Moved`]. The tombstone carries the dead session's mark
/// (`<session id>:<origin>`, never `:done`), so watchers can tell whose entry left and that
/// it was not a completed release. A session of an unknown format version is refused
/// ([`ErrorKind::Codec`]) and nothing is written.
///
/// # Cancel safety
/// Not cancel safe: the delete may be applied although the future was dropped.
pub async fn remove_if_dead(bucket: &Bucket, entry: &Entry) -> Result<Reaped, Error> {
    let Some(id) = SessionId::bound_by(entry) else {
        return Ok(Reaped::NotBound);
    };
    if !session_ended(bucket, id).await? {
        return Ok(Reaped::Alive);
    }
    let origin = entry.lease().map(|t| t.origin());
    let mark = crate::entry::LeaseTag::header_value(id.get(), origin);
    let mut retrying = Backoff::DEFAULT.start();
    for _ in 0..ATTEMPTS {
        let del = bucket.delete(entry.key()).revision(entry.revision());
        match del.lease_tag(mark.clone()).await {
            Ok(tombstone) => {
                tracing::debug!(key = %entry.key(), session = %id, tombstone = tombstone.get(), "removed a dead session's entry");
                return Ok(Reaped::Removed { tombstone });
            }
            Err(e) if e.is_conflict() => return Ok(Reaped::Moved),
            Err(e) if e.is_transient() => retrying.pause().await,
            Err(e) => return Err(e.with_op(Operation::Lease)),
        }
    }
    Err(Error::new(
        ErrorKind::Timeout,
        "could not remove the dead session's entry",
    )
    .with_op(Operation::Lease)
    .with_key(entry.key().as_str()))
}

/// Whether session `id` ended, from the stream leader. A key with no message at all could
/// be a deposed leader's stale answer from before the session's creation, so that verdict
/// is made a fact first: a tombstone written on the session key expecting no message (the
/// real leader decides; a live session makes it conflict). It carries the session's mark and
/// [`CONFIRM_TTL`], and ends the session for good.
async fn session_ended(bucket: &Bucket, id: SessionId) -> Result<bool, Error> {
    let mut retrying = Backoff::DEFAULT.start();
    for _ in 0..ATTEMPTS {
        let (state, no_message) = SessionState::fetch(bucket, id).await?;
        if state.is_alive() || !no_message {
            return Ok(!state.is_alive());
        }
        let confirm = bucket
            .delete(id.key())
            .expect(Expect::NoMessage)
            .ttl(CONFIRM_TTL)
            .lease_tag(crate::entry::LeaseTag::header_value(id.get(), None));
        match confirm.await {
            Ok(_) => return Ok(true),
            // Something is there after all (or our write landed unseen): read again.
            Err(e) if e.is_conflict() || e.is_transient() => retrying.pause().await,
            Err(e) => return Err(e.with_op(Operation::Lease)),
        }
    }
    Err(
        Error::new(ErrorKind::Timeout, "could not confirm the session's end")
            .with_op(Operation::Lease)
            .with_key(id.key()),
    )
}
