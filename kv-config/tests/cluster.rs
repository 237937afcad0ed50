//! Configuration on a 3-node cluster with an R3 bucket and no fault: writers on every node
//! contend without a failure, and every reader (one per node, each acknowledging what it
//! applied) converges to the last write. Each handle talks to one node, so two of them read
//! from stream followers.

// Tests may unwrap: a panic is a test failure with a message.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use kvtk_config::{ConfigReader, ConfigWriter};
use kvtk_core::{Kv, Revision};
use kvtk_tests::{client, within, NatsCluster};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long the writers contend.
const RUN: Duration = Duration::from_secs(6);

/// A bucket handle on its own connection to node `i` alone.
async fn bucket_on_node(cluster: &NatsCluster, i: usize) -> kvtk_core::Bucket {
    let kv = Kv::new(cluster.node_client(i).await);
    kv.open("cfg").await.unwrap()
}

/// Each writer updates the document in a loop for [`RUN`]. Returns the number of updates and
/// the newest revision written with the name it wrote.
async fn contend(writers: Vec<ConfigWriter<App>>) -> (usize, (Revision, String)) {
    let mut tasks = JoinSet::new();
    for (i, w) in writers.into_iter().enumerate() {
        tasks.spawn(async move {
            let end = Instant::now() + RUN;
            let (mut n, mut last) = (0, None);
            while Instant::now() < end {
                let name = format!("w{i}.{n}");
                let written = w
                    .update(|c| {
                        c.pool_size = c.pool_size % 100 + 1;
                        c.name.clone_from(&name);
                    })
                    .await
                    .unwrap();
                let newest = written.revision.map(|r| (r, name));
                (n, last) = (n + 1, newest.max(last));
            }
            (n, last)
        });
    }
    let (mut updates, mut newest) = (0, None);
    while let Some(r) = within("the writers", tasks.join_next()).await {
        let (n, last) = r.unwrap();
        (updates, newest) = (updates + n, newest.max(last));
    }
    (updates, newest.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contended_writers_and_a_reader_per_node_converge_on_r3() {
    let cluster = NatsCluster::start().await;
    let setup =
        Kv::new(client::with_request_timeout(cluster.client_urls(), client::QUORUM_TIMEOUT).await)
            .with_timeout(Duration::from_secs(30));
    let b = setup
        .create_or_open(bucket_config("cfg").replicas(3))
        .await
        .unwrap();
    let first = ConfigWriter::<App>::new(b, doc()).validate(validate);
    first.set(&app("start", 1)).await.unwrap();
    let (mut readers, mut writers) = (Vec::new(), Vec::new());
    for i in 0..3 {
        let b = bucket_on_node(&cluster, i).await;
        let reader = ConfigReader::<App>::builder(doc())
            .bucket(b.clone())
            .validate(validate)
            .instance(format!("r{i}"))
            .await
            .unwrap();
        readers.push(reader);
        // Three writers updating as fast as they can: each may lose many races in a row on a
        // loaded machine. What is under test is that no update fails for R3's sake (a stale
        // replica's read is retried from the leader), not the default attempt budget.
        let writer = ConfigWriter::<App>::new(b, doc()).validate(validate);
        writers.push(writer.max_attempts(1_000));
    }

    let (updates, (newest, name)) = contend(writers).await;
    println!("{updates} contended config updates on R3, newest revision {newest}");

    let acked = within(
        "every reader's acknowledgement",
        first.wait_applied(newest, 3),
    )
    .await
    .unwrap();
    assert_eq!(acked, ["r0", "r1", "r2"]);
    for r in &readers {
        assert_eq!(r.current().name, name);
        assert_eq!(r.revision(), Some(newest));
    }
}
