//! What a group looks like from its keys: [`MemberInfo`], [`MembershipEvent`], and the pure
//! rule ([`Roster`]) that turns the revisions of member keys into events. `members()` and
//! `watch()` both go through it, so a listing and a watch agree by construction.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use kvtk_core::lease::{SessionBook, SessionId, SessionState};
use kvtk_core::{Entry, Removal, Revision};
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::names;

/// A registered member, as any process sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    id: String,
    metadata: Bytes,
    joined_at: Revision,
    revision: Revision,
    nonce: Option<u128>,
    session: Option<SessionId>,
}

impl MemberInfo {
    /// The instance id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The metadata as stored.
    pub fn metadata(&self) -> &Bytes {
        &self.metadata
    }

    /// Decodes JSON metadata (written with [`Json`](crate::Json)).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.metadata).map_err(|e| {
            Error::metadata(
                format!("could not decode the metadata of member {:?}", self.id),
                e,
            )
        })
    }

    /// The revision of the write that registered this incarnation of the member (its
    /// lease's origin). A member that rejoins gets a new, higher one.
    pub fn joined_at(&self) -> Revision {
        self.joined_at
    }

    /// The revision of the member key's latest write (renewals move it).
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The session the member is bound to
    /// ([`Membership::bind_to_session`](crate::Membership::bind_to_session)), if it is: it is
    /// a member while that session lives.
    pub fn session(&self) -> Option<SessionId> {
        self.session
    }
}

/// Why a member left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaveReason {
    /// It left: its own release removed its key (`leave()` or dropping the member).
    Left,
    /// The server expired its key: the process died, hung or was cut off for its TTL. For a
    /// member bound to a session: its session ended (expired on the server's clock, or
    /// closed) without the member leaving first.
    Expired,
    /// Someone else deleted or purged its key (an operator), or the server removed it.
    Removed,
    /// It went while the watch was away (a reconnect) and left no trace that says how: its
    /// key was re-registered by a new incarnation, or its tombstone expired too.
    Unobserved,
}

/// An item of a [`MembershipWatch`](crate::MembershipWatch).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipEvent {
    /// A member registered when the watch started (one per member, by `joined_at`).
    Present(MemberInfo),
    /// All [`Present`](Self::Present) members were delivered (sent once, also for an empty
    /// group); live events follow.
    InitialDone,
    /// A member registered.
    Joined(MemberInfo),
    /// A member changed its metadata (renewals with the same metadata are not reported).
    Updated(MemberInfo),
    /// A member is gone.
    Left {
        /// The member as last seen.
        member: MemberInfo,
        /// Why.
        reason: LeaveReason,
        /// The revision of the removal, when it was observed.
        revision: Option<Revision>,
    },
}

/// One observed change of a member key, or of the session a member is bound to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Observed {
    /// A live member (and its entry when it is bound to a session, for removing it once the
    /// session ended).
    Value(MemberInfo, Option<Box<Entry>>),
    Removed {
        id: String,
        revision: Revision,
        removal: Option<Removal>,
        nonce: Option<u128>,
        /// A completed release's tombstone (a bound member's own `leave()`).
        completed: bool,
    },
    /// The watch reported the key gone without a trace (kvtk-core's `HistoryGone`).
    Vanished { id: String },
    /// What a write of a session key, or the stream leader, says of a session.
    Session {
        id: SessionId,
        state: SessionState,
        revision: Option<Revision>,
    },
}

impl Observed {
    /// The observation an entry of `group`'s key space makes; `None` for other keys. A
    /// member whose metadata is of a format version this library does not know (its
    /// `Kv-Format` header) is refused ([`kvtk_core::ErrorKind::Codec`]).
    pub(crate) fn from_entry(group: &str, e: &Entry) -> Result<Option<Observed>, kvtk_core::Error> {
        let Some(id) = names::instance_of(group, e.key().as_str()) else {
            return Ok(None);
        };
        kvtk_core::format::check_header(e, "member")?;
        let id = id.to_string();
        let tag = e.lease();
        let nonce = tag.map(|t| t.nonce());
        if !e.is_value() {
            return Ok(Some(Observed::Removed {
                id,
                revision: e.revision(),
                removal: e.removal(),
                nonce,
                completed: tag.is_some_and(|t| t.completed()),
            }));
        }
        let session = SessionId::bound_by(e);
        let info = MemberInfo {
            id,
            metadata: e.value().clone(),
            joined_at: tag.map_or(e.revision(), |t| t.origin()),
            revision: e.revision(),
            nonce,
            session,
        };
        Ok(Some(Observed::Value(
            info,
            session.map(|_| Box::new(e.clone())),
        )))
    }

