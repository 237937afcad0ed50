//! Format versions against a real nats-server: a queue entry or permit count of a format
//! this library does not know is refused (kvtk-core's `ErrorKind::Codec`) and nothing is
//! touched; an entry of the format before versions is read as version 1; a multi-lock's
//! entries name all its locks in their value, kept across renewals.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod common;

use std::time::Duration;

use common::locks_on;
use kvtk_core::{Bucket, Revision};
use kvtk_locks::{EntryKind, ErrorKind, Holder};
use kvtk_tests::{until, NatsServer, T};

/// Every key of the bucket with its latest revision.
async fn revisions(b: &Bucket) -> Vec<(String, Revision)> {
    b.snapshot(">").await.unwrap().key_revisions()
}

fn refused(e: &kvtk_locks::Error) {
    assert_eq!(e.kind(), ErrorKind::Kv, "{e}");
    assert_eq!(e.core_kind(), Some(kvtk_core::ErrorKind::Codec), "{e:?}");
}

const FUTURE_ENTRY: &str = r#"{"v":99,"holder":{"id":"future/1"},"kind":"x","since_ms":1}"#;
const QUEUE_KEY: &str = "jobs.v99._q.0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn a_queue_entry_of_an_unknown_version_is_refused_and_left_alone() {
    let server = NatsServer::start().await;
    let locks = locks_on(server.connect().await, "fmt1").await;
    let b = locks.bucket().clone();
    b.put(QUEUE_KEY, FUTURE_ENTRY).await.unwrap();
    let before = revisions(&b).await;
    let mutex = locks.mutex("jobs.v99").unwrap();

    refused(&locks.inspect("jobs.v99").await.unwrap_err());
    refused(&mutex.try_lock().await.unwrap_err());
    assert_eq!(
        revisions(&b).await,
        before,
        "an inspection and a try write nothing"
    );

    // The queue path enters the queue before it reads it: it refuses at its first read and
    // withdraws its own entry, never the one it cannot read.
    refused(&mutex.lock().timeout(T).await.unwrap_err());
    let future = b.get_from_leader(QUEUE_KEY).await.unwrap().unwrap();
    assert!(future.is_value());
    assert_eq!(Some(future.revision()), before.first().map(|(_, r)| *r));
    until("our own entry to be withdrawn", || async {
        let snap = b.snapshot("jobs.v99._q.*").await.unwrap();
        snap.entries.iter().filter(|e| e.is_value()).count() == 1
    })
    .await;
}

#[tokio::test]
async fn a_permit_count_of_an_unknown_version_is_refused_before_any_write() {
    let server = NatsServer::start().await;
    let locks = locks_on(server.connect().await, "fmt2").await;
    let b = locks.bucket().clone();
    b.create("pool.v99._s.permits", "3")
        .format(99)
        .await
        .unwrap();
    let before = revisions(&b).await;
    let sem = locks.semaphore("pool.v99", 3).unwrap();
    refused(&sem.acquire().timeout(T).await.unwrap_err());
    refused(&locks.inspect("pool.v99").await.unwrap_err());
    assert_eq!(revisions(&b).await, before);

    // The count this library writes carries version 1, and is read back.
    let ok = locks.semaphore("pool.ok", 3).unwrap();
    let g = ok.acquire().timeout(T).await.unwrap();
    let count = b.get_from_leader("pool.ok._s.permits").await.unwrap();
    assert_eq!(
        count.unwrap().format(),
        Some(kvtk_core::format::FormatMark::Version(1))
    );
    assert_eq!(locks.inspect("pool.ok").await.unwrap().permits, Some(3));
    g.release().await.unwrap();
}

#[tokio::test]
async fn an_entry_without_a_version_is_read_as_version_1() {
    let server = NatsServer::start().await;
    let locks = locks_on(server.connect().await, "fmt3").await;
    let b = locks.bucket().clone();
    let old = r#"{"holder":{"id":"old/7"},"kind":"x","since_ms":1}"#;
    b.put("jobs.old._q.00000000000000000000000000000001", old)
        .await
        .unwrap();
    let info = locks.inspect("jobs.old").await.unwrap();
    assert_eq!(info.holders.len(), 1);
    assert_eq!(info.holders[0].holder, Some(Holder::named("old/7")));
    assert_eq!(info.holders[0].kind, EntryKind::Exclusive);
    let mutex = locks.mutex("jobs.old").unwrap();
    assert!(
        mutex.try_lock().await.unwrap().is_none(),
        "held by the old entry"
    );
}

#[tokio::test]
async fn a_multi_locks_entries_name_all_its_locks_across_renewals() {
    let server = NatsServer::start().await;
    let locks = locks_on(server.connect().await, "fmt4").await;
    let b = locks.bucket().clone();
    let multi = locks.multi(["acct.b", "acct.a"]).unwrap();
    let held = multi
        .lock()
        .ttl(Duration::from_secs(1))
        .timeout(T)
        .await
        .unwrap();
    let token_a = held.tokens().find(|(n, _)| *n == "acct.a").unwrap().1;
    let key = locks.inspect("acct.a").await.unwrap().holders[0]
        .key
        .clone();
    // Wait for a renewal of our entry (a new revision, same token).
    let mut w = b.watch([key.as_str()]).await.unwrap();
    loop {
        let event = kvtk_tests::next("a renewal", &mut w).await.unwrap();
        if let kvtk_core::WatchEvent::Entry(e) = event {
            if e.is_value() && e.revision() > token_a.revision() {
                break;
            }
        }
    }
    for name in ["acct.a", "acct.b"] {
        let info = locks.inspect(name).await.unwrap();
        assert_eq!(info.holders[0].multi, ["acct.a", "acct.b"], "{name}");
    }
    let plain = locks
        .mutex("solo")
        .unwrap()
        .lock()
        .timeout(T)
        .await
        .unwrap();
    assert!(locks.inspect("solo").await.unwrap().holders[0]
        .multi
        .is_empty());
    plain.release().await.unwrap();
    held.release().await.unwrap();
}
