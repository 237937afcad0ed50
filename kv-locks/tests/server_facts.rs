//! The server behaviours kvtk-locks' protocol rests on, checked against a real nats-server.

use std::time::Duration;

use futures::StreamExt;
use kvtk_core::{BucketConfig, Expect, Kv, Op, WatchEvent};
use kvtk_tests::{until, within, NatsServer};

#[tokio::test]
async fn depth_filters_guard_writes_and_tombstones_with_ttl_vanish() {
    let server = NatsServer::start().await;
    let kv = Kv::new(server.connect().await);
    let b = kv
        .create_or_open(
            BucketConfig::new("facts")
                .per_key_ttl(Duration::from_secs(1))
                .atomic_batches(true),
        )
        .await
        .unwrap();
    // `a.*.*` sees keys of lock `a`, not of lock `a.b` (one token deeper).
    let r1 = b
        .put("a._q.x", "1")
        .expect_on("a.*.*", Expect::NoMessage)
        .await
        .unwrap();
    b.put("a.b._q.y", "2").await.unwrap();
    let r2 = b
        .put("a._q.z", "3")
        .expect_on("a.*.*", Expect::Revision(r1))
        .await
        .unwrap();
    let err = b
        .put("a._q.z", "4")
        .expect_on("a.*.*", Expect::Revision(r1))
        .await
        .unwrap_err();
    assert!(err.is_conflict());
    assert_eq!(err.current_revision(), Some(r2));
    let snap = b.snapshot("a.*.*").await.unwrap();
    assert_eq!(snap.entries.len(), 2);
    assert_eq!(snap.last_revision(), Some(r2));

    // A tombstone written with a TTL disappears without leaving a marker behind.
    let mut w = b.watch(["a._q.x"]).from_revision(r2).await.unwrap();
    let tomb = b
        .delete("a._q.x")
        .ttl(Duration::from_secs(1))
        .revision(r1)
        .await
        .unwrap();
    loop {
        let ev = within("the tombstone", w.next()).await;
        if let Some(Ok(WatchEvent::Entry(e))) = ev {
            assert_eq!((e.revision(), e.operation()), (tomb, Op::Delete));
            break;
        }
    }
    // When the tombstone's TTL runs out the server replaces it with an expiry marker (which
    // carries the bucket's marker TTL) ...
    let marker = loop {
        let ev = within("the expiry marker", w.next()).await;
        if let Some(Ok(WatchEvent::Entry(e))) = ev {
            break e;
        }
    };
    assert_eq!(marker.operation(), Op::Purge);
    assert!(marker.revision() > tomb);
    // ... and the marker then expires without a trace: the key is gone, and the filter's last
    // revision falls back to r2. Polling: the server's whole-second TTL clock is under test.
    let waited = tokio::time::Instant::now();
    until("the expiry marker to expire", || async {
        b.get_from_leader("a._q.x").await.unwrap().is_none()
    })
    .await;
    assert!(
        waited.elapsed() < Duration::from_secs(5),
        "marker did not expire within 5 s"
    );
    let snap = b.snapshot("a.*.*").await.unwrap();
    assert_eq!(snap.entries.len(), 1, "{:?}", snap.entries);
    // A write expecting the vanished marker's revision conflicts: a revision that is gone can
    // never match again, so a cached "queue empty at L" only ever becomes stale, never wrong.
    let err = b
        .put("a._q.x", "again")
        .expect_on("a.*.*", Expect::Revision(marker.revision()))
        .await
        .unwrap_err();
    assert!(err.is_conflict());
    b.put("a._q.x", "again")
        .expect_on("a.*.*", Expect::Revision(r2))
        .await
        .unwrap();
}
