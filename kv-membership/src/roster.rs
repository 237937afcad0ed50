//! What a group looks like from its keys: [`MemberInfo`], [`MembershipEvent`], and the pure
//! rule ([`Roster`]) that turns the revisions of member keys into events. `members()` and
//! `watch()` both go through it, so a listing and a watch agree by construction.

use std::collections::BTreeMap;

use bytes::Bytes;
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
}

/// Why a member left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaveReason {
    /// It left: its own release removed its key (`leave()` or dropping the member).
    Left,
    /// The server expired its key: the process died, hung or was cut off for its TTL.
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

/// One observed change of a member key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Observed {
    Value(MemberInfo),
    Removed {
        id: String,
        revision: Revision,
        removal: Option<Removal>,
        nonce: Option<u128>,
    },
    /// The watch reported the key gone without a trace (kvtk-core's `HistoryGone`).
    Vanished {
        id: String,
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
        Ok(Some(if e.is_value() {
            Observed::Value(MemberInfo {
                id,
                metadata: e.value().clone(),
                joined_at: tag.map_or(e.revision(), |t| t.origin()),
                revision: e.revision(),
                nonce,
            })
        } else {
            Observed::Removed {
                id,
                revision: e.revision(),
                removal: e.removal(),
                nonce,
            }
        }))
    }
}

/// The members of one group, by instance id.
#[derive(Debug, Default)]
pub(crate) struct Roster {
    members: BTreeMap<String, MemberInfo>,
}

impl Roster {
    /// Applies an observation (in revision order) and returns the events it makes.
    pub(crate) fn apply(&mut self, obs: Observed) -> Vec<MembershipEvent> {
        match obs {
            Observed::Value(info) => self.value(info),
            Observed::Removed {
                id,
                revision,
                removal,
                nonce,
            } => self.removed(&id, revision, removal, nonce),
            Observed::Vanished { id } => self
                .members
                .remove(&id)
                .map(|member| MembershipEvent::Left {
                    member,
                    reason: LeaveReason::Unobserved,
                    revision: None,
                })
                .into_iter()
                .collect(),
        }
    }

    fn value(&mut self, info: MemberInfo) -> Vec<MembershipEvent> {
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
    ) -> Vec<MembershipEvent> {
        let Some(member) = self.members.remove(id) else {
            return vec![];
        };
        let reason = match removal {
            Some(Removal::Expired) => LeaveReason::Expired,
            Some(Removal::Deleted) if nonce.is_some() && nonce == member.nonce => LeaveReason::Left,
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

    fn value(id: &str, meta: &str, joined: u64, at: u64, nonce: u128) -> Observed {
        Observed::Value(MemberInfo {
            id: id.into(),
            metadata: Bytes::copy_from_slice(meta.as_bytes()),
            joined_at: rev(joined),
            revision: rev(at),
            nonce: Some(nonce),
        })
    }

    fn removed(id: &str, at: u64, removal: Removal, nonce: Option<u128>) -> Observed {
        Observed::Removed {
            id: id.into(),
            revision: rev(at),
            removal: Some(removal),
            nonce,
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
