//! Sessions against real nats-servers: a session's end ends every entry bound to it for
//! everyone (judged from the stream leader, also by clients on R3 followers), a dead
//! session's entry removed by compare-and-set exactly once, lost acknowledgements of a
//! session's creation, renewal and binding recognised, a binding given up before its
//! outcome removed while the session lives, the owner's deadline on its monotonic clock,
//! and an unknown session format refused.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::future::IntoFuture as _;
use std::time::Duration;

use kvtk_core::lease::{
    remove_if_dead, Keeper, Lease, LostReason, Reaped, Session, SessionId, SessionState,
    SESSION_PREFIX,
};
use kvtk_core::{Bucket, BucketConfig, Entry, ErrorKind, Expect, Kv, Removal, WatchEvent};
use kvtk_tests::{until, within, NatsCluster, NatsServer};

mod common;
use common::{lease_cfg, next_entry, next_event, proxied_bucket, with_acks_lost, LOST_ACK_LATENCY};
use tokio::time::Instant;

fn cfg(replicas: usize) -> BucketConfig {
    BucketConfig::new("sessions")
        .history(1)
        .replicas(replicas)
        .per_key_ttl(Duration::from_secs(60))
        .atomic_batches(true)
}

async fn bucket(kv: &Kv) -> Bucket {
    kv.create_or_open(cfg(1)).await.unwrap()
}

/// The stream leader's entry of `key`, which must exist.
async fn leader_entry(b: &Bucket, key: &str) -> Entry {
    b.get_from_leader(key).await.unwrap().unwrap()
}

/// Session `id` as `b`'s client learns it from the stream leader.
async fn state(b: &Bucket, id: SessionId) -> SessionState {
    within("a leader read", SessionState::read(b, id))
        .await
        .unwrap()
}

/// Binds `n` entries `q.<i>` to `session`; returns their keys and leases.
async fn bind_n(session: &Session, n: usize) -> (Vec<String>, Vec<Lease>) {
    let mut keys = Vec::new();
    let mut leases = Vec::new();
    for i in 0..n {
        let key = format!("q.{i}");
        let bound = session.bind(&key, format!("v{i}")).await.unwrap();
        assert_eq!(bound.origin(), bound.revision());
        assert!(bound.is_bound());
        assert_eq!(bound.nonce(), session.id().get());
        assert_eq!(bound.deadline(), session.lease().deadline());
        keys.push(key);
        leases.push(bound);
    }
    (keys, leases)
}

