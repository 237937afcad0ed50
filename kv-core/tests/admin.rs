//! Bucket administration against a real server: every bucket with its settings, changing
//! settings (and the changes the server refuses), compacting delete markers, and what a
//! strict watch reports when a compaction removed revisions it needed.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

use std::time::Duration;

use kvtk_core::{BucketConfig, BucketUpdate, ErrorKind, Kv, WatchEvent};
use kvtk_tests::{client, next, within, FaultProxy, NatsServer};
use tokio::time::Instant;

#[tokio::test]
async fn buckets_list_with_settings_and_edits_round_trip() {
    let server = NatsServer::start().await;
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    kv.create_bucket(BucketConfig::new("a").history(2))
        .await
        .unwrap();
    let b = kv
        .create_bucket(BucketConfig::new("b").per_key_ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    b.put("k", "v").await.unwrap();
    let all = kv.buckets().await.unwrap();
    let names: Vec<&str> = all.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(all[0].history, 2);
    assert_eq!(all[0].marker_ttl, None);
    assert_eq!(all[1].marker_ttl, Some(Duration::from_secs(60)));
    assert_eq!((all[1].keys, all[1].values), (1, 1));

    let after = kv
        .update_bucket(
            "a",
            BucketUpdate::new()
                .history(5)
                .max_age(Some(Duration::from_secs(3600)))
                .max_bytes(Some(1 << 20))
                .compression(true)
                .per_key_ttl(Duration::from_secs(30))
                .max_consumers(Some(5_000))
                .description("edited"),
        )
        .await
        .unwrap();
    assert_eq!(after.history, 5);
    assert_eq!(after.max_age, Some(Duration::from_secs(3600)));
    assert_eq!(after.max_bytes, Some(1 << 20));
    assert!(after.compression);
    assert_eq!(after.marker_ttl, Some(Duration::from_secs(30)));
    assert_eq!(after.description.as_deref(), Some("edited"));
    assert_eq!(after.max_consumers, Some(5_000));
    let listed = kv.buckets().await.unwrap();
    assert_eq!(listed[0], after, "the list shows the edit");
    let back = kv
        .update_bucket(
            "a",
            BucketUpdate::new()
                .max_age(None)
                .compression(false)
                .max_consumers(None),
        )
        .await
        .unwrap();
    assert_eq!(
        (back.max_age, back.compression, back.max_consumers),
        (None, false, None)
    );

    // Refused before any request, and by the server, with its reason.
    for refused in [
        BucketUpdate::new().history(0),
        BucketUpdate::new().max_consumers(Some(0)),
    ] {
        let e = kv.update_bucket("a", refused).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }
    let e = kv
        .update_bucket("a", BucketUpdate::new().replicas(3))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Server, "{e}");
    assert!(e.to_string().contains("replicas"), "{e}");
    let e = kv
        .update_bucket("nope", BucketUpdate::new().history(2))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BucketNotFound);
}

#[tokio::test]
async fn compact_removes_old_markers_and_keeps_new_values() {
    let server = NatsServer::start().await;
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let b = kv
        .create_bucket(BucketConfig::new("c").history(5))
        .await
        .unwrap();
    b.put("gone", "1").await.unwrap();
    b.put("gone", "2").await.unwrap();
    b.delete("gone").await.unwrap();
    b.put("back", "1").await.unwrap();
    b.delete("back").await.unwrap();
    b.put("back", "again").await.unwrap();
    b.put("live", "x").await.unwrap();
    b.put("young", "1").await.unwrap();
    b.delete("young").await.unwrap();

    // Nothing is older than an hour: the markers stay, the history below them goes.
    let kept = b.compact(Duration::from_secs(3600)).await.unwrap();
    assert_eq!((kept.markers_removed, kept.markers_kept), (0, 2));
    assert_eq!(kept.messages_removed, 3);
    assert_eq!(b.history("gone").await.unwrap().len(), 1);

    let done = b.compact(Duration::ZERO).await.unwrap();
    assert_eq!((done.markers_removed, done.markers_kept), (2, 0));
    assert!(b.history("gone").await.unwrap().is_empty());
    assert!(b.history("young").await.unwrap().is_empty());
    let back = b.get("back").await.unwrap().unwrap();
    assert_eq!(
        back.value().as_ref(),
        b"again",
        "a key written again keeps its value"
    );
    assert_eq!(b.get("live").await.unwrap().unwrap().value().as_ref(), b"x");
    assert_eq!(
        b.history("back").await.unwrap().len(),
        3,
        "a live key is not touched"
    );
}

