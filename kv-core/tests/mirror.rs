//! What a KV mirror in another JetStream domain keeps, checked on a leaf node that mirrors a
//! hub's bucket.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::time::Duration;

use kvtk_core::{
    Bucket, BucketConfig, Include, Kv, Op, ReadOnlyBucket, Removal, Revision, WatchEvent,
};
use kvtk_tests::HubAndLeaf;

mod common;
use common::{next_entry, next_event};

/// The origin on the hub and its mirror on the leaf (same name, same history).
async fn mirrored(net: &HubAndLeaf) -> (Bucket, ReadOnlyBucket) {
    let hub = Kv::new(net.hub.connect().await);
    let origin = hub
        .create_bucket(
            BucketConfig::new("app")
                .history(10)
                .per_key_ttl(Duration::from_secs(1))
                .atomic_batches(true),
        )
        .await
        .unwrap();
    let leaf = Kv::new(net.leaf.connect().await);
    let mirror = leaf
        .create_bucket(
            BucketConfig::new("app")
                .history(10)
                .mirror(HubAndLeaf::hub_source("app")),
        )
        .await
        .unwrap();
    (origin, mirror.read_only())
}

type Row = (
    String,
    Revision,
    Op,
    Option<Removal>,
    Vec<u8>,
    Option<Duration>,
);

/// Everything the bucket holds, as comparable rows.
async fn everything(b: &ReadOnlyBucket) -> Vec<Row> {
    let mut w = b.watch_all().include(Include::AllHistory).await.unwrap();
    let mut rows = Vec::new();
    loop {
        let WatchEvent::Entry(e) = next_event(&mut w).await else {
            return rows;
        };
        rows.push((
            e.key().to_string(),
            e.revision(),
            e.operation(),
            e.removal(),
            e.value().to_vec(),
            e.ttl(),
        ));
    }
}

/// Waits until the mirror holds the origin's last revision.
async fn caught_up(origin: &Bucket, mirror: &ReadOnlyBucket) {
    let want = origin
        .status()
        .await
        .unwrap()
        .stream_info
        .state
        .last_sequence;
    kvtk_tests::until("the mirror to catch up", || async {
        mirror
            .status()
            .await
            .unwrap()
            .stream_info
            .state
            .last_sequence
            >= want
    })
    .await;
}

#[tokio::test]
async fn a_mirror_keeps_revisions_removals_markers_and_transactions() {
    let net = HubAndLeaf::start().await;
    let (origin, mirror) = mirrored(&net).await;
    let a1 = origin.put("a", "1").await.unwrap();
    origin.put("b", "1").await.unwrap();
    origin.update("a", "2", a1).await.unwrap();
    origin.delete("b").await.unwrap();
    origin.put("p", "x").await.unwrap();
    origin.purge("p").await.unwrap();
    origin
        .txn()
        .put("t.1", "one")
        .put("t.2", "two")
        .commit()
        .await
        .unwrap();
    // A key with a TTL: the origin's server writes an expiry marker, which the mirror copies.
    let mut expiry = origin
        .watch(["ttl"])
        .include(Include::UpdatesOnly)
        .await
        .unwrap();
    origin
        .create("ttl", "short")
        .ttl(Duration::from_secs(1))
        .await
        .unwrap();
    loop {
        if next_entry(&mut expiry).await.removal() == Some(Removal::Expired) {
            break;
        }
    }
    caught_up(&origin, &mirror).await;

    let (o, m) = (everything(&origin).await, everything(&mirror).await);
    assert_eq!(
        o, m,
        "the mirror holds the origin's history, revision for revision"
    );
    let removals: Vec<_> = m.iter().filter_map(|x| x.3).collect();
    assert!(removals.contains(&Removal::Deleted), "{m:?}");
    assert!(removals.contains(&Removal::Purged), "{m:?}");
    assert!(removals.contains(&Removal::Expired), "{m:?}");
    // The purge rolled up `p` on the mirror too: only its purge marker is left.
    assert_eq!(m.iter().filter(|x| x.0 == "p").count(), 1, "{m:?}");
    // What a mirror does not keep: the server strips the atomic-batch headers, so entries
    // read from a mirror carry no transaction (`Entry::batch` is `None`).
    let t2 = |b: &ReadOnlyBucket| {
        let b = b.clone();
        async move { b.get("t.2").await.unwrap().unwrap().batch().cloned() }
    };
    assert!(t2(&origin.read_only()).await.is_some_and(|b| b.commit));
    assert_eq!(t2(&mirror).await, None);
    assert!(mirror.mirror_of().is_some() && origin.mirror_of().is_none());
    // Reads on the mirror name the origin's revisions and keys.
    let a = mirror.get("a").await.unwrap().unwrap();
    assert_eq!(
        a.revision(),
        origin
            .get_from_leader("a")
            .await
            .unwrap()
            .unwrap()
            .revision()
    );
    assert_eq!(
        mirror.get("ttl").await.unwrap(),
        None,
        "expired on the origin"
    );
}

#[tokio::test]
async fn a_strict_watch_on_a_mirror_is_gap_free_across_a_leaf_link_cut() {
    let net = HubAndLeaf::start().await;
    let (origin, mirror) = mirrored(&net).await;
    let mut watch = mirror
        .watch(["cfg.>"])
        .include(Include::AllHistory)
        .await
        .unwrap();
    let mut written = Vec::new();
    for i in 0..5 {
        written.push(
            origin
                .put(format!("cfg.k{}", i % 2), format!("v{i}"))
                .await
                .unwrap(),
        );
    }
    let mut seen = Vec::new();
    while seen.len() < 5 {
        seen.push(next_entry(&mut watch).await.revision());
    }
    net.link.cut();
    // The hub goes on taking writes; the leaf keeps serving the last state it has.
    for i in 5..12 {
        written.push(
            origin
                .put(format!("cfg.k{}", i % 3), format!("v{i}"))
                .await
                .unwrap(),
        );
    }
    let local = mirror.get("cfg.k0").await.unwrap().unwrap();
    assert_eq!(
        local.revision(),
        written[4],
        "the last write mirrored before the cut"
    );
    net.link.heal();
    while seen.len() < written.len() {
        seen.push(next_entry(&mut watch).await.revision());
    }
    assert_eq!(seen, written, "every origin revision once, in order");
}
