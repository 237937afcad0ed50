//! Listing a group from a leaf node's mirror of the hub's membership bucket: members with
//! leases of their own, and members bound to sessions, whose end the mirror learns from the
//! session keys it mirrors.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::time::Duration;

use kvtk_core::lease::{Keeper, LeaseConfig};
use kvtk_core::{BucketConfig, Kv, ReadOnlyBucket};
use kvtk_membership::{LeaveReason, Listing, Membership, MembershipEvent};
use kvtk_tests::{within, HubAndLeaf};
use tokio::time::Instant;

mod common;
use common::{left, next, sidecar};

/// A read-only mirror of the hub's bucket `bucket` on the leaf.
async fn leaf_mirror(net: &HubAndLeaf, bucket: &str) -> ReadOnlyBucket {
    Kv::new(net.leaf.connect().await)
        .create_bucket(BucketConfig::new(bucket).mirror(HubAndLeaf::hub_source(bucket)))
        .await
        .unwrap()
        .read_only()
}

#[tokio::test]
async fn a_listing_on_a_leaf_mirror_shows_the_hubs_members() {
    let net = HubAndLeaf::start().await;
    let hub = Kv::new(net.hub.connect().await);
    hub.create_bucket(Membership::bucket_config("members"))
        .await
        .unwrap();
    let membership = Membership::open(&hub, "members").await.unwrap();
    let group = membership.group("workers").unwrap();
    let mirror = leaf_mirror(&net, "members").await;
    let listing = Listing::new(&mirror, "workers").unwrap();
    let mut watch = listing.watch().await.unwrap();
    assert_eq!(next(&mut watch).await, MembershipEvent::InitialDone);

    let a = group.join("a", "10.0.0.1").await.unwrap();
    let b = group.join("b", "10.0.0.2").await.unwrap();
    for (id, member) in [("a", &a), ("b", &b)] {
        match next(&mut watch).await {
            MembershipEvent::Joined(m) => {
                assert_eq!(m.id(), id);
                assert_eq!(m.joined_at(), member.joined_at(), "the origin's revision");
            }
            other => panic!("expected {id} to join, got {other:?}"),
        }
    }
    let listed = listing.members().await.unwrap();
    let origin_listed = group.members().await.unwrap();
    assert_eq!(listed, origin_listed);

    // Cut off, the leaf still lists `a`, which leaves on the hub; it learns on heal.
    net.link.cut();
    a.leave().await.unwrap();
    let cut_off = listing.members().await.unwrap();
    assert_eq!(cut_off, origin_listed, "the members as they were");
    net.link.heal();
    match next(&mut watch).await {
        MembershipEvent::Left { member, reason, .. } => {
            assert_eq!((member.id(), reason), ("a", LeaveReason::Left));
        }
        other => panic!("expected a to leave, got {other:?}"),
    }
    assert_eq!(
        listing.members().await.unwrap(),
        group.members().await.unwrap()
    );
    assert!(Listing::new(&mirror, "bad group*").is_err());
    drop(b);
    membership.shutdown().await;
}

/// Members bound to sessions on the hub leave the leaf's listing when their session ends —
/// closed by its owner, or expired on the hub's clock after its process was killed — though
/// nothing removes their entries (bound, no TTL) and the mirror expires nothing itself: the
/// listing judges them by the session keys the mirror carries.
#[tokio::test]
async fn bound_members_leave_a_leaf_mirrors_listing_when_their_session_ends() {
    let net = HubAndLeaf::start().await;
    let hub = Kv::new(net.hub.connect().await);
    let bucket = hub
        .create_bucket(Membership::bucket_config("bound"))
        .await
        .unwrap();
    let mirror = leaf_mirror(&net, "bound").await;
    let listing = Listing::new(&mirror, "svc").unwrap();
    let mut watch = listing.watch().await.unwrap();
    assert_eq!(next(&mut watch).await, MembershipEvent::InitialDone);

    let cfg = LeaseConfig::new(Duration::from_secs(10)).unwrap();
    let session = Keeper::new(&bucket, cfg).unwrap().session().await.unwrap();
    let x = session
        .bind("svc.x", "meta")
        .format(kvtk_core::format::RECIPE_FORMAT)
        .await
        .unwrap();
    let hub_url = net.hub.client_url();
    let args = ["--session", &hub_url, "bound", "svc", "p1", "2", "pid"];
    let (mut child, _) = sidecar(&args).await;
    for (id, sid) in [("x", Some(session.id())), ("p1", None)] {
        match next(&mut watch).await {
            MembershipEvent::Joined(m) => {
                assert_eq!(m.id(), id);
                assert!(m.session().is_some(), "{id} is bound");
                assert!(sid.is_none_or(|s| m.session() == Some(s)));
            }
            other => panic!("expected {id} to join, got {other:?}"),
        }
    }

    session.close().await.unwrap();
    let (gone, reason) = left(&mut watch).await;
    assert_eq!((gone.id(), reason), ("x", LeaveReason::Expired));
    child.start_kill().unwrap(); // SIGKILL: its session expires on the hub's clock
    let killed = Instant::now();
    within("the sidecar's exit", child.wait()).await.unwrap();
    let (gone, reason) = left(&mut watch).await;
    assert_eq!((gone.id(), reason), ("p1", LeaveReason::Expired));
    // Not before the session could expire on the hub: its TTL (2 s) after its last renewal,
    // at most a renewal interval (TTL/3) before the kill. An earlier `Expired` would be a
    // verdict on a session the mirror had not yet heard end.
    let after = killed.elapsed();
    assert!(
        after >= Duration::from_millis(1200),
        "left {after:?} after the kill"
    );
    assert!(listing.members().await.unwrap().is_empty());
    let entry = mirror.get("svc.x").await.unwrap();
    assert!(
        entry.is_some_and(|e| e.is_value()),
        "x's entry is still there"
    );
    assert!(!x.is_held());
}
