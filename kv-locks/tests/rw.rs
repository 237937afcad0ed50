//! The read-write lock against a real nats-server: shared readers, exclusive writers, no
//! writer starvation, one token sequence for both kinds, and its neighbours of the same name.

mod common;

use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use common::{hands_over_to, locks_on, spawn_acquire, waiting};
use kvtk_locks::{EntryKind, ErrorKind, Fence, Guard, KvFence, Locks, Released, Token};
use kvtk_tests::NatsServer;
use kvtk_tests::{until, within, T};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One hold of the lock as its holder saw it: from the acquisition's return to the call of
/// its release. The lock is held for at least that interval, so two holds that the lock
/// keeps apart must never overlap here either.
#[derive(Debug, Clone, Copy)]
struct Hold {
    writer: bool,
    token: Token,
    from: Instant,
    to: Instant,
}

/// The shared in-memory log of holds.
#[derive(Debug, Default, Clone)]
struct Log(Arc<StdMutex<Vec<Hold>>>);

impl Log {
    /// Records `guard`'s hold from now until after `work`, then releases it.
    async fn hold(&self, writer: bool, guard: Guard, work: Duration) {
        let from = Instant::now();
        // The holder's work: the workload, not a wait for an event.
        tokio::time::sleep(work).await;
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(Hold {
            writer,
            token: guard.token(),
            from,
            to: Instant::now(),
        });
        assert_eq!(guard.release().await.expect("release"), Released::Released);
    }

