//! Membership against real nats-servers: events in order, the snapshot agreeing with
//! `members()`, one registration per id, a SIGKILLed member process leaving after its TTL,
//! and a cut-off member reporting loss before the server drops it, staying out, then
//! rejoining when the application joins again.

use std::future::IntoFuture;
use std::time::Duration;

use kvtk_core::{Backoff, Kv};
use kvtk_membership::{
    ErrorKind, Group, Json, LeaveReason, LostReason, MemberInfo, Membership, MembershipEvent,
};
use kvtk_tests::{within, FaultProxy, NatsServer};
use tokio::time::Instant;

mod common;
use common::{connect, joined, left, next, sidecar, snapshot};

const BUCKET: &str = "members";

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Endpoint {
    addr: String,
    weight: u32,
}

fn endpoint(addr: &str, weight: u32) -> Json<Endpoint> {
    Json(Endpoint {
        addr: addr.into(),
        weight,
    })
}

async fn membership(kv: &Kv) -> Membership {
    kv.create_or_open(Membership::bucket_config(BUCKET))
        .await
        .expect("bucket");
    Membership::open(kv, BUCKET).await.expect("membership")
}

async fn group(kv: &Kv, name: &str) -> Group {
    membership(kv).await.group(name).expect("group")
}

#[tokio::test]
async fn join_update_leave_arrive_in_revision_order() {
    let server = NatsServer::start().await;
    let kv = connect(server.client_url()).await;
    let m = membership(&kv).await;
    let g = m.group("svc.api").unwrap();
    let mut w = g.watch().await.unwrap();
    assert!(snapshot(&mut w).await.is_empty());

    // Two writes, then their events; the next two only once those arrived. On a bucket
    // with one revision per key, a watch that falls behind skips a revision replaced before
    // it got there (kvtk-core's watch, "Pacing"): had a's update landed first, the watch
    // could see a join carrying weight 5 and no update (a CI run under load did).
    let a = g.join("a", endpoint("10.0.0.1:80", 1)).await.unwrap();
    let b = g.join("b", "plain bytes").await.unwrap();
    let ja = joined(&mut w).await;
    assert_eq!(ja.id(), "a");
    assert_eq!(ja.joined_at(), a.joined_at());
    assert_eq!(
        ja.decode::<Endpoint>().unwrap(),
        Endpoint {
            addr: "10.0.0.1:80".into(),
            weight: 1
        }
    );
    let jb = joined(&mut w).await;
    assert_eq!(
        (jb.id(), jb.metadata().as_ref()),
        ("b", &b"plain bytes"[..])
    );
    assert!(jb.joined_at() > ja.joined_at());
    a.update(endpoint("10.0.0.1:80", 5)).await.unwrap();
    let released = b.leave().await.unwrap();
    assert!(released.was_held);
    match next(&mut w).await {
        MembershipEvent::Updated(m) => {
            assert_eq!(
                m.joined_at(),
                a.joined_at(),
                "an update keeps the incarnation"
            );
            assert_eq!(m.decode::<Endpoint>().unwrap().weight, 5);
        }
        other => panic!("expected Updated, got {other:?}"),
    }
    let (gone, why) = left(&mut w).await;
    assert_eq!((gone.id(), why), ("b", LeaveReason::Left));
    assert_eq!(gone.joined_at(), jb.joined_at());

    // An operator deletes a member's key: watchers see Removed, the member sees Taken.
    let c = g.join("c", "x").await.unwrap();
    assert_eq!(joined(&mut w).await.id(), "c");
    m.bucket().delete("svc.api.c").await.unwrap();
    let (gone, why) = left(&mut w).await;
    assert_eq!((gone.id(), why), ("c", LeaveReason::Removed));
    assert_eq!(within("c's loss", c.lost()).await, LostReason::Taken);
    assert_eq!(
        c.update("y").await.unwrap_err().kind(),
        ErrorKind::Lost,
        "a lost member cannot write"
    );
    drop(c);

    // Dropping a member leaves in the background.
    drop(a);
    let (gone, why) = left(&mut w).await;
    assert_eq!((gone.id(), why), ("a", LeaveReason::Left));
}

