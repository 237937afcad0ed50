//! kvtk-locks under faults: dead holders, blackholed and cut-off clients, stalled runtimes,
//! stream-leader failover on a 3-node cluster.

use std::time::Duration;

use kvtk_core::{BucketConfig, Include, Kv, WatchEvent};
use kvtk_locks::{ErrorKind, Fence, Locks, Released};
use kvtk_tests::{client, until, within, within_for, FaultProxy, NatsCluster, NatsServer, T};
use tokio::time::Instant;

/// A Locks whose requests time out quickly, so that faults show within a lease.
async fn locks_via(url: &str, bucket: &str) -> Locks {
    let client = client::options(client::REQUEST_TIMEOUT)
        .retry_on_initial_connect()
        .connect(url)
        .await
        .expect("connect");
    let kv = Kv::new(client);
    Locks::open(&kv, bucket).await.expect("open locks")
}

#[tokio::test]
async fn a_dead_holder_is_replaced_within_ttl() {
    let server = NatsServer::start().await;
    let proxy = FaultProxy::start(&server.client_url()).await;
    let dying = locks_via(&proxy.url(), "f1").await;
    let healthy = locks_via(&server.client_url(), "f1").await;
    let ttl = Duration::from_secs(2);
    let g = dying.mutex("job").unwrap().lock().ttl(ttl).await.unwrap();
    let waiter = healthy.mutex("job").unwrap();
    let w = tokio::spawn(async move { waiter.lock().ttl(ttl).timeout(T).await });
    within(
        "the waiter to watch",
        healthy.stats_handle().wait_for(|s| s.watches >= 1),
    )
    .await;
    // The holder's process "dies": its connection goes and never comes back, so it can
    // neither renew nor release.
    let died = Instant::now();
    proxy.cut();
    let g2 = within("the waiter's turn", w).await.unwrap().unwrap();
    let took = died.elapsed();
    println!("dead holder replaced after {took:?} (ttl {ttl:?})");
    assert!(took <= ttl + Duration::from_millis(1500), "{took:?}");
    assert!(g2.token() > g.token());
    within("the dead holder's loss", g.lost()).await;
    g2.release().await.unwrap();
}

#[tokio::test]
async fn a_blackholed_holder_demotes_itself_before_the_server_expires_it() {
    let server = NatsServer::start().await;
    let proxy = FaultProxy::start(&server.client_url()).await;
    let cut_off = locks_via(&proxy.url(), "f2").await;
    let healthy = locks_via(&server.client_url(), "f2").await;
    let ttl = Duration::from_secs(3);
    let fence = Fence::new();

    let old = cut_off.mutex("res").unwrap().lock().ttl(ttl).await.unwrap();
    fence.admit(old.token()).unwrap();
    let waiter = healthy.mutex("res").unwrap();
    let w = tokio::spawn(async move {
        let g = waiter.lock().ttl(ttl).timeout(T).await;
        (g, Instant::now())
    });
    within(
        "the waiter to watch",
        healthy.stats_handle().wait_for(|s| s.watches >= 1),
    )
    .await;
    let deadline_before = old.deadline();
    proxy.blackhole();
    within("the blackholed holder's loss", old.lost()).await;
    let lost_at = Instant::now();
    assert!(!old.is_held());
    // It gave up at its deadline (last acknowledged send + TTL − margin), not later.
    assert!(lost_at >= deadline_before.min(old.deadline()));
    assert!(lost_at <= old.deadline() + Duration::from_millis(200));
    println!("blackholed holder lost: {:?}", old.loss_reason());

    let (new, acquired_at) = within("the waiter's turn", w).await.unwrap();
    let new = new.unwrap();
    assert!(
        lost_at < acquired_at,
        "the old holder demoted itself before the new one took over"
    );
    // The new holder writes; the old holder's late write is rejected by the fence.
    fence.admit(new.token()).unwrap();
    let e = fence.admit(old.token()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StaleToken);
    // And a server-checked write from the old holder is refused as well.
    proxy.heal();
    let e = old.put_guarded("data", "late").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Lost);
    new.put_guarded("data", "fresh").await.unwrap();
    new.release().await.unwrap();
}

