//! Fan-out: readers of one configuration on one bucket handle share one watch (one consumer
//! on the server), each still decoding and validating on its own, gap-free.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use common::*;
use kvtk_config::{ConfigEvent, ConfigEvents, ConfigReader, ConfigWriter};
use kvtk_core::Revision;
use kvtk_tests::{within, NatsServer};
use serde::{Deserialize, Serialize};

/// Another view of the same document: a different type with its own validator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pool {
    pool_size: u32,
}

fn small_pool(p: &Pool) -> Result<(), String> {
    if p.pool_size > 50 {
        return Err(format!("pool_size {} is above 50", p.pool_size));
    }
    Ok(())
}

/// Waits for the event of revision `rev`: `Changed` when `accepted`, else `Rejected`.
async fn expect_outcome<T>(events: &mut ConfigEvents<T>, rev: Revision, accepted: bool) {
    match next_event(events).await {
        ConfigEvent::Changed(c) if accepted => assert_eq!(c.revision, Some(rev)),
        ConfigEvent::Rejected(r) if !accepted => assert_eq!(r.revision(), Some(rev)),
        other => panic!("at revision {rev}, accepted {accepted}: unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_readers_share_one_consumer_and_each_validates() {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    b.put("app.config", json(&app("v", 1))).await.unwrap();
    assert_eq!(consumers(&b).await, 0);

    let mut apps = Vec::new();
    let mut pools = Vec::new();
    for _ in 0..60 {
        let r = validated_reader(&b).await;
        apps.push((r.events(), r));
    }
    for _ in 0..40 {
        let r = ConfigReader::<Pool>::builder(doc())
            .bucket(b.clone())
            .validate(small_pool)
            .await
            .unwrap();
        pools.push((r.events(), r));
    }
    assert_eq!(consumers(&b).await, 1, "100 readers, one shared watch");

    // Each value is accepted by one kind of reader, refused by the other, or both accept.
    for size in [2u32, 70, 3, 0, 4] {
        let value = app("v", size);
        let rev = b.put("app.config", json(&value)).await.unwrap();
        let app_ok = validate(&value).is_ok();
        let pool_ok = small_pool(&Pool { pool_size: size }).is_ok();
        for (events, _) in &mut apps {
            expect_outcome(events, rev, app_ok).await;
        }
        for (events, _) in &mut pools {
            expect_outcome(events, rev, pool_ok).await;
        }
        for (_, r) in &apps {
            assert_eq!(r.current().pool_size == size, app_ok);
            assert_eq!(r.health().is_healthy(), app_ok);
        }
        for (_, r) in &pools {
            assert_eq!(r.current().pool_size == size, pool_ok);
        }
    }
    assert_eq!(consumers(&b).await, 1);
    drop(apps);
    drop(pools);
    wait_consumers(&b, 0).await;
}

#[tokio::test]
async fn the_watch_stops_with_its_last_reader() {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    let w = ConfigWriter::<App>::new(b.clone(), doc());
    w.set(&app("v1", 1)).await.unwrap();
    let start = || ConfigReader::<App>::builder(doc()).bucket(b.clone());
    let (r1, r2, mut r3) = (
        start().await.unwrap(),
        start().await.unwrap(),
        start().await.unwrap(),
    );
    // Another open of the bucket is another handle, with its own watch.
    let other = kvtk_core::Kv::new(server.connect().await)
        .open("cfg")
        .await
        .unwrap();
    let r4 = ConfigReader::<App>::builder(doc())
        .bucket(other)
        .await
        .unwrap();
    assert_eq!(consumers(&b).await, 2);
    drop(r4);
    wait_consumers(&b, 1).await;

    r1.shutdown().await;
    drop(r1);
    drop(r2);
    // The last reader still follows the shared watch.
    let rev = w.set(&app("v2", 2)).await.unwrap().revision;
    let snap = within("the last reader's change", r3.changed()).await;
    assert_eq!(snap.revision(), rev);
    assert_eq!(consumers(&b).await, 1);
    drop(r3);
    wait_consumers(&b, 0).await;
}

/// A reader stuck in its validator while more revisions land than the shared watch keeps for
/// it skips to the newest state when it is free again: it never applies an older revision
/// after a newer one, and ends on the latest; the other readers see every revision meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_reader_resyncs_to_the_latest() {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    b.put("app.config", json(&app("v", 1))).await.unwrap();
    let (release, gate) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(gate));
    let slow = ConfigReader::<App>::builder(doc())
        .bucket(b.clone())
        .validate(move |a: &App| {
            if a.pool_size == 2 {
                // Blocks this reader's task (not the runtime's other worker) until released.
                let _ = gate.lock().map(|g| g.recv());
            }
            Ok(())
        })
        .await
        .unwrap();
    let mut slow_events = slow.events();
    let mut fast = ConfigReader::<App>::builder(doc())
        .bucket(b.clone())
        .await
        .unwrap();
    let mut fast_events = fast.events();

    let mut revs = Vec::new();
    let sizes = 2..=100u32;
    for size in sizes.clone() {
        let rev = b.put("app.config", json(&app("v", size))).await.unwrap();
        let snap = within("the fast reader's change", fast.changed()).await;
        assert_eq!(snap.revision(), Some(rev));
        revs.push(rev);
    }
    let last = *revs.last().unwrap();
    for &rev in &revs {
        expect_outcome(&mut fast_events, rev, true).await;
    }
    release.send(()).unwrap();

    let mut seen = Vec::new();
    while seen.last() != Some(&last) {
        match next_event(&mut slow_events).await {
            ConfigEvent::Changed(c) => seen.push(c.revision.expect("a kv revision")),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
    assert!(
        seen.len() < revs.len(),
        "the stuck reader skipped: {seen:?}"
    );
    assert_eq!(Some(slow.current().pool_size), sizes.last());
    assert_eq!(slow.revision(), Some(last));
    assert_eq!(consumers(&b).await, 1);
}

#[tokio::test]
async fn the_shared_watch_is_gap_free_across_a_server_restart() {
    let mut server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    let w = ConfigWriter::<App>::new(b.clone(), doc());
    w.set(&app("before", 1)).await.unwrap();
    let mut readers = Vec::new();
    for _ in 0..20 {
        let r = ConfigReader::<App>::builder(doc())
            .bucket(b.clone())
            .await
            .unwrap();
        readers.push((r.events(), r));
    }
    assert_eq!(consumers(&b).await, 1);

    server.restart().await;
    let first = set_when_back(&w, &app("after-restart", 2)).await.revision;
    let last = w.set(&app("after-restart", 3)).await.unwrap().revision;
    assert!(first < last);
    for (events, r) in &mut readers {
        let mut seen = Vec::new();
        while seen.last() != Some(&last) {
            match next_event(events).await {
                ConfigEvent::Changed(c) => seen.push(c.revision),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
        assert_eq!(r.current().pool_size, 3);
        assert!(r.health().is_healthy());
    }
    wait_consumers(&b, 1).await;
}

/// Readers work out a change's paths only for event subscribers (a thousand readers would
/// pay for them a thousand times): a reader nobody listens to still swaps in every value and
/// wakes `changed()`, and a subscriber that arrives later gets the paths against the value
/// that reader applied unannounced.
#[tokio::test]
async fn unannounced_changes_still_wake_changed_and_later_paths_are_exact() {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    b.put("app.config", json(&app("v", 1))).await.unwrap();
    let mut r = ConfigReader::<App>::builder(doc())
        .bucket(b.clone())
        .validate(validate)
        .await
        .unwrap();
    for (name, size) in [("v", 2), ("w", 3)] {
        let rev = b.put("app.config", json(&app(name, size))).await.unwrap();
        let snap = within("the reader's change", r.changed()).await;
        assert_eq!((snap.name.as_str(), snap.pool_size), (name, size));
        assert_eq!(snap.revision(), Some(rev));
        assert!(r.is_ready());
    }
    let mut events = r.events();
    let rev = b.put("app.config", json(&app("w", 4))).await.unwrap();
    match next_event(&mut events).await {
        ConfigEvent::Changed(c) => {
            assert_eq!(c.revision, Some(rev));
            assert_eq!(c.paths, vec!["pool_size"]);
            assert_eq!((c.old.name.as_str(), c.old.pool_size), ("w", 3));
            assert_eq!(c.new.pool_size, 4);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(r.current().pool_size, 4);
}
