//! The pure part of sessions: ids and keys, the binding rule, and the judgement of the
//! stream leader's answer about a session key.

use std::sync::Arc;

use async_nats::HeaderMap;
use time::OffsetDateTime;

use super::*;
use crate::entry::{KV_LEASE, KV_OPERATION, MARKER_REASON, NATS_TTL};
use crate::error::ErrorKind;
use crate::key::Key;

const ID: SessionId = SessionId(0xabc);

/// An entry of `key` at `rev` with `headers` and `value`, as a read would make it.
fn entry(key: &str, rev: u64, headers: &[(&str, &str)], value: &[u8]) -> Entry {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, *v);
    }
    Entry::from_stored(
        Arc::from("b"),
        Key::new(key).unwrap(),
        Revision::new(rev).unwrap(),
        OffsetDateTime::UNIX_EPOCH,
        Some(&h),
        Bytes::copy_from_slice(value),
    )
}

fn session_value(v: u32) -> Vec<u8> {
    format!(r#"{{"v":{v},"ttl_s":3,"name":"n","later":true}}"#).into_bytes()
}

#[test]
fn ids_keys_and_their_text() {
    assert_eq!(ID.key(), "_session.00000000000000000000000000000abc");
    assert_eq!(SessionId::from_key(&ID.key()), Some(ID));
    assert_eq!(ID.to_string().len(), 32);
    for bad in [
        "_session.abc",
        "_session.00000000000000000000000000000ABC",
        "_session.0000000000000000000000000000000g",
        "_sessions.00000000000000000000000000000abc",
        "locks.a._q.x",
        "",
    ] {
        assert_eq!(SessionId::from_key(bad), None, "{bad}");
    }
}

#[test]
fn an_entry_is_bound_when_marked_without_a_ttl() {
    let mark = ID.to_string();
    let later = format!("{mark}:5");
    let bound = entry("locks.a._q.h", 7, &[(KV_LEASE, &mark)], b"v");
    assert_eq!(SessionId::bound_by(&bound), Some(ID));
    let rewritten = entry("locks.a._q.h", 9, &[(KV_LEASE, &later)], b"v");
    assert_eq!(SessionId::bound_by(&rewritten), Some(ID));
    // A lease with its own TTL, a plain value, a removal, the session key itself: not bound.
    let lease = entry(
        "locks.a._q.h",
        7,
        &[(KV_LEASE, &mark), (NATS_TTL, "10s")],
        b"v",
    );
    let plain = entry("config.app", 7, &[], b"v");
    let tomb = entry(
        "locks.a._q.h",
        8,
        &[(KV_LEASE, &later), (KV_OPERATION, "DEL")],
        b"",
    );
    let session = entry(&ID.key(), 3, &[(KV_LEASE, &mark)], &session_value(1));
    for e in [lease, plain, tomb, session] {
        assert_eq!(SessionId::bound_by(&e), None, "{e:?}");
    }
}

#[test]
fn a_live_value_of_the_session_is_alive() {
    let mark = format!("{ID}:3");
    let e = entry(
        &ID.key(),
        9,
        &[(KV_LEASE, &mark), (NATS_TTL, "3s")],
        &session_value(1),
    );
    let state = SessionState::judge(ID, Some(&e)).unwrap();
    assert_eq!(
        state,
        SessionState::Alive {
            revision: Revision::new(9).unwrap(),
            name: Some("n".into())
        }
    );
    assert!(state.is_alive());
}

#[test]
fn no_live_value_of_the_session_is_an_end() {
    let key = ID.key();
    let ended = |e: Option<&Entry>| SessionState::judge(ID, e).unwrap();
    assert_eq!(ended(None), SessionState::Ended { removal: None });
    let marker = entry(&key, 9, &[(MARKER_REASON, "MaxAge")], b"");
    assert_eq!(
        ended(Some(&marker)),
        SessionState::Ended {
            removal: Some(Removal::Expired)
        }
    );
    let closed = entry(
        &key,
        9,
        &[(KV_LEASE, &format!("{ID}:3")), (KV_OPERATION, "DEL")],
        b"",
    );
    assert_eq!(
        ended(Some(&closed)),
        SessionState::Ended {
            removal: Some(Removal::Deleted)
        }
    );
    // A value of the right format written by someone else: the session's renewal conflicts.
    let other = entry(&key, 9, &[(KV_LEASE, "1:3")], &session_value(1));
    assert_eq!(ended(Some(&other)), SessionState::Ended { removal: None });
}

#[test]
fn an_unknown_format_is_refused_not_judged() {
    let mark = format!("{ID}:3");
    for value in [
        session_value(2),
        session_value(0),
        b"not json".to_vec(),
        b"{}".to_vec(),
    ] {
        let e = entry(&ID.key(), 9, &[(KV_LEASE, &mark)], &value);
        let err = SessionState::judge(ID, Some(&e)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec, "{value:?}");
        assert_eq!(err.key(), Some(ID.key().as_str()));
    }
}

#[test]
fn the_session_value_round_trips_and_names_its_version() {
    let v = SessionValue {
        v: SESSION_FORMAT,
        ttl_s: 30,
        name: None,
    };
    let text = String::from_utf8(v.encode().to_vec()).unwrap();
    assert_eq!(text, r#"{"v":1,"ttl_s":30}"#);
    let back: SessionValue = serde_json::from_str(&text).unwrap();
    assert_eq!(back, v);
}

proptest::proptest! {
    #[test]
    fn any_key_and_value_is_judged_without_panicking(key in "\\PC{0,48}", value in proptest::collection::vec(0u8..=255, 0..64)) {
        let _ = SessionId::from_key(&key);
        let e = entry(&ID.key(), 2, &[(KV_LEASE, &ID.to_string())], &value);
        let _ = SessionState::judge(ID, Some(&e));
    }

    #[test]
    fn every_id_round_trips_through_its_key(n in proptest::num::u128::ANY) {
        let id = SessionId(n);
        proptest::prop_assert_eq!(SessionId::from_key(&id.key()), Some(id));
    }
}