#[tokio::test]
async fn a_sessions_expiry_ends_every_bound_entry_for_everyone_on_r3() {
    let cluster = NatsCluster::start().await;
    let owner_kv = Kv::new(cluster.node_client(0).await);
    let owner = owner_kv.create_or_open(cfg(3)).await.unwrap();
    // Readers on the other nodes: two of the three clients talk to a stream follower, and
    // still judge the session from the stream leader.
    let r1 = Kv::new(cluster.node_client(1).await)
        .open("sessions")
        .await
        .unwrap();
    let r2 = Kv::new(cluster.node_client(2).await)
        .open("sessions")
        .await
        .unwrap();
    let keeper = Keeper::new(&owner, lease_cfg(2)).unwrap();
    let session = keeper.session().name("owner").await.unwrap();
    let id = session.id();
    let (keys, _held) = bind_n(&session, 3).await;
    let alive = state(&r1, id).await;
    assert!(
        matches!(&alive, SessionState::Alive { revision, name } if *revision >= session.lease().origin() && name.as_deref() == Some("owner")),
        "{alive:?}"
    );
    for key in &keys {
        let e = leader_entry(&r2, key).await;
        assert_eq!(SessionId::bound_by(&e), Some(id));
        assert_eq!(remove_if_dead(&r2, &e).await.unwrap(), Reaped::Alive);
    }
    // Renewals stop; the server expires the session key on its own clock.
    session.orphan();
    until("the session key expired", || async {
        state(&r1, id).await
            == SessionState::Ended {
                removal: Some(Removal::Expired),
            }
    })
    .await;
    assert!(!state(&r2, id).await.is_alive());
    // Both readers race to remove every entry: each goes exactly once.
    let mut removed = 0;
    for key in &keys {
        let (a, b) = (leader_entry(&r1, key).await, leader_entry(&r2, key).await);
        let (ra, rb) = tokio::join!(remove_if_dead(&r1, &a), remove_if_dead(&r2, &b));
        for r in [ra.unwrap(), rb.unwrap()] {
            match r {
                Reaped::Removed { .. } => removed += 1,
                Reaped::Moved => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let tomb = leader_entry(&owner, key).await;
        assert!(!tomb.is_value());
        assert_eq!(
            tomb.lease().map(|t| (t.nonce(), t.completed())),
            Some((id.get(), false))
        );
    }
    assert_eq!(removed, keys.len());
}

#[tokio::test]
async fn a_closed_sessions_entry_is_removed_once_by_two_concurrent_removers() {
    let server = NatsServer::start().await;
    let owner = bucket(&Kv::new(server.connect().await)).await;
    let a = bucket(&Kv::new(server.connect().await)).await;
    let b = bucket(&Kv::new(server.connect().await)).await;
    let keeper = Keeper::new(&owner, lease_cfg(10)).unwrap();
    let session = keeper.session().await.unwrap();
    let id = session.id();
    let (keys, _held) = bind_n(&session, 20).await;
    let closed = session.close().await.unwrap();
    assert!(closed.was_held);
    assert_eq!(
        state(&a, id).await,
        SessionState::Ended {
            removal: Some(Removal::Deleted)
        }
    );
    let mut removed = 0;
    for key in &keys {
        let e = leader_entry(&a, key).await;
        let (ra, rb) = tokio::join!(remove_if_dead(&a, &e), remove_if_dead(&b, &e));
        let outcomes = [ra.unwrap(), rb.unwrap()];
        let won = outcomes
            .iter()
            .filter(|r| matches!(r, Reaped::Removed { .. }))
            .count();
        assert_eq!(won, 1, "{key}: {outcomes:?}");
        assert!(outcomes.contains(&Reaped::Moved), "{key}: {outcomes:?}");
        removed += won;
        // Removing it again finds nothing bound.
        let tomb = leader_entry(&a, key).await;
        assert_eq!(remove_if_dead(&a, &tomb).await.unwrap(), Reaped::NotBound);
    }
    assert_eq!(removed, 20);
    // A plain value and a lease with its own TTL are never bound to a session.
    a.put("plain", "x").await.unwrap();
    let plain = leader_entry(&a, "plain").await;
    assert_eq!(remove_if_dead(&a, &plain).await.unwrap(), Reaped::NotBound);
    let lease = keeper.lease("own", "ttl").await.unwrap();
    let own = leader_entry(&a, "own").await;
    assert_eq!(remove_if_dead(&a, &own).await.unwrap(), Reaped::NotBound);
    lease.release().await.unwrap();
}

#[tokio::test]
async fn a_session_of_an_unknown_format_is_refused_and_nothing_is_touched() {
    let server = NatsServer::start().await;
    let b = bucket(&Kv::new(server.connect().await)).await;
    let keeper = Keeper::new(&b, lease_cfg(10)).unwrap();
    let session = keeper.session().await.unwrap();
    let (mut keys, _held) = bind_n(&session, 1).await;
    let key = keys.remove(0);
    // While the session lives, writes guarded by its key land.
    session.lease().put_guarded("data.y", "ok").await.unwrap();
    let txn = b
        .txn()
        .put("data.z", "ok")
        .if_held(session.lease())
        .commit()
        .await;
    assert!(txn.is_ok(), "{txn:?}");
    // A future client rewrites the session key in a format this one does not know.
    let future = r#"{"v":2,"ttl_s":10}"#;
    b.put(session.lease().key().as_str(), future)
        .expect(Expect::Revision(session.lease().revision()))
        .await
        .unwrap();
    let e = leader_entry(&b, &key).await;
    let err = remove_if_dead(&b, &e).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);
    assert_eq!(
        leader_entry(&b, &key).await.revision(),
        e.revision(),
        "untouched"
    );
    // Writes guarded by the session key are refused by the server from now on, and its
    // owner's renewal conflicts: the session is lost, not resurrected.
    let guarded = session.lease().put_guarded("data.x", "late").await;
    assert_eq!(guarded.unwrap_err().kind(), ErrorKind::LeaseLost);
    assert!(b.get_from_leader("data.x").await.unwrap().is_none());
    assert_eq!(
        within("loss", session.lease().lost()).await,
        LostReason::Taken
    );
}

#[tokio::test]
async fn a_session_creation_whose_ack_was_lost_is_adopted() {
    let server = NatsServer::start().await;
    let (proxy, b) = proxied_bucket(&server, cfg(1)).await;
    let keeper = Keeper::new(&b, lease_cfg(10)).unwrap();
    let observer = bucket(&Kv::new(server.connect().await)).await;
    // The creating write is applied after its request timed out: the creation must adopt
    // it, not fail or write again.
    let session = with_acks_lost(&proxy, keeper.session(), || async {
        let keys = observer.keys(format!("{SESSION_PREFIX}>")).await.unwrap();
        !keys.is_empty()
    })
    .await;
    let session = session.unwrap();
    let e = leader_entry(&observer, session.lease().key().as_str()).await;
    assert_eq!(e.lease().unwrap().nonce(), session.id().get());
    assert_eq!(session.lease().origin(), e.lease().unwrap().origin());
    assert!(state(&observer, session.id()).await.is_alive());
    assert!(session.is_alive());
    session.close().await.unwrap();
}

#[tokio::test]
async fn a_session_renewal_whose_ack_was_lost_is_recognised_as_our_own() {
    let server = NatsServer::start().await;
    let (proxy, b) = proxied_bucket(&server, cfg(1)).await;
    // TTL 5 s: the client's reconnection after the cut has 4.5 s before the deadline.
    let keeper = Keeper::new(&b, lease_cfg(5)).unwrap();
    let observer = bucket(&Kv::new(server.connect().await)).await;
    let session = keeper.session().await.unwrap();
    let before = keeper.renewals();
    // Renewals sent while the link is cut time out (500 ms) with their writes buffered; the
    // second attempt is only sent after the first one's outcome became unknown.
    proxy.cut();
    until("two renewals into the cut", || {
        std::future::ready(keeper.renewals() >= before + 2)
    })
    .await;
    proxy.heal();
    // The buffered renewal lands; the next one conflicts with it and must recognise it as
    // ours (the session's nonce, newer than expected) instead of calling the session taken.
    let healed = keeper.renewals();
    until("two renewals after the cut", || {
        std::future::ready(keeper.renewals() >= healed + 2)
    })
    .await;
    assert!(session.is_alive(), "{:?}", session.lease().loss_reason());
    let e = leader_entry(&observer, session.lease().key().as_str()).await;
    assert_eq!(e.lease().unwrap().nonce(), session.id().get());
    assert_eq!(e.lease().unwrap().origin(), session.lease().origin());
    assert!(state(&observer, session.id()).await.is_alive());
    session.close().await.unwrap();
}

#[tokio::test]
async fn a_binding_whose_ack_was_lost_is_adopted() {
    let server = NatsServer::start().await;
    let (proxy, b) = proxied_bucket(&server, cfg(1)).await;
    let keeper = Keeper::new(&b, lease_cfg(30)).unwrap();
    let observer = bucket(&Kv::new(server.connect().await)).await;
    let session = keeper.session().await.unwrap();
    let binding = session.bind("q.lost-ack", "v");
    let bound = with_acks_lost(&proxy, binding, || async {
        let e = observer.get_from_leader("q.lost-ack").await.unwrap();
        e.is_some()
    })
    .await;
    let bound = bound.unwrap();
    let e = leader_entry(&observer, "q.lost-ack").await;
    assert_eq!(SessionId::bound_by(&e), Some(session.id()));
    assert_eq!(
        (bound.origin(), bound.revision()),
        (e.revision(), e.revision())
    );
    let released = bound.release().await.unwrap();
    assert!(released.was_held);
    assert_eq!(
        released.tombstone,
        Some(leader_entry(&observer, "q.lost-ack").await.revision())
    );
    session.close().await.unwrap();
}

#[tokio::test]
async fn the_owner_demotes_itself_on_its_monotonic_deadline_before_the_server_expires() {
    let server = NatsServer::start().await;
    let (proxy, b) = proxied_bucket(&server, cfg(1)).await;
    let observer = bucket(&Kv::new(server.connect().await)).await;
    // TTL 5 s: margin 500 ms, validity 4.5 s from the send time of the last acknowledged
    // renewal.
    let keeper = Keeper::new(&b, lease_cfg(5)).unwrap();
    let session = keeper.session().await.unwrap();
    let id = session.id();
    let (mut keys, _held) = bind_n(&session, 1).await;
    let key = keys.remove(0);
    let cut_at = Instant::now();
    proxy.blackhole();
    let why = within("the session's loss", session.lease().lost()).await;
    let lost_at = Instant::now();
    assert_eq!(why, LostReason::Deadline);
    assert!(
        lost_at >= session.lease().deadline(),
        "not before its deadline"
    );
    assert!(
        lost_at < cut_at + Duration::from_secs(5),
        "within the TTL of the cut"
    );
    // The server has not expired the session yet: the owner stopped first.
    assert!(
        state(&observer, id).await.is_alive(),
        "the owner must demote itself first"
    );
    let err = session.bind("q.late", "v").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseLost);
    // Then the server's clock ends it, and anyone may remove its entry.
    until("the session key expired", || async {
        !state(&observer, id).await.is_alive()
    })
    .await;
    let e = leader_entry(&observer, &key).await;
    assert!(matches!(
        remove_if_dead(&observer, &e).await.unwrap(),
        Reaped::Removed { .. }
    ));
    proxy.heal();
}