    /// The observation a write of a session key makes (`None` for other keys).
    pub(crate) fn from_session_entry(e: &Entry) -> Result<Option<Observed>, kvtk_core::Error> {
        let Some(id) = SessionId::from_key(e.key().as_str()) else {
            return Ok(None);
        };
        Ok(Some(Observed::Session {
            id,
            state: SessionState::judge(id, Some(e))?,
            revision: Some(e.revision()),
        }))
    }
}

/// The members of one group, by instance id, and what is known of the sessions some of them
/// are bound to.
#[derive(Debug, Default)]
pub(crate) struct Roster {
    members: BTreeMap<String, MemberInfo>,
    /// The entries of the members bound to a session, by instance id.
    bound: HashMap<String, Entry>,
    sessions: SessionBook,
    /// Entries of ended sessions, for an observer that may remove them.
    reapable: Vec<Entry>,
}

impl Roster {
    /// Applies an observation (in revision order) and returns the events it makes.
    pub(crate) fn apply(&mut self, obs: Observed) -> Vec<MembershipEvent> {
        match obs {
            Observed::Value(info, entry) => self.value(info, entry),
            Observed::Removed {
                id,
                revision,
                removal,
                nonce,
                completed,
            } => self.removed(&id, revision, removal, nonce, completed),
            Observed::Vanished { id } => {
                self.bound.remove(&id);
                self.members
                    .remove(&id)
                    .map(|member| MembershipEvent::Left {
                        member,
                        reason: LeaveReason::Unobserved,
                        revision: None,
                    })
                    .into_iter()
                    .collect()
            }
            Observed::Session {
                id,
                state,
                revision,
            } => self.session(id, &state, revision),
        }
    }

    /// A session's state: once it ended, its members leave (`Expired`) and their entries
    /// become removable.
    fn session(
        &mut self,
        id: SessionId,
        state: &SessionState,
        revision: Option<Revision>,
    ) -> Vec<MembershipEvent> {
        self.sessions.record(id, state);
        if state.is_alive() {
            return vec![];
        }
        let gone: Vec<String> = (self.members.values())
            .filter(|m| m.session == Some(id))
            .map(|m| m.id.clone())
            .collect();
        let mut events = Vec::with_capacity(gone.len());
        for member_id in gone {
            self.reapable.extend(self.bound.remove(&member_id));
            if let Some(member) = self.members.remove(&member_id) {
                events.push(MembershipEvent::Left {
                    member,
                    reason: LeaveReason::Expired,
                    revision,
                });
            }
        }
        let bound: std::collections::HashSet<SessionId> =
            self.members.values().filter_map(|m| m.session).collect();
        self.sessions.forget_ended(|s| bound.contains(&s));
        events
    }

    /// What the roster knows of session `id` (see [`SessionBook::get`]).
    pub(crate) fn session_known(&self, id: SessionId) -> Option<bool> {
        self.sessions.get(id)
    }

    /// The sessions current members are bound to that the roster knows nothing of.
    pub(crate) fn unknown_sessions(&self) -> Vec<SessionId> {
        let mut ids: Vec<SessionId> = (self.members.values())
            .filter_map(|m| m.session)
            .filter(|s| self.sessions.get(*s).is_none())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The newest revision of a member entry bound to session `id` the roster holds: a write
    /// later than the session's creation.
    pub(crate) fn seen_of(&self, id: SessionId) -> Option<Revision> {
        (self.members.values())
            .filter(|m| m.session == Some(id))
            .filter_map(|m| self.bound.get(&m.id).map(Entry::revision))
            .max()
    }

    /// Whether a current member is bound to a session.
    pub(crate) fn has_bound(&self) -> bool {
        !self.bound.is_empty()
    }

    /// The member `id` as known now.
    pub(crate) fn member(&self, id: &str) -> Option<&MemberInfo> {
        self.members.get(id)
    }

    /// Takes the entries of ended sessions seen so far.
    pub(crate) fn take_reapable(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.reapable)
    }

