//! Watches against a real nats-server: include modes, the initial-values marker, and
//! recovery across server restarts and connection cuts with no gap and no duplicate.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::future::IntoFuture;
use std::time::Duration;

use futures::StreamExt;
use kvtk_core::{
    Bucket, BucketConfig, ErrorKind, Expect, Include, Kv, Op, Revision, Watch, WatchEvent,
};
use kvtk_tests::{until, within, FaultProxy, NatsServer};

mod common;
use common::{next_entry, next_event};

async fn entries_until_marker(w: &mut Watch) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        match next_event(w).await {
            WatchEvent::Entry(e) => out.push((e.key().to_string(), e.value().to_vec())),
            WatchEvent::InitialDone => return out,
        }
    }
}

async fn bucket(server: &NatsServer, cfg: BucketConfig) -> Bucket {
    Kv::new(server.connect().await)
        .create_bucket(cfg)
        .await
        .expect("bucket")
}

#[tokio::test]
async fn include_modes_and_initial_marker() {
    let server = NatsServer::start().await;
    let b = bucket(&server, BucketConfig::new("modes").history(5)).await;

    // empty bucket: the marker still arrives
    let mut w = b.watch_all().await.unwrap();
    assert_eq!(next_event(&mut w).await, WatchEvent::InitialDone);
    let mut none = b.watch(["nothing.>"]).await.unwrap();
    assert_eq!(next_event(&mut none).await, WatchEvent::InitialDone);

    b.put("a", "1").await.unwrap();
    b.put("a", "2").await.unwrap();
    b.put("b", "1").await.unwrap();
    b.delete("b").await.unwrap();
    b.put("c.x", "1").await.unwrap();
    // the first watch now sees the updates live
    let WatchEvent::Entry(e) = next_event(&mut w).await else {
        panic!("entry expected")
    };
    assert_eq!(e.value().as_ref(), b"1");

    // last per key (default), including the tombstone of b
    let mut w = b.watch_all().await.unwrap();
    let got = entries_until_marker(&mut w).await;
    assert_eq!(
        got,
        vec![
            ("a".into(), b"2".to_vec()),
            ("b".into(), vec![]),
            ("c.x".into(), b"1".to_vec()),
        ]
    );
    // ignore deletes
    let mut w = b.watch_all().ignore_deletes().await.unwrap();
    let got: Vec<String> = entries_until_marker(&mut w)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(got, vec!["a", "c.x"]);
    // all history
    let mut w = b.watch(["a"]).include(Include::AllHistory).await.unwrap();
    let got = entries_until_marker(&mut w).await;
    assert_eq!(got.len(), 2);
    // metadata only: no values
    let mut w = b.watch(["a", "c.>"]).meta_only().await.unwrap();
    let got = entries_until_marker(&mut w).await;
    assert_eq!(got, vec![("a".into(), vec![]), ("c.x".into(), vec![])]);
    // updates only: the marker comes first, then only new writes
    let mut w = b.watch_all().include(Include::UpdatesOnly).await.unwrap();
    assert_eq!(next_event(&mut w).await, WatchEvent::InitialDone);
    let r = b.put("d", "new").await.unwrap();
    let WatchEvent::Entry(e) = next_event(&mut w).await else {
        panic!("entry expected")
    };
    assert_eq!((e.key().as_str(), e.revision()), ("d", r));
    // from a revision
    let first = b.history("a").await.unwrap()[0].revision();
    let mut w = b.watch(["a"]).from_revision(first).await.unwrap();
    let WatchEvent::Entry(e) = next_event(&mut w).await else {
        panic!("entry expected")
    };
    assert_eq!(e.revision(), first);
    // bad filters are errors
    assert_eq!(
        b.watch(["a..b"]).await.unwrap_err().kind(),
        ErrorKind::InvalidKey
    );
}

/// Opens bucket `name` on a client that reaches `server` through a fault proxy, so the
/// test can cut the watcher off while others keep writing.
async fn through_proxy(server: &NatsServer, name: &str) -> (FaultProxy, Bucket) {
    let proxy = FaultProxy::start(&server.client_url()).await;
    let client =
        kvtk_tests::client::with_request_timeout(proxy.url(), Duration::from_secs(2)).await;
    let b = Kv::new(client).open(name).await.unwrap();
    (proxy, b)
}

/// Writes `n` numbered values from `from`, on a separate client.
async fn write_numbered(b: &Bucket, from: u32, n: u32) {
    for i in from..from + n {
        b.put(format!("n.{}", i % 7), i.to_string()).await.unwrap();
    }
}

