//! Entries bound to a session: [`Session::bind`] (a lease with the session's mark, no TTL
//! and no renewal of its own) and [`remove_if_dead`] (anyone's compare-and-set removal of an
//! entry whose session ended).

use std::time::Duration;

use bytes::Bytes;

use super::create::CreateLease;
use super::release::Release;
use super::remove::{remove_marked, Reaped};
use super::session::{Session, SessionId, SessionState};
use super::state::{Created, State, ATTEMPTS};
use crate::bucket::Bucket;
use crate::entry::Entry;
use crate::error::{Error, ErrorKind, Operation};
use crate::key::KeyArg;
use crate::retry::Backoff;
use crate::revision::Expect;

impl Session {
    /// Starts creating a lease on `key` holding `value`, **bound to this session**; `.await`
    /// it. The creating write carries the session's mark (`Kv-Lease: <session id>`) and no
    /// TTL, and is conditional like every lease creation (on the caller's expectation, else
    /// on the key's own state). The lease is never renewed by itself: its deadline is the
    /// session's, it is lost when the session is (with the session's reason), and its
    /// guarded writes and [`Txn::if_held`](crate::Txn::if_held) are conditional on its own
    /// revision, which only its owner's writes move — so they fail once anyone removed the
    /// entry, and nobody else may act on the entry before removing it
    /// ([`remove_if_dead`]). Its release is the same fenced delete as any lease's. A
    /// creation whose acknowledgement was lost is recognised by the session's mark *and* the
    /// value. Refused with [`ErrorKind::LeaseLost`] once the session is not valid.
    ///
    /// A session binds at most one live entry per key: binding a key that holds a live
    /// entry of this session replaces it (conditionally).
    pub fn bind(&self, key: impl Into<KeyArg>, value: impl Into<Bytes>) -> CreateLease {
        let keeper = self.lease.keeper().clone();
        let parent = self.lease.state().clone();
        keeper
            .lease(key, value)
            .config(self.lease.config())
            .bound_to(parent, self.id.get())
    }

    /// Takes over `entry`, which someone else wrote **bound to this session** (a hand-over:
    /// [`Release::hand_over_bound`](super::Release::hand_over_bound)), as a lease of ours —
    /// without a write. Its origin is the entry's lease origin (the hand-over's revision),
    /// its revision the entry's; from here on it is like [`bind`](Self::bind)'s lease: lost
    /// with the session, guarded writes conditional on its revision, released by a fenced
    /// delete. Refused with [`ErrorKind::Conflict`] when `entry` is not bound to this
    /// session, and with [`ErrorKind::LeaseLost`] once the session is not valid.
    pub fn adopt(&self, entry: &Entry) -> Result<super::Lease, Error> {
        if SessionId::bound_by(entry) != Some(self.id) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("the entry is not bound to session {}", self.id),
            )
            .with_op(Operation::Lease)
            .with_key(entry.key().as_str()));
        }
        if !self.lease.is_held() {
            return Err(Error::new(ErrorKind::LeaseLost, "the session was lost")
                .with_op(Operation::Lease)
                .with_key(entry.key().as_str()));
        }
        let created = Created {
            key: entry.key().clone(),
            nonce: self.id.get(),
            origin: entry.lease().map_or(entry.revision(), |t| t.origin()),
            rev: entry.revision(),
            sent: tokio::time::Instant::now(),
            parent: Some(self.lease.state().clone()),
        };
        let keeper = self.lease.keeper().clone();
        let labels = keeper.inner.labels.clone();
        let st = State::new(
            created,
            Bytes::new(),
            self.lease.config(),
            (None, None),
            labels,
        );
        Ok(super::Lease::new(st, keeper))
    }
}

impl Release {
    /// Leaves `value` **bound to session `to`** in place of the tombstone: written without a
    /// TTL, with `to`'s mark and no origin (so its origin is the hand-over's own revision),
    /// conditional on our revision. The session's owner takes it over without a write
    /// ([`Session::adopt`]); it ends with that session like any entry bound to it
    /// ([`remove_if_dead`]). A hand-over whose acknowledgement was lost is recognised by its
    /// value and `to`'s mark.
    pub fn hand_over_bound(self, value: impl Into<Bytes>, to: SessionId) -> Self {
        self.hand_over_to(value.into(), to.get())
    }
}

/// The TTL of the tombstone [`remove_if_dead`] writes on a session key that had no message
/// at all, to make "the session ended" a fact before acting on it.
pub const CONFIRM_TTL: Duration = Duration::from_secs(60);

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
    remove_marked(bucket, entry).await
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
