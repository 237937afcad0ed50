//! Recognising a creating write of ours whose acknowledgement was lost, from the stream
//! leader's answer for its key (pure).

use bytes::Bytes;

use super::State;
use crate::entry::Entry;

/// What recognises a creating write of ours whose outcome was unknown, once the key is read
/// back from the stream leader.
pub(super) struct Mine<'a> {
    pub(super) nonce: u128,
    pub(super) value: &'a Bytes,
    /// The session of a bound lease.
    pub(super) parent: Option<&'a State>,
    /// The lowest revision the write (or writes) expected (0: no message): ours came after.
    pub(super) after: u64,
}

impl Mine<'_> {
    /// Whether `f` is that write: a value with our nonce created after what it expected —
    /// and, bound, with our value, and not an entry the session knows as a binding of its
    /// own ([`State::binds`]: one whose release failed shares the session's nonce).
    pub(super) fn wrote(&self, f: &Entry) -> bool {
        let Some(tag) = f.lease().filter(|t| t.nonce() == self.nonce) else {
            return false;
        };
        let bound_ok = self
            .parent
            .is_none_or(|session| f.value() == self.value && !session.binds(f.key(), tag.origin()));
        f.is_value() && tag.origin().get() > self.after && bound_ok
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::entry::{LeaseTag, Op};
    use crate::key::Key;
    use crate::lease::clock::LeaseConfig;
    use crate::lease::state::{Created, LostReason};
    use crate::metrics::{LeaseLabels, RECIPE_LEASE};
    use crate::revision::Revision;

    const SESSION: u128 = 0x5e55;

    fn rev(n: u64) -> Revision {
        Revision::new(n).unwrap()
    }

    /// A lease on `key` created at revision `origin`, with `nonce`, bound to `parent`.
    fn lease(key: &str, nonce: u128, origin: u64, parent: Option<Arc<State>>) -> Arc<State> {
        let created = Created {
            key: Key::new(key).unwrap(),
            nonce,
            origin: rev(origin),
            rev: rev(origin),
            sent: tokio::time::Instant::now(),
            parent,
        };
        let cfg = LeaseConfig::new(Duration::from_secs(10)).unwrap();
        let labels = LeaseLabels::new("b", RECIPE_LEASE);
        State::new(created, Bytes::new(), cfg, (None, None), labels)
    }

    /// The creating write of a lease `nonce` on `q.k` at revision `n`, holding `value`.
    fn created_at(n: u64, nonce: u128, value: &'static str) -> Entry {
        Entry {
            bucket: "b".into(),
            key: Key::new("q.k").unwrap(),
            value: Bytes::from_static(value.as_bytes()),
            revision: rev(n),
            created: time::OffsetDateTime::UNIX_EPOCH,
            delta: 0,
            op: Op::Put,
            removal: None,
            ttl: None,
            batch: None,
            lease: Some(Box::new(LeaseTag {
                nonce,
                origin: rev(n),
                completed: false,
            })),
            expected: None,
            format: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_binding_of_the_session_is_never_taken_for_a_lost_creation() {
        let session = lease("_session.s", SESSION, 1, None);
        let v = Bytes::from_static(b"v");
        let mine = |after| Mine {
            nonce: SESSION,
            value: &v,
            parent: Some(&*session),
            after,
        };
        let earlier = lease("q.k", SESSION, 5, Some(session.clone()));
        // Held, or released with its removal not settled: the session knows it as its own.
        assert!(!mine(0).wrote(&created_at(5, SESSION, "v")));
        earlier.lose(LostReason::Released);
        assert!(!mine(0).wrote(&created_at(5, SESSION, "v")));
        // A binding of ours the session does not know, after what our write expected.
        assert!(mine(0).wrote(&created_at(9, SESSION, "v")));
        assert!(mine(4).wrote(&created_at(9, SESSION, "v")));
        // Not after what the write expected, another value, another nonce: not ours.
        assert!(!mine(9).wrote(&created_at(9, SESSION, "v")));
        assert!(!mine(0).wrote(&created_at(9, SESSION, "w")));
        assert!(!mine(0).wrote(&created_at(9, 7, "v")));
        // Once settled, the earlier binding has left the session's set.
        earlier.settle();
        assert!(mine(0).wrote(&created_at(5, SESSION, "v")));
    }

    #[test]
    fn a_lease_of_its_own_is_recognised_by_nonce_whatever_its_value() {
        let v = Bytes::from_static(b"v");
        let mine = Mine {
            nonce: 7,
            value: &v,
            parent: None,
            after: 3,
        };
        assert!(mine.wrote(&created_at(4, 7, "other")));
        assert!(!mine.wrote(&created_at(3, 7, "v")));
        assert!(!mine.wrote(&created_at(4, 8, "v")));
    }
}
