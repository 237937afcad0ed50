//! kvtk-locks' fast path on a quiet bucket against a real nats-server: a handle whose last
//! lock + release saw nothing else written to the bucket bets on that again, writing with an
//! expectation on its own key only, and proves the queue empty by the revision its write
//! lands at. These tests lose those bets on purpose — to a waiter, to a holder, to a write of
//! another key — and check that a lost bet never takes the lock past anyone and costs one
//! read at most.

// Tests may unwrap: a panic is a test failure with a message.
#![allow(clippy::unwrap_used)]

mod common;

use common::{hands_over_to, locks_on, sent, spawn_acquire, waiting, Acquiring};
use kvtk_core::Kv;
use kvtk_locks::{Mutex, Released};
use kvtk_tests::{within, NatsServer};

/// Two locks + releases alone on `m`: its handle then bets on a quiet bucket both ways.
async fn settle_quiet(m: &Mutex) {
    for _ in 0..2 {
        let g = within("an uncontended lock", m.lock()).await.unwrap();
        assert_eq!(g.release().await.unwrap(), Released::Released);
    }
}

/// A server, locks on `bucket`, and two handles of one mutex: `a`, which now bets on a quiet
/// bucket ([`settle_quiet`]), and `b`, fresh.
async fn a_bettor_and_a_rival(bucket: &str) -> (NatsServer, kvtk_locks::Locks, Mutex, Mutex) {
    let server = NatsServer::start().await;
    let locks = locks_on(server.connect().await, bucket).await;
    let (a, b) = (locks.mutex("job").unwrap(), locks.mutex("job").unwrap());
    settle_quiet(&a).await;
    (server, locks, a, b)
}

/// Waits until `acq` is the `n`th waiter to watch since `base` (see [`waiting`]); fails at
/// once if it takes the lock instead.
async fn queued(locks: &kvtk_locks::Locks, base: u64, n: u64, acq: &mut Acquiring) {
    tokio::select! {
        () = waiting(locks, base, n) => {}
        r = acq => panic!("took the lock past its holder: {r:?}"),
    }
}

#[tokio::test]
async fn a_bet_lost_to_a_holder_that_came_between_waits_behind_it() {
    let (_server, locks, a, b) = a_bettor_and_a_rival("q1").await;
    let held = within("b's lock", b.lock()).await.unwrap();
    let before = locks.stats();

    let mut waiter = spawn_acquire(a.lock());
    queued(&locks, before.watches, 1, &mut waiter).await;
    let after = locks.stats();
    assert_eq!(
        (after.acquire_writes, after.snapshots),
        (before.acquire_writes + 1, before.snapshots + 1),
        "the bet's write is a's queue entry, then a reads the queue"
    );
    assert_eq!(
        (after.quiet_bets, after.quiet_bets_won),
        (before.quiet_bets + 1, before.quiet_bets_won),
        "one bet placed, lost"
    );
    hands_over_to(held, waiter).await;
}

#[tokio::test]
async fn a_bet_lost_to_a_waiter_that_came_while_we_held_gives_it_the_lock_first() {
    let (_server, locks, a, b) = a_bettor_and_a_rival("q2").await;
    let first = within("a's lock", a.lock()).await.unwrap();
    let base = locks.stats().watches;
    let b_waits = spawn_acquire(b.lock());
    waiting(&locks, base, 1).await;
    // a's release expects its own key only: b's entry landed between, so a keeps no
    // expectation for its next lock, which queues behind b.
    first.release().await.unwrap();
    let b_holds = within("b after a", b_waits).await.unwrap().unwrap();
    let mut a_waits = spawn_acquire(a.lock());
    queued(&locks, base, 2, &mut a_waits).await;
    hands_over_to(b_holds, a_waits).await;
}

#[tokio::test]
async fn a_write_elsewhere_in_the_bucket_costs_the_next_lock_one_read_and_no_more() {
    let server = NatsServer::start().await;
    let client = server.connect().await;
    let locks = locks_on(client.clone(), "q3").await;
    let other = Kv::new(server.connect().await).open("q3").await.unwrap();
    let m = locks.mutex("job").unwrap();
    settle_quiet(&m).await;

    // Between a release and the next lock: the bet's entry, a read of the queue, the release.
    other.put("elsewhere", "x").await.unwrap();
    let before = sent(&client);
    m.lock().await.unwrap().release().await.unwrap();
    assert_eq!(sent(&client) - before, 3);
    // While we hold: the release's bet leaves no expectation, so the next lock reads.
    let g = m.lock().await.unwrap();
    other.put("elsewhere", "y").await.unwrap();
    g.release().await.unwrap();
    let before = sent(&client);
    m.lock().await.unwrap().release().await.unwrap();
    assert_eq!(sent(&client) - before, 3);

    let (n, before, bets) = (20, sent(&client), locks.stats());
    for _ in 0..n {
        m.lock().await.unwrap().release().await.unwrap();
    }
    assert_eq!(
        sent(&client) - before,
        2 * n,
        "back to lock + release = 2 requests"
    );
    let after = locks.stats();
    assert_eq!(
        (
            after.quiet_bets - bets.quiet_bets,
            after.quiet_bets_won - bets.quiet_bets_won
        ),
        (n, n),
        "every lock bet on the quiet bucket and won"
    );
}
