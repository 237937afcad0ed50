//! What survives an unclean server crash (SIGKILL), for TTL'd keys (PITFALLS 14).
//!
//! What we found (nats-server 2.15.1, file storage, one node): after a SIGKILL the expired
//! key stayed expired, with the default periodic sync as with `sync_interval: always` — a
//! killed *process* loses nothing the server had written, since the operating system's page
//! cache survives it; only a machine crash can lose writes that were not yet synced, which is
//! what `sync_interval: always` (or R3) covers. nats-server #8505 reports expired values
//! reappearing after unclean shutdowns; the invariant we hold the server to is that an
//! expired key never stays alive after a crash longer than its TTL plus the one-second expiry
//! tick (the TTL travels with the message, so the server would expire it again). Locks never
//! rely on "key absent" alone: ownership comes from conditional writes, and a resurrected
//! lease belongs to a holder whose own client gave it up before the server's TTL ran out.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::time::{Duration, Instant};

use kvtk_core::{BucketConfig, Kv};
use kvtk_tests::{until, NatsServer};

async fn expired_key_after_crash(sync_always: bool) -> (bool, Duration) {
    let builder = NatsServer::builder();
    let builder = if sync_always {
        builder.sync_always()
    } else {
        builder
    };
    let mut server = builder.start().await;
    let kv = Kv::new(server.connect().await);
    let b = kv
        .create_bucket(BucketConfig::new("dur").per_key_ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    b.create("lease", "holder")
        .ttl(Duration::from_secs(1))
        .await
        .unwrap();
    // The server's whole-second TTL clock is what is under test.
    let gone = Instant::now();
    until("the key to expire", || async {
        b.get("lease").await.unwrap().is_none()
    })
    .await;
    assert!(gone.elapsed() < Duration::from_secs(5), "expiry happened");
    server.kill();
    server.restart().await;
    let kv = Kv::new(server.connect().await);
    let b = kv.open("dur").await.unwrap();
    let restarted = Instant::now();
    let reappeared = b.get("lease").await.unwrap().is_some();
    until("the key to be absent after the restart", || async {
        b.get("lease").await.unwrap().is_none()
    })
    .await;
    let took = restarted.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "a resurrected key must expire again within TTL + 1.5 s"
    );
    (reappeared, took)
}

#[tokio::test]
async fn expired_keys_do_not_outlive_their_ttl_after_a_crash() {
    let (reappeared, took) = expired_key_after_crash(false).await;
    println!("default sync: reappeared after SIGKILL = {reappeared}, absent again after {took:?}");
    let (reappeared, took) = expired_key_after_crash(true).await;
    println!("sync_interval always: reappeared = {reappeared}, absent again after {took:?}");
    assert!(!reappeared, "with sync always the expiry marker is durable");
}
