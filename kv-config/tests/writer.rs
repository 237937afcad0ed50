//! The writer, transactions seen by readers, and fleet acknowledgements.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use kvtk_config::{ConfigEvent, ConfigReader, ConfigWriter, ErrorKind, RejectKind, Source};
use kvtk_tests::{within, NatsServer};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Split {
    a: u32,
    b: u32,
    label: String,
}

#[tokio::test]
async fn writer_refuses_invalid_values_and_rolls_back() {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    let w = ConfigWriter::<App>::new(b.clone(), doc())
        .defaults(App::default())
        .validate(validate);

    let r1 = w.set(&app("one", 10)).await.unwrap().revision.unwrap();
    let r2 = w
        .update(|c| c.name = "two".into())
        .await
        .unwrap()
        .revision
        .unwrap();
    assert!(r2 > r1);

    // Refused on the writing side: nothing is written.
    let err = w.update(|c| c.pool_size = 0).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert_eq!(err.rejection().unwrap().kind(), RejectKind::Invalid);
    let err = w.set(&app("bad", 1000)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert_eq!(w.get().await.unwrap(), (app("two", 10), Some(r2)));

    // No change, no write.
    let same = w.update(|_| {}).await.unwrap();
    assert_eq!((same.revision, same.changed.len()), (Some(r2), 0));

    // History and rollback.
    let h = w.history().await.unwrap();
    let revs: Vec<_> = h.iter().map(|v| v.revision).collect();
    assert_eq!(revs, vec![r1, r2]);
    assert_eq!(h[0].value.as_ref().unwrap().name, "one");
    let back = w.rollback(r1).await.unwrap();
    assert_eq!(back.changed, vec!["name"]);
    assert_eq!(w.get().await.unwrap().0, app("one", 10));
    let err = w
        .rollback(kvtk_core::Revision::new(9999).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // A broken stored value: update refuses to build on it, set still works.
    b.put("app.config", "{").await.unwrap();
    let err = w.update(|c| c.pool_size = 5).await.unwrap_err();
    assert_eq!(err.rejection().unwrap().kind(), RejectKind::Malformed);
    w.set(&app("repaired", 5)).await.unwrap();
    assert_eq!(w.get().await.unwrap().0, app("repaired", 5));
}

#[tokio::test]
async fn concurrent_updates_are_not_lost() {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    let w = ConfigWriter::<App>::new(b.clone(), doc()).defaults(App::default());
    w.set(&app("c", 1)).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let w = w.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    w.update(|c| c.pool_size += 1).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(w.get().await.unwrap().0.pool_size, 41);
}

#[tokio::test]
async fn prefix_mode_multi_key_updates_are_never_torn() {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    let src = Source::prefix("split");
    let check = |s: &Split| {
        if s.a + s.b == 100 {
            Ok(())
        } else {
            Err(format!("a + b = {}", s.a + s.b))
        }
    };
    let w = ConfigWriter::<Split>::new(b.clone(), src.clone()).validate(check);
    w.set(&Split {
        a: 50,
        b: 50,
        label: "start".into(),
    })
    .await
    .unwrap();
    // The reader has no validator: it must simply never see a torn state.
    let mut r = ConfigReader::<Split>::builder(src.clone())
        .bucket(b.clone())
        .await
        .unwrap();
    let mut events = r.events();
    assert_eq!(r.current().a + r.current().b, 100);

    let done = Arc::new(AtomicBool::new(false));
    let torn = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (done, torn, seen) = (done.clone(), torn.clone(), seen.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let s = r.changed().await;
                seen.fetch_add(1, Ordering::Relaxed);
                if s.a + s.b != 100 {
                    torn.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let n = 500u32;
    let mut last = None;
    for i in 1..=n {
        let out = w
            .update(|s| {
                s.a = i % 101;
                s.b = 100 - s.a;
            })
            .await
            .unwrap();
        if !out.changed.is_empty() {
            assert_eq!(out.changed, vec!["a", "b"]);
        }
        last = out.revision;
    }
    // Wait for the final state through the event stream; check every event on the way.
    let mut changes = 0;
    loop {
        match next_event(&mut events).await {
            ConfigEvent::Changed(c) => {
                changes += 1;
                assert_eq!(c.new.a + c.new.b, 100, "torn state at {:?}", c.revision);
                if c.revision == last {
                    break;
                }
            }
            ConfigEvent::Lagged(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    done.store(true, Ordering::Relaxed);
    // Wake the watcher one last time so it sees `done`.
    w.update(|s| s.label = "end".into()).await.unwrap();
    within("the watcher task", watcher).await.unwrap();
    assert_eq!(torn.load(Ordering::Relaxed), 0);
    println!(
        "{n} transactional updates: {changes} change events, {} changed() wake-ups, 0 torn",
        seen.load(Ordering::Relaxed)
    );

    // A delete of a field through a wider type change: invalid values are refused.
    let err = w
        .update(|s| {
            s.a = 1;
            s.b = 1;
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected);
}

#[tokio::test]
async fn applied_acknowledgements_from_three_readers() {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    let w = ConfigWriter::<App>::new(b.clone(), doc()).validate(validate);
    w.set(&app("fleet", 1)).await.unwrap();
    let mut readers = Vec::new();
    for i in 1..=3 {
        let kv = kvtk_core::Kv::new(server.connect().await);
        let bi = kv.open("cfg").await.unwrap();
        readers.push(
            ConfigReader::<App>::builder(doc())
                .bucket(bi)
                .validate(validate)
                .instance(format!("r{i}"))
                .await
                .unwrap(),
        );
    }
    let rev = w
        .update(|c| c.pool_size = 2)
        .await
        .unwrap()
        .revision
        .unwrap();
    let names = within("3 acknowledgements", w.wait_applied(rev, 3))
        .await
        .unwrap();
    assert_eq!(names, vec!["r1", "r2", "r3"]);
    for r in &readers {
        assert_eq!(r.current().pool_size, 2);
    }

    // A revision the readers refuse is never acknowledged as applied; the next good one is.
    b.put("app.config", json(&app("fleet", 0))).await.unwrap();
    let rev = w.set(&app("fleet", 3)).await.unwrap().revision.unwrap();
    let names = within("3 acknowledgements", w.wait_applied(rev, 3))
        .await
        .unwrap();
    assert_eq!(names.len(), 3);

    // A reader that stops and whose key is deleted no longer counts.
    let gone = readers.pop().unwrap();
    gone.shutdown().await;
    b.delete("_applied.app.config.r3").await.unwrap();
    let rev = w
        .update(|c| c.pool_size = 4)
        .await
        .unwrap()
        .revision
        .unwrap();
    let names = within("2 acknowledgements", w.wait_applied(rev, 2))
        .await
        .unwrap();
    assert_eq!(names, vec!["r1", "r2"]);
}

#[tokio::test]
async fn an_acknowledgement_is_a_lease_kept_alive_and_removed_on_stop() {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    let w = ConfigWriter::<App>::new(b.clone(), doc()).validate(validate);
    let rev = w.set(&app("lease", 1)).await.unwrap().revision.unwrap();
    let reader = ConfigReader::<App>::builder(doc())
        .bucket(b.clone())
        .validate(validate)
        .instance("r1")
        .ack_ttl(std::time::Duration::from_secs(1))
        .await
        .unwrap();
    let names = within("1 acknowledgements", w.wait_applied(rev, 1))
        .await
        .unwrap();
    assert_eq!(names, vec!["r1"]);
    let key = "_applied.app.config.r1";
    let first = b.get_from_leader(key).await.unwrap().unwrap();
    let tag = first.lease().expect("the acknowledgement is a lease");
    // The server's whole-second TTL clock is what is under test: 1 s TTL, 2.5 s of wall time.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let later = b.get_from_leader(key).await.unwrap().unwrap();
    assert!(later.is_value(), "renewed past its ttl: {later:?}");
    assert!(later.revision() > first.revision());
    assert_eq!(later.lease().map(|t| t.nonce()), Some(tag.nonce()));
    let applied: kvtk_config::Applied = serde_json::from_slice(later.value()).unwrap();
    assert_eq!(applied.applied, Some(rev.get()));

    // Stopping the reader releases the lease: the key is removed, not left to expire.
    reader.shutdown().await;
    let mut watch = b
        .watch([key])
        .include(kvtk_core::Include::LastPerKey)
        .await
        .unwrap();
    let removed = within("the acknowledgement's removal", async {
        loop {
            match futures::StreamExt::next(&mut watch).await {
                Some(Ok(kvtk_core::WatchEvent::Entry(e))) if !e.is_value() => return e,
                Some(_) => {}
                None => panic!("watch ended"),
            }
        }
    })
    .await;
    assert_eq!(removed.lease().map(|t| t.nonce()), Some(tag.nonce()));
}

#[tokio::test]
async fn an_acknowledgement_of_an_unknown_format_version_is_refused_and_left_alone() {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    let w = ConfigWriter::<App>::new(b.clone(), doc()).validate(validate);
    let rev = w.set(&app("fmt", 1)).await.unwrap().revision.unwrap();
    let reader = ConfigReader::<App>::builder(doc())
        .bucket(b.clone())
        .validate(validate)
        .instance("r1")
        .await
        .unwrap();
    within("r1's acknowledgement", w.wait_applied(rev, 1))
        .await
        .unwrap();
    // What a reader writes carries version 1.
    let ack = b.get_from_leader("_applied.app.config.r1").await.unwrap();
    let ack: serde_json::Value = serde_json::from_slice(ack.unwrap().value()).unwrap();
    assert_eq!(
        (ack["v"].as_u64(), ack["applied"].as_u64()),
        (Some(1), Some(rev.get()))
    );

    let future = format!(r#"{{"v":99,"applied":{}}}"#, rev.get());
    let at = b.put("_applied.app.config.r9", future).await.unwrap();
    let err = within("the refusal", w.wait_applied(rev, 2))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Kv, "{err}");
    assert_eq!(
        err.core_kind(),
        Some(kvtk_core::ErrorKind::Codec),
        "{err:?}"
    );
    let left = b.get_from_leader("_applied.app.config.r9").await.unwrap();
    assert_eq!(left.map(|e| e.revision()), Some(at), "left alone");

    // An acknowledgement without a version (an older reader's) counts as version 1.
    let old = format!(
        r#"{{"applied":{},"rejected":null,"stale":false}}"#,
        rev.get()
    );
    b.put("_applied.app.config.r9", old).await.unwrap();
    let names = within("2 acknowledgements", w.wait_applied(rev, 2))
        .await
        .unwrap();
    assert_eq!(names, vec!["r1", "r9"]);
    reader.shutdown().await;
}