#[tokio::test]
async fn the_watch_snapshot_matches_members_and_ids_are_unique() {
    let server = NatsServer::start().await;
    let kv = connect(server.client_url()).await;
    let g = group(&kv, "workers").await;
    let other = group(&kv, "workers.eu").await; // a nested group is not a member of ours
    let _x = other.join("x", "eu").await.unwrap();
    let mut held = Vec::new();
    for (i, id) in ["w1", "w2", "w3"].iter().enumerate() {
        held.push(g.join(*id, endpoint(&format!("h{i}:1"), 1)).await.unwrap());
    }
    held[1].update(endpoint("h1:2", 2)).await.unwrap();
    // w3 leaves: its tombstone must not count as a member.
    held.pop().unwrap().leave().await.unwrap();

    let listed = g.members().await.unwrap();
    let mut w = g.watch().await.unwrap();
    let present = snapshot(&mut w).await;
    assert_eq!(present, listed);
    let ids: Vec<&str> = listed.iter().map(MemberInfo::id).collect();
    assert_eq!(ids, ["w1", "w2"]);
    assert_eq!(listed[1].decode::<Endpoint>().unwrap().addr, "h1:2");
    assert_eq!(listed[0].joined_at(), held[0].joined_at());

    // One live registration per id, from this process or another.
    let dup = g.join("w1", "again").await.unwrap_err();
    assert_eq!(dup.kind(), ErrorKind::AlreadyJoined);
    assert_eq!(dup.joined_at(), Some(held[0].joined_at()));
    let elsewhere = group(&connect(server.client_url()).await, "workers").await;
    let dup = elsewhere.join("w2", "again").await.unwrap_err();
    assert_eq!(dup.kind(), ErrorKind::AlreadyJoined);
    // The id of a member that left is free again, as a new incarnation.
    let w3 = elsewhere.join("w3", "back").await.unwrap();
    assert_eq!(joined(&mut w).await.joined_at(), w3.joined_at());

    for (id, kind) in [
        ("a.b", ErrorKind::InvalidName),
        ("", ErrorKind::InvalidName),
    ] {
        assert_eq!(g.join(id, "").await.unwrap_err().kind(), kind, "{id:?}");
    }
    let bad_ttl = g.join("w9", "").ttl(Duration::from_millis(1500)).await;
    assert_eq!(bad_ttl.unwrap_err().kind(), ErrorKind::InvalidTtl);
}

#[tokio::test]
async fn a_bucket_without_per_key_ttl_is_refused() {
    let server = NatsServer::start().await;
    let kv = connect(server.client_url()).await;
    let plain = kv
        .create_or_open(kvtk_core::BucketConfig::new("plain"))
        .await
        .unwrap();
    let err = Membership::new(&plain).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadBucket);
    let m = membership(&kv).await;
    assert_eq!(m.group("a.*").unwrap_err().kind(), ErrorKind::InvalidName);
    // On one server the default lease is DEFAULT_TTL (replicated buckets: failover.rs in
    // tests/scenarios checks REPLICATED_TTL).
    assert_eq!(
        m.default_lease().ttl().as_duration(),
        kvtk_membership::DEFAULT_TTL
    );
}

#[tokio::test]
async fn a_killed_member_process_leaves_after_its_ttl() {
    const TTL: Duration = Duration::from_secs(2);
    let server = NatsServer::start().await;
    let kv = connect(server.client_url()).await;
    let g = group(&kv, "procs").await;
    let mut w = g.watch().await.unwrap();
    assert!(snapshot(&mut w).await.is_empty());

    let url = server.client_url();
    let (mut child, line) = sidecar(&[&url, BUCKET, "procs", "p1", "2", "pid"]).await;
    assert!(line.starts_with("joined procs.p1 "), "{line}");
    let p1 = joined(&mut w).await;
    assert_eq!(p1.id(), "p1");
    assert_eq!(line, format!("joined procs.p1 {}", p1.joined_at()));

    // Let it renew a few times, so what follows is expiry, not a first-write TTL.
    let mut renewals = kv
        .open(BUCKET)
        .await
        .unwrap()
        .watch(["procs.p1"])
        .include(kvtk_core::Include::UpdatesOnly)
        .await
        .unwrap();
    let mut renewed = 0;
    while renewed < 3 {
        let ev = kvtk_tests::next("a renewal of p1", &mut renewals).await;
        renewed += usize::from(matches!(ev, Ok(kvtk_core::WatchEvent::Entry(_))));
    }
    child.start_kill().unwrap(); // SIGKILL: no leave, no release
    let killed = Instant::now();
    within("the child's exit", child.wait()).await.unwrap();
    let (gone, why) = left(&mut w).await;
    let after = killed.elapsed();
    assert_eq!((gone.id(), why), ("p1", LeaveReason::Expired));
    assert_eq!(gone.joined_at(), p1.joined_at());
    // Expiry comes TTL after the last renewal (≤ TTL/3 before the kill), checked by the
    // server about once a second.
    assert!(
        after <= TTL + Duration::from_millis(1500),
        "left {after:?} after the kill"
    );
    assert!(g.members().await.unwrap().is_empty());
    println!("SIGKILLed member with TTL {TTL:?} left {after:?} after the kill");
}

