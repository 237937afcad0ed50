//! What is stored under the leader key, and what observers are told.

use std::fmt;

use kvtk_core::{Entry, Revision};
use serde::{Deserialize, Serialize};

/// A term: the fencing token of one leadership.
///
/// It is the revision of the write that won the election, so terms of one bucket are
/// strictly increasing: a later leader always has a higher term. Renewals and
/// [`proclaim`](crate::Leadership::proclaim) change the leader key's revision but never the term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Term(Revision);

impl Term {
    pub(crate) fn new(r: Revision) -> Term {
        Term(r)
    }

    /// The term as a number (for fencing checks in other systems).
    pub fn get(self) -> u64 {
        self.0.get()
    }

    /// The revision of the write that won the election.
    pub fn revision(self) -> Revision {
        self.0
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The JSON value of `<election>.leader`.
///
/// The term is not stored in the value: it is the origin of the leader's lease, which every
/// write of the leadership carries in its lease mark ([`Entry::lease`]), bounded by the
/// entry's own revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) transfer_to: Option<String>,
    /// On a step-down's hand-over (written by the outgoing leader, bound to the successor's
    /// session): the origin of the successor's registration that it was handed to. The
    /// leadership lives while that registration and the session do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) registration: Option<u64>,
}

impl Record {
    /// The value as written: `{"v":1,"id":…}` (see [`kvtk_core::format`]).
    pub(crate) fn to_bytes(&self) -> bytes::Bytes {
        kvtk_core::format::encode_json(self)
    }

    /// Decodes a live leader entry; `None` for removals and undecodable values; an error
    /// ([`kvtk_core::ErrorKind::Codec`]) for a format version this library does not know,
    /// from which nothing may be decided.
    pub(crate) fn from_entry(e: &Entry) -> Result<Option<Record>, kvtk_core::Error> {
        kvtk_core::format::decode_json(e, "leader record")
    }
}

/// The term of a leader-key entry: its lease's origin (never above the entry's revision), or
/// the entry's own revision for a write without a lease mark.
pub(crate) fn term_of(e: &Entry) -> Term {
    Term(e.lease().map_or(e.revision(), |t| t.origin()))
}

/// The JSON value of `<election>.cand.<id>`: a campaigning candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CandidateRecord {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) value: String,
}

impl CandidateRecord {
    /// The value as written: `{"v":1,"id":…}` (see [`kvtk_core::format`]).
    pub(crate) fn to_bytes(&self) -> bytes::Bytes {
        kvtk_core::format::encode_json(self)
    }

    /// Decodes a live registration, as [`Record::from_entry`].
    pub(crate) fn from_entry(e: &Entry) -> Result<Option<CandidateRecord>, kvtk_core::Error> {
        kvtk_core::format::decode_json(e, "candidate registration")
    }
}

/// A leader as observers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaderInfo {
    /// The leader's identity.
    pub id: String,
    /// The value it published (address, metadata), empty if none.
    pub value: String,
    /// Its term (fencing token).
    pub term: Term,
    /// The leader key's revision this was read at (changes with every renewal).
    pub revision: Revision,
    /// While a hand-over is pending: the candidate the leader hands over to. The old leader
    /// has already stopped acting; only this candidate may take over.
    pub transfer_to: Option<String>,
}

/// The leadership state of an election, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Someone leads (or, with `transfer_to` set, is handing over).
    Leader(LeaderInfo),
    /// Nobody leads: the last leader resigned, expired or was never elected.
    NoLeader,
}

impl Observed {
    /// The leader, if any.
    pub fn leader(&self) -> Option<&LeaderInfo> {
        match self {
            Observed::Leader(l) => Some(l),
            Observed::NoLeader => None,
        }
    }

    /// Maps a leader-key entry (value, tombstone or marker) to what it means; an error for
    /// a value of a format version this library does not know.
    pub(crate) fn from_entry(e: &Entry) -> Result<Observed, kvtk_core::Error> {
        if !e.is_value() {
            return Ok(Observed::NoLeader);
        }
        Ok(match Record::from_entry(e)? {
            Some(r) => Observed::Leader(LeaderInfo {
                term: term_of(e),
                id: r.id,
                value: r.value,
                revision: e.revision(),
                transfer_to: r.transfer_to,
            }),
            // Somebody wrote something we cannot read under the leader key: it is live, so it
            // blocks elections; report it as a leader of unknown identity.
            None => Observed::Leader(LeaderInfo {
                id: String::new(),
                value: String::from_utf8_lossy(e.value()).into_owned(),
                term: term_of(e),
                revision: e.revision(),
                transfer_to: None,
            }),
        })
    }

    /// Whether `self` → `next` is a change worth reporting (renewals are not).
    pub(crate) fn differs(&self, next: &Observed) -> bool {
        match (self, next) {
            (Observed::NoLeader, Observed::NoLeader) => false,
            (Observed::Leader(a), Observed::Leader(b)) => {
                a.term != b.term
                    || a.id != b.id
                    || a.value != b.value
                    || a.transfer_to != b.transfer_to
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_json_round_trip_and_optional_fields() {
        let r = Record {
            registration: None,
            id: "a".into(),
            value: "10.0.0.1:80".into(),
            transfer_to: None,
        };
        let s = String::from_utf8(r.to_bytes().to_vec()).unwrap();
        assert_eq!(s, r#"{"v":1,"id":"a","value":"10.0.0.1:80"}"#);
        let back: Record = serde_json::from_str(&s).unwrap();
        assert_eq!(back, r);
        // Records of earlier versions (stored term and nonce) still decode; the stored term
        // is ignored.
        let old: Record = serde_json::from_str(r#"{"id":"b","term":7,"nonce":"n"}"#).unwrap();
        assert_eq!((old.id.as_str(), old.value.as_str()), ("b", ""));
    }
}
