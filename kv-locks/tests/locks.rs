//! kvtk-locks against a real nats-server: the protocol, contention, hand-off, semaphores.

// Tests and their shared bodies may unwrap: a panic is a test failure with a message.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{locks_on, locks_on_in, sent, waiting};
use kvtk_core::{BucketConfig, Kv};
use kvtk_locks::{ErrorKind, Fence, LeaseConfig, Locks, Released, Token};
use kvtk_tests::{within, within_for, NatsServer, T};
use tokio::time::Instant;

/// `uncontended_is_one_write_each_way_and_tokens_increase`, the queue entries bound to a session if `bound`.
async fn uncontended_is_one_write_each_way_and_tokens_increase_in(bound: bool) {
    let server = NatsServer::start().await;
    let locks = locks_on_in(server.connect().await, bound, "l1").await;
    let m = locks.mutex("jobs.reindex").unwrap();

    let g = m.lock().await.unwrap();
    assert!(g.is_held());
    let t1 = g.token();
    assert_eq!(g.release().await.unwrap(), Released::Released);

    // From now on the handle knows the lock's last revision: 1 write + 1 write, no reads.
    let before = locks.stats();
    let mut last = t1;
    let n = 500;
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let g = m.lock().await.unwrap();
        assert!(g.token() > last, "tokens strictly increase");
        last = g.token();
        assert_eq!(g.release().await.unwrap(), Released::Released);
        lat.push(t0.elapsed());
    }
    let after = locks.stats();
    assert_eq!(after.acquire_writes - before.acquire_writes, n as u64);
    assert_eq!(after.release_writes - before.release_writes, n as u64);
    assert_eq!(after.snapshots, before.snapshots);
    lat.sort();
    println!(
        "uncontended acquire+release over {n}: p50 {:?}, p99 {:?}",
        lat[n / 2],
        lat[n * 99 / 100]
    );
}

#[tokio::test]
async fn uncontended_is_one_write_each_way_and_tokens_increase() {
    uncontended_is_one_write_each_way_and_tokens_increase_in(false).await;
}

#[tokio::test]
async fn uncontended_is_one_write_each_way_and_tokens_increase_bound_to_a_session() {
    uncontended_is_one_write_each_way_and_tokens_increase_in(true).await;
}

/// `a_reused_handle_sends_two_requests_per_lock_and_release`, the queue entries bound to a session if `bound`.
async fn a_reused_handle_sends_two_requests_per_lock_and_release_in(bound: bool) {
    let server = NatsServer::start().await;
    // A connection of its own, so that its count is the lock's alone.
    let client = server.connect().await;
    let locks = locks_on_in(client.clone(), bound, "requests").await;

    // A first lock + release on a fresh handle: it knows nothing of the lock yet.
    let before = sent(&client);
    let m = locks.mutex("jobs.count").unwrap();
    m.lock().await.unwrap().release().await.unwrap();
    let first = sent(&client) - before;
    // With sessions the first acquisition also creates the session key.
    assert_eq!(
        first,
        3 + u64::from(bound),
        "enter the queue, read it, release"
    );

    // Now the handle remembers the lock's last revision: the two writes of the floor.
    let n = 50;
    let before = sent(&client);
    for _ in 0..n {
        m.lock().await.unwrap().release().await.unwrap();
    }
    assert_eq!(sent(&client) - before, 2 * n, "lock + release = 2 requests");
}

#[tokio::test]
async fn a_reused_handle_sends_two_requests_per_lock_and_release() {
    a_reused_handle_sends_two_requests_per_lock_and_release_in(false).await;
}

#[tokio::test]
async fn a_reused_handle_sends_two_requests_per_lock_and_release_bound_to_a_session() {
    a_reused_handle_sends_two_requests_per_lock_and_release_in(true).await;
}

