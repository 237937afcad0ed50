//! Multi-locks against a real nats-server: overlapping random sets never
//! deadlock and never overlap, and a client that dies holding a set leaves nothing held
//! after its TTL.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use kvtk_core::{BucketConfig, Kv};
use kvtk_locks::{Locks, Released};
use kvtk_tests::{within, within_for, NatsServer, T};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

const NAMES: [&str; 6] = ["acct.a", "acct.b", "acct.c", "acct.d", "acct.e", "acct.f"];

async fn locks_on(client: async_nats::Client) -> Locks {
    let kv = Kv::new(client);
    let b = kv
        .create_or_open(
            BucketConfig::new("multi")
                .history(1)
                .per_key_ttl(Duration::from_secs(60))
                .atomic_batches(true),
        )
        .await
        .unwrap();
    Locks::new(b).await.unwrap()
}

/// How long the contention test runs: `KV_MULTI_SECS` (the 60 s run), else 15 s.
fn run_for() -> Duration {
    let secs = std::env::var("KV_MULTI_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_random_sets_never_deadlock_or_overlap() {
    let server = NatsServer::start().await;
    // Who believes they hold each lock right now (checked on every acquisition).
    let holders: Arc<StdMutex<HashMap<&'static str, usize>>> = Arc::default();
    let end = Instant::now() + run_for();
    let mut clients = Vec::new();
    for c in 0..8usize {
        let locks = locks_on(server.connect().await).await;
        let holders = holders.clone();
        clients.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
            let mut taken = 0u32;
            while Instant::now() < end {
                let n = rng.random_range(2..=4);
                let set: Vec<&'static str> = NAMES.choose_multiple(&mut rng, n).copied().collect();
                let multi = locks.multi(&set).unwrap();
                // A deadlock would show as an acquisition that never completes.
                let g = within("a set's acquisition (no deadlock)", multi.lock())
                    .await
                    .unwrap();
                for name in &set {
                    let mut h = holders.lock().unwrap();
                    let e = h.entry(name).or_default();
                    assert!(*e == 0 && g.is_held(), "client {c}: {name} held twice");
                    *e = 1;
                }
                // A moment's work holding the set (the workload, not a wait).
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..5))).await;
                for name in &set {
                    holders.lock().unwrap().insert(name, 0);
                }
                assert_eq!(g.release().await.unwrap(), Released::Released);
                taken += 1;
            }
            taken
        }));
    }
    let mut total = 0;
    for c in clients {
        // A client runs for the whole `run_for()`, longer than one wait on an event.
        total += within_for("a client's run", run_for() + T, c)
            .await
            .unwrap();
    }
    assert!(total > 8, "every client made progress: {total} sets taken");
}

#[test]
fn a_client_that_dies_holding_a_set_leaves_nothing_after_its_ttl() {
    let server = std::thread::spawn(|| {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(NatsServer::start())
    })
    .join()
    .unwrap();
    let url = server.client_url();

    // The "crashing" client: its runtime (and with it the lease keeper) stops while it
    // holds three locks; nothing is released, nothing renewed.
    let doomed = tokio::runtime::Runtime::new().unwrap();
    let held = doomed.block_on(async {
        let locks = locks_on(async_nats::connect(&url).await.unwrap()).await;
        let g = locks
            .multi(["acct.a", "acct.b", "acct.c"])
            .unwrap()
            .lock()
            .ttl(Duration::from_secs(2))
            .await
            .unwrap();
        let tokens: Vec<u64> = g.tokens().map(|(_, t)| t.get()).collect();
        std::mem::forget(g);
        (locks, tokens)
    });
    doomed.shutdown_background();
    drop(held.0);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let locks = locks_on(async_nats::connect(&url).await.unwrap()).await;
        let info = locks.inspect("acct.b").await.unwrap();
        assert_eq!(info.holders.len(), 1, "still held right after the crash");
        let started = Instant::now();
        let g = within(
            "the set after the dead holder's TTL",
            locks
                .multi(["acct.a", "acct.b", "acct.c", "acct.d"])
                .unwrap()
                .lock(),
        )
        .await
        .unwrap();
        // The server's TTL clock frees them: not before the TTL, and not long after.
        assert!(started.elapsed() < Duration::from_secs(2) + Duration::from_secs(3));
        assert!(g
            .tokens()
            .all(|(_, t)| t.get() > *held.1.iter().max().unwrap()));
        g.release().await.unwrap();
        for name in ["acct.a", "acct.b", "acct.c"] {
            assert!(locks.inspect(name).await.unwrap().holders.is_empty());
        }
    });
    drop(server);
}
