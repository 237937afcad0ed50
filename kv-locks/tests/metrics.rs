//! Lock metrics against a real nats-server, read through a local test recorder.

use std::future::IntoFuture as _;
use std::time::Duration;

use kvtk_core::lease::LeaseConfig;
use kvtk_core::Kv;
use kvtk_locks::{Locks, LostReason, Released};
use kvtk_tests::metrics::TestRecorder;
use kvtk_tests::{until, within, NatsServer, T};

async fn locks(server: &NatsServer, bucket: &str) -> Locks {
    let kv = Kv::new(server.connect().await).with_timeout(Duration::from_secs(2));
    Locks::open(&kv, bucket).await.expect("open locks")
}

#[tokio::test]
async fn a_hand_off_records_wait_hold_hand_off_and_renewal_slack() {
    let rec = TestRecorder::new();
    let _installed = rec.install_local();
    let server = NatsServer::start().await;
    let ttl = Duration::from_secs(2);
    let locks = locks(&server, "m1")
        .await
        .lease(LeaseConfig::new(ttl).unwrap())
        .unwrap();
    let by = [("bucket", "m1"), ("kind", "exclusive")];

    let first = locks
        .mutex("jobs.a")
        .unwrap()
        .lock()
        .timeout(T)
        .await
        .unwrap();
    let waiter = tokio::spawn(
        locks
            .mutex("jobs.a")
            .unwrap()
            .lock()
            .timeout(T)
            .into_future(),
    );
    // The waiter queues behind us, and our entry is renewed at least once meanwhile.
    until("the first renewal", || {
        std::future::ready(
            !rec.histogram(
                "kv_lease_renewal_slack_seconds",
                &[("bucket", "m1"), ("recipe", "locks")],
            )
            .is_empty(),
        )
    })
    .await;
    within(
        "the waiter to queue",
        locks.stats_handle().wait_for(|s| s.enqueued >= 1),
    )
    .await;
    assert_eq!(first.release().await.unwrap(), Released::Released);
    let second = within("the waiter's acquisition", waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.release().await.unwrap(), Released::Released);

    let waits = rec.histogram("kv_lock_wait_seconds", &by);
    assert_eq!(waits.len(), 2, "two acquisitions: {waits:?}");
    let queued = rec.histogram(
        "kv_lock_wait_seconds",
        &[("bucket", "m1"), ("path", "queue")],
    );
    assert!(!queued.is_empty(), "the waiter came through the queue");
    let holds = rec.histogram(
        "kv_lock_hold_seconds",
        &[("bucket", "m1"), ("outcome", "released")],
    );
    assert_eq!(holds.len(), 2, "{holds:?}");
    // The first hold lasted at least until a renewal: a third of the TTL.
    assert!(
        holds.iter().any(|h| *h >= ttl.as_secs_f64() / 3.0 * 0.9),
        "{holds:?}"
    );
    let handoffs = rec.histogram("kv_lock_handoff_seconds", &by);
    assert_eq!(
        handoffs.len(),
        1,
        "one waiter was handed the lock: {handoffs:?}"
    );
    assert!(handoffs[0] >= 0.0 && handoffs[0] < T.as_secs_f64());
    let slack = rec.histogram("kv_lease_renewal_slack_seconds", &[("recipe", "locks")]);
    assert!(
        slack.iter().all(|s| *s > 0.0 && *s <= ttl.as_secs_f64()),
        "slack within (0, ttl]: {slack:?}"
    );
    assert_eq!(rec.counter("kv_lease_lost_total", &[("bucket", "m1")]), 0);
    // Lock names are not labels unless opted in.
    assert!(!rec.describe().contains("lock="), "{}", rec.describe());
    println!(
        "wait {waits:?} s, hold {holds:?} s, hand-off {handoffs:?} s, renewal slack {slack:?} s"
    );
}

#[tokio::test]
async fn a_forced_release_records_a_loss_taken_and_a_lost_hold() {
    let rec = TestRecorder::new();
    let _installed = rec.install_local();
    let server = NatsServer::start().await;
    let locks = locks(&server, "m2")
        .await
        .lease(LeaseConfig::new(Duration::from_secs(2)).unwrap())
        .unwrap()
        .metrics_per_lock(true);
    let guard = locks
        .mutex("jobs.b")
        .unwrap()
        .lock()
        .timeout(T)
        .await
        .unwrap();
    assert!(locks.force_release("jobs.b", guard.token()).await.unwrap());
    let why = within("the evicted holder's loss", guard.lost()).await;
    assert_eq!(why, LostReason::Taken);
    let taken = [("bucket", "m2"), ("recipe", "locks"), ("reason", "taken")];
    assert_eq!(
        rec.counter("kv_lease_lost_total", &taken),
        1,
        "{}",
        rec.describe()
    );
    assert_eq!(guard.release().await.unwrap(), Released::AlreadyLost);
    let lost = [("bucket", "m2"), ("lock", "jobs.b"), ("outcome", "lost")];
    assert_eq!(rec.histogram("kv_lock_hold_seconds", &lost).len(), 1);
    assert_eq!(
        rec.histogram(
            "kv_lock_wait_seconds",
            &[("lock", "jobs.b"), ("path", "queue")]
        )
        .len()
            + rec
                .histogram(
                    "kv_lock_wait_seconds",
                    &[("lock", "jobs.b"), ("path", "fast")]
                )
                .len(),
        1
    );
}

#[tokio::test]
async fn a_dropped_guard_records_its_hold_as_dropped() {
    let rec = TestRecorder::new();
    let _installed = rec.install_local();
    let server = NatsServer::start().await;
    let locks = locks(&server, "m3").await;
    let guard = locks
        .mutex("jobs.c")
        .unwrap()
        .lock()
        .timeout(T)
        .await
        .unwrap();
    drop(guard);
    let dropped = [("bucket", "m3"), ("outcome", "dropped")];
    assert_eq!(rec.histogram("kv_lock_hold_seconds", &dropped).len(), 1);
    locks.shutdown().await;
}

/// This crate's metric names, and the rows of docs/metrics.md that document them.
const PREFIXES: [&str; 1] = ["kv_lock_"];

mod names {
    use super::PREFIXES;
    use kvtk_locks::metrics::*;
    const NAMES: [&str; 3] = [LOCK_WAIT, LOCK_HOLD, LOCK_HANDOFF];

    #[test]
    fn the_names_are_the_metrics_doc_table() {
        let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
        kvtk_tests::metrics::assert_documented(&doc, &PREFIXES, &NAMES);
    }
}