/// How the tasks of a mutual-exclusion test take turns.
#[derive(Clone, Copy)]
struct Contention {
    tasks: usize,
    rounds: usize,
    /// Task `t` pauses `(t + round) % pause_ms` ms after each release (0: never), so that
    /// many acquisitions find the lock free and bet on a quiet bucket, and some lose.
    pause_ms: u64,
}

/// `mutual_exclusion_under_contention_with_fencing`, the queue entries bound to a session if `bound`.
async fn mutual_exclusion_under_contention_with_fencing_in(bound: bool) {
    let tight = Contention {
        tasks: 16,
        rounds: 25,
        pause_ms: 0,
    };
    mutual_exclusion_with_fencing(bound, tight).await;
}

async fn mutual_exclusion_with_fencing(bound: bool, c: Contention) {
    let server = NatsServer::start().await;
    let locks = locks_on_in(server.connect().await, bound, "l2").await;
    let fence = Arc::new(Fence::new());
    let inside = Arc::new(AtomicU64::new(0));
    let overlaps = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let (tasks, rounds) = (c.tasks, c.rounds);
    let mut joins = Vec::new();
    for t in 0..tasks {
        let m = locks.mutex("shared").unwrap();
        let (fence, inside, overlaps, accepted) = (
            fence.clone(),
            inside.clone(),
            overlaps.clone(),
            accepted.clone(),
        );
        joins.push(tokio::spawn(async move {
            let mut tokens = Vec::new();
            for r in 0..rounds {
                let g = m.lock().timeout(T).await.unwrap();
                if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                fence
                    .with(g.token(), || accepted.fetch_add(1, Ordering::SeqCst))
                    .expect("a holder's token is never stale");
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
                tokens.push(g.token());
                assert_eq!(g.release().await.unwrap(), Released::Released);
                if let Some(ms) = ((t + r) as u64).checked_rem(c.pause_ms) {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            }
            tokens
        }));
    }
    let mut all: Vec<Token> = Vec::new();
    for j in joins {
        // The whole contended run, longer than one wait on an event.
        all.extend(
            within_for("a task's rounds", Duration::from_secs(120), j)
                .await
                .unwrap(),
        );
    }
    assert_eq!(overlaps.load(Ordering::SeqCst), 0);
    assert_eq!(accepted.load(Ordering::SeqCst), (tasks * rounds) as u64);
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "every term has its own token");
    println!("{} acquisitions, stats {:?}", n, locks.stats());
}

#[tokio::test]
async fn mutual_exclusion_under_contention_with_fencing() {
    mutual_exclusion_under_contention_with_fencing_in(false).await;
}

#[tokio::test]
async fn mutual_exclusion_under_contention_with_fencing_bound_to_a_session() {
    mutual_exclusion_under_contention_with_fencing_in(true).await;
}

/// Few tasks pausing between their rounds: most acquisitions find the lock free, their
/// handles bet on a quiet bucket, and the bets are lost to each other's entries — never
/// with two holders.
#[tokio::test]
async fn mutual_exclusion_with_pauses_between_rounds() {
    let loose = Contention {
        tasks: 4,
        rounds: 60,
        pause_ms: 10,
    };
    mutual_exclusion_with_fencing(false, loose).await;
}

