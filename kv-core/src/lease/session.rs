//! Sessions: one lease per owner that entries are bound to (the workspace's
//! `docs/protocol.md`, "Sessions", is the normative description).
//!
//! A [`Session`] is a lease on the key `_session.<id>` (`<id>`: the lease's nonce as 32
//! lowercase hex digits), renewed by the owner's [`Keeper`] like any lease — one CAS write
//! per renewal interval on the session key's own revision, whatever number of entries is
//! bound to it. An entry is **bound** to a session when it is written with the session's
//! mark (`Kv-Lease: <id>` on its creation, `<id>:<origin>` after) and **without** a per-key
//! TTL: it never expires by itself and needs no renewal. It lives as long as the session:
//! once the session key holds no live value of the session (expired on the server's clock,
//! closed by its owner, or removed), anyone may remove the entry with a delete conditional
//! on the entry's revision ([`remove_if_dead`](super::remove_if_dead)).
//!
//! This file holds the pure part (ids, the session key's value and its format version, the
//! judgement of a leader read: [`SessionState`]) and the held [`Session`]; `bound.rs` holds
//! the bound entries.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::clock::LeaseConfig;
use super::held::Lease;
use super::keeper::Keeper;
use super::release::Release;
use crate::bucket::ReadOnlyBucket;
use crate::entry::{Entry, Removal};
use crate::error::Error;
use crate::retry::Backoff;
use crate::revision::{Expect, Revision};

/// The prefix of session keys: `_session.<id>`. Keys under `_session.` are reserved for sessions (`_kv…` is NATS's own).
pub const SESSION_PREFIX: &str = "_session.";

/// Whether `name` (a key, or a recipe's name or group that prefixes its keys) lies in the
/// session key space: its first token is `_session`. Recipes refuse such names.
///
/// ```
/// use kvtk_core::lease::in_session_space;
/// assert!(in_session_space("_session"));
/// assert!(in_session_space("_session.x"));
/// assert!(!in_session_space("_sessions"));
/// assert!(!in_session_space("svc._session"));
/// ```
pub fn in_session_space(name: &str) -> bool {
    name.split('.').next() == Some(SESSION_PREFIX.trim_end_matches('.'))
}

/// The session format this library writes and understands (`"v"` in the session key's
/// value). A session of another version is refused ([`ErrorKind::Codec`](crate::ErrorKind::Codec)), never judged.
pub const SESSION_FORMAT: u32 = 1;

/// A session's identity: the nonce of its lease, carried in the mark of every entry bound
/// to it. Shown (and keyed) as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u128);

impl SessionId {
    /// The id as a number (the lease nonce).
    pub fn get(self) -> u128 {
        self.0
    }

    /// The session key: `_session.<32 hex digits>`.
    ///
    /// ```
    /// use kvtk_core::lease::SessionId;
    /// let id = SessionId::from_key("_session.000000000000000000000000000000ff").unwrap();
    /// assert_eq!(id.get(), 255);
    /// assert_eq!(id.key(), "_session.000000000000000000000000000000ff");
    /// assert!(SessionId::from_key("_session.ff").is_none()); // exactly 32 digits
    /// ```
    pub fn key(self) -> String {
        format!("{SESSION_PREFIX}{self}")
    }

    /// The session a session key names, if `key` is one.
    pub fn from_key(key: &str) -> Option<SessionId> {
        let hex = key.strip_prefix(SESSION_PREFIX)?;
        let lower = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        if hex.len() != 32 || !hex.chars().all(lower) {
            return None;
        }
        u128::from_str_radix(hex, 16).ok().map(SessionId)
    }

