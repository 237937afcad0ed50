//! The leadership as a kvtk-core lease: a renewal whose acknowledgement is lost keeps the
//! leadership, and a deposed leader's guarded writes are refused by the server even before
//! it noticed.
// Tests may unwrap: a panic is a test failure with a message.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use kvtk_core::{Include, Revision, WatchEvent};
use kvtk_leader::{ErrorKind, LostReason};
use kvtk_tests::{within, FaultProxy, NatsServer};

/// The next write of `key` seen by `watch` above revision `after`.
async fn next_write(watch: &mut kvtk_core::Watch, after: Revision) -> kvtk_core::Entry {
    within("a write of the leader key", async {
        loop {
            if let Some(Ok(WatchEvent::Entry(e))) = watch.next().await {
                if e.revision() > after {
                    return e;
                }
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_renewal_whose_ack_is_lost_keeps_the_leadership() {
    let server = NatsServer::start().await;
    let url = server.client_url();
    let proxy = FaultProxy::start(&url).await;
    // TTL 10 s: renewals every 3.3 s, local validity 9 s — room for the proxy's backlog.
    let a = election(&proxy.url(), "el", "ack", Duration::from_secs(10)).await;
    let direct = bucket(client(url.as_str()).await, "el").await;
    let la = within("a elected", a.campaign("a")).await.unwrap();
    let first = la.revision();
    let mut watch = direct
        .watch([a.leader_key()])
        .include(Include::UpdatesOnly)
        .await
        .unwrap();

    // A round trip now takes 2 s or more, longer than the 750 ms request timeout: the next
    // renewal reaches the server and is applied, but its acknowledgement never reaches the
    // leader (the direct watch sees it long before any answer can get through the proxy).
    proxy.set_latency(Duration::from_secs(1));
    let renewed = next_write(&mut watch, first).await;
    assert!(renewed.is_value());
    assert_eq!(la.revision(), first, "the renewal's ack has not arrived");
    let tag = renewed.lease().expect("the renewal carries the lease mark");
    assert_eq!(tag.origin(), la.term().revision());
    proxy.heal();

    // The retried renewal conflicts with our own applied write, recognises it by its nonce,
    // and the leadership goes on: a later renewal lands and a guarded write is accepted.
    let later = next_write(&mut watch, renewed.revision()).await;
    assert_eq!(
        later.lease().map(|t| t.origin()),
        Some(la.term().revision()),
        "{later:?}"
    );
    la.fencing().put("ack.data", "still leading").await.unwrap();
    assert!(la.is_leader());
    assert!(la.revision() >= later.revision());
    let seen = a.leader().await.unwrap().unwrap();
    assert_eq!((seen.id.as_str(), seen.term), ("a", la.term()));
    la.resign().await.unwrap();
    assert_eq!(a.leader().await.unwrap(), None);
}

#[tokio::test]
async fn a_deposed_leaders_guarded_write_is_refused() {
    let server = NatsServer::start().await;
    let url = server.client_url();
    // TTL 10 s: the next renewal is 3.3 s away, so `a` has not noticed when it writes.
    let a = election(&url, "el", "depose", Duration::from_secs(10)).await;
    let b = election(&url, "el", "depose", Duration::from_secs(10)).await;
    let la = within("a elected", a.campaign("a")).await.unwrap();
    let fencing = la.fencing();
    fencing.put("depose.data", "from a").await.unwrap();

    // An operator removes a's leader key (conditional on its revision); b takes over.
    within("a deposed", async {
        loop {
            match b
                .bucket()
                .delete(b.leader_key())
                .revision(la.revision())
                .await
            {
                Ok(_) => break,
                // A renewal of a landed in between: depose that revision.
                Err(e) if e.is_conflict() => continue,
                Err(e) => panic!("delete: {e}"),
            }
        }
    })
    .await;
    let lb = within("b elected", b.campaign("b")).await.unwrap();
    assert!(lb.term() > la.term());

    assert!(la.is_leader(), "a has not noticed yet");
    let e = fencing.put("depose.data", "stale").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Lost, "{e}");
    let stored = b.bucket().get("depose.data").await.unwrap().unwrap();
    assert_eq!(stored.value().as_ref(), b"from a");
    lb.fencing().put("depose.data", "from b").await.unwrap();
    assert_eq!(within("a's loss", la.lost()).await, LostReason::Overwritten);
    assert!(!la.is_leader());
    lb.resign().await.unwrap();
}