/// `fifo_herd_free_handoff`, the queue entries bound to a session if `bound`.
async fn fifo_herd_free_handoff_in(bound: bool) {
    let server = NatsServer::start().await;
    let locks = locks_on_in(server.connect().await, bound, "l3").await;
    let holder = locks.mutex("q").unwrap();
    let first = holder.lock().await.unwrap();
    let enqueued_before = locks.stats().enqueued;

    let waiters = 32;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut joins = Vec::new();
    for i in 0..waiters {
        let m = locks.mutex("q").unwrap();
        let tx = tx.clone();
        let base = locks.stats();
        joins.push(tokio::spawn(async move {
            let g = m.lock().timeout(T).await.unwrap();
            let _ = tx.send((i, Instant::now(), g));
        }));
        // enqueue one after the other, so that FIFO order is well defined
        waiting(&locks, base.watches, 1).await;
    }
    let queued = locks.stats();

    let mut order = Vec::new();
    let mut handoffs = Vec::new();
    let mut per_handoff = Vec::new();
    let mut current = first;
    for _ in 0..waiters {
        let before = locks.stats();
        let t0 = Instant::now();
        assert_eq!(current.release().await.unwrap(), Released::Released);
        let released = Instant::now();
        let (i, at, g) = within("the next holder", rx.recv()).await.unwrap();
        let after = locks.stats();
        handoffs.push(at.saturating_duration_since(released));
        let _ = t0;
        per_handoff.push((
            after.cas_writes() - before.cas_writes(),
            after.snapshots - before.snapshots,
            after.watches - before.watches,
        ));
        order.push(i);
        current = g;
    }
    current.release().await.unwrap();
    for j in joins {
        j.await.unwrap();
    }
    assert_eq!(order, (0..waiters).collect::<Vec<_>>(), "FIFO");
    // A release wakes only the next waiter, which holds on the release's mark alone: the
    // release is the only request of a hand-off.
    for (w, s, wa) in &per_handoff {
        assert_eq!(
            (*w, *s, *wa),
            (1, 0, 0),
            "(writes, snapshots, watches) per hand-off: {per_handoff:?}"
        );
    }
    assert_eq!(queued.enqueued - enqueued_before, waiters as u64);
    handoffs.sort();
    println!(
        "hand-off (release acked -> next holder) over {waiters}: p50 {:?}, max {:?}; per hand-off (writes, snapshots, watches) {:?}",
        handoffs[handoffs.len() / 2],
        handoffs.last().unwrap(),
        per_handoff[0]
    );
}

#[tokio::test]
async fn fifo_herd_free_handoff() {
    fifo_herd_free_handoff_in(false).await;
}

#[tokio::test]
async fn fifo_herd_free_handoff_bound_to_a_session() {
    fifo_herd_free_handoff_in(true).await;
}

/// A waiter that leaves from the middle of the queue wakes only the one behind it, which
/// reads the queue again and keeps waiting for the holder; the order of the rest is kept.
#[tokio::test]
async fn a_waiter_leaving_mid_queue_keeps_the_order() {
    let server = NatsServer::start().await;
    let locks = locks_on(server.connect().await, "l3b").await;
    let stats = locks.stats_handle();
    let holder = locks.mutex("q").unwrap().lock().await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for i in 0..3 {
        let m = locks.mutex("q").unwrap();
        let tx = tx.clone();
        let base = locks.stats();
        let cancel = tokio_util::sync::CancellationToken::new();
        let c = cancel.clone();
        waiters.push((
            cancel,
            tokio::spawn(async move {
                let got = m.lock().cancel_on(c).timeout(T).await;
                let _ = tx.send((i, got.map(|g| g.token())));
            }),
        ));
        waiting(&locks, base.watches, 1).await;
    }
    // The middle waiter gives up; the last one reads the queue again and watches the first.
    let base = locks.stats();
    waiters[1].0.cancel();
    let (i, got) = within("the middle waiter's end", rx.recv()).await.unwrap();
    assert_eq!((i, got.unwrap_err().kind()), (1, ErrorKind::Cancelled));
    within(
        "the last waiter to read the queue again and watch the first",
        stats.wait_for(|s| s.watches > base.watches && s.snapshots > base.snapshots),
    )
    .await;
    holder.release().await.unwrap();
    let (first, t0) = within("the first holder", rx.recv()).await.unwrap();
    let (second, t2) = within("the second holder", rx.recv()).await.unwrap();
    assert_eq!(
        (first, second),
        (0, 2),
        "FIFO after a departure from the middle"
    );
    assert!(t2.unwrap() > t0.unwrap(), "tokens follow the order");
    for (_, j) in waiters {
        j.await.unwrap();
    }
}