#[tokio::test]
async fn a_cut_off_member_reports_loss_before_the_server_drops_it_then_rejoins() {
    // The margin (TTL/10 = 500 ms) is how much earlier than the server the member knows.
    const TTL: Duration = Duration::from_secs(5);
    let server = NatsServer::start().await;
    let proxy = FaultProxy::start(&server.client_url()).await;
    let observer = group(&connect(server.client_url()).await, "edge").await;
    let mut w = observer.watch().await.unwrap();
    assert!(snapshot(&mut w).await.is_empty());

    let g = group(&connect(proxy.url()).await, "edge").await;
    let member = g.join("e1", "v1").ttl(TTL).await.unwrap();
    let first = joined(&mut w).await;
    assert_eq!(first.joined_at(), member.joined_at());

    proxy.cut();
    let cut = Instant::now();
    let why = within("the member's loss", member.lost()).await;
    let lost_after = cut.elapsed();
    assert_eq!(why, LostReason::Deadline);
    assert!(!member.is_alive());
    // The server has not dropped it yet: the member knew first.
    let listed = observer.members().await.unwrap();
    assert_eq!(listed.len(), 1, "lost after {lost_after:?}, still listed");
    let (gone, reason) = left(&mut w).await;
    let expired_after = cut.elapsed();
    assert_eq!((gone.id(), reason), ("e1", LeaveReason::Expired));
    assert!(lost_after < expired_after);
    println!("cut off: lost() after {lost_after:?}, server expiry seen after {expired_after:?}");

    proxy.heal();
    // A lost member stays out: nothing rejoins on its behalf, its updates fail with `Lost`,
    // and the group lists nobody until the application joins again.
    let update = within("the lost member's update", member.update("v1b")).await;
    assert_eq!(update.unwrap_err().kind(), ErrorKind::Lost);
    assert!(!member.is_alive());
    assert!(observer.members().await.unwrap().is_empty());
    let again = within(
        "the rejoin",
        Backoff::DEFAULT.retry(|| g.join("e1", "v2").ttl(TTL).into_future()),
    )
    .await
    .unwrap();
    let second = joined(&mut w).await;
    assert_eq!(second.joined_at(), again.joined_at());
    assert!(second.joined_at() > first.joined_at(), "a new incarnation");
    assert_eq!(second.metadata().as_ref(), b"v2");
    drop(member);
    let again_at = again.joined_at();
    assert!(again.leave().await.unwrap().was_held);
    let (gone, reason) = left(&mut w).await;
    assert_eq!((gone.joined_at(), reason), (again_at, LeaveReason::Left));
}

#[tokio::test]
async fn a_watch_cut_off_from_the_server_resumes_without_gaps() {
    let server = NatsServer::start().await;
    let proxy = FaultProxy::start(&server.client_url()).await;
    let g = group(&connect(server.client_url()).await, "cut").await;
    let stays = g.join("stays", "1").await.unwrap();
    let goes = g.join("goes", "1").await.unwrap();
    let mut w = group(&connect(proxy.url()).await, "cut")
        .await
        .watch()
        .await
        .unwrap();
    assert_eq!(snapshot(&mut w).await.len(), 2);

    proxy.cut();
    goes.leave().await.unwrap();
    stays.update("2").await.unwrap();
    let comes = g.join("comes", "1").await.unwrap();
    proxy.heal();

    // What happened while away arrives in revision order, once each.
    let (gone, why) = left(&mut w).await;
    assert_eq!((gone.id(), why), ("goes", LeaveReason::Left));
    match next(&mut w).await {
        MembershipEvent::Updated(m) => assert_eq!(m.metadata().as_ref(), b"2"),
        other => panic!("expected Updated, got {other:?}"),
    }
    assert_eq!(joined(&mut w).await.joined_at(), comes.joined_at());
    let listed = g.members().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(MemberInfo::id).collect();
    assert_eq!(ids, ["stays", "comes"]);
}
