//! Members bound to one session per `Membership` ([`Membership::bind_to_session`]) against
//! real nats-servers: one renewal write per interval however many members a process holds;
//! leaves, drops and updates seen as before; a closed session's members leave (`Expired`) and
//! an observer removes their keys; a member cut off past its session leaves for a read-only
//! observer and rejoins over its dead entry once the cut heals; and the R3 churn scenario of
//! cluster.rs with every process bound to a session of its own.

// Tests may unwrap: a panic is a test failure with a message.
#![allow(clippy::unwrap_used)]

use std::future::IntoFuture as _;
use std::time::Duration;

use kvtk_core::lease::{Keeper, LeaseConfig, SessionState};
use kvtk_core::{Backoff, Include, Kv};
use kvtk_membership::{ErrorKind, LeaveReason, Listing, Membership, MembershipWatch};
use kvtk_tests::{until, within, FaultProxy, NatsServer};
use tokio::time::Instant;

mod common;
use common::{connect, joined, left, next, sidecar, snapshot};

/// Membership in `bucket` over `kv` (the bucket made if missing), bound to a session with a
/// `ttl`-second TTL if given.
async fn membership(kv: &Kv, bucket: &str, session_ttl: Option<u64>) -> Membership {
    kv.create_or_open(Membership::bucket_config(bucket))
        .await
        .unwrap();
    let m = Membership::open(kv, bucket).await.unwrap();
    match session_ttl {
        Some(s) => m.bind_to_session_with(LeaseConfig::new(Duration::from_secs(s)).unwrap()),
        None => m,
    }
}

/// A watch of group `svc` in `bucket` by an observer of its own (not bound), past its empty
/// snapshot.
async fn observed(server: &NatsServer, bucket: &str) -> MembershipWatch {
    let observer = membership(&connect(server.client_url()).await, bucket, None).await;
    let mut w = observer.group("svc").unwrap().watch().await.unwrap();
    assert!(snapshot(&mut w).await.is_empty());
    w
}

#[tokio::test]
async fn one_renewal_write_per_interval_however_many_members_a_process_holds() {
    let server = NatsServer::start().await;
    let kv = connect(server.client_url()).await;
    let svc = membership(&kv, "s1", Some(3)).await.group("svc").unwrap();
    let mut members = Vec::new();
    for i in 0..50 {
        members.push(svc.join(format!("i-{i}"), "up").await.unwrap());
    }
    let session = members[0].session().expect("bound");
    assert!(members.iter().all(|m| m.session() == Some(session)));
    // Every write to the bucket for 3.5 s (renewals every second at TTL 3 s).
    let mut watch = kv.open("s1").await.unwrap().watch([">"]);
    watch = watch.include(Include::UpdatesOnly);
    let mut watch = watch.await.unwrap();
    let events = kvtk_tests::collect_for(Duration::from_millis(3500), &mut watch).await;
    let writes: Vec<String> = events
        .into_iter()
        .filter_map(|ev| ev.unwrap().into_entry())
        .map(|e| e.key().to_string())
        .collect();
    println!("writes in 3.5 s with 50 members: {writes:?}");
    assert!((2..=4).contains(&writes.len()), "{writes:?}");
    assert!(writes.iter().all(|k| *k == session.key()), "{writes:?}");
    let listed = svc.members().await.unwrap();
    assert_eq!(listed.len(), 50);
    assert!(listed.iter().all(|m| m.session() == Some(session)));
    for m in members {
        assert!(m.leave().await.unwrap().was_held);
    }
}

#[tokio::test]
async fn a_bound_member_updates_leaves_and_is_dropped_as_before() {
    let server = NatsServer::start().await;
    let mut w = observed(&server, "s2").await;
    let svc = membership(&connect(server.client_url()).await, "s2", Some(10))
        .await
        .group("svc")
        .unwrap();
    let a = svc.join("a", "v1").await.unwrap();
    let b = svc.join("b", "v1").await.unwrap();
    assert_eq!(joined(&mut w).await.session(), a.session());
    assert_eq!(joined(&mut w).await.id(), "b");
    a.update("v2").await.unwrap();
    match next(&mut w).await {
        kvtk_membership::MembershipEvent::Updated(m) => assert_eq!(m.metadata().as_ref(), b"v2"),
        other => panic!("expected Updated, got {other:?}"),
    }
    // A guarded write through the bound member's lease.
    a.lease().put_guarded("svc-data", "mine").await.unwrap();
    // The same id twice in one process is refused, as across processes.
    let twice = svc.join("a", "v3").await.unwrap_err();
    assert_eq!(twice.kind(), ErrorKind::AlreadyJoined);
    assert!(a.leave().await.unwrap().was_held);
    assert_eq!(left(&mut w).await.1, LeaveReason::Left);
    drop(b);
    let (gone, reason) = left(&mut w).await;
    assert_eq!((gone.id(), reason), ("b", LeaveReason::Left));
}

#[tokio::test]
async fn a_process_dropping_its_members_and_session_together_is_seen_leaving_not_expiring() {
    let server = NatsServer::start().await;
    let mut w = observed(&server, "s6").await;
    let process = membership(&connect(server.client_url()).await, "s6", Some(10)).await;
    let svc = process.group("svc").unwrap();
    let mut members = Vec::new();
    for id in ["p", "q", "r"] {
        members.push(svc.join(id, "up").await.unwrap());
        joined(&mut w).await;
    }
    // Everything at once, as a process that returns from main: the members' releases and
    // the session's close run in the background, the close last.
    drop((members, svc, process));
    for _ in 0..3 {
        let (gone, reason) = left(&mut w).await;
        assert_eq!(reason, LeaveReason::Left, "{} expired", gone.id());
    }
}

