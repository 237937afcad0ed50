//! Watch metrics against a real nats-server, read through a local test recorder.

use std::future::IntoFuture as _;
use std::time::Duration;

use kvtk_core::{BucketConfig, ErrorKind, Kv, Revision};
use kvtk_tests::metrics::TestRecorder;
use kvtk_tests::{within, NatsServer};

mod common;
use common::next_entry;

#[tokio::test]
async fn a_watch_counts_its_resume_after_a_server_restart() {
    let rec = TestRecorder::new();
    let _installed = rec.install_local();
    let mut server = NatsServer::builder().sync_always().start().await;
    let kv = Kv::new(server.connect().await).with_timeout(Duration::from_secs(2));
    let bucket = kv.create_or_open(BucketConfig::new("wm")).await.unwrap();
    bucket.put("a", "1").await.unwrap();
    let mut watch = bucket.watch(["a"]).await.unwrap();
    next_entry(&mut watch).await;
    assert_eq!(
        rec.counter("kv_watch_resumes_total", &[("bucket", "wm")]),
        0
    );

    server.restart().await;
    let put = || bucket.put("a", "2").into_future();
    let written = within(
        "a write after the restart",
        kvtk_core::Backoff::DEFAULT.retry(put),
    )
    .await
    .unwrap();
    let e = next_entry(&mut watch).await;
    assert_eq!(e.revision(), written);
    let resumes = rec.counter("kv_watch_resumes_total", &[("bucket", "wm")]);
    assert!(resumes >= 1, "{}", rec.describe());
    assert_eq!(
        rec.counter("kv_watch_history_gone_total", &[("bucket", "wm")]),
        0
    );
}

#[tokio::test]
async fn a_strict_watch_from_a_removed_revision_counts_history_gone() {
    let rec = TestRecorder::new();
    let _installed = rec.install_local();
    let server = NatsServer::start().await;
    let kv = Kv::new(server.connect().await).with_timeout(Duration::from_secs(2));
    let bucket = kv
        .create_or_open(BucketConfig::new("hg").history(1))
        .await
        .unwrap();
    let first = bucket.put("k", "1").await.unwrap();
    bucket.put("k", "2").await.unwrap(); // history 1: revision `first` is gone
    let err = bucket
        .watch(["k"])
        .from_revision(first)
        .await
        .expect_err("revision 1 is no longer in the stream");
    assert_eq!(err.kind(), ErrorKind::HistoryGone);
    assert_eq!(first, Revision::new(1).unwrap());
    assert_eq!(
        rec.counter("kv_watch_history_gone_total", &[("bucket", "hg")]),
        1
    );
}

/// This crate's metric names, and the rows of docs/metrics.md that document them.
const PREFIXES: [&str; 2] = ["kv_lease_", "kv_watch_"];

mod names {
    use super::PREFIXES;
    use kvtk_core::metrics::*;
    const NAMES: [&str; 4] = [
        LEASE_RENEWAL_SLACK,
        LEASE_LOST,
        WATCH_RESUMES,
        WATCH_HISTORY_GONE,
    ];

    #[test]
    fn the_names_are_the_metrics_doc_table() {
        let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
        kvtk_tests::metrics::assert_documented(&doc, &PREFIXES, &NAMES);
    }
}