/// Reads entries until `want` numbered values were seen, asserting strictly increasing
/// revisions (no duplicates) and returning the values.
async fn collect_numbers(w: &mut Watch, last: &mut Option<Revision>, want: usize) -> Vec<u32> {
    let mut out = Vec::new();
    while out.len() < want {
        if let WatchEvent::Entry(e) = next_event(w).await {
            if let Some(l) = *last {
                assert!(
                    e.revision() > l,
                    "duplicate or out of order: {} after {l}",
                    e.revision()
                );
            }
            *last = Some(e.revision());
            assert_eq!(e.operation(), Op::Put);
            out.push(std::str::from_utf8(e.value()).unwrap().parse().unwrap());
        }
    }
    out
}

#[tokio::test]
async fn resumes_across_server_restarts_without_gap_or_duplicate() {
    let mut server = NatsServer::start().await;
    let writer = bucket(&server, BucketConfig::new("resume").history(64)).await;
    // The watcher reaches the server through a proxy, so it can be cut off before the
    // writes it must not miss; the server then restarts while it is away.
    let (proxy, b) = through_proxy(&server, "resume").await;
    let mut w = b.watch(["n.>"]).include(Include::AllHistory).await.unwrap();
    assert_eq!(next_event(&mut w).await, WatchEvent::InitialDone);
    let mut last = None;
    let mut seen = Vec::new();
    // 1,000 numbered writes; around two of the rounds the watcher is cut off, unpolled,
    // while the writes happen and the server restarts.
    for round in 0..4u32 {
        let away = round == 1 || round == 2;
        if away {
            proxy.cut();
        }
        write_numbered(&writer, round * 250, 125).await;
        if away {
            server.restart().await;
        }
        write_numbered(&writer, round * 250 + 125, 125).await;
        if away {
            proxy.heal();
        }
        seen.extend(collect_numbers(&mut w, &mut last, 250).await);
    }
    let expected: Vec<u32> = (0..1000).collect();
    assert_eq!(seen, expected, "every write exactly once, in order");
}

#[tokio::test]
async fn resumes_across_a_proxy_cut_in_last_per_key_mode() {
    let server = NatsServer::start().await;
    let b = bucket(&server, BucketConfig::new("cut")).await;
    let (proxy, watched) = through_proxy(&server, "cut").await;
    let mut w = watched.watch(["k.>"]).await.unwrap();
    assert_eq!(next_event(&mut w).await, WatchEvent::InitialDone);
    b.put("k.a", "1").await.unwrap();
    let WatchEvent::Entry(e) = next_event(&mut w).await else {
        panic!()
    };
    let mut last = e.revision();

    proxy.cut();
    // while the watcher is cut off: several writes, some superseded (history 1)
    b.put("k.a", "2").await.unwrap();
    b.put("k.b", "1").await.unwrap();
    b.put("k.a", "3").await.unwrap();
    b.delete("k.b").await.unwrap();
    proxy.heal();

    // it resumes with the latest of every changed key, nothing older than what it had
    let mut got = Vec::new();
    while got.len() < 2 {
        if let WatchEvent::Entry(e) = next_event(&mut w).await {
            assert!(e.revision() > last, "no duplicate");
            last = e.revision();
            got.push((e.key().to_string(), e.value().to_vec(), e.operation()));
        }
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("k.a".into(), b"3".to_vec(), Op::Put),
            ("k.b".into(), vec![], Op::Delete)
        ]
    );
    // and keeps following live writes
    let r = b.put("k.c", "x").await.unwrap();
    loop {
        if let WatchEvent::Entry(e) = next_event(&mut w).await {
            assert_eq!(e.revision(), r);
            break;
        }
    }
}

#[tokio::test]
async fn reports_history_gone_instead_of_skipping() {
    let server = NatsServer::start().await;
    let b = bucket(&server, BucketConfig::new("gone").history(1)).await;
    let r1 = b.put("x", "1").await.unwrap();
    let r2 = b.put("x", "2").await.unwrap();
    // revision r1 was replaced (history 1): a watch that must start there cannot
    let err = b.watch(["x"]).from_revision(r1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HistoryGone, "{err}");
    // unless the watcher accepts compaction: then it starts at the latest revision
    let mut lenient = b
        .watch(["x"])
        .from_revision(r1)
        .skip_compacted()
        .await
        .unwrap();
    let WatchEvent::Entry(e) = next_event(&mut lenient).await else {
        panic!()
    };
    assert_eq!(e.revision(), r2);

    // a strict watch cut off while the history it needs is compacted away says so
    let (proxy, watched) = through_proxy(&server, "gone").await;
    let mut w = watched.watch(["x", "y"]).from_revision(r2).await.unwrap();
    let WatchEvent::Entry(e) = next_event(&mut w).await else {
        panic!()
    };
    assert_eq!(e.revision(), r2);
    proxy.cut();
    b.put("y", "1").await.unwrap();
    b.put("x", "3").await.unwrap();
    b.put("x", "4").await.unwrap();
    b.purge("y").await.unwrap();
    b.put("x", "5").await.unwrap();
    proxy.heal();
    let mut saw_error = false;
    while let Some(item) = within("the watch's next item or its end", w.next()).await {
        match item {
            Ok(WatchEvent::Entry(e)) => panic!("no entry may be delivered past a gap: {e:?}"),
            Ok(WatchEvent::InitialDone) => {}
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::HistoryGone, "{e}");
                saw_error = true;
            }
        }
    }
    assert!(
        saw_error,
        "a strict watch reports the lost history, then ends"
    );
}