    /// The session `e` is bound to: a live value carrying a lease mark and no per-key TTL,
    /// on a key that is not itself a session key. `None` for anything else (plain values,
    /// leases with their own TTL, removals).
    pub fn bound_by(e: &Entry) -> Option<SessionId> {
        if !e.is_value() || e.ttl().is_some() || e.key().as_str().starts_with(SESSION_PREFIX) {
            return None;
        }
        e.lease().map(|t| SessionId(t.nonce()))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The JSON value of a session key. Unknown fields are ignored; an unknown `v` is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SessionValue {
    v: u32,
    #[serde(default)]
    ttl_s: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

impl SessionValue {
    fn encode(&self) -> Bytes {
        // Integers and a string always serialize.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// What the stream leader says of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionState {
    /// The session key holds a live value of this session (format [`SESSION_FORMAT`]).
    Alive {
        /// The session key's revision.
        revision: Revision,
        /// The owner's label, if it gave one.
        name: Option<String>,
    },
    /// The session ended, for good: its key holds no live value of it. Entries bound to it
    /// may be removed (conditionally on their revision).
    Ended {
        /// How the key went: [`Removal::Expired`] (expiry marker), [`Removal::Deleted`]
        /// (closed), another removal, or `None` (no message at all, or a value that is not
        /// this session's).
        removal: Option<Removal>,
    },
}

impl SessionState {
    /// Whether the session is alive.
    pub fn is_alive(&self) -> bool {
        matches!(self, SessionState::Alive { .. })
    }

    /// Judges the stream leader's answer `found` for the key of session `id` (pure).
    /// A live value of another format version is refused ([`ErrorKind::Codec`](crate::ErrorKind::Codec)): the caller
    /// must touch nothing.
    pub fn judge(id: SessionId, found: Option<&Entry>) -> Result<SessionState, Error> {
        let Some(e) = found else {
            return Ok(SessionState::Ended { removal: None });
        };
        if !e.is_value() {
            return Ok(SessionState::Ended {
                removal: e.removal(),
            });
        }
        let value: SessionValue = serde_json::from_slice(e.value()).map_err(|err| {
            Error::codec(format!(
                "session {id}: the session key's value is not a session: {err}"
            ))
            .with_key(e.key().as_str())
        })?;
        if value.v != SESSION_FORMAT {
            return Err(Error::codec(format!(
                "session {id} has format version {}, this client speaks {SESSION_FORMAT}: refusing to judge it",
                value.v
            ))
            .with_key(e.key().as_str()));
        }
        if e.lease().map(|t| t.nonce()) != Some(id.get()) {
            return Ok(SessionState::Ended { removal: None });
        }
        Ok(SessionState::Alive {
            revision: e.revision(),
            name: value.name,
        })
    }

    /// Reads session `id`'s key from the stream leader (never a replica, which may lag) and
    /// judges it; transient failures are retried with [`Backoff::DEFAULT`] (bound it with a
    /// timeout).
    ///
    /// "Ended" is final, with one caveat for a read alone: a stream leader deposed without
    /// knowing it yet may answer from an older state, and `Ended { removal: None }` for a key
    /// with **no message** could then predate the session's creation.
    /// [`remove_if_dead`](super::remove_if_dead) confirms that verdict with a conditional
    /// write before it acts; a marker or tombstone needs no confirmation (a session never
    /// comes back).
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn read(bucket: &ReadOnlyBucket, id: SessionId) -> Result<SessionState, Error> {
        Ok(SessionState::fetch(bucket, id).await?.0)
    }

    /// As [`read`](Self::read), for a reader that has seen `seen`, the revision of an entry
    /// bound to the session (so later than the session's creation), and cannot confirm a
    /// no-message verdict with a conditional write as [`remove_if_dead`](super::remove_if_dead)
    /// does — an observer with a read-only handle. A stream leader deposed without knowing it
    /// may answer "no message" from before the session existed; that verdict is taken only
    /// from a snapshot of the key as of `seen` or later
    /// ([`snapshot_since`](ReadOnlyBucket::snapshot_since)), which any replica may give
    /// (the bucket's state there is a prefix of its history that holds the session's
    /// creation). Bound it with a timeout.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn read_after(
        bucket: &ReadOnlyBucket,
        id: SessionId,
        seen: Revision,
    ) -> Result<SessionState, Error> {
        let (state, no_message) = SessionState::fetch(bucket, id).await?;
        if !no_message {
            return Ok(state);
        }
        let snap = bucket.snapshot_since(id.key(), seen).await?;
        SessionState::judge(id, snap.entries.first())
    }

    /// As [`read`](Self::read), and whether the session key had no message at all.
    pub(super) async fn fetch(
        bucket: &ReadOnlyBucket,
        id: SessionId,
    ) -> Result<(SessionState, bool), Error> {
        let key = id.key();
        let found = Backoff::DEFAULT
            .retry(|| bucket.get_from_leader(&key))
            .await?;
        Ok((SessionState::judge(id, found.as_ref())?, found.is_none()))
    }
}

impl Keeper {
    /// Starts creating a session renewed by this keeper; `.await` it. See [`CreateSession`].
    pub fn session(&self) -> CreateSession {
        CreateSession {
            keeper: self.clone(),
            config: None,
            name: None,
        }
    }
}

/// A pending session creation; `.await` it.
///
/// The session key is created with a write expecting no message at all (a fresh random id),
/// carrying the session's mark; a creation whose acknowledgement was lost is recognised by
/// that mark from the stream leader and adopted (see [`CreateLease`](super::CreateLease)).
///
/// # Cancel safety
/// Not cancel safe: the creating write may be applied although the future was dropped; the
/// session key then expires after its TTL, as nobody renews it.
#[must_use = "a session is not created until awaited"]
#[derive(Debug)]
pub struct CreateSession {
    keeper: Keeper,
    config: Option<LeaseConfig>,
    name: Option<String>,
}

impl CreateSession {
    /// The session's timing (default: the keeper's).
    pub fn config(mut self, config: LeaseConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// A label for people (`"name"` in the session key's value), e.g. `host/pid`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    async fn run(self) -> Result<Session, Error> {
        let id = SessionId(uuid::Uuid::new_v4().as_u128());
        let cfg = self.config.unwrap_or(self.keeper.config());
        let value = SessionValue {
            v: SESSION_FORMAT,
            ttl_s: cfg.ttl().as_secs(),
            name: self.name,
        };
        let lease = self
            .keeper
            .lease(id.key(), value.encode())
            .with_nonce(id.get())
            .config(cfg)
            .expect(Expect::NoMessage)
            .await?;
        tracing::debug!(session = %id, origin = lease.origin().get(), "session created");
        Ok(Session { lease, id })
    }
}

impl IntoFuture for CreateSession {
    type Output = Result<Session, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// A session this process keeps alive: the lease of its session key, renewed by the
/// [`Keeper`] that created it. Entries bound to it ([`Session::bind`]) live as long as it.
/// Dropping it closes it in the background; prefer [`close`](Session::close).
#[must_use = "dropping a session closes it"]
#[derive(Debug)]
pub struct Session {
    pub(super) lease: Lease,
    pub(super) id: SessionId,
}

impl Session {
    /// The session's id, carried in the mark of its bound entries.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The session key's lease, renewed by the keeper: its key, origin, revision, local
    /// deadline (send time of the last acknowledged session write + TTL − margin, on the
    /// monotonic clock; every bound entry must be considered lost after it), `lost()`,
    /// `loss_reason()`, `on_end` hooks and cancellation token are the session's.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Whether the session is still alive as far as its owner can tell: no loss signalled
    /// and the deadline not passed.
    pub fn is_alive(&self) -> bool {
        self.lease.is_held()
    }

    /// Closes the session: a delete of the session key conditional on its revision, which
    /// recognises its own tombstone when the acknowledgement was lost. Every entry bound to
    /// it is then ended for everyone (removable by anyone). Bound entries whose release is
    /// under way (dropped just before) are released first — waited for up to 2 s — so that
    /// observers see them leave rather than end with the session; dropping the session
    /// does the same.
    pub fn close(self) -> Release {
        self.lease.release().after_bound_releases()
    }

    /// Stops renewing the session without closing it; the server expires its key after its
    /// TTL.
    pub fn orphan(self) {
        self.lease.orphan();
    }
}

#[cfg(test)]
mod tests;