#[tokio::test]
async fn an_entry_whose_sessions_marker_expired_too_is_removed_once_its_end_is_confirmed() {
    let server = NatsServer::start().await;
    let kv = Kv::new(server.connect().await);
    // Expiry markers themselves expire after 1 s: the session key ends with no message.
    let short = BucketConfig::new("short")
        .history(1)
        .per_key_ttl(Duration::from_secs(1));
    let b = kv.create_or_open(short).await.unwrap();
    let keeper = Keeper::new(&b, lease_cfg(1)).unwrap();
    let session = keeper.session().await.unwrap();
    let id = session.id();
    let (mut keys, _held) = bind_n(&session, 1).await;
    let key = keys.remove(0);
    session.orphan();
    // The server's TTL clock is under test: the key expires, then its marker does.
    until("the session key has no message", || async {
        b.get_from_leader(id.key()).await.unwrap().is_none()
    })
    .await;
    assert_eq!(state(&b, id).await, SessionState::Ended { removal: None });
    let e = leader_entry(&b, &key).await;
    // A read-only observer takes "no message" from a state as recent as the entry it saw.
    let seen = within(
        "a confirmed read",
        SessionState::read_after(&b, id, e.revision()),
    );
    assert_eq!(seen.await.unwrap(), SessionState::Ended { removal: None });
    // From an older state it would not (a deposed leader may answer from before the
    // session existed): it reads again until the bucket has reached the revision it saw.
    let last = b.snapshot(id.key()).await.unwrap().as_of.unwrap();
    let ahead = kvtk_core::Revision::new(last.get() + 1).unwrap();
    let pending = tokio::spawn({
        let b = b.clone();
        async move { SessionState::read_after(&b, id, ahead).await }
    });
    // Nothing to wait for: what is asserted is that nothing happens in this time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pending.is_finished(),
        "concluded from a state before the one it saw"
    );
    b.put("other", "x").await.unwrap();
    let later = within("the read once the bucket moved on", pending).await;
    assert_eq!(
        later.unwrap().unwrap(),
        SessionState::Ended { removal: None }
    );
    assert!(matches!(
        remove_if_dead(&b, &e).await.unwrap(),
        Reaped::Removed { .. }
    ));
    // The end was made a fact first: a tombstone of the session, expecting no message.
    let confirmed = leader_entry(&b, &id.key()).await;
    assert_eq!(confirmed.removal(), Some(Removal::Deleted));
    assert_eq!(confirmed.lease().map(|t| t.nonce()), Some(id.get()));
    assert_eq!(confirmed.expected(), Some(Expect::NoMessage));
}