#[tokio::test]
async fn a_key_that_vanished_while_away_is_reported() {
    let server = NatsServer::start().await;
    let b = bucket(
        &server,
        BucketConfig::new("vanish").per_key_ttl(Duration::from_secs(1)),
    )
    .await;
    let (proxy, watched) = through_proxy(&server, "vanish").await;
    let mut w = watched.watch(["s.>"]).await.unwrap();
    assert_eq!(next_event(&mut w).await, WatchEvent::InitialDone);
    b.create("s.1", "alive")
        .ttl(Duration::from_secs(1))
        .await
        .unwrap();
    let WatchEvent::Entry(e) = next_event(&mut w).await else {
        panic!()
    };
    assert_eq!(e.key().as_str(), "s.1");
    proxy.cut();
    // The server's whole-second TTL clock is what is under test: the key expires after 1 s
    // and its expiry marker after one more; wait until neither is left.
    until("key s.1 and its expiry marker gone", || async {
        b.entry("s.1").await.unwrap().is_none()
    })
    .await;
    b.put("s.2", "later").await.unwrap();
    proxy.heal();
    let mut vanished = false;
    let mut later = false;
    while !(vanished && later) {
        match kvtk_tests::next("the next watch item", &mut w).await {
            Ok(WatchEvent::Entry(e)) => {
                assert_eq!(e.key().as_str(), "s.2");
                later = true;
            }
            Ok(WatchEvent::InitialDone) => {}
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::HistoryGone, "{e}");
                assert_eq!(e.key(), Some("s.1"));
                vanished = true;
            }
        }
    }
}

#[tokio::test]
async fn r3_bucket_survives_killing_its_stream_leader() {
    let mut cluster = kvtk_tests::NatsCluster::start().await;
    let kv = Kv::new(cluster.connect().await).with_timeout(Duration::from_secs(2));
    // Creating an R3 stream on a freshly started cluster can take longer than the short
    // timeout the failover is tested with.
    kv.clone()
        .with_timeout(Duration::from_secs(15))
        .create_bucket(BucketConfig::new("r3").replicas(3))
        .await
        .unwrap();
    let b = kv.open("r3").await.unwrap();
    let mut w = b.watch(["k"]).await.unwrap();
    assert_eq!(next_event(&mut w).await, WatchEvent::InitialDone);
    let rev = std::cell::Cell::new(b.create("k", "0").await.unwrap());
    let leader = cluster
        .wait_stream_leader("KV_r3", Duration::from_secs(10))
        .await
        .expect("stream leader");
    cluster.kill_node(leader);
    // CAS updates keep working once a new stream leader is elected; retry through the
    // election, re-reading on conflicts (an ambiguous ack may have applied).
    for done in 0..20 {
        until(
            "a CAS write to land after the stream leader's kill",
            || async {
                match b.update("k", done.to_string(), rev.get()).await {
                    Ok(r) => {
                        rev.set(r);
                        true
                    }
                    Err(e) if e.is_conflict() => {
                        rev.set(b.get_from_leader("k").await.unwrap().unwrap().revision());
                        false
                    }
                    Err(_) => false,
                }
            },
        )
        .await;
    }
    let rev = rev.get();
    // the watch follows to the last write
    loop {
        if let WatchEvent::Entry(e) = next_event(&mut w).await {
            if e.revision() == rev {
                assert_eq!(e.value().as_ref(), b"19");
                break;
            }
        }
    }
}

