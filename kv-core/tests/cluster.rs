//! Watches on a 3-node cluster with an R3 bucket and no fault: writers on every node, a
//! watcher on every node (so two of them read through consumers that may sit on stream
//! followers), each read only after the writes: every watcher delivers revisions once, in
//! order, and reaches every key's final state.

// Tests may unwrap: a panic is a test failure with a message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::StreamExt;
use kvtk_core::{Bucket, BucketConfig, Include, Kv, Revision, Watch, WatchEvent};
use kvtk_tests::{client, within, NatsCluster};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long the writers write.
const RUN: Duration = Duration::from_secs(6);

async fn bucket_on_node(cluster: &NatsCluster, i: usize) -> Bucket {
    let kv = Kv::new(cluster.node_client(i).await);
    kv.open("w").await.unwrap()
}

/// Writes twice and deletes fresh keys `n<node>.<k>` for [`RUN`]; returns the revisions and
/// each key's last one (its tombstone).
async fn write(b: Bucket, node: usize) -> (Vec<Revision>, Vec<Revision>) {
    let end = Instant::now() + RUN;
    let (mut revs, mut last) = (Vec::new(), Vec::new());
    let mut k = 0;
    while Instant::now() < end {
        let key = format!("n{node}.{k}");
        // Unconditional writes: on R3 the server may refuse a CAS spuriously (nats-server
        // #7281); the watch, not the CAS, is under test here.
        let r = b.put(&key, "1").await.unwrap();
        let r2 = b.put(&key, "2").await.unwrap();
        let r3 = b.delete(&key).await.unwrap();
        revs.extend([r, r2, r3]);
        last.push(r3);
        k += 1;
    }
    (revs, last)
}

/// Every revision `watch` delivers until it has delivered `last`.
async fn drain(watch: &mut Watch, last: Revision) -> Vec<Revision> {
    let mut seen = Vec::new();
    while seen.last() < Some(&last) {
        match within("a watch event", watch.next())
            .await
            .unwrap()
            .unwrap()
        {
            WatchEvent::Entry(e) => seen.push(e.revision()),
            WatchEvent::InitialDone => {}
        }
    }
    seen
}

/// A last-value-per-key watch on every node, read only after the writes: each delivers
/// revisions once, in order, and every key's final state. Intermediate revisions that the
/// history limit replaced before a consumer reached them are compacted (see kvtk-core's
/// watch docs, "Pacing"); how many is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watcher_converges_on_every_key_on_r3() {
    let cluster = NatsCluster::start().await;
    let setup =
        Kv::new(client::with_request_timeout(cluster.client_urls(), client::QUORUM_TIMEOUT).await)
            .with_timeout(Duration::from_secs(30));
    setup
        .create_or_open(BucketConfig::new("w").history(1).replicas(3))
        .await
        .unwrap();
    let (mut buckets, mut watches) = (Vec::new(), Vec::new());
    for node in 0..3 {
        let b = bucket_on_node(&cluster, node).await;
        watches.push(b.watch([">"]).include(Include::LastPerKey).await.unwrap());
        buckets.push(b);
    }
    let mut tasks = JoinSet::new();
    for (node, b) in buckets.into_iter().enumerate() {
        tasks.spawn(write(b, node));
    }
    let (mut written, mut finals) = (Vec::new(), Vec::new());
    while let Some(r) = within("the writers", tasks.join_next()).await {
        let (revs, last) = r.unwrap();
        written.extend(revs);
        finals.extend(last);
    }
    let last = *written.iter().max().unwrap();
    for (node, watch) in watches.iter_mut().enumerate() {
        let seen = drain(watch, last).await;
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "node {node}: once, in order"
        );
        let missing: Vec<_> = finals
            .iter()
            .filter(|r| seen.binary_search(r).is_err())
            .collect();
        assert!(
            missing.is_empty(),
            "node {node} missed final states {missing:?}"
        );
        let compacted = written.len() - seen.len();
        println!(
            "node {node}: {} revisions written, {compacted} replaced before delivery",
            written.len()
        );
    }
}