#[tokio::test]
async fn a_hand_over_bound_to_another_session_is_adopted_without_a_write_and_ends_with_it() {
    let server = NatsServer::start().await;
    let (proxy, from) = proxied_bucket(&server, cfg(1)).await;
    let to = bucket(&Kv::new(server.connect().await)).await;
    let giver = Keeper::new(&from, lease_cfg(30)).unwrap();
    let taker = Keeper::new(&to, lease_cfg(10)).unwrap();
    let (gs, ts) = (
        giver.session().await.unwrap(),
        taker.session().await.unwrap(),
    );
    let held = gs.bind("leader", "giver").await.unwrap();
    // The hand-over's acknowledgement is lost: the release recognises its own write.
    let hand_over = held
        .release()
        .hand_over_bound("taker", ts.id())
        .into_future();
    let released = with_acks_lost(&proxy, hand_over, || async {
        let e = to.get_from_leader("leader").await.unwrap();
        e.is_some_and(|e| e.value().as_ref() == b"taker")
    })
    .await
    .unwrap();
    let e = leader_entry(&to, "leader").await;
    assert_eq!(released.tombstone, Some(e.revision()));
    assert_eq!(SessionId::bound_by(&e), Some(ts.id()));
    // Someone else's session cannot adopt it; ours can, and nothing is written.
    assert_eq!(gs.adopt(&e).unwrap_err().kind(), ErrorKind::Conflict);
    let adopted = ts.adopt(&e).unwrap();
    assert_eq!(
        (adopted.origin(), adopted.revision()),
        (e.revision(), e.revision())
    );
    assert!(adopted.is_bound() && adopted.is_held());
    assert_eq!(adopted.deadline(), ts.lease().deadline());
    assert_eq!(leader_entry(&to, "leader").await.revision(), e.revision());
    // Its guarded write is conditional on its revision; the session's end ends it.
    let rev = adopted.put_guarded("fenced", "x").await.unwrap();
    assert!(rev > e.revision());
    ts.close().await.unwrap();
    within("the adopted lease to be lost", adopted.lost()).await;
    assert_eq!(
        remove_if_dead(&to, &e).await.unwrap(),
        Reaped::Removed {
            tombstone: leader_entry(&to, "leader").await.revision()
        }
    );
    gs.close().await.unwrap();
}

