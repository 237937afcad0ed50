//! Lock inspection and forced release against a real nats-server.

mod common;

use std::time::{Duration, SystemTime};

use common::{locks_on, spawn_acquire, waiting, SHORT_TTL};
use kvtk_locks::{EntryKind, ErrorKind, Holder, LostReason, Released, Token};
use kvtk_tests::NatsServer;
use kvtk_tests::{within, T};

#[tokio::test]
async fn inspect_shows_the_holder_and_the_waiters_in_order() {
    let server = NatsServer::start().await;
    let base = locks_on(server.connect().await, "i1").await;
    let [alpha, beta, gamma] =
        ["alpha", "beta", "gamma"].map(|id| base.clone().holder(Holder::named(id)));
    let before = SystemTime::now();
    let g = alpha
        .mutex("jobs.x")
        .unwrap()
        .lock()
        .timeout(T)
        .await
        .unwrap();
    let mut waiters = Vec::new();
    for w in [&beta, &gamma] {
        let watches = base.stats().watches;
        waiters.push(spawn_acquire(w.mutex("jobs.x").unwrap().lock().timeout(T)));
        waiting(&base, watches, 1).await;
    }

    let info = base.inspect("jobs.x").await.unwrap();
    assert_eq!(info.name, "jobs.x");
    assert_eq!(info.permits, None);
    assert_eq!(info.holders.len(), 1, "{info:?}");
    let h = &info.holders[0];
    assert_eq!(h.token, g.token());
    assert_eq!(h.holder, Some(Holder::named("alpha")));
    assert_eq!(h.kind, EntryKind::Exclusive);
    // the writer's wall clock, in whole milliseconds
    let queued_at = h.queued_at.expect("queued_at");
    assert!(queued_at + Duration::from_millis(1) >= before && queued_at <= SystemTime::now());
    let ids: Vec<_> = info
        .waiters
        .iter()
        .map(|w| w.holder.as_ref().map(|h| h.id.as_str()))
        .collect();
    assert_eq!(ids, [Some("beta"), Some("gamma")], "waiters in queue order");
    assert!(info.waiters[0].token > h.token && info.waiters[1].token > info.waiters[0].token);
    assert!(info.as_of.is_some_and(|r| r >= info.waiters[1].revision));

    g.release().await.unwrap();
    for w in waiters {
        within("a waiter", w)
            .await
            .unwrap()
            .unwrap()
            .release()
            .await
            .unwrap();
    }
    base.shutdown().await;
    let info = base.inspect("jobs.x").await.unwrap();
    assert!(
        info.holders.is_empty() && info.waiters.is_empty(),
        "{info:?}"
    );
}

#[tokio::test]
async fn inspect_of_a_rwlock_shows_readers_as_holders_and_queue_kinds() {
    let server = NatsServer::start().await;
    let locks = locks_on(server.connect().await, "i2").await;
    let readers = [locks.rwlock("cat").unwrap(), locks.rwlock("cat").unwrap()];
    let mut held = Vec::new();
    for r in &readers {
        held.push(r.read().timeout(T).await.unwrap());
    }
    let watches = locks.stats().watches;
    let writer = spawn_acquire(locks.rwlock("cat").unwrap().write().timeout(T));
    waiting(&locks, watches, 1).await;
    let late_reader = spawn_acquire(locks.rwlock("cat").unwrap().read().timeout(T));
    waiting(&locks, watches, 2).await;

    let info = locks.inspect("cat").await.unwrap();
    let kinds = |v: &[kvtk_locks::QueueEntry]| v.iter().map(|e| e.kind).collect::<Vec<_>>();
    assert_eq!(kinds(&info.holders), [EntryKind::Shared, EntryKind::Shared]);
    assert_eq!(
        kinds(&info.waiters),
        [EntryKind::Exclusive, EntryKind::Shared],
        "the late reader queues behind the writer"
    );
    for g in held {
        g.release().await.unwrap();
    }
    let w = within("the writer", writer).await.unwrap().unwrap();
    assert!(!late_reader.is_finished());
    w.release().await.unwrap();
    within("the late reader", late_reader)
        .await
        .unwrap()
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[tokio::test]
async fn force_release_evicts_the_holder_fences_it_and_wakes_the_next() {
    let server = NatsServer::start().await;
    let locks = locks_on(server.connect().await, "i3").await;
    let operator = locks_on(server.connect().await, "i3").await;
    let evicted = locks
        .mutex("stuck")
        .unwrap()
        .lock()
        .ttl(SHORT_TTL)
        .renew_every(Duration::from_millis(300))
        .timeout(T)
        .await
        .unwrap();
    let watches = locks.stats().watches;
    let next = spawn_acquire(locks.mutex("stuck").unwrap().lock().timeout(T));
    waiting(&locks, watches, 1).await;

    let token = evicted.token();
    assert!(operator.force_release("stuck", token).await.unwrap());
    let next = within("the next waiter", next).await.unwrap().unwrap();
    assert!(next.token() > token);
    assert_eq!(
        within("the evicted holder's loss", evicted.lost()).await,
        LostReason::Taken
    );
    assert!(!evicted.is_held());
    let e = evicted.put_guarded("data", "stale").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Lost);
    assert_eq!(evicted.release().await.unwrap(), Released::AlreadyLost);

    // The new holder is untouched; unknown or already evicted tokens evict nothing.
    assert!(!operator.force_release("stuck", token).await.unwrap());
    let unknown = Token::from_u64(next.token().get() + 1000).unwrap();
    assert!(!operator.force_release("stuck", unknown).await.unwrap());
    assert!(!operator.force_release("nothing.here", token).await.unwrap());
    assert!(next.is_held());
    next.put_guarded("data", "fresh").await.unwrap();
    let info = operator.inspect("stuck").await.unwrap();
    assert_eq!(
        info.holders.iter().map(|h| h.token).collect::<Vec<_>>(),
        [next.token()]
    );
    next.release().await.unwrap();
}

#[tokio::test]
async fn names_lists_the_locks_with_live_entries() {
    let server = NatsServer::start().await;
    let locks = locks_on(server.connect().await, "i4").await;
    assert!(locks.names().await.unwrap().is_empty());
    let m = locks
        .mutex("jobs.reindex")
        .unwrap()
        .lock()
        .timeout(T)
        .await
        .unwrap();
    let r = locks
        .rwlock("catalog")
        .unwrap()
        .read()
        .timeout(T)
        .await
        .unwrap();
    let s = locks
        .semaphore("pool", 2)
        .unwrap()
        .acquire()
        .timeout(T)
        .await
        .unwrap();
    // a lock one level below another is a lock of its own
    let deeper = locks
        .mutex("jobs.reindex.eu")
        .unwrap()
        .lock()
        .timeout(T)
        .await
        .unwrap();
    assert_eq!(
        locks.names().await.unwrap(),
        ["catalog", "jobs.reindex", "jobs.reindex.eu", "pool"]
    );
    for g in [m, r, s, deeper] {
        g.release().await.unwrap();
    }
    locks.shutdown().await;
    assert!(
        locks.names().await.unwrap().is_empty(),
        "released locks leave only tombstones"
    );
}
