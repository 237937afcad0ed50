//! Locks bound to one session per `Locks` ([`Locks::bind_to_session`]) against a real
//! nats-server: one renewal write per interval however many locks are held, a dead
//! session's entry removed by the waiter behind it (also one that uses leases of its own, and
//! on a 3-node cluster with an R3 bucket from stream followers) and by a `try_lock`, a
//! forced release learned at the next guarded write and release, acquisitions given up
//! before their entries were acknowledged leaving none behind, and a lone holder's release
//! riding out a moment when nobody answers for the bucket.

// Tests may unwrap: a panic is a test failure with a message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kvtk_core::lease::{LeaseConfig, SessionId, SessionState};
use kvtk_core::{BucketConfig, Include, Kv};
use kvtk_locks::{ErrorKind, Locks, Released, DEFAULT_MARKER_TTL};
use kvtk_tests::{client, until, within, FaultProxy, NatsCluster, NatsServer, T};

mod common;
use common::{spawn_acquire, waiting};
use tokio::time::Instant;

/// Locks over `url` alone (never a server it learns of) with short request timeouts; bound to
/// a session with `ttl` if given.
async fn locks_via(url: &str, bucket: &str, session_ttl: Option<u64>) -> Locks {
    let client = client::options(client::REQUEST_TIMEOUT)
        .retry_on_initial_connect()
        .ignore_discovered_servers()
        .connect(url)
        .await
        .expect("connect");
    let locks = Locks::open(&Kv::new(client), bucket).await.unwrap();
    match session_ttl {
        Some(s) => {
            let cfg = LeaseConfig::new(Duration::from_secs(s)).unwrap();
            locks.lease(cfg).unwrap().bind_to_session()
        }
        None => locks,
    }
}

#[tokio::test]
async fn one_renewal_write_per_interval_however_many_locks_are_held() {
    let server = NatsServer::start().await;
    let locks = locks_via(&server.client_url(), "s1", Some(3)).await;
    let mut guards = Vec::new();
    for i in 0..100 {
        let g = locks
            .mutex(&format!("job.{i}"))
            .unwrap()
            .lock()
            .await
            .unwrap();
        assert!(g.lease().is_bound());
        guards.push(g);
    }
    let session = guards[0].lease().nonce();
    assert!(guards.iter().all(|g| g.lease().nonce() == session));
    // Every write to the bucket for 3.5 s (renewals every second at TTL 3 s).
    let kv = Kv::new(server.connect().await);
    let mut watch = kv
        .open("s1")
        .await
        .unwrap()
        .watch([">"])
        .include(Include::UpdatesOnly)
        .await
        .unwrap();
    let events = kvtk_tests::collect_for(Duration::from_millis(3500), &mut watch).await;
    let writes: Vec<String> = events
        .into_iter()
        .filter_map(|ev| ev.unwrap().into_entry())
        .map(|e| e.key().to_string())
        .collect();
    let key = SessionId::from_key(&format!("_session.{session:032x}"))
        .unwrap()
        .key();
    println!("writes in 3.5 s with 100 locks held: {writes:?}");
    assert!((2..=4).contains(&writes.len()), "{writes:?}");
    assert!(writes.iter().all(|k| *k == key), "{writes:?}");
    assert!(guards.iter().all(|g| g.is_held()));
    for g in guards {
        assert_eq!(g.release().await.unwrap(), Released::Released);
    }
}

#[tokio::test]
async fn a_dead_sessions_entry_is_removed_by_the_waiter_behind_it() {
    let server = NatsServer::start().await;
    let proxy = FaultProxy::start(&server.client_url()).await;
    let dying = locks_via(&proxy.url(), "s2", Some(2)).await;
    // The waiter keeps a lease of its own: modes mix on one bucket.
    let healthy = locks_via(&server.client_url(), "s2", None).await;
    let g = dying.mutex("job").unwrap().lock().await.unwrap();
    let w = spawn_acquire(healthy.mutex("job").unwrap().lock().timeout(T));
    waiting(&healthy, 0, 1).await;
    let died = Instant::now();
    proxy.cut();
    let g2 = within("the waiter's turn", w).await.unwrap().unwrap();
    let took = died.elapsed();
    println!("dead session's holder replaced after {took:?} (session ttl 2 s)");
    assert!(took <= Duration::from_millis(3500), "{took:?}");
    assert!(g2.token() > g.token());
    assert!(!g2.lease().is_bound());
    // The dead holder learned it on its own clock, with the session.
    within("the dead holder's loss", g.lost()).await;
    assert!(!g.is_held());
    g2.release().await.unwrap();
}