#[tokio::test]
async fn renewal_outlives_the_ttl_and_short_outages_but_not_long_ones() {
    let server = NatsServer::start().await;
    let proxy = FaultProxy::start(&server.client_url()).await;
    let holder = locks_via(&proxy.url(), "f3").await;
    let other = locks_via(&server.client_url(), "f3").await;
    let m = holder.mutex("long").unwrap();
    let contender = other.mutex("long").unwrap();

    // Work 5× longer than the TTL: renewals keep it. The server's TTL clock is what is under
    // test: the work is 5 s of wall time against a 1 s TTL.
    let g = m.lock().ttl(Duration::from_secs(1)).await.unwrap();
    let work = g.run_while_held(tokio::time::sleep(Duration::from_secs(5)));
    work.await.expect("held throughout");
    assert!(g.is_held());
    assert!(contender.try_lock().await.unwrap().is_none());
    assert!(holder.stats().renewals >= 10);
    g.release().await.unwrap();

    // TTL 4 s, margin 400 ms: an outage of 1.5 s (< TTL − margin) does not lose it.
    let g = m
        .lock()
        .ttl(Duration::from_secs(4))
        .renew_every(Duration::from_millis(800))
        .margin(Duration::from_millis(400))
        .await
        .unwrap();
    // The outage's length against the lease's clock (TTL − margin) is what is under test.
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.heal();
    // Three renewals land after the outage (watched over a direct link).
    let mut renewals = other
        .bucket()
        .watch([g.lease().key().as_str()])
        .include(Include::UpdatesOnly)
        .await
        .unwrap();
    let mut seen = 0;
    while seen < 3 {
        let ev = kvtk_tests::next("a renewal", &mut renewals).await.unwrap();
        seen += usize::from(matches!(ev, WatchEvent::Entry(_)));
    }
    assert!(g.is_held(), "{:?}", g.loss_reason());
    assert!(contender.try_lock().await.unwrap().is_none());

    // A longer outage loses it, visibly, and the contender gets it.
    proxy.cut();
    let t0 = Instant::now();
    within("the loss in a long outage", g.lost()).await;
    assert!(t0.elapsed() < Duration::from_secs(4));
    let g2 = contender.lock().timeout(T).await.unwrap();
    proxy.heal();
    assert_eq!(g.release().await.unwrap(), Released::AlreadyLost);
    assert!(g2.is_held());
    g2.release().await.unwrap();
}

/// A server started on a runtime of its own, which a test's stalled runtime does not stop.
fn server_on_its_own_runtime() -> NatsServer {
    std::thread::spawn(|| {
        tokio::runtime::Runtime::new()
            .expect("a runtime")
            .block_on(async { NatsServer::start().await })
    })
    .join()
    .expect("the server's thread")
}

#[test]
fn a_stalled_runtime_reports_loss_and_never_renews_late() {
    let server = server_on_its_own_runtime();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let locks = locks_via(&server.client_url(), "f4").await;
        let g = locks
            .mutex("stall")
            .unwrap()
            .lock()
            .ttl(Duration::from_secs(2))
            .await
            .unwrap();
        let renewals = locks.stats().renewals;
        // Block the only runtime thread past the deadline (GC pause, SIGSTOP, blocking call):
        // the stall's length against the lease's clock is what is under test.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!g.is_held(), "the deadline is checked by is_held itself");
        within("the stalled holder's loss", g.lost()).await;
        assert_eq!(locks.stats().renewals, renewals, "no late renewal");
        assert_eq!(g.loss_reason(), Some(kvtk_locks::LostReason::Deadline));
        assert_eq!(g.release().await.unwrap(), Released::AlreadyLost);
    });
    drop(server);
}

#[test]
fn a_waiter_whose_lease_ran_out_while_its_runtime_stalled_is_not_handed_the_lock() {
    let server = server_on_its_own_runtime();
    let url = server.client_url();
    // The holder, on a runtime of its own, releases when told.
    let (held_tx, held) = std::sync::mpsc::channel::<()>();
    let (go, release_now) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn({
        let url = url.clone();
        move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let locks = locks_via(&url, "f5").await;
                let m = locks.mutex("handed").unwrap();
                let g = m.lock().ttl(Duration::from_secs(10)).await.unwrap();
                held_tx.send(()).unwrap();
                let told = tokio::task::spawn_blocking(move || release_now.recv());
                told.await.unwrap().unwrap();
                assert_eq!(g.release().await.unwrap(), Released::Released);
            });
        }
    });
    held.recv().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let locks = locks_via(&url, "f5").await;
        let m = locks.mutex("handed").unwrap();
        let waiting = tokio::spawn(async move { m.lock().ttl(Duration::from_secs(2)).await });
        until("the waiter queued behind the holder", || async {
            locks.inspect("handed").await.unwrap().waiters.len() == 1
        })
        .await;
        go.send(()).unwrap();
        // Block the only runtime thread past the waiter's deadline while the holder
        // releases: on waking, the blocker's release and the lease's end are both there.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(2500));
        let out = within("the waiter's end", waiting).await.unwrap();
        let e = out.expect_err("handed the lock with a lease that ran out");
        assert_eq!(e.kind(), ErrorKind::QueueEntryLost, "{e}");
    });
    holder.join().unwrap();
    drop(server);
}

