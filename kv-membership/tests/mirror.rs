//! Listing a group from a leaf node's mirror of the hub's membership bucket.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use kvtk_core::{BucketConfig, Kv};
use kvtk_membership::{LeaveReason, Listing, Membership, MembershipEvent, MembershipWatch};
use kvtk_tests::HubAndLeaf;

async fn next(w: &mut MembershipWatch) -> MembershipEvent {
    kvtk_tests::next("a membership event", w)
        .await
        .expect("no watch error")
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
    let mirror = Kv::new(net.leaf.connect().await)
        .create_bucket(BucketConfig::new("members").mirror(HubAndLeaf::hub_source("members")))
        .await
        .unwrap()
        .read_only();
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
