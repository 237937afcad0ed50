//! kvtk-core operations against a real nats-server.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::time::Duration;

use kvtk_core::{
    Bucket, BucketConfig, ErrorKind, Expect, Include, Json, Kv, Op, Outcome, Removal, Revision,
    Storage, Utf8,
};
use kvtk_tests::{within_for, FaultProxy, NatsServer};

mod common;
use common::next_entry;

async fn setup(server: &NatsServer, cfg: BucketConfig) -> (Kv, Bucket) {
    let kv = Kv::new(server.connect().await);
    let b = kv.create_bucket(cfg).await.expect("create bucket");
    (kv, b)
}

fn ttl_bucket(name: &str) -> BucketConfig {
    BucketConfig::new(name)
        .per_key_ttl(Duration::from_secs(1))
        .atomic_batches(true)
}

#[tokio::test]
async fn put_get_create_update_delete_purge() {
    let server = NatsServer::start().await;
    let (kv, b) = setup(&server, BucketConfig::new("ops").history(5)).await;
    assert!(kv.server_version() >= kvtk_core::ServerVersion::ATOMIC_BATCH);

    assert!(b.get("a").await.unwrap().is_none());
    let r1 = b.put("a", "one").await.unwrap();
    let e = b.get("a").await.unwrap().unwrap();
    assert_eq!(
        (e.revision(), e.value().as_ref(), e.operation()),
        (r1, &b"one"[..], Op::Put)
    );
    assert_eq!(e.bucket(), "ops");
    assert_eq!(e.key().as_str(), "a");

    // create refuses a live key and names its revision
    let err = b.create("a", "x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(err.current_revision(), Some(r1));

    // update is CAS
    let r2 = b.update("a", "two", r1).await.unwrap();
    assert!(r2 > r1);
    let err = b.update("a", "three", r1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(err.server_code(), Some(10071));
    assert_eq!(err.current_revision(), Some(r2));
    assert_eq!(err.key(), Some("a"));

    // conditional delete
    let err = b.delete("a").revision(r1).await.unwrap_err();
    assert!(err.is_conflict());
    let tomb = b.delete("a").revision(r2).await.unwrap();
    assert!(
        b.get("a").await.unwrap().is_none(),
        "deleted reads as absent"
    );
    let raw = b.entry("a").await.unwrap().unwrap();
    assert_eq!(
        (raw.revision(), raw.operation(), raw.removal()),
        (tomb, Op::Delete, Some(Removal::Deleted))
    );

    // create over a tombstone works
    let r3 = b.create("a", "again").await.unwrap();
    assert_eq!(b.get("a").await.unwrap().unwrap().revision(), r3);

    // history keeps everything
    let h = b.history("a").await.unwrap();
    let revs: Vec<Revision> = h.iter().map(|e| e.revision()).collect();
    assert_eq!(revs, vec![r1, r2, tomb, r3]);

    // entry at a revision
    let at = b.entry_at("a", r2).await.unwrap().unwrap();
    assert_eq!(at.value().as_ref(), b"two");
    assert!(b.entry_at("other", r2).await.unwrap().is_none());

    // purge removes history, conditionally
    let err = b.purge("a").revision(r1).await.unwrap_err();
    assert!(err.is_conflict());
    let p = b.purge("a").revision(r3).await.unwrap();
    let h = b.history("a").await.unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(
        (h[0].revision(), h[0].operation(), h[0].removal()),
        (p, Op::Purge, Some(Removal::Purged))
    );
    assert!(b.get("a").await.unwrap().is_none());

    // keys with a filter: only live keys
    b.put("cfg.x", "1").await.unwrap();
    b.put("cfg.y", "2").await.unwrap();
    b.put("other", "3").await.unwrap();
    b.delete("cfg.y").await.unwrap();
    let keys: Vec<String> = b
        .keys("cfg.>")
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.into_string())
        .collect();
    assert_eq!(keys, vec!["cfg.x".to_string()]);
    assert!(b.keys("nothing.>").await.unwrap().is_empty());

    // conditional put with Expect::NoMessage
    let err = b
        .put("other", "4")
        .expect(Expect::NoMessage)
        .await
        .unwrap_err();
    assert!(err.is_conflict());

    // leader read agrees
    let l = b.get_from_leader("other").await.unwrap().unwrap();
    assert_eq!(l.value().as_ref(), b"3");
}

#[tokio::test]
async fn buckets_open_read_only_status_destroy() {
    let server = NatsServer::start().await;
    let kv = Kv::new(server.connect().await);
    let cfg = BucketConfig::new("meta")
        .history(3)
        .ttl(Duration::from_secs(3600))
        .max_value_size(1024)
        .max_bucket_size(1 << 20)
        .description("test bucket")
        .storage(Storage::Memory)
        .compression(false)
        .per_key_ttl(Duration::from_secs(2))
        .atomic_batches(true);
    let b = kv.create_bucket(cfg.clone()).await.unwrap();
    // idempotent with the same config, refused with another
    kv.create_bucket(cfg.clone()).await.unwrap();
    let err = kv.create_bucket(cfg.clone().history(7)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BucketExists);

    b.put("k", "v").await.unwrap();
    let st = b.status().await.unwrap();
    assert_eq!(st.bucket, "meta");
    assert_eq!(st.values, 1);
    assert_eq!(st.history, 3);
    assert_eq!(st.ttl, Duration::from_secs(3600));
    assert_eq!(st.storage, Storage::Memory);
    assert_eq!(st.replicas, 1);
    assert_eq!(st.per_key_ttl, Some(Duration::from_secs(2)));
    assert!(st.atomic_batches);
    assert_eq!(st.backing_stream, "KV_meta");
    b.put("k2", "v").await.unwrap();
    assert_eq!(b.status().await.unwrap().values, 2, "status is fresh");

    let ro = kv.open_read_only("meta").await.unwrap();
    assert_eq!(ro.get("k").await.unwrap().unwrap().value().as_ref(), b"v");
    let opened = kv.create_or_open(BucketConfig::new("meta")).await.unwrap();
    assert_eq!(
        opened.get("k2").await.unwrap().unwrap().value().as_ref(),
        b"v"
    );

    let err = kv.open("missing").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BucketNotFound);
    let err = kv.open("bad name").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);

    // value too large
    let err = b.put("big", vec![0u8; 4096]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueTooLarge, "{err}");

    kv.create_bucket(BucketConfig::new("meta2")).await.unwrap();
    assert_eq!(kv.bucket_names().await.unwrap(), ["meta", "meta2"]);

    assert!(kv.delete_bucket("meta").await.unwrap());
    assert!(!kv.delete_bucket("meta").await.unwrap());
    assert_eq!(kv.bucket_names().await.unwrap(), ["meta2"]);
    // writes and reads on a deleted bucket: nobody answers
    assert_eq!(
        b.put("k", "v").await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    assert_eq!(b.get("k").await.unwrap_err().kind(), ErrorKind::Unavailable);
    assert_eq!(
        kv.open("meta").await.unwrap_err().kind(),
        ErrorKind::BucketNotFound
    );
}