#[tokio::test]
async fn a_killed_sidecar_bound_to_a_session_leaves_when_its_session_expires() {
    let server = NatsServer::start().await;
    let mut w = observed(&server, "s7").await;
    let url = server.client_url();
    let (mut child, line) = sidecar(&["--session", &url, "s7", "svc", "p1", "2", "pid"]).await;
    let p1 = joined(&mut w).await;
    let session = p1.session().expect("bound to a session");
    let said = format!("joined svc.p1 {} session {session}", p1.joined_at());
    assert_eq!(line, said);
    child.start_kill().unwrap(); // SIGKILL: no leave, no close
    let killed = Instant::now();
    within("the child's exit", child.wait()).await.unwrap();
    let (gone, why) = left(&mut w).await;
    let after = killed.elapsed();
    assert_eq!((gone.id(), why), ("p1", LeaveReason::Expired));
    // The session's TTL after its last renewal (≤ TTL/3 before the kill), checked by the
    // server about once a second.
    assert!(
        after <= Duration::from_millis(3500),
        "left {after:?} after the kill"
    );
}

#[tokio::test]
async fn a_closed_sessions_members_leave_and_an_observer_removes_their_keys() {
    let server = NatsServer::start().await;
    let kv = connect(server.client_url()).await;
    let observer = membership(&kv, "s3", None).await.group("svc").unwrap();
    let mut w = observer.watch().await.unwrap();
    assert!(snapshot(&mut w).await.is_empty());
    // Another client's members, bound to a session it closes while they are registered
    // (a process that ends without leaving first).
    let other = connect(server.client_url()).await.open("s3").await.unwrap();
    let cfg = LeaseConfig::new(Duration::from_secs(10)).unwrap();
    let session = Keeper::new(&other, cfg).unwrap().session().await.unwrap();
    let mut bound = Vec::new();
    for id in ["x", "y"] {
        let key = format!("svc.{id}");
        let create = session
            .bind(key, "meta")
            .format(kvtk_core::format::RECIPE_FORMAT);
        bound.push(create.await.unwrap());
    }
    for id in ["x", "y"] {
        let m = joined(&mut w).await;
        assert_eq!((m.id(), m.session()), (id, Some(session.id())));
    }
    session.close().await.unwrap();
    for id in ["x", "y"] {
        let (gone, reason) = left(&mut w).await;
        assert_eq!((gone.id(), reason), (id, LeaveReason::Expired));
    }
    until("the observer removed the dead members' keys", || async {
        let x = other.get_from_leader("svc.x").await.unwrap();
        let y = other.get_from_leader("svc.y").await.unwrap();
        x.is_some_and(|e| !e.is_value()) && y.is_some_and(|e| !e.is_value())
    })
    .await;
    assert!(observer.members().await.unwrap().is_empty());
    assert!(bound.iter().all(|l| !l.is_held()));
}

#[tokio::test]
async fn a_member_cut_off_past_its_session_leaves_and_rejoins_over_its_dead_entry() {
    let server = NatsServer::start().await;
    let proxy = FaultProxy::start(&server.client_url()).await;
    let kv = connect(server.client_url()).await;
    membership(&kv, "s4", None).await;
    // A read-only observer: it sees the session end but removes nothing.
    let ro = kv.open_read_only("s4").await.unwrap();
    let listing = Listing::new(&ro, "edge").unwrap();
    let mut w = listing.watch().await.unwrap();
    assert!(snapshot(&mut w).await.is_empty());
    let g = membership(&connect(proxy.url()).await, "s4", Some(2))
        .await
        .group("edge")
        .unwrap();
    let member = g.join("e1", "v1").await.unwrap();
    let first = joined(&mut w).await;
    let old = first.session().unwrap();
    proxy.blackhole();
    let cut = Instant::now();
    within("the member's loss", member.lost()).await;
    let lost_after = cut.elapsed();
    let (gone, reason) = left(&mut w).await;
    let left_after = cut.elapsed();
    assert_eq!((gone.id(), reason), ("e1", LeaveReason::Expired));
    assert!(lost_after < left_after, "{lost_after:?} < {left_after:?}");
    println!(
        "cut off: lost() after {lost_after:?}, Left seen after {left_after:?} (session ttl 2 s)"
    );
    assert!(listing.members().await.unwrap().is_empty());
    // Nobody removed the dead entry: the key still holds it.
    assert!(ro
        .get_from_leader("edge.e1")
        .await
        .unwrap()
        .unwrap()
        .is_value());
    assert!(!SessionState::read(&ro, old).await.unwrap().is_alive());

    proxy.heal();
    let update = within("the lost member's update", member.update("v1b")).await;
    assert_eq!(update.unwrap_err().kind(), ErrorKind::Lost);
    let again = within(
        "the rejoin",
        Backoff::DEFAULT.retry(|| g.join("e1", "v2").into_future()),
    )
    .await
    .unwrap();
    let new = again.session().unwrap();
    assert_ne!(new, old, "a new session");
    let second = joined(&mut w).await;
    assert_eq!(
        (second.joined_at(), second.session()),
        (again.joined_at(), Some(new))
    );
    assert!(second.joined_at() > first.joined_at(), "a new incarnation");
    drop(member);
    assert!(again.leave().await.unwrap().was_held);
    assert_eq!(left(&mut w).await.1, LeaveReason::Left);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_members_churn_and_every_watcher_follows_them_on_r3() {
    common::churn_on_r3(true).await;
}