#[tokio::test]
async fn a_strict_watch_that_needs_a_compacted_revision_reports_history_gone() {
    let server = NatsServer::start().await;
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let b = kv
        .create_bucket(BucketConfig::new("w").history(5))
        .await
        .unwrap();
    let first = b.put("old", "1").await.unwrap();
    b.delete("old").await.unwrap();
    b.put("other", "x").await.unwrap();

    // Started before the compaction, read after it: it delivers the revisions it needed
    // (those already on their way) or says they are gone, never skips them.
    let mut early = b.watch([">"]).from_revision(first).await.unwrap();
    b.compact(Duration::ZERO).await.unwrap();
    let last = b.put("other", "y").await.unwrap();
    let mut old_seen = 0;
    loop {
        match next("the early watch", &mut early).await {
            Err(e) if e.kind() == ErrorKind::HistoryGone => break,
            Err(e) => panic!("{e}"),
            Ok(WatchEvent::Entry(e)) if e.key().as_str() == "old" => old_seen += 1,
            Ok(WatchEvent::Entry(e)) if e.revision() == last => {
                assert_eq!(
                    old_seen, 2,
                    "both revisions of old, or HistoryGone, before the end"
                );
                break;
            }
            Ok(_) => {}
        }
    }

    // Started after it, from a compacted revision.
    let mut late = b.watch([">"]).from_revision(first).await;
    let gone = match &mut late {
        Err(e) => e.kind() == ErrorKind::HistoryGone,
        Ok(w) => {
            matches!(next("the late watch", w).await, Err(e) if e.kind() == ErrorKind::HistoryGone)
        }
    };
    assert!(
        gone,
        "a watch from a compacted revision reports HistoryGone"
    );

    // A last-value watch never needed them: it shows the present.
    let mut now = b.watch([">"]).await.unwrap();
    match next("the last-value watch", &mut now).await.unwrap() {
        WatchEvent::Entry(e) => assert_eq!(e.key().as_str(), "other"),
        other => panic!("{other:?}"),
    }
}

/// A strict watch far behind (its consumer not yet sent the revisions) when a compaction
/// removes a key's delete marker: it reports `HistoryGone`, or delivers the delete, before
/// it reaches the end; never neither.
#[tokio::test]
async fn a_lagging_strict_watch_across_a_compaction() {
    let server = NatsServer::start().await;
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let b = kv
        .create_bucket(BucketConfig::new("l").history(5))
        .await
        .unwrap();
    let first = b.put("old", "1").await.unwrap();
    for i in 0..2000 {
        b.put(format!("f{i}"), "x").await.unwrap();
    }
    b.delete("old").await.unwrap();
    let end = b.put("end", "x").await.unwrap();
    let mut w = b.watch([">"]).from_revision(first).await.unwrap();
    let _ = next("first", &mut w).await;
    b.compact(Duration::ZERO).await.unwrap();
    let mut old_deleted = false;
    loop {
        match next("the lagging watch", &mut w).await {
            Err(e) if e.kind() == ErrorKind::HistoryGone => return,
            Err(e) => panic!("{e}"),
            Ok(WatchEvent::Entry(e)) if e.key().as_str() == "old" => old_deleted = true,
            Ok(WatchEvent::Entry(e)) if e.revision() == end => break,
            Ok(_) => {}
        }
    }
    assert!(old_deleted, "the delete of old was skipped silently");
}

/// Opening rides through answers later than the request timeout (a slow link, healed after
/// three timeouts' worth), and refuses a bucket that does not exist without retrying.
#[tokio::test]
async fn open_rides_through_late_answers_and_refuses_a_missing_bucket_at_once() {
    let server = NatsServer::start().await;
    let direct = Kv::connect(&server.client_url()).await.unwrap();
    direct.create_bucket(BucketConfig::new("o")).await.unwrap();
    let proxy = FaultProxy::start(&server.client_url()).await;
    let client = client::options(client::REQUEST_TIMEOUT)
        .connect(proxy.url())
        .await
        .unwrap();
    let kv = Kv::new(client);
    // Every answer arrives after the request timed out, until the link heals.
    proxy.set_latency(client::REQUEST_TIMEOUT);
    let start = Instant::now();
    let opening = tokio::spawn({
        let kv = kv.clone();
        async move { kv.open("o").await.map(|b| b.name().to_string()) }
    });
    // The fault's length is what this test sets, not a wait for an event.
    tokio::time::sleep(client::REQUEST_TIMEOUT * 3).await;
    proxy.heal();
    let opened = within("the open to complete", opening).await.unwrap();
    assert_eq!(opened.unwrap(), "o");
    assert!(start.elapsed() > client::REQUEST_TIMEOUT * 3);
    let missing = kv.open("nope").await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::BucketNotFound);
}

/// A bucket's consumer limit holds every watch to it, and the consumer of a dropped watch is
/// deleted (not left for the server's inactivity threshold), so its place is free again at
/// once. nats-server 2.15 puts a stream without a limit of its own at 1,000.
#[tokio::test]
async fn the_consumer_limit_counts_watches_and_a_dropped_watch_frees_its_place() {
    let server = NatsServer::start().await;
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let b = kv
        .create_bucket(BucketConfig::new("few").max_consumers(2))
        .await
        .unwrap();
    let first = within("a watch", b.watch(["a"])).await.unwrap();
    let _second = within("a watch", b.watch(["b"])).await.unwrap();
    let e = within("a watch", b.watch(["c"])).await.unwrap_err();
    assert!(e.to_string().contains("maximum consumers"), "{e}");
    assert!(
        e.to_string().contains("max_consumers"),
        "names the way out: {e}"
    );
    let info = &kv.buckets().await.unwrap()[0];
    assert_eq!((info.max_consumers, info.consumers), (Some(2), 2));

    drop(first);
    kvtk_tests::until("the dropped watch's consumer is deleted", || async {
        kv.buckets().await.unwrap()[0].consumers == 1
    })
    .await;
    within("a watch in the freed place", b.watch(["c"]))
        .await
        .unwrap();
}
