//! Update-to-`changed()` latency across 100 readers, on 10 connections (10 shared watches)
//! and on one bucket handle (one shared watch); prints p50/p99 and the consumer count (run
//! with `--no-capture` to see the numbers).

mod common;

use std::time::{Duration, Instant};

use common::*;
use kvtk_config::{ConfigReader, ConfigWriter};
use kvtk_tests::{within, NatsServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_to_changed_latency_100_readers() {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    b.put("app.config", json(&app("lat", 1))).await.unwrap();
    let mut readers = Vec::new();
    for _ in 0..10 {
        let kv = kvtk_core::Kv::new(server.connect().await);
        let bucket = kv.open("cfg").await.unwrap();
        readers.extend(start_readers(&bucket, 10).await);
    }
    measure(&b, readers, "100 readers on 10 connections").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_to_changed_latency_100_readers_on_one_handle() {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    b.put("app.config", json(&app("lat", 1))).await.unwrap();
    let readers = start_readers(&b, 100).await;
    measure(&b, readers, "100 readers on one bucket handle").await;
}

async fn start_readers(bucket: &kvtk_core::Bucket, n: usize) -> Vec<ConfigReader<App>> {
    let mut readers = Vec::new();
    for _ in 0..n {
        readers.push(
            ConfigReader::<App>::builder(doc())
                .bucket(bucket.clone())
                .await
                .expect("reader starts"),
        );
    }
    readers
}

/// Times `updates` writes, each from before the write until every reader's `changed()`
/// returned, and prints the percentiles and the server's consumer count.
async fn measure(b: &kvtk_core::Bucket, mut readers: Vec<ConfigReader<App>>, what: &str) {
    let w = ConfigWriter::<App>::new(b.clone(), doc());
    let updates = 30u32;
    let mut lat: Vec<Duration> = Vec::with_capacity(readers.len() * updates as usize);
    for i in 0..updates {
        // The futures are made before the write; `changed` sees any change after its
        // handle's last look, so no change can slip between.
        let waits: Vec<_> = readers
            .iter_mut()
            .map(|r| async move {
                r.changed().await;
                Instant::now()
            })
            .collect();
        let t0 = Instant::now();
        w.update(|c| c.pool_size = i + 2).await.expect("update");
        let done = within("every reader's change", futures::future::join_all(waits)).await;
        lat.extend(done.into_iter().map(|t| t - t0));
    }
    for r in &readers {
        assert_eq!(r.current().pool_size, updates + 1);
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "update-to-changed latency, {what}, {updates} updates ({} samples): p50 {:?} p99 {:?} max {:?}; {} consumers on the server",
        lat.len(),
        pct(0.50),
        pct(0.99),
        lat[lat.len() - 1],
        consumers(b).await,
    );
}