    fn holds(&self) -> Vec<Hold> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// No writer's hold overlaps any other hold; of two holds apart in time where one is a
/// writer's, the earlier has the lower token; all tokens differ.
fn check_exclusion_and_tokens(holds: &[Hold]) {
    for (i, a) in holds.iter().enumerate() {
        for b in &holds[i + 1..] {
            assert_ne!(a.token, b.token, "every hold has its own token");
            if !(a.writer || b.writer) {
                continue;
            }
            let (first, second) = if a.from <= b.from { (a, b) } else { (b, a) };
            assert!(
                first.to <= second.from,
                "a writer's hold overlaps another: {first:?} / {second:?}"
            );
            assert!(
                first.token < second.token,
                "tokens follow the order of exclusive holds: {first:?} / {second:?}"
            );
        }
    }
}

#[tokio::test]
async fn six_readers_hold_together_while_no_writer_does() {
    let server = NatsServer::start().await;
    let locks = locks_on(server.connect().await, "rw1").await;
    let readers: Vec<_> = (0..6).map(|_| locks.rwlock("catalog").unwrap()).collect();
    let guards: Vec<Guard> =
        futures::future::try_join_all(readers.iter().map(|r| r.read().timeout(T).into_future()))
            .await
            .unwrap();
    assert!(guards.iter().all(Guard::is_held), "all 6 hold at once");
    let info = locks.inspect("catalog").await.unwrap();
    assert_eq!(info.holders.len(), 6, "{info:?}");
    assert!(info.waiters.is_empty(), "{info:?}");
    assert!(info.holders.iter().all(|h| h.kind == EntryKind::Shared));
    let mut listed: Vec<Token> = info.holders.iter().map(|h| h.token).collect();
    let mut ours: Vec<Token> = guards.iter().map(Guard::token).collect();
    listed.sort();
    ours.sort();
    assert_eq!(listed, ours, "inspect lists exactly our readers");

    let writer = locks.rwlock("catalog").unwrap();
    assert!(writer.write().try_acquire().await.unwrap().is_none());
    for g in guards {
        assert_eq!(g.release().await.unwrap(), Released::Released);
    }
    let w = writer.write().try_acquire().await.unwrap();
    assert!(w.expect("free once the readers left").is_held());
}

#[tokio::test]
async fn a_writer_excludes_everyone() {
    let server = NatsServer::start().await;
    let locks = locks_on(server.connect().await, "rw2").await;
    let log = Log::default();
    let writer = locks.rwlock("res").unwrap();
    let reader = locks.rwlock("res").unwrap();
    let other_writer = locks.rwlock("res").unwrap();

    let w = writer.write().timeout(T).await.unwrap();
    assert!(reader.read().try_acquire().await.unwrap().is_none());
    assert!(other_writer.write().try_acquire().await.unwrap().is_none());
    let base = locks.stats().watches;
    let waiting_reader = spawn_acquire(reader.read().timeout(T));
    waiting(&locks, base, 1).await;
    assert!(!waiting_reader.is_finished());
    log.hold(true, w, Duration::from_millis(300)).await;
    let r = within("the waiting reader", waiting_reader).await.unwrap();
    log.hold(false, r.unwrap(), Duration::ZERO).await;

    // Then everyone at once: 3 writers and 4 readers, each taking the lock repeatedly.
    let mut tasks = Vec::new();
    for i in 0..7 {
        let (rw, log) = (locks.rwlock("res").unwrap(), log.clone());
        let is_writer = i < 3;
        tasks.push(tokio::spawn(async move {
            for _ in 0..6 {
                let acq = if is_writer { rw.write() } else { rw.read() };
                let g = acq.timeout(T).await.unwrap();
                log.hold(is_writer, g, Duration::from_millis(5)).await;
            }
        }));
    }
    for t in tasks {
        within("the contending tasks", t).await.unwrap();
    }
    let holds = log.holds();
    assert_eq!(holds.len(), 2 + 7 * 6);
    let (first_writer, first_reader) = (holds[0], holds[1]);
    assert!(first_reader.from >= first_writer.to, "{holds:?}");
    check_exclusion_and_tokens(&holds);
}

#[tokio::test]
async fn a_stream_of_readers_does_not_starve_a_writer() {
    // Each reader holds for HOLD, releases and at once asks again.
    const HOLD: Duration = Duration::from_millis(250);
    // A waiting writer waits only for the readers ahead of it, which already hold (readers
    // wait for writers only) and leave within one HOLD; every reader asking after the
    // writer queued is behind it. So the writer waits about one HOLD plus one look at the
    // queue per reader that leaves; two HOLDs leave room for a reader that was entering
    // the queue as the writer did. The allowance covers a 2-core machine shared with the
    // server and other test runs; without the rule the writer would wait until the
    // readers stop.
    const ALLOWANCE: Duration = Duration::from_millis(1000);
    let server = NatsServer::start().await;
    let locks = locks_on(server.connect().await, "rw3").await;
    let stop = CancellationToken::new();
    let inside = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (rw, stop, inside) = (locks.rwlock("hot").unwrap(), stop.clone(), inside.clone());
        readers.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                let g = rw.read().timeout(T).await.unwrap();
                inside.fetch_add(1, Ordering::SeqCst);
                // The reader's hold: the workload the writer must not starve behind.
                tokio::time::sleep(HOLD).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                g.release().await.unwrap();
            }
        }));
    }
    let stats = locks.stats_handle();
    within("readers streaming", stats.wait_for(|s| s.acquired >= 8)).await;

    let writer = locks.rwlock("hot").unwrap();
    let mut waits = Vec::new();
    for _ in 0..3 {
        let before = locks.stats().acquired;
        let asked = Instant::now();
        let w = writer.write().timeout(T).await.unwrap();
        waits.push(asked.elapsed());
        assert_eq!(
            inside.load(Ordering::SeqCst),
            0,
            "no reader holds with the writer"
        );
        // The streaming readers ask again as soon as their holds end: each must queue behind
        // the writer, not enter.
        until("every reader to queue behind the writer", || async {
            locks.inspect("hot").await.unwrap().waiters.len() == 4
        })
        .await;
        assert_eq!(
            inside.load(Ordering::SeqCst),
            0,
            "no reader holds with the writer"
        );
        assert_eq!(w.release().await.unwrap(), Released::Released);
        // let the readers run again before the next writer comes
        within(
            "readers back",
            stats.wait_for(|s| s.acquired >= before + 1 + 8),
        )
        .await;
    }
    stop.cancel();
    for r in readers {
        within("a reader task", r).await.unwrap();
    }
    println!("writer waits behind 4 streaming readers (hold {HOLD:?}): {waits:?}");
    for w in &waits {
        assert!(*w < HOLD * 2 + ALLOWANCE, "writer waited {w:?}: {waits:?}");
    }
}

