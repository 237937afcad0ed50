//! [`SessionBook`]: what an observer that follows the `_session.*` keys knows of sessions,
//! and [`sessions_of`], the distinct sessions a set of entries is bound to. Pure: no I/O.

use std::collections::{HashMap, HashSet};

use super::session::{SessionId, SessionState};
use crate::entry::Entry;
use crate::error::Error;

/// How many ended sessions a book remembers before [`SessionBook::forget_ended`] drops those
/// the caller no longer needs.
pub const KNOWN_ENDED: usize = 1024;

/// What an observer knows of sessions: alive or ended, from writes of session keys it saw
/// (a watch, possibly on a replica) and from stream-leader verdicts it recorded.
///
/// An end seen anywhere is final (a session never comes back), so an expiry marker or a
/// tombstone of a session key seen on a lagging replica is enough to act on; the absence of
/// a session key is not, and an unknown session must be judged from the stream leader
/// ([`SessionState::read`]) before anything bound to it is called ended.
#[derive(Debug, Default, Clone)]
pub struct SessionBook {
    known: HashMap<SessionId, bool>,
}

impl SessionBook {
    /// An empty book.
    pub fn new() -> SessionBook {
        SessionBook::default()
    }

    /// A write `e` seen of any key: `None` unless it is a session key, else the session and
    /// what the write says of it (recorded; an end is never overwritten by a later "alive",
    /// which can only be a lagging replica's past). A live value of an unknown session
    /// format is refused ([`ErrorKind::Codec`](crate::ErrorKind::Codec)).
    pub fn see(&mut self, e: &Entry) -> Result<Option<(SessionId, SessionState)>, Error> {
        let Some(id) = SessionId::from_key(e.key().as_str()) else {
            return Ok(None);
        };
        let state = SessionState::judge(id, Some(e))?;
        self.record(id, &state);
        Ok(Some((id, state)))
    }

    /// Records a verdict on session `id` (a stream leader's, or a watch's).
    pub fn record(&mut self, id: SessionId, state: &SessionState) {
        let alive = state.is_alive();
        let known = self.known.entry(id).or_insert(alive);
        *known = *known && alive;
    }

    /// `Some(true)` when `id` was seen alive (and not ended since), `Some(false)` when it
    /// was seen ended, `None` when the book knows nothing of it.
    pub fn get(&self, id: SessionId) -> Option<bool> {
        self.known.get(&id).copied()
    }

    /// Past [`KNOWN_ENDED`] ended sessions, forgets the ended ones `keep` does not name (an
    /// entry bound to a forgotten session is judged from the stream leader again).
    pub fn forget_ended(&mut self, keep: impl Fn(SessionId) -> bool) {
        let ended = self.known.values().filter(|alive| !**alive).count();
        if ended > KNOWN_ENDED {
            self.known.retain(|id, alive| *alive || keep(*id));
        }
    }
}

/// The distinct sessions `entries` are bound to ([`SessionId::bound_by`]), in order.
pub fn sessions_of<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<SessionId> {
    let ids: HashSet<SessionId> = entries
        .into_iter()
        .filter_map(SessionId::bound_by)
        .collect();
    let mut ids: Vec<SessionId> = ids.into_iter().collect();
    ids.sort_unstable();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Removal;
    use crate::revision::Revision;

    fn id(n: u128) -> SessionId {
        SessionId::from_key(&format!("_session.{n:032x}")).unwrap()
    }

    #[test]
    fn an_end_is_final_and_forgetting_keeps_what_is_named() {
        let mut book = SessionBook::new();
        let alive = SessionState::Alive {
            revision: Revision::new(1).unwrap(),
            name: None,
        };
        let ended = SessionState::Ended {
            removal: Some(Removal::Expired),
        };
        assert_eq!(book.get(id(1)), None);
        book.record(id(1), &alive);
        assert_eq!(book.get(id(1)), Some(true));
        book.record(id(1), &ended);
        book.record(id(1), &alive);
        assert_eq!(book.get(id(1)), Some(false));
        for n in 2..(KNOWN_ENDED as u128 + 3) {
            book.record(id(n), &ended);
        }
        book.record(id(0), &alive);
        book.forget_ended(|s| s == id(2));
        assert_eq!(book.get(id(2)), Some(false));
        assert_eq!(book.get(id(3)), None);
        assert_eq!(book.get(id(0)), Some(true));
    }
}