#[tokio::test]
async fn a_try_lock_removes_the_entry_of_a_session_that_ended() {
    let server = NatsServer::start().await;
    let proxy = FaultProxy::start(&server.client_url()).await;
    let dying = locks_via(&proxy.url(), "s3", Some(1)).await;
    let healthy = locks_via(&server.client_url(), "s3", Some(10)).await;
    let g = dying.mutex("job").unwrap().lock().await.unwrap();
    let id = SessionId::from_key(&format!("_session.{:032x}", g.lease().nonce())).unwrap();
    let reader = Kv::new(server.connect().await).open("s3").await.unwrap();
    assert!(healthy
        .mutex("job")
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .is_none());
    proxy.cut();
    // The server's TTL clock is under test: the session key expires on it.
    until("the session expired", || async {
        !SessionState::read(&reader, id).await.unwrap().is_alive()
    })
    .await;
    let g2 = healthy.mutex("job").unwrap().try_lock().await.unwrap();
    let g2 = g2.expect("the dead session's entry was removed and the lock taken");
    assert!(g2.token() > g.token() && g2.lease().is_bound());
    g2.release().await.unwrap();
}

#[tokio::test]
async fn a_force_released_holder_learns_it_at_its_next_guarded_write_and_release() {
    let server = NatsServer::start().await;
    let locks = locks_via(&server.client_url(), "s4", Some(10)).await;
    let admin = locks_via(&server.client_url(), "s4", None).await;
    let g = locks.mutex("job").unwrap().lock().await.unwrap();
    g.put_guarded("data", "mine").await.unwrap();
    assert!(admin.force_release("job", g.token()).await.unwrap());
    let late = g.put_guarded("data", "late").await.unwrap_err();
    assert_eq!(late.kind(), ErrorKind::Lost);
    let txn = locks.bucket().txn().put("data", "late").if_held(g.lease());
    let refused = txn.commit().await.unwrap_err();
    assert!(refused.is_conflict(), "{refused}");
    assert_eq!(g.release().await.unwrap(), Released::AlreadyLost);
    // The lock is free for the next one at once.
    let next = locks
        .mutex("job")
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .unwrap();
    next.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_r3_waiters_on_followers_remove_a_dead_sessions_entry_in_queue_order() {
    let cluster = NatsCluster::start().await;
    let admin =
        Kv::new(client::with_request_timeout(cluster.client_urls(), client::QUORUM_TIMEOUT).await);
    let cfg = BucketConfig::new("s5")
        .history(1)
        .per_key_ttl(DEFAULT_MARKER_TTL)
        .atomic_batches(true)
        .replicas(3);
    admin.create_or_open(cfg).await.unwrap();
    let proxy = FaultProxy::start(&cluster.node(0).client_url()).await;
    let dying = locks_via(&proxy.url(), "s5", Some(3)).await;
    let bound = locks_via(&cluster.node(1).client_url(), "s5", Some(3)).await;
    let own = locks_via(&cluster.node(2).client_url(), "s5", None).await;
    let g = dying.mutex("job").unwrap().lock().await.unwrap();
    let first = spawn_acquire(bound.mutex("job").unwrap().lock().timeout(T));
    waiting(&bound, 0, 1).await;
    let second = spawn_acquire(own.mutex("job").unwrap().lock().timeout(T));
    waiting(&own, 0, 1).await;
    proxy.cut();
    let g1 = within("the first waiter's turn", first)
        .await
        .unwrap()
        .unwrap();
    assert!(g1.token() > g.token() && g1.lease().is_bound());
    assert_eq!(
        bound.stats().reaped,
        1,
        "the first waiter removed the dead entry"
    );
    let t1 = g1.token();
    g1.release().await.unwrap();
    let g2 = within("the second waiter's turn", second)
        .await
        .unwrap()
        .unwrap();
    assert!(g2.token() > t1 && !g2.lease().is_bound());
    g2.release().await.unwrap();
}

#[tokio::test]
async fn acquisitions_given_up_before_their_entries_were_acknowledged_leave_none_behind() {
    let server = NatsServer::start().await;
    let proxy = FaultProxy::start(&server.client_url()).await;
    let holder = locks_via(&proxy.url(), "abandon", Some(10)).await;
    let other = locks_via(&server.client_url(), "abandon", Some(10)).await;
    // The holder's session is made before the link slows down.
    let warm = holder.mutex("warm").unwrap().lock().await.unwrap();
    warm.release().await.unwrap();
    // Requests time out at 500 ms: at 1.5 s each way the entries land, but no
    // acknowledgement comes back before the acquisitions give up. Their handles are new,
    // so nobody would ever write these queue keys again.
    proxy.set_latency(Duration::from_millis(1500));
    let give_up = Duration::from_millis(2500);
    let multi = holder.multi(["a", "b"]).unwrap().lock().timeout(give_up);
    let single = holder.mutex("c").unwrap().lock().timeout(give_up);
    let (m, c) = tokio::join!(multi, single);
    let kinds = (m.unwrap_err().kind(), c.unwrap_err().kind());
    assert_eq!(kinds, (ErrorKind::Timeout, ErrorKind::Timeout));
    for name in ["a", "b", "c"] {
        let info = other.inspect(name).await.unwrap();
        assert_eq!(info.holders.len(), 1, "{name}: the abandoned entry landed");
    }
    proxy.heal();
    // The holder lives on and renews its session: its abandoned entries are removed all the
    // same (by the holder: nobody reaps a live session's entries), and the locks are free.
    let both = within("the multi-lock", other.multi(["a", "b"]).unwrap().lock()).await;
    let c = within("the mutex", other.mutex("c").unwrap().lock()).await;
    assert_eq!(other.stats().reaped, 0);
    let warm = holder.mutex("warm").unwrap().try_lock().await.unwrap();
    assert!(warm.is_some(), "the holder's session lives");
    both.unwrap().release().await.unwrap();
    c.unwrap().release().await.unwrap();
}

#[tokio::test]
async fn a_lone_holders_release_rides_out_a_moment_when_nobody_answers_for_the_bucket() {
    let server = NatsServer::start().await;
    let client = client::options(client::REQUEST_TIMEOUT)
        .connect(server.client_url())
        .await
        .unwrap();
    let kv = Kv::new(client.clone());
    let cfg = LeaseConfig::new(Duration::from_secs(20)).unwrap();
    let holder = Locks::open(&kv, "nobody")
        .await
        .unwrap()
        .lease(cfg)
        .unwrap();
    let holder = holder.bind_to_session();
    let other = locks_via(&server.client_url(), "nobody", Some(20)).await;
    // Alone on a one-server bucket: the release first tries to prove the queue empty.
    let g = holder.mutex("x").unwrap().lock().await.unwrap();
    // Nobody answers for the bucket for a moment, as while its server restarts: its stream
    // stops listening on the bucket's subjects.
    let js = async_nats::jetstream::new(server.connect().await);
    let mut stream = js.get_stream("KV_nobody").await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    let elsewhere = vec!["elsewhere.nobody.>".to_string()];
    let subjects = std::mem::replace(&mut config.subjects, elsewhere);
    js.update_stream(&config).await.unwrap();
    let before = common::sent(&client);
    let release = tokio::spawn(g.release());
    until("the release to find nobody twice", || async {
        common::sent(&client) >= before + 2
    })
    .await;
    config.subjects = subjects;
    js.update_stream(&config).await.unwrap();
    let released = within("the release", release).await.unwrap();
    assert_eq!(released.unwrap(), Released::Released);
    let next = within("the next holder", other.mutex("x").unwrap().lock()).await;
    next.unwrap().release().await.unwrap();
}
