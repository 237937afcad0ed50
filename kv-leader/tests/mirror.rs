//! Observing an election from a leaf node's mirror of the hub's bucket.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::time::Duration;

use kvtk_core::{BucketConfig, Kv};
use kvtk_leader::{Election, Observed, Observer};
use kvtk_tests::HubAndLeaf;

async fn next(observer: &mut Observer) -> Observed {
    kvtk_tests::next("an observation", observer).await
}

#[tokio::test]
async fn an_observer_on_a_leaf_mirror_sees_the_hubs_terms_and_no_leader() {
    let net = HubAndLeaf::start().await;
    let hub = Kv::new(net.hub.connect().await);
    let origin = hub
        .create_bucket(Election::bucket_config("el"))
        .await
        .unwrap();
    let mirror = Kv::new(net.leaf.connect().await)
        .create_bucket(BucketConfig::new("el").mirror(HubAndLeaf::hub_source("el")))
        .await
        .unwrap()
        .read_only();
    let election = Election::new(origin, "sched", Duration::from_secs(3)).unwrap();

    let mut observer = Observer::on(&mirror, "sched").await.unwrap();
    assert_eq!(next(&mut observer).await, Observed::NoLeader);
    let a = election.campaign("a").value("addr-a").await.unwrap();
    let seen = next(&mut observer).await;
    let l = seen.leader().expect("a leader");
    assert_eq!(
        (l.id.as_str(), l.value.as_str(), l.term),
        ("a", "addr-a", a.term())
    );

    // While the leaf is cut off the hub changes leaders; the mirror learns it on heal.
    net.link.cut();
    a.resign().await.unwrap();
    let b = election.campaign("b").await.unwrap();
    let local = mirror
        .get("sched.leader")
        .await
        .unwrap()
        .expect("a's record");
    assert_eq!(
        local.revision(),
        l.revision,
        "the leaf still holds a's term while cut off"
    );
    net.link.heal();
    loop {
        match next(&mut observer).await {
            Observed::NoLeader => {} // a's resignation, when mirrored before b's term
            Observed::Leader(l) if l.id == "b" => {
                assert_eq!(l.term, b.term(), "the origin's term");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Dropping the leadership resigns it on the hub; the mirror copies the tombstone.
    drop(b);
    assert_eq!(next(&mut observer).await, Observed::NoLeader);
    assert!(Observer::on(&mirror, "bad name").await.is_err());
}