#[tokio::test]
async fn watchers_see_whole_transactions_by_their_commit_entry() {
    let server = NatsServer::start().await;
    let b = bucket(&server, BucketConfig::new("tx").atomic_batches(true)).await;
    let mut a_rev = b.put("acct.a", "100").await.unwrap();
    let mut b_rev = b.put("acct.b", "0").await.unwrap();
    let watcher = Kv::new(server.connect().await).open("tx").await.unwrap();
    let mut w = watcher
        .watch(["acct.>"])
        .include(Include::UpdatesOnly)
        .await
        .unwrap();
    assert_eq!(next_event(&mut w).await, WatchEvent::InitialDone);
    let rounds = 100u32;
    let writer = async {
        for i in 1..=rounds {
            let c = b
                .txn()
                .update("acct.a", (100 - i).to_string(), a_rev)
                .update("acct.b", i.to_string(), b_rev)
                .commit()
                .await
                .unwrap();
            a_rev = c.revision("acct.a").unwrap();
            b_rev = c.revision("acct.b").unwrap();
        }
    };
    let reader = async {
        let (mut a, mut bv) = (100u32, 0u32);
        let mut applied = 0;
        let mut pending: Vec<kvtk_core::Entry> = Vec::new();
        while applied < rounds {
            let WatchEvent::Entry(e) = next_event(&mut w).await else {
                continue;
            };
            let batch = e.batch().cloned().expect("written by a transaction");
            pending.push(e);
            if !batch.commit {
                continue;
            }
            assert_eq!(pending.len() as u64, batch.sequence, "whole transaction");
            for e in pending.drain(..) {
                let v: u32 = std::str::from_utf8(e.value()).unwrap().parse().unwrap();
                if e.key().as_str() == "acct.a" {
                    a = v;
                } else {
                    bv = v;
                }
            }
            assert_eq!(a + bv, 100, "never torn");
            applied += 1;
        }
    };
    tokio::join!(writer, reader);
}

#[tokio::test]
async fn a_reconnect_storm_leaves_one_consumer_and_no_gap() {
    let server = NatsServer::start().await;
    let b = bucket(&server, BucketConfig::new("storm").history(64)).await;
    let (proxy, watched) = through_proxy(&server, "storm").await;
    let mut w = watched
        .watch(["n.>"])
        .include(Include::AllHistory)
        .await
        .unwrap();
    assert_eq!(next_event(&mut w).await, WatchEvent::InitialDone);
    let mut last = None;
    let mut seen = Vec::new();
    // Flap the watcher's connection 50 times, with a write while it is cut off each time,
    // and let it resume after every flap.
    for i in 0..50u32 {
        proxy.cut();
        write_numbered(&b, i, 1).await;
        proxy.heal();
        seen.extend(collect_numbers(&mut w, &mut last, 1).await);
    }
    assert_eq!(seen, (0..50).collect::<Vec<u32>>(), "no gap, no duplicate");
    // The replaced consumers were deleted: only the live one remains.
    let info = b.status().await.unwrap().stream_info;
    assert!(
        info.state.consumer_count <= 1,
        "{} consumers left after the storm",
        info.state.consumer_count
    );
}

#[tokio::test]
async fn dropped_watches_leave_no_consumers_behind() {
    let server = NatsServer::start().await;
    let b = bucket(&server, BucketConfig::new("churn")).await;
    b.put("k", "v").await.unwrap();
    // A busy lock creates and drops a watch per hand-off: thousands a minute.
    for _ in 0..300 {
        let mut w = b.watch(["k"]).await.unwrap();
        let _ = next_event(&mut w).await;
    }
    kvtk_tests::until("the dropped watches' consumers to be deleted", || async {
        b.status().await.unwrap().stream_info.state.consumer_count == 0
    })
    .await;
}

/// Waits for the watch's next item and asserts it is a `HistoryGone` error naming `key`, with
/// no entry before it, and that the watch then ends.
async fn expect_history_gone(w: &mut Watch, key: &str) {
    let err = loop {
        match within("the watch's next item or its end", w.next()).await {
            Some(Ok(WatchEvent::Entry(e))) => panic!("no entry may be delivered past a gap: {e:?}"),
            Some(Ok(WatchEvent::InitialDone)) => {}
            Some(Err(e)) => break e,
            None => panic!("the watch ended without reporting the gap"),
        }
    };
    assert_eq!(err.kind(), ErrorKind::HistoryGone, "{err}");
    assert_eq!(err.key(), Some(key), "{err}");
    let after = within("the watch's end", w.next()).await;
    assert!(after.is_none(), "a strict watch ends after HistoryGone");
}

