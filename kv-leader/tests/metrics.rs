//! Election metrics against a real nats-server, read through a local test recorder.

use std::time::Duration;

use kvtk_core::Kv;
use kvtk_leader::{Election, LostReason};
use kvtk_tests::metrics::TestRecorder;
use kvtk_tests::{within, NatsServer};

async fn election(server: &NatsServer, bucket: &str, name: &str) -> Election {
    let kv = Kv::new(server.connect().await).with_timeout(Duration::from_secs(2));
    let b = kv
        .create_or_open(Election::bucket_config(bucket))
        .await
        .expect("election bucket");
    Election::new(b, name, Duration::from_secs(2)).expect("election")
}

#[tokio::test]
async fn the_leader_gauge_goes_to_one_when_elected_and_to_zero_on_resign() {
    let rec = TestRecorder::new();
    let _installed = rec.install_local();
    let server = NatsServer::start().await;
    let e = election(&server, "lm1", "sched").await;
    let by = [("bucket", "lm1"), ("election", "sched")];
    assert_eq!(rec.gauge("kv_leader_is_leader", &by), None);

    let l = within("a's election", e.campaign("a")).await.unwrap();
    assert_eq!(rec.gauge("kv_leader_is_leader", &by), Some(1.0));
    l.resign().await.unwrap();
    assert_eq!(rec.gauge("kv_leader_is_leader", &by), Some(0.0));

    // A second term, ended by dropping the handle.
    let l = within("a's election", e.campaign("a")).await.unwrap();
    assert_eq!(rec.gauge("kv_leader_is_leader", &by), Some(1.0));
    drop(l);
    within("the election's shutdown", e.shutdown()).await;
    assert_eq!(rec.gauge("kv_leader_is_leader", &by), Some(0.0));

    let event = |ev: &str| {
        let mut l = by.to_vec();
        l.push(("event", ev));
        rec.counter("kv_leader_transitions_total", &l)
    };
    assert_eq!(event("elected"), 2);
    assert_eq!(event("resigned"), 2);
    assert_eq!(rec.counter("kv_leader_transitions_total", &by), 4);
}

#[tokio::test]
async fn an_overwritten_leader_key_ends_the_term_without_anyone_resigning() {
    let rec = TestRecorder::new();
    let _installed = rec.install_local();
    let server = NatsServer::start().await;
    let e = election(&server, "lm2", "sched").await;
    let by = [("bucket", "lm2"), ("election", "sched")];
    let l = within("a's election", e.campaign("a")).await.unwrap();
    assert_eq!(rec.gauge("kv_leader_is_leader", &by), Some(1.0));

    // Someone ignoring the protocol rewrites the leader key: our next renewal conflicts.
    e.bucket().put(e.leader_key(), "intruder").await.unwrap();
    let why = within("the overwritten leader's loss", l.lost()).await;
    assert_eq!(why, LostReason::Overwritten);
    assert_eq!(rec.gauge("kv_leader_is_leader", &by), Some(0.0));
    let mut overwritten = by.to_vec();
    overwritten.push(("event", "overwritten"));
    assert_eq!(rec.counter("kv_leader_transitions_total", &overwritten), 1);
    let taken = [("bucket", "lm2"), ("recipe", "leader"), ("reason", "taken")];
    assert_eq!(rec.counter("kv_lease_lost_total", &taken), 1);
    // Resigning afterwards counts no second end.
    l.resign().await.unwrap();
    assert_eq!(rec.counter("kv_leader_transitions_total", &by), 2);
    assert_eq!(rec.gauge("kv_leader_is_leader", &by), Some(0.0));
}

/// This crate's metric names, and the rows of docs/metrics.md that document them.
const PREFIXES: [&str; 1] = ["kv_leader_"];

mod names {
    use super::PREFIXES;
    use kvtk_leader::metrics::*;
    const NAMES: [&str; 2] = [LEADER, LEADER_TRANSITIONS];

    #[test]
    fn the_names_are_the_metrics_doc_table() {
        let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
        kvtk_tests::metrics::assert_documented(&doc, &PREFIXES, &NAMES);
    }
}