#[tokio::test]
async fn a_bound_entry_whose_release_was_dropped_midway_is_removed_in_the_background() {
    let server = NatsServer::start().await;
    let (proxy, b) = proxied_bucket(&server, cfg(1)).await;
    let keeper = Keeper::new(&b, lease_cfg(30)).unwrap();
    let observer = bucket(&Kv::new(server.connect().await)).await;
    let session = keeper.session().await.unwrap();
    let bound = session.bind("q.dropped", "v").await.unwrap();
    let origin = bound.origin();
    // The holder lets go while the link is down and gives up waiting: the entry has no TTL,
    // so left there it would stay for as long as the session lives.
    proxy.cut();
    let waited = tokio::time::timeout(Duration::from_millis(300), bound.release().into_future());
    assert!(waited.await.is_err(), "the release cannot finish while cut");
    proxy.heal();
    until("the dropped release to be finished", || async {
        let e = observer.get_from_leader("q.dropped").await.unwrap();
        e.is_some_and(|e| !e.is_value())
    })
    .await;
    let tombstone = leader_entry(&observer, "q.dropped").await;
    let mark = tombstone.lease().unwrap();
    assert_eq!((mark.nonce(), mark.origin()), (session.id().get(), origin));
    assert!(session.is_alive());
    within("the keeper's background work", keeper.shutdown()).await;
    session.close().await.unwrap();
}