#[tokio::test]
async fn a_strict_watch_reports_a_revision_removed_from_the_middle_of_the_stream() {
    let server = NatsServer::start().await;
    let b = bucket(&server, BucketConfig::new("middle").history(1)).await;
    // `other` keeps the stream's first sequence at 1 while k's old revisions go.
    let first = b.put("other", "o").await.unwrap();
    let k1 = b.put("k", "1").await.unwrap();
    let (proxy, watched) = through_proxy(&server, "middle").await;
    let mut w = watched.watch(["k"]).from_revision(first).await.unwrap();
    assert_eq!(next_entry(&mut w).await.revision(), k1);

    // Away while another key is written and k once: nothing of k is lost, no alarm.
    proxy.cut();
    b.put("fresh", "f").await.unwrap();
    let k2 = b.put("k", "2").await.unwrap();
    proxy.heal();
    assert_eq!(next_entry(&mut w).await.revision(), k2);

    // Away while k is written twice: with history 1 the middle revision is gone.
    proxy.cut();
    let lost = b.put("k", "3").await.unwrap();
    let newest = b.put("k", "4").await.unwrap();
    assert!(
        b.entry_at("k", lost).await.unwrap().is_none(),
        "{lost} removed"
    );
    assert_eq!(b.get("k").await.unwrap().unwrap().revision(), newest);
    proxy.heal();
    expect_history_gone(&mut w, "k").await;
}

#[tokio::test]
async fn a_strict_watch_from_a_compacted_revision_reports_it() {
    let server = NatsServer::start().await;
    let b = bucket(&server, BucketConfig::new("compacted").history(1)).await;
    let first = b.put("other", "o").await.unwrap();
    b.put("k", "1").await.unwrap();
    b.put("k", "2").await.unwrap();
    let newest = b.put("k", "3").await.unwrap();
    let status = b.status().await.unwrap().stream_info.state;
    assert_eq!(
        status.first_sequence,
        first.get(),
        "the stream's front still holds the start revision"
    );
    for start in [Include::AllHistory, Include::LastPerKey] {
        let mut w = b
            .watch(["k"])
            .include(start)
            .from_revision(first)
            .await
            .unwrap();
        expect_history_gone(&mut w, "k").await;
    }
    // A watcher that accepts compaction gets the newest revision.
    let mut lenient = b
        .watch(["k"])
        .from_revision(first)
        .skip_compacted()
        .await
        .unwrap();
    assert_eq!(next_entry(&mut lenient).await.revision(), newest);
    // Keys whose revisions are all still there pass the check.
    let mut other = b.watch(["other"]).from_revision(first).await.unwrap();
    assert_eq!(next_entry(&mut other).await.revision(), first);
}

/// A watcher can tell when it missed revisions of a key: each conditional write carries the
/// revision it replaced (the server stores the expectation), unconditional ones carry none.
#[tokio::test]
async fn entries_name_the_revision_their_write_expected() {
    let server = NatsServer::start().await;
    // History 5 keeps all four revisions of `k`: with history 1 a watch that lags (CI at
    // load 13) meets only the ones not yet replaced (see "Pacing"), and waited for the rest.
    let b = bucket(&server, BucketConfig::new("exp").history(5)).await;
    let mut w = b
        .watch(["k", "other"])
        .include(Include::UpdatesOnly)
        .await
        .unwrap();
    let created = b.create("k", "1").await.unwrap();
    b.update("k", "2", created).await.unwrap();
    b.put("k", "3").await.unwrap();
    let other = b.put("other", "x").await.unwrap();
    b.put("k", "4").expect_on("other", other).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 5 {
        if let WatchEvent::Entry(e) = next_event(&mut w).await {
            seen.push(e.expected());
        }
    }
    assert_eq!(
        seen,
        [
            Some(Expect::NoMessage),
            Some(Expect::Revision(created)),
            None,
            None,
            None
        ]
    );
}

/// A snapshot of more keys than one direct-get answer carries (1,024) is read from a
/// consumer instead of failing ("413 Too Many Results": a semaphore whose handles left over
/// a thousand queue tombstones failed every first acquisition in a chaos run).
#[tokio::test]
async fn a_snapshot_of_more_keys_than_one_direct_answer_is_whole() {
    let server = NatsServer::start().await;
    let b = bucket(&server, BucketConfig::new("many").history(1)).await;
    let n = 1_100;
    let writes = (0..n).map(|i| b.put(format!("q.{i}"), "x").into_future());
    let revs: Vec<Revision> = futures::future::try_join_all(writes).await.unwrap();
    let snap = kvtk_tests::within("a large snapshot", b.snapshot("q.*"))
        .await
        .unwrap();
    assert_eq!(snap.entries.len(), n);
    assert!(snap.as_of >= revs.iter().max().copied());
}