#[tokio::test]
async fn bad_input_gives_error_kinds() {
    let server = NatsServer::start().await;
    let (_kv, b) = setup(&server, ttl_bucket("bad")).await;
    for key in ["", "a b", "a..b", ".a", "a.", "_kv.x", "a*", ">", "ü"] {
        let err = b.put(key, "v").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidKey, "{key:?}: {err}");
        assert_eq!(b.get(key).await.unwrap_err().kind(), ErrorKind::InvalidKey);
    }
    for ttl in [
        Duration::ZERO,
        Duration::from_millis(500),
        Duration::from_millis(1500),
    ] {
        let err = b.put("k", "v").ttl(ttl).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidTtl, "{ttl:?}");
    }
    assert!(b.get("k").await.unwrap().is_none(), "nothing was written");

    // per-key TTL on a bucket without it
    let kv = Kv::new(server.connect().await);
    let plain = kv.create_bucket(BucketConfig::new("plain")).await.unwrap();
    let err = plain
        .put("k", "v")
        .ttl(Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FeatureDisabled, "{err}");
    let err = plain
        .create("k", "v")
        .ttl(Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FeatureDisabled, "{err}");
    // an invalid TTL is refused before the bucket is asked
    let err = plain
        .put("k", "v")
        .ttl(Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidTtl, "{err}");
    assert!(
        plain.get("k").await.unwrap().is_none(),
        "nothing was written"
    );

    // create takes no expectation: refused, not ignored
    let rev = b.put("exists", "v").await.unwrap();
    let err = b.create("fresh", "v").expect(rev).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let err = b
        .create("fresh", "v")
        .expect_on("exists", rev)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(
        b.get("fresh").await.unwrap().is_none(),
        "nothing was written"
    );

    let err = plain.txn().put("k", "v").commit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FeatureDisabled);

    // undecodable values
    b.put("json", "{not json").await.unwrap();
    let e = b.get("json").await.unwrap().unwrap();
    let err = e.decode::<serde_json::Value, _>(&Json).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);
    b.put("bin", vec![0xff, 0xfe]).await.unwrap();
    let e = b.get("bin").await.unwrap().unwrap();
    assert_eq!(e.decode(&Utf8).unwrap_err().kind(), ErrorKind::Codec);

    // bad bucket configs
    assert!(kv
        .create_bucket(BucketConfig::new("h").history(0))
        .await
        .is_err());
    assert!(kv
        .create_bucket(BucketConfig::new("h").history(65))
        .await
        .is_err());
    assert!(kv
        .create_bucket(BucketConfig::new("h").per_key_ttl(Duration::from_millis(10)))
        .await
        .is_err());
}