#[tokio::test]
async fn stream_leader_failover_never_yields_two_holders() {
    let mut cluster = NatsCluster::start().await;
    let connect = |urls: Vec<String>| async move {
        Kv::new(client::with_request_timeout(urls, Duration::from_secs(1)).await)
    };
    let kv_a = connect(cluster.client_urls()).await;
    let kv_b = connect(cluster.client_urls()).await;
    let cfg = BucketConfig::new("fc")
        .history(1)
        .per_key_ttl(Duration::from_secs(60))
        .atomic_batches(true)
        .replicas(3);
    // Creating an R3 stream on a freshly started cluster can take longer than the short
    // request timeout the fault handling is tested with: the set-up waits longer.
    let bucket = kv_a
        .clone()
        .with_timeout(Duration::from_secs(15))
        .create_or_open(cfg.clone())
        .await
        .unwrap();
    drop(bucket);
    // A new R3 stream can take a moment more to answer within the short timeout (its info
    // request timed out at 1 s once in 40 quiet runs): wait until both clients' opens do.
    until("the new bucket to answer both clients", || async {
        kv_a.open("fc").await.is_ok() && kv_b.open("fc").await.is_ok()
    })
    .await;
    let a = Locks::new(kv_a.create_or_open(cfg.clone()).await.unwrap())
        .await
        .unwrap();
    let b = Locks::new(kv_b.create_or_open(cfg).await.unwrap())
        .await
        .unwrap();
    let ttl = Duration::from_secs(5);
    let ga = a.mutex("ha").unwrap().lock().ttl(ttl).await.unwrap();
    let mb = b.mutex("ha").unwrap();
    let w = tokio::spawn(async move {
        // A waiter's own entry may be lost during the failover too: it then learns it
        // (never "acquired") and queues again.
        let mut lost_entries = 0;
        loop {
            match mb.lock().ttl(ttl).timeout(Duration::from_secs(60)).await {
                Err(e) if e.kind() == ErrorKind::QueueEntryLost && lost_entries < 5 => {
                    lost_entries += 1;
                }
                g => return (g, Instant::now()),
            }
        }
    });
    within(
        "b's waiter to watch",
        b.stats_handle().wait_for(|s| s.watches >= 1),
    )
    .await;
    let leader = cluster
        .stream_leader("KV_fc")
        .await
        .expect("a stream leader");
    cluster.kill_node(leader);
    // Either A rides out the failover (renewals retried until its deadline) or it demotes
    // itself; B may only take over after A's term ended.
    let lost = within("a's loss, or its renewal after the failover", async {
        tokio::select! {
            _ = ga.lost() => Some(Instant::now()),
            () = renewed_after_failover(&cluster, &ga) => None,
        }
    })
    .await;
    // B's acquisition waits as long as its own (60 s, through lost queue entries).
    let b_turn = Duration::from_secs(60);
    match lost {
        Some(lost_at) => {
            let (gb, at) = within_for("b's turn", b_turn, w).await.unwrap();
            let gb = gb.unwrap();
            assert!(lost_at < at, "two holders at once");
            assert!(gb.token() > ga.token());
            println!(
                "failover: holder lost ({:?}), next acquired after",
                ga.loss_reason()
            );
            gb.release().await.unwrap();
        }
        None => {
            assert!(ga.is_held());
            assert!(!w.is_finished(), "two holders at once");
            let released = Instant::now();
            ga.release().await.unwrap();
            let (gb, at) = within_for("b's turn", b_turn, w).await.unwrap();
            assert!(at >= released);
            println!("failover: holder kept the lock across it");
            gb.unwrap().release().await.unwrap();
        }
    }
    cluster.restart_node(leader).await;
}

/// Returns once `KV_fc` has a new stream leader and `g`'s lease was renewed after that (its
/// deadline moved on): the holder rode out the failover.
async fn renewed_after_failover(cluster: &NatsCluster, g: &kvtk_locks::Guard) {
    cluster
        .wait_stream_leader("KV_fc", T)
        .await
        .expect("a new stream leader");
    let before = g.deadline();
    until("a renewal acknowledged by the new stream leader", || {
        std::future::ready(g.deadline() > before)
    })
    .await;
}