#[tokio::test]
async fn try_lock_and_timeout_and_cancel_leave_no_entry() {
    let server = NatsServer::start().await;
    let locks = locks_on(server.connect().await, "l4").await;
    let a = locks.mutex("t").unwrap();
    let b = locks.mutex("t").unwrap();
    let g = a.try_lock().await.unwrap().expect("free");
    assert!(b.try_lock().await.unwrap().is_none());
    let e = b
        .lock()
        .timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    let cancel = tokio_util::sync::CancellationToken::new();
    let fut = tokio::spawn(b.lock().cancel_on(cancel.clone()).into_future_boxed());
    waiting(&locks, 0, 2).await;
    cancel.cancel();
    let e = fut.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    // dropping a waiting acquisition removes its entry in the background
    let dropped = tokio::spawn(b.lock().into_future_boxed());
    waiting(&locks, 0, 3).await;
    dropped.abort();
    let _ = dropped.await;
    locks.shutdown().await;
    let snap = locks.bucket().snapshot("t.*.*").await.unwrap();
    let live: Vec<_> = snap.entries.iter().filter(|e| e.is_value()).collect();
    assert_eq!(live.len(), 1, "only the holder's entry is left: {live:?}");
    g.release().await.unwrap();
    // b can now take it
    let g = b.try_lock().await.unwrap().expect("free again");
    g.release().await.unwrap();
}

trait Boxed {
    fn into_future_boxed(
        self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<kvtk_locks::Guard, kvtk_locks::Error>> + Send>,
    >;
}
impl Boxed for kvtk_locks::Acquire {
    fn into_future_boxed(
        self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<kvtk_locks::Guard, kvtk_locks::Error>> + Send>,
    > {
        std::future::IntoFuture::into_future(self)
    }
}

/// Semaphore waiters watch only the entries just ahead of them; a permit freed by any holder,
/// in any order, still reaches the first waiter at once (while the other holder keeps its).
#[tokio::test]
async fn a_permit_freed_out_of_order_reaches_the_first_waiter() {
    let server = NatsServer::start().await;
    let locks = locks_on(server.connect().await, "l5b").await;
    let first = locks.semaphore("pool", 2).unwrap().acquire().await.unwrap();
    let second = locks.semaphore("pool", 2).unwrap().acquire().await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for i in 0..2 {
        let s = locks.semaphore("pool", 2).unwrap();
        let tx = tx.clone();
        let base = locks.stats();
        waiters.push(tokio::spawn(async move {
            let g = s.acquire().timeout(T).await.unwrap();
            let _ = tx.send((i, g.token()));
            g
        }));
        waiting(&locks, base.watches, 1).await;
    }
    // The later holder leaves first: the first waiter gets its permit, the second waits.
    second.release().await.unwrap();
    let (i, _) = within("a holder of the freed permit", rx.recv())
        .await
        .unwrap();
    assert_eq!(i, 0, "the first waiter takes the freed permit");
    assert!(first.is_held());
    first.release().await.unwrap();
    let (i, _) = within("the second waiter's permit", rx.recv())
        .await
        .unwrap();
    assert_eq!(i, 1);
    for w in waiters {
        w.await.unwrap().release().await.unwrap();
    }
}

#[tokio::test]
async fn semaphore_never_exceeds_permits_and_checks_the_count() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = NatsServer::start().await;
    let locks = locks_on(server.connect().await, "l5").await;
    let inside = Arc::new(AtomicU64::new(0));
    let max = Arc::new(AtomicU64::new(0));
    let mut joins = Vec::new();
    for _ in 0..10 {
        let s = locks.semaphore("pool", 3).unwrap();
        let (inside, max) = (inside.clone(), max.clone());
        joins.push(tokio::spawn(async move {
            for _ in 0..8 {
                let g = s.acquire().timeout(Duration::from_secs(5)).await.unwrap();
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
                // A moment's work with the permit (the workload, not a wait), so holds overlap.
                tokio::time::sleep(Duration::from_millis(2)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                g.release().await.unwrap();
            }
        }));
    }
    for j in joins {
        // The whole contended run, longer than one wait on an event.
        within_for("a task's acquisitions", Duration::from_secs(120), j)
            .await
            .unwrap();
    }
    assert!(max.load(Ordering::SeqCst) <= 3);
    assert_eq!(
        max.load(Ordering::SeqCst),
        3,
        "permits were used in parallel"
    );
    let wrong = locks.semaphore("pool", 4).unwrap();
    let e = wrong.acquire().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermitMismatch);
    let m = locks.mutex("pool").unwrap();
    let e = m.lock().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermitMismatch);
}

