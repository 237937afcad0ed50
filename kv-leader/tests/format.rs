//! Format versions against a real nats-server: a leader record or candidate registration of
//! a format this library does not know is refused (kvtk-core's `ErrorKind::Codec`) by every
//! reader and left alone; what this library writes carries `"v":1`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use kvtk_core::{Bucket, Revision};
use kvtk_leader::{Error, ErrorKind};
use kvtk_tests::{within, NatsServer};

const TTL: Duration = Duration::from_secs(2);

/// Every key of the bucket with its latest revision.
async fn revisions(b: &Bucket) -> Vec<(String, Revision)> {
    b.snapshot(">").await.unwrap().key_revisions()
}

fn refused(e: &Error) {
    assert_eq!(e.kind(), ErrorKind::Kv, "{e}");
    assert_eq!(e.core_kind(), Some(kvtk_core::ErrorKind::Codec), "{e:?}");
}

#[tokio::test]
async fn a_leader_record_of_an_unknown_version_is_refused_and_left_alone() {
    let server = NatsServer::start().await;
    let el = election(&server.client_url(), "fmt", "jobs", TTL).await;
    let b = el.bucket().clone();
    b.put("jobs.leader", r#"{"v":99,"id":"future","value":"x"}"#)
        .await
        .unwrap();
    let before = revisions(&b).await;

    refused(&el.leader().await.unwrap_err());
    let mut observer = el.observe().await.unwrap();
    let ended = within("the observer to end", observer.next()).await;
    assert_eq!(ended, None, "nothing reported from a record it cannot read");
    refused(&observer.take_refusal().expect("why it ended"));
    assert_eq!(revisions(&b).await, before, "readers write nothing");

    // A candidate registers before it reads the leader key: it refuses at its first look
    // and never writes the leader key.
    refused(&within("the campaign", el.campaign("a")).await.unwrap_err());
    let leader = b.get_from_leader("jobs.leader").await.unwrap().unwrap();
    assert_eq!(Some(leader.revision()), before.first().map(|(_, r)| *r));
    assert!(leader.is_value());
}

#[tokio::test]
async fn a_registration_of_an_unknown_version_is_refused() {
    let server = NatsServer::start().await;
    let el = election(&server.client_url(), "fmt", "jobs", TTL).await;
    let b = el.bucket().clone();
    b.put("jobs.cand.z", r#"{"v":99,"id":"z"}"#).await.unwrap();
    refused(&el.candidates().await.unwrap_err());
    refused(&within("the campaign", el.campaign("a")).await.unwrap_err());
    let leader = b.get_from_leader("jobs.leader").await.unwrap();
    assert!(leader.is_none(), "no leader key written");
}

#[tokio::test]
async fn what_an_election_writes_carries_version_1_and_old_records_are_read() {
    let server = NatsServer::start().await;
    let el = election(&server.client_url(), "fmt", "jobs", TTL).await;
    let b = el.bucket().clone();
    let leader = within("the campaign", el.campaign("a").value("addr"))
        .await
        .unwrap();
    for key in ["jobs.leader", "jobs.cand.a"] {
        let e = b.get_from_leader(key).await.unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(e.value()).unwrap();
        assert_eq!(v["v"], 1, "{key}: {v}");
        assert_eq!(v["id"], "a", "{key}: {v}");
    }
    assert_eq!(el.leader().await.unwrap().unwrap().value, "addr");
    leader.resign().await.unwrap();
    // A record of the format before versions (no "v") means the same as version 1.
    b.put("jobs.leader", r#"{"id":"old","value":"old-addr"}"#)
        .await
        .unwrap();
    let now = el.leader().await.unwrap().unwrap();
    assert_eq!((now.id.as_str(), now.value.as_str()), ("old", "old-addr"));
}