#[tokio::test]
async fn per_key_ttl_expiry_create_over_markers_and_renewal() {
    let server = NatsServer::start().await;
    let (_kv, b) = setup(&server, ttl_bucket("ttl")).await;
    let mut w = b
        .watch(["lease"])
        .include(Include::UpdatesOnly)
        .await
        .unwrap();
    let r1 = b
        .create("lease", "a")
        .ttl(Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(
        b.get("lease").await.unwrap().unwrap().ttl(),
        Some(Duration::from_secs(1))
    );
    let seen = next_entry(&mut w).await;
    assert_eq!(seen.revision(), r1);
    // the server expires it on its own clock; the watcher sees a marker within TTL + 1.5 s
    let start = std::time::Instant::now();
    let marker = next_entry(&mut w).await;
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(marker.operation(), Op::Purge);
    assert_eq!(marker.removal(), Some(Removal::Expired));
    assert!(
        b.get("lease").await.unwrap().is_none(),
        "expired reads as absent"
    );

    // create over the expiry marker keeps the TTL: the re-created key expires too
    let r2 = b
        .create("lease", "b")
        .ttl(Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(next_entry(&mut w).await.revision(), r2);
    let m2 = next_entry(&mut w).await;
    assert_eq!(
        m2.removal(),
        Some(Removal::Expired),
        "re-created key expired too"
    );

    // create over a delete and over a purge keeps the TTL
    for purge in [false, true] {
        let k = if purge { "p" } else { "d" };
        b.put(k, "x").await.unwrap();
        if purge {
            b.purge(k).await.unwrap();
        } else {
            b.delete(k).await.unwrap();
        }
        b.create(k, "y").ttl(Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            b.get(k).await.unwrap().unwrap().ttl(),
            Some(Duration::from_secs(1))
        );
    }

    // renewal by update-with-TTL really extends the life: renew a 2 s key for 4 s
    let mut rev = b
        .create("renewed", "me")
        .ttl(Duration::from_secs(2))
        .await
        .unwrap();
    for _ in 0..4 {
        // The server's whole-second TTL clock is what is under test here.
        tokio::time::sleep(Duration::from_secs(1)).await;
        rev = b
            .update("renewed", "me", rev)
            .ttl(Duration::from_secs(2))
            .await
            .unwrap();
    }
    assert_eq!(b.get("renewed").await.unwrap().unwrap().revision(), rev);
}

#[tokio::test]
async fn transactions_all_or_nothing_and_name_the_conflict() {
    let server = NatsServer::start().await;
    let (_kv, b) = setup(&server, ttl_bucket("txn")).await;
    let ra = b.put("acct.a", "100").await.unwrap();
    let rb = b.put("acct.b", "0").await.unwrap();

    let c = b
        .txn()
        .update("acct.a", "90", ra)
        .update("acct.b", "10", rb)
        .create("audit.1", "moved 10")
        .ttl(Duration::from_secs(60))
        .commit()
        .await
        .unwrap();
    let (na, nb) = (c.revision("acct.a").unwrap(), c.revision("acct.b").unwrap());
    assert_eq!(nb.get(), na.get() + 1, "contiguous revisions");
    assert_eq!(b.get("acct.a").await.unwrap().unwrap().revision(), na);
    assert_eq!(
        b.get("acct.b").await.unwrap().unwrap().value().as_ref(),
        b"10"
    );
    assert_eq!(
        b.get("audit.1").await.unwrap().unwrap().ttl(),
        Some(Duration::from_secs(60))
    );

    // a stale expectation on the second key: nothing is written, the key is named
    let err = b
        .txn()
        .update("acct.a", "80", na)
        .update("acct.b", "20", rb)
        .commit()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(err.key(), Some("acct.b"));
    assert_eq!(err.current_revision(), Some(nb));
    assert_eq!(
        b.get("acct.a").await.unwrap().unwrap().revision(),
        na,
        "nothing applied"
    );

    // compare-only check riding on another write
    let err = b
        .txn()
        .check("acct.a", ra)
        .put("acct.c", "1")
        .commit()
        .await
        .unwrap_err();
    assert_eq!(err.key(), Some("acct.a"));
    assert!(b.get("acct.c").await.unwrap().is_none());
    let ok = b
        .txn()
        .check("acct.a", na)
        .put("acct.c", "1")
        .delete("audit.1")
        .commit()
        .await
        .unwrap();
    assert_eq!(ok.revisions().len(), 2);
    assert!(b.get("audit.1").await.unwrap().is_none());

    // invalid transactions are refused before sending
    for t in [
        b.txn(),
        b.txn().put("x", "1").put("x", "2"),
        b.txn().check("y", ra),
        b.txn().put("bad key", "1"),
    ] {
        assert!(t.commit().await.is_err());
    }
}

#[tokio::test]
async fn read_modify_write_and_counter() {
    let server = NatsServer::start().await;
    let (_kv, b) = setup(&server, BucketConfig::new("rmw")).await;
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
    struct Stock {
        items: u32,
    }
    let out = b
        .rmw("s", Json)
        .apply(|cur: Option<Stock>| {
            assert!(cur.is_none());
            Some(Stock { items: 2 })
        })
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Written(Stock { items: 2 }, _)));
    let out = b
        .rmw("s", Json)
        .apply(|cur: Option<Stock>| cur.filter(|s| s.items > 5))
        .await
        .unwrap();
    assert_eq!(out, Outcome::Unchanged);

    // 4 concurrent counters × 25 increments = 100, no lost update
    let c = b.counter("hits");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let c = c.clone();
        tasks.spawn(async move {
            for _ in 0..25 {
                c.add(1).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(c.get().await.unwrap(), 100);

    // concurrent increments on one handle are combined: fewer writes than increments
    let solo = Kv::new(server.connect().await)
        .create_bucket(BucketConfig::new("combine"))
        .await
        .unwrap();
    let c = solo.counter("n");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let c = c.clone();
        tasks.spawn(async move {
            let mut last = 0;
            for _ in 0..25 {
                let v = c.add(1).await.unwrap();
                assert!(v > last, "values a caller sees increase");
                last = v;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(c.get().await.unwrap(), 200);
    let writes = solo.get("n").await.unwrap().unwrap().revision().get();
    assert!(writes < 200, "{writes} writes for 200 increments");

    // a value that is not a number is left alone
    b.put("junk", "abc").await.unwrap();
    let err = b.counter("junk").add(1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);
    assert_eq!(
        b.get("junk").await.unwrap().unwrap().value().as_ref(),
        b"abc"
    );

    // attempts are bounded
    let err = b
        .rmw("s", Json)
        .max_attempts(0)
        .apply(|c: Option<Stock>| c)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test]
async fn guarded_writes_and_snapshots() {
    let server = NatsServer::start().await;
    let (_kv, b) = setup(&server, ttl_bucket("guard")).await;
    // ownership-guarded write: data.x only while lock.a is at our revision
    let lock = b.create("lock.a", "me").await.unwrap();
    b.put("data.x", "1")
        .expect_on("lock.a", lock)
        .await
        .unwrap();
    let other = b.update("lock.a", "you", lock).await.unwrap();
    let err = b
        .put("data.x", "2")
        .expect_on("lock.a", lock)
        .await
        .unwrap_err();
    assert!(err.is_conflict());
    assert_eq!(err.current_revision(), Some(other));
    assert_eq!(
        b.get("data.x").await.unwrap().unwrap().value().as_ref(),
        b"1"
    );

    // filter expectation: nothing under q. changed since the last revision we saw
    let err = b
        .put("q.h", "x")
        .expect_on("q.>", Expect::NoMessage)
        .await
        .unwrap();
    let r = b.put("q.w.1", "w").await.unwrap();
    assert!(r > err);
    let e = b
        .put("q.h", "y")
        .expect_on("q.>", Expect::Revision(err))
        .await
        .unwrap_err();
    assert!(e.is_conflict());
    assert_eq!(e.current_revision(), Some(r));
    b.put("q.h", "y").expect_on("q.>", r).await.unwrap();

    // snapshot: latest per key including tombstones, consistent as of a revision
    let last = b.delete("q.w.1").await.unwrap();
    let snap = b.snapshot("q.>").await.unwrap();
    let keys: Vec<(&str, Op)> = snap
        .entries
        .iter()
        .map(|e| (e.key().as_str(), e.operation()))
        .collect();
    assert_eq!(keys, vec![("q.h", Op::Put), ("q.w.1", Op::Delete)]);
    assert!(snap.as_of.unwrap() >= snap.last_revision().unwrap());
    // no key matches: still a resume point, the bucket's last revision
    let empty = b.snapshot("none.>").await.unwrap();
    assert!(empty.entries.is_empty());
    assert_eq!(empty.as_of, Some(last));
    let kv = Kv::new(server.connect().await);
    let fresh = kv.create_bucket(BucketConfig::new("fresh")).await.unwrap();
    let never = fresh.snapshot(">").await.unwrap();
    assert_eq!((never.entries.len(), never.as_of), (0, None));
    assert!(b.snapshot("bad filter").await.is_err());
}

#[tokio::test]
async fn old_servers_get_server_too_old() {
    let server = NatsServer::start().await;
    let real = Kv::new(server.connect().await);
    real.create_bucket(ttl_bucket("feat")).await.unwrap();
    let old = Kv::new(server.connect().await)
        .assume_server_version(kvtk_core::ServerVersion::new(2, 11, 1));
    let err = old.create_bucket(ttl_bucket("feat2")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServerTooOld);
    assert!(err.to_string().contains("2.11.2"), "{err}");
    let b = old.open("feat").await.unwrap();
    let err = b
        .put("k", "v")
        .ttl(Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServerTooOld);
    let err = b.txn().put("k", "v").commit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServerTooOld);
    assert!(err.to_string().contains("2.12.0"), "{err}");
    // plain operations still work
    b.put("k", "v").await.unwrap();
}

#[tokio::test]
async fn timeouts_and_connection_errors_have_their_kinds() {
    let server = NatsServer::start().await;
    let proxy = FaultProxy::start(&server.client_url()).await;
    // Made with a long timeout; the handle's own short one bounds its requests.
    let kv = Kv::new(kvtk_tests::client::short_timeouts(proxy.url()).await)
        .with_timeout(Duration::from_secs(120));
    let b = kv
        .create_bucket(BucketConfig::new("net"))
        .await
        .unwrap()
        .with_timeout(kvtk_tests::client::REQUEST_TIMEOUT);
    b.put("k", "v").await.unwrap();
    proxy.blackhole();
    let bound = Duration::from_secs(30);
    let err = within_for("a read bounded by the handle's timeout", bound, b.get("k"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    let err = b.put("k", "w").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    proxy.heal();
    // the client reconnects by itself once the link is back
    kvtk_tests::until("reads through the healed link", || async {
        b.get("k").await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn mirrors_sources_republish_and_compression() {
    let server = NatsServer::start().await;
    let client = server.connect().await;
    let kv = Kv::new(client.clone());
    let src = kv.create_bucket(BucketConfig::new("src")).await.unwrap();
    src.put("a", "1").await.unwrap();
    let mut republished = client.subscribe("repub.>").await.unwrap();
    let rp = kv
        .create_bucket(BucketConfig::new("rp").compression(true).republish(
            kvtk_core::nats::Republish {
                source: "$KV.rp.>".into(),
                destination: "repub.>".into(),
                headers_only: false,
            },
        ))
        .await
        .unwrap();
    assert!(rp.status().await.unwrap().compression);
    rp.put("x", "hello").await.unwrap();
    let m = kvtk_tests::next("the republished message", &mut republished).await;
    assert_eq!(m.payload.as_ref(), b"hello");

    let mirror = kv
        .create_bucket(BucketConfig::new("mir").mirror(kvtk_core::nats::Source {
            name: "src".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let sourced = kv
        .create_bucket(
            BucketConfig::new("agg").sources(vec![kvtk_core::nats::Source {
                name: "src".into(),
                ..Default::default()
            }]),
        )
        .await
        .unwrap();
    // both catch up with the origin (asynchronously): watch until the value shows
    for b in [&mirror, &sourced] {
        let mut w = b.watch(["a"]).await.unwrap();
        assert_eq!(next_entry(&mut w).await.value().as_ref(), b"1");
        assert_eq!(b.get("a").await.unwrap().unwrap().value().as_ref(), b"1");
    }
}

#[tokio::test]
async fn server_side_counters_never_conflict() {
    let server = NatsServer::start().await;
    let kv = Kv::new(server.connect().await);
    let counters = kv.counters("hits").await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let c = counters.clone();
        tasks.spawn(async move {
            for _ in 0..50 {
                c.add("page.home", 1).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(counters.get("page.home").await.unwrap(), 400);
    assert_eq!(counters.add("page.home", -400).await.unwrap(), 0);
    assert_eq!(counters.get("nothing").await.unwrap(), 0);
    assert_eq!(
        counters.add("bad key", 1).await.unwrap_err().kind(),
        ErrorKind::InvalidKey
    );
    // opening again reuses the stream
    let again = kv.counters("hits").await.unwrap();
    assert_eq!(again.add("page.home", 5).await.unwrap(), 5);
    assert!(again.destroy().await.unwrap());
}