#[tokio::test]
async fn bad_input_is_rejected_clearly() {
    let server = NatsServer::start().await;
    let locks = locks_on(server.connect().await, "l6").await;
    for bad in ["", "a..b", "a.*", "a.>", "_x", "a b"] {
        assert_eq!(
            locks.mutex(bad).unwrap_err().kind(),
            ErrorKind::InvalidArgument,
            "{bad:?}"
        );
    }
    assert_eq!(
        locks.semaphore("s", 0).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let m = locks.mutex("ok").unwrap();
    let e = m.lock().ttl(Duration::from_millis(1500)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidTtl);
    let e = m.lock().ttl(Duration::from_millis(500)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidTtl);
    let e = m
        .lock()
        .ttl(Duration::from_secs(3))
        .renew_every(Duration::from_secs(3))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = m.lock().ttl(Duration::from_secs(3600)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidTtl, "above the marker ttl");
    // A bucket without per-key TTLs is refused.
    let kv = Kv::new(server.connect().await);
    let plain = kv.create_or_open(BucketConfig::new("plain")).await.unwrap();
    assert_eq!(
        Locks::new(plain).await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert!(locks
        .clone()
        .lease(LeaseConfig::new(Duration::from_secs(2)).unwrap())
        .is_ok());
}

#[tokio::test]
async fn stale_guard_cannot_release_the_new_holders_entry() {
    let server = NatsServer::start().await;
    let locks = locks_on(server.connect().await, "l8").await;
    let a = locks.mutex("own").unwrap();
    let b = locks.mutex("own").unwrap();
    let ga = a
        .lock()
        .ttl(Duration::from_secs(1))
        .renew_every(Duration::from_millis(300))
        .margin(Duration::from_millis(100))
        .await
        .unwrap();
    // Someone removes a's entry behind its back (an operator, a bug): a learns it at its
    // next renewal, and b takes over.
    let key = {
        let snap = locks.bucket().snapshot("own.*.*").await.unwrap();
        snap.entries[0].key().as_str().to_string()
    };
    // (retried if a renewal of a's moves the revision in between)
    let mut deleted = false;
    for _ in 0..10 {
        let e = locks.bucket().get_from_leader(&key).await.unwrap().unwrap();
        if locks
            .bucket()
            .delete(&key)
            .revision(e.revision())
            .await
            .is_ok()
        {
            deleted = true;
            break;
        }
    }
    assert!(deleted);
    let gb = b.lock().timeout(T).await.unwrap();
    within("a's loss", ga.lost()).await;
    assert!(!ga.is_held());
    assert!(gb.token() > ga.token());
    let e = ga.put_guarded("data", "stale").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Lost);
    assert_eq!(ga.release().await.unwrap(), Released::AlreadyLost);
    // b's entry is untouched and b still holds
    assert!(gb.is_held());
    gb.put_guarded("data", "fresh").await.unwrap();
    let snap = locks.bucket().snapshot("own.*.*").await.unwrap();
    assert_eq!(snap.entries.iter().filter(|e| e.is_value()).count(), 1);
    assert_eq!(gb.release().await.unwrap(), Released::Released);
}