    fn value(&mut self, info: MemberInfo, entry: Option<Box<Entry>>) -> Vec<MembershipEvent> {
        if info
            .session
            .is_some_and(|s| self.sessions.get(s) == Some(false))
        {
            // A member of an ended session (a replica's or a snapshot's past, not removed
            // yet): not a member; removable.
            self.reapable.extend(entry.map(|e| *e));
            return vec![];
        }
        match entry {
            Some(e) => self.bound.insert(info.id.clone(), *e),
            None => self.bound.remove(&info.id),
        };
        let Some(known) = self.members.get_mut(&info.id) else {
            self.members.insert(info.id.clone(), info.clone());
            return vec![MembershipEvent::Joined(info)];
        };
        if info.revision <= known.revision {
            return vec![];
        }
        if info.joined_at == known.joined_at {
            let changed = info.metadata != known.metadata;
            *known = info.clone();
            return if changed {
                vec![MembershipEvent::Updated(info)]
            } else {
                vec![]
            };
        }
        // A new incarnation under the same id: the old one went unseen.
        let old = std::mem::replace(known, info.clone());
        vec![
            MembershipEvent::Left {
                member: old,
                reason: LeaveReason::Unobserved,
                revision: None,
            },
            MembershipEvent::Joined(info),
        ]
    }

    fn removed(
        &mut self,
        id: &str,
        revision: Revision,
        removal: Option<Removal>,
        nonce: Option<u128>,
        completed: bool,
    ) -> Vec<MembershipEvent> {
        self.bound.remove(id);
        let Some(member) = self.members.remove(id) else {
            return vec![];
        };
        let own = nonce.is_some() && nonce == member.nonce;
        // A bound member's tombstone with its session's mark is its own release (completed
        // by `leave()`, or a dropped member's while the session lives) or, once the session
        // ended, an observer's removal of it.
        let session_ended = member
            .session
            .is_some_and(|s| self.sessions.get(s) == Some(false));
        let reason = match removal {
            Some(Removal::Expired) => LeaveReason::Expired,
            Some(Removal::Deleted) if own && session_ended && !completed => LeaveReason::Expired,
            Some(Removal::Deleted) if own => LeaveReason::Left,
            _ => LeaveReason::Removed,
        };
        vec![MembershipEvent::Left {
            member,
            reason,
            revision: Some(revision),
        }]
    }