#[tokio::test]
async fn binding_a_key_again_makes_a_new_entry_never_the_sessions_earlier_one() {
    let server = NatsServer::start().await;
    let b = bucket(&Kv::new(server.connect().await)).await;
    let keeper = Keeper::new(&b, lease_cfg(30)).unwrap();
    let session = keeper.session().await.unwrap();
    // The first binding is still on the key (as a release that failed leaves it) when the
    // same key is bound again with the same value: a new entry, a new token.
    let first = session.bind("q.again", "v").await.unwrap();
    let again = session.bind("q.again", "v").await.unwrap();
    assert!(
        again.origin() > first.origin(),
        "{again:?} reused {first:?}"
    );
    let held_by_again = |e: Entry| (e.revision(), e.lease().unwrap().origin());
    let want = (again.origin(), again.origin());
    assert_eq!(held_by_again(leader_entry(&b, "q.again").await), want);
    // The earlier lease's release, late, must not remove the newer entry of its session.
    let released = first.release().await.unwrap();
    assert_eq!(released.tombstone, None);
    assert_eq!(held_by_again(leader_entry(&b, "q.again").await), want);
    again.release().await.unwrap();
    session.close().await.unwrap();
}

#[tokio::test]
async fn a_bound_creation_given_up_before_its_outcome_is_removed_after_one_renewal_of_the_session()
{
    let server = NatsServer::start().await;
    let (proxy, b) = proxied_bucket(&server, cfg(1)).await;
    // TTL 120 s: the keeper's first scheduled renewal is 40 s away, beyond every wait here.
    let keeper = Keeper::new(&b, lease_cfg(120)).unwrap();
    let observer = bucket(&Kv::new(server.connect().await)).await;
    let mut w = observer.watch(["q.abandoned"]).await.unwrap();
    assert!(matches!(next_event(&mut w).await, WatchEvent::InitialDone));
    let session = keeper.session().await.unwrap();
    // The binding lands, but its caller gives up before any acknowledgement comes back:
    // nobody holds the entry, and it has no TTL.
    proxy.set_latency(LOST_ACK_LATENCY);
    let binding = session.bind("q.abandoned", "v").into_future();
    let landed = until("the binding to land", || async {
        let e = observer.get_from_leader("q.abandoned").await.unwrap();
        e.is_some()
    });
    tokio::select! {
        held = binding => panic!("the binding finished before it landed: {held:?}"),
        () = landed => {}
    }
    proxy.heal();
    // Binding the key again waits for the abandoned entry's removal — which renews the
    // session at once to learn that nothing more of ours can land — then makes a new one.
    let again = within(
        "the new binding",
        session.bind("q.abandoned", "v").into_future(),
    )
    .await
    .unwrap();
    let abandoned = next_entry(&mut w).await;
    assert_eq!(SessionId::bound_by(&abandoned), Some(session.id()));
    let removal = next_entry(&mut w).await;
    let mark = removal.lease().unwrap();
    assert!(!removal.is_value() && !mark.completed(), "{removal:?}");
    assert_eq!(
        (mark.nonce(), mark.origin()),
        (session.id().get(), abandoned.revision())
    );
    let new = next_entry(&mut w).await;
    assert!(new.is_value());
    assert_eq!(new.revision(), again.origin());
    assert!(session.is_alive() && again.is_held());
    assert!(
        session.lease().revision() > session.lease().origin(),
        "the session was renewed by the sweep"
    );
    again.release().await.unwrap();
    within("the keeper's background work", keeper.shutdown()).await;
    session.close().await.unwrap();
}
