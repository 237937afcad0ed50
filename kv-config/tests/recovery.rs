//! Offline start from the snapshot file, catch-up, resync after a cut link and a restart.

mod common;

use std::time::Duration;

use common::*;
use kvtk_config::{ConfigEvent, ConfigReader, ConfigWriter, Connector, ErrorKind, Origin};
use kvtk_tests::{until, within, FaultProxy, NatsServer};

#[tokio::test]
async fn offline_start_from_snapshot_then_catch_up() {
    let mut server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("app.snapshot.json");
    let w = ConfigWriter::<App>::new(b.clone(), doc());
    let r1 = w.set(&app("v1", 1)).await.unwrap().revision;

    // A reader persists what it accepted.
    let a = ConfigReader::<App>::builder(doc())
        .bucket(b.clone())
        .snapshot_file(&snap)
        .await
        .unwrap();
    assert_eq!(a.current().revision(), r1);
    a.shutdown().await;
    drop(a);
    assert!(snap.exists());

    // The config moves on while no reader runs; then the server goes away.
    let r2 = w.set(&app("v2", 2)).await.unwrap().revision;
    server.stop().await;

    let connector = Connector::connect(server.client_url(), bucket_config("cfg"));
    // Demanding fresh config fails clearly.
    let err = ConfigReader::<App>::builder(doc())
        .connector(connector.clone())
        .snapshot_file(&snap)
        .require_fresh(true)
        .start_timeout(Duration::from_millis(500))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let layers = kvtk_tests::assert_one_layer_each(&err);
    assert_eq!(layers[0], "fresh config required but the kv is unreachable");
    assert!(layers.len() > 1, "the cause is kept: {layers:?}");
    // Without a snapshot file there is nothing to start from; the cause is printed once, by
    // the next layer.
    let err = ConfigReader::<App>::builder(doc())
        .connector(connector.clone())
        .start_timeout(Duration::from_millis(500))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let layers = kvtk_tests::assert_one_layer_each(&err);
    assert_eq!(
        layers[0],
        "the kv is unreachable and there is no snapshot file"
    );
    assert!(layers.len() > 1, "the cause is kept: {layers:?}");

    // Otherwise it starts from the snapshot, flagged stale.
    let mut r = ConfigReader::<App>::builder(doc())
        .connector(connector)
        .snapshot_file(&snap)
        .start_timeout(Duration::from_millis(500))
        .await
        .unwrap();
    let cur = r.current();
    assert_eq!(*cur.value(), app("v1", 1));
    assert!(cur.is_stale());
    assert_eq!(cur.origin(), Origin::SnapshotFile);
    assert!(!r.is_ready() && r.health().stale);

    // The server comes back: the reader catches up with the one change it missed.
    server.restart().await;
    let cur = within("the catch-up", r.changed()).await;
    assert_eq!(*cur.value(), app("v2", 2));
    assert_eq!(cur.revision(), r2);
    assert!(!cur.is_stale());
    within("the reader ready", r.ready()).await;
    assert!(r.health().is_healthy());
}

#[tokio::test]
async fn resync_after_cut_link_emits_one_change() {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    let w = ConfigWriter::<App>::new(b.clone(), doc());
    w.set(&app("before", 1)).await.unwrap();

    let proxy = FaultProxy::start(&server.client_url()).await;
    let client = async_nats::connect(proxy.url()).await.unwrap();
    let rb = kvtk_core::Kv::new(client).open("cfg").await.unwrap();
    let r = ConfigReader::<App>::builder(doc())
        .bucket(rb)
        .await
        .unwrap();
    let mut events = r.events();

    proxy.cut();
    // Two changes while the reader is cut off: it must see only the last one, once.
    w.set(&app("away-1", 2)).await.unwrap();
    let last = w.set(&app("away-2", 3)).await.unwrap().revision;
    proxy.heal();

    match next_event(&mut events).await {
        ConfigEvent::Changed(c) => {
            assert_eq!(c.revision, last);
            assert_eq!(c.old.name, "before");
            assert_eq!(c.new.name, "away-2");
            assert_eq!(c.paths, vec!["name", "pool_size"]);
        }
        other => panic!("unexpected {other:?}"),
    }
    // And nothing else: the next event is the next real change.
    let next = w.set(&app("after", 4)).await.unwrap().revision;
    match next_event(&mut events).await {
        ConfigEvent::Changed(c) => assert_eq!(c.revision, next),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn resync_after_server_restart() {
    let mut server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    let w = ConfigWriter::<App>::new(b.clone(), doc());
    w.set(&app("before", 1)).await.unwrap();
    let r = ConfigReader::<App>::builder(doc())
        .bucket(b.clone())
        .await
        .unwrap();
    let mut events = r.events();

    server.restart().await;
    let rev = set_when_back(&w, &app("after-restart", 2)).await.revision;
    match next_event(&mut events).await {
        ConfigEvent::Changed(c) => {
            assert_eq!(c.revision, rev);
            assert_eq!(c.new.name, "after-restart");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(r.health().is_healthy());
}

#[tokio::test]
async fn a_document_that_vanished_while_away_is_noticed() {
    let server = NatsServer::start().await;
    // History 1: with per-key TTLs a longer history can bring back an older revision.
    let b = kvtk_core::Kv::new(server.connect().await)
        .create_bucket(
            kvtk_core::BucketConfig::new("vanish")
                .history(1)
                .per_key_ttl(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    b.put("app.config", json(&app("v1", 1)))
        .ttl(Duration::from_secs(1))
        .await
        .unwrap();
    let proxy = FaultProxy::start(&server.client_url()).await;
    let client = async_nats::connect(proxy.url()).await.unwrap();
    let watched = kvtk_core::Kv::new(client).open("vanish").await.unwrap();
    let r = ConfigReader::<App>::builder(doc())
        .bucket(watched)
        .await
        .unwrap();
    let mut events = r.events();
    assert_eq!(r.current().name, "v1");
    proxy.cut();
    // The server's whole-second TTL clock is what is under test: the document expires and so
    // does its expiry marker, leaving no trace for the reader's watch.
    until("the document and its expiry marker gone", || async {
        b.entry("app.config").await.unwrap().is_none()
    })
    .await;
    proxy.heal();
    match next_event(&mut events).await {
        ConfigEvent::Rejected(rej) => {
            assert_eq!(rej.kind(), kvtk_config::RejectKind::Deleted, "{rej}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(r.current().name, "v1", "the last good value stays");
}