    /// The current members, by `joined_at`.
    pub(crate) fn current(&self) -> Vec<MemberInfo> {
        let mut v: Vec<MemberInfo> = self.members.values().cloned().collect();
        v.sort_by_key(|m| m.joined_at);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(n: u64) -> Revision {
        Revision::new(n).unwrap()
    }

    fn info(id: &str, meta: &str, joined: u64, at: u64, nonce: u128) -> MemberInfo {
        MemberInfo {
            id: id.into(),
            metadata: Bytes::copy_from_slice(meta.as_bytes()),
            joined_at: rev(joined),
            revision: rev(at),
            nonce: Some(nonce),
            session: None,
        }
    }

    fn value(id: &str, meta: &str, joined: u64, at: u64, nonce: u128) -> Observed {
        Observed::Value(info(id, meta, joined, at, nonce), None)
    }

    /// A member bound to session `session` (its mark's nonce is the session's).
    fn bound(id: &str, joined: u64, at: u64, session: u128) -> Observed {
        let sid = SessionId::from_key(&format!("_session.{session:032x}")).unwrap();
        let mut m = info(id, "", joined, at, session);
        m.session = Some(sid);
        Observed::Value(m, None)
    }

    fn session(n: u128, at: u64, alive: bool) -> Observed {
        let id = SessionId::from_key(&format!("_session.{n:032x}")).unwrap();
        let state = if alive {
            SessionState::Alive {
                revision: rev(at),
                name: None,
            }
        } else {
            SessionState::Ended {
                removal: Some(Removal::Expired),
            }
        };
        Observed::Session {
            id,
            state,
            revision: Some(rev(at)),
        }
    }

    fn removed(id: &str, at: u64, removal: Removal, nonce: Option<u128>) -> Observed {
        Observed::Removed {
            id: id.into(),
            revision: rev(at),
            removal: Some(removal),
            nonce,
            completed: false,
        }
    }

    fn kinds(evs: &[MembershipEvent]) -> Vec<String> {
        evs.iter()
            .map(|e| match e {
                MembershipEvent::Present(m) => format!("present {}", m.id()),
                MembershipEvent::InitialDone => "initial done".into(),
                MembershipEvent::Joined(m) => format!("joined {}@{}", m.id(), m.joined_at()),
                MembershipEvent::Updated(m) => format!("updated {}", m.id()),
                MembershipEvent::Left { member, reason, .. } => {
                    format!("left {} {reason:?}", member.id())
                }
            })
            .collect()
    }

    #[test]
    fn the_rule_in_a_table() {
        let mut r = Roster::default();
        let steps: Vec<(Observed, Vec<&str>)> = vec![
            (value("a", "m1", 1, 1, 7), vec!["joined a@1"]),
            (value("a", "m1", 1, 2, 7), vec![]), // a renewal
            (value("a", "m2", 1, 3, 7), vec!["updated a"]),
            (value("a", "m2", 1, 3, 7), vec![]), // a duplicate
            (value("b", "x", 4, 4, 8), vec!["joined b@4"]),
            (
                removed("a", 5, Removal::Deleted, Some(7)),
                vec!["left a Left"],
            ),
            (removed("a", 6, Removal::Deleted, Some(7)), vec![]), // already gone
            (
                removed("b", 7, Removal::Expired, None),
                vec!["left b Expired"],
            ),
            (value("b", "x", 8, 8, 9), vec!["joined b@8"]),
            (
                removed("b", 9, Removal::Deleted, Some(1)),
                vec!["left b Removed"],
            ),
            (value("c", "x", 10, 10, 2), vec!["joined c@10"]),
            (
                value("c", "x", 12, 12, 3),
                vec!["left c Unobserved", "joined c@12"],
            ),
            (
                Observed::Vanished { id: "c".into() },
                vec!["left c Unobserved"],
            ),
            (Observed::Vanished { id: "zz".into() }, vec![]),
        ];
        for (i, (obs, want)) in steps.into_iter().enumerate() {
            assert_eq!(kinds(&r.apply(obs)), want, "step {i}");
        }
        assert!(r.current().is_empty());
    }

    #[test]
    fn members_bound_to_a_session_leave_with_it() {
        let mut r = Roster::default();
        let done = |id: &str, at: u64, nonce: u128| Observed::Removed {
            id: id.into(),
            revision: rev(at),
            removal: Some(Removal::Deleted),
            nonce: Some(nonce),
            completed: true,
        };
        let steps: Vec<(Observed, Vec<&str>)> = vec![
            (session(5, 1, true), vec![]),
            (bound("a", 2, 2, 5), vec!["joined a@2"]),
            (bound("b", 3, 3, 5), vec!["joined b@3"]),
            (bound("c", 4, 4, 6), vec!["joined c@4"]),
            (value("d", "", 5, 5, 9), vec!["joined d@5"]),
            (done("c", 6, 6), vec!["left c Left"]),
            (
                removed("b", 7, Removal::Deleted, Some(5)),
                vec!["left b Left"],
            ),
            (session(5, 8, true), vec![]), // a renewal
            (session(5, 9, false), vec!["left a Expired"]),
            // The dead session's entry, seen late (a lagging replica), and its removal.
            (bound("a", 2, 2, 5), vec![]),
            (removed("a", 10, Removal::Deleted, Some(5)), vec![]),
            (bound("e", 11, 11, 7), vec!["joined e@11"]),
            (session(7, 12, false), vec![]),
        ];
        let mut steps = steps.into_iter().enumerate();
        for (i, (obs, want)) in steps.by_ref().take(12) {
            assert_eq!(kinds(&r.apply(obs)), want, "step {i}");
        }
        assert_eq!(r.unknown_sessions().len(), 1, "session 7 was never seen");
        let (_, (end, _)) = steps.next().unwrap();
        assert_eq!(kinds(&r.apply(end)), ["left e Expired"]);
        assert_eq!(r.take_reapable().len(), 0, "no entries were given");
        let cur = r.current();
        let ids: Vec<&str> = cur.iter().map(MemberInfo::id).collect();
        assert_eq!(ids, ["d"]);
    }

    #[test]
    fn current_is_ordered_by_joined_at() {
        let mut r = Roster::default();
        r.apply(value("z", "", 3, 3, 1));
        r.apply(value("a", "", 5, 5, 2));
        r.apply(value("z", "", 3, 6, 1));
        let cur = r.current();
        let ids: Vec<&str> = cur.iter().map(MemberInfo::id).collect();
        assert_eq!(ids, ["z", "a"]);
    }
}