#[tokio::test]
async fn tokens_of_readers_and_writers_fence_together() {
    let server = NatsServer::start().await;
    let locks = locks_on(server.connect().await, "rw4").await;
    let rw = locks.rwlock("res").unwrap();
    let fence = Fence::new();
    let kv_fence = KvFence::new(locks.bucket().clone(), "res-fence");

    let w = rw.write().timeout(T).await.unwrap();
    let stale = w.token();
    fence.admit(stale).unwrap();
    kv_fence
        .write(stale, "res-data", "by the writer")
        .await
        .unwrap();
    assert_eq!(w.release().await.unwrap(), Released::Released);

    let r = rw.read().timeout(T).await.unwrap();
    assert!(r.token() > stale, "one sequence for both kinds");
    fence.admit(r.token()).unwrap();
    kv_fence
        .write(r.token(), "res-data", "by the reader")
        .await
        .unwrap();

    assert_eq!(
        fence.admit(stale).unwrap_err().kind(),
        ErrorKind::StaleToken
    );
    let e = kv_fence.write(stale, "res-data", "late").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StaleToken);
    let data = locks.bucket().get("res-data").await.unwrap().unwrap();
    assert_eq!(data.value().as_ref(), b"by the reader");
    r.release().await.unwrap();
}

#[tokio::test]
async fn a_mutex_and_a_writer_of_one_name_exclude_each_other() {
    let server = NatsServer::start().await;
    let locks = locks_on(server.connect().await, "rw5").await;
    let m = locks.mutex("shared").unwrap();
    let rw = locks.rwlock("shared").unwrap();

    let g = m.lock().timeout(T).await.unwrap();
    assert!(rw.write().try_acquire().await.unwrap().is_none());
    assert!(rw.read().try_acquire().await.unwrap().is_none());
    let base = locks.stats().watches;
    let writer = spawn_acquire(rw.write().timeout(T));
    waiting(&locks, base, 1).await;
    let mt = g.token();
    g.release().await.unwrap();
    let w = within("the writer", writer).await.unwrap().unwrap();
    assert!(w.token() > mt);

    assert!(
        m.try_lock().await.unwrap().is_none(),
        "the writer excludes the mutex"
    );
    let base = locks.stats().watches;
    let mutex_waiter = spawn_acquire(m.lock().timeout(T));
    waiting(&locks, base, 1).await;
    hands_over_to(w, mutex_waiter).await;
}

#[tokio::test]
async fn a_semaphore_and_a_rwlock_of_one_name_are_refused() {
    let server = NatsServer::start().await;
    let locks = locks_on(server.connect().await, "rw6").await;
    // A semaphore stored its count under the name: read-write handles are refused.
    let sem = locks.semaphore("pool", 3).unwrap();
    sem.acquire()
        .timeout(T)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let rw = locks.rwlock("pool").unwrap();
    for acq in [rw.read(), rw.write()] {
        assert_eq!(
            acq.timeout(T).await.unwrap_err().kind(),
            ErrorKind::PermitMismatch
        );
    }
    // A read-write lock in use: a semaphore handle on its name is refused, and the name
    // keeps working as a read-write lock.
    let rw = locks.rwlock("catalog").unwrap();
    let r = rw.read().timeout(T).await.unwrap();
    let sem = locks.semaphore("catalog", 3).unwrap();
    assert_eq!(
        sem.try_acquire().await.unwrap_err().kind(),
        ErrorKind::PermitMismatch
    );
    assert_eq!(
        sem.acquire().timeout(T).await.unwrap_err().kind(),
        ErrorKind::PermitMismatch
    );
    assert!(r.is_held());
    r.release().await.unwrap();
    let w = rw.write().timeout(T).await.unwrap();
    w.release().await.unwrap();
    no_entries_left(&locks, "catalog").await;
}

async fn no_entries_left(locks: &Locks, name: &str) {
    locks.shutdown().await;
    let info = locks.inspect(name).await.expect("inspect");
    assert!(
        info.holders.is_empty() && info.waiters.is_empty(),
        "{info:?}"
    );
}
