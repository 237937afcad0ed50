//! Campaign, resign, transfer, proclaim, crash failover, fencing and bad input against a real
//! nats-server.
// Tests may unwrap: a panic is a test failure with a message.
#![allow(clippy::unwrap_used)]

mod common;

use std::cell::RefCell;
use std::future::IntoFuture;
use std::time::Duration;

use common::*;
use kvtk_core::{BucketConfig, Kv};
use kvtk_leader::{Election, ErrorKind, HealthStatus, LostReason, Observed};
use kvtk_tests::{until, within, FaultProxy, NatsServer};
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(2);

#[tokio::test]
async fn graceful_resign_hands_over_in_milliseconds() {
    let server = NatsServer::start().await;
    let url = server.client_url();
    let a = election(&url, "el", "jobs", TTL).await;
    let b = election(&url, "el", "jobs", TTL).await;
    let mut observer = a.observe().await.unwrap();
    assert_eq!(next(&mut observer).await, Observed::NoLeader);

    let mut leader = within("first election", a.campaign("a").value("addr-a"))
        .await
        .unwrap();
    let mut waiting = ("b", b.clone());
    let mut idle = ("a", a.clone());
    let mut last_term = leader.term();
    let mut samples = Vec::new();
    for _ in 0..40 {
        let (wid, welection) = waiting.clone();
        let waiter = tokio::spawn(async move { welection.campaign(wid).await });
        // Let the waiter register and start its watch (it is listed once registered).
        candidates_until(&a, |ids| ids.iter().any(|id| id == wid)).await;
        let t0 = Instant::now();
        leader.resign().await.unwrap();
        let next_leader = within("hand-over", waiter).await.unwrap().unwrap();
        samples.push(t0.elapsed());
        assert!(next_leader.term() > last_term, "terms strictly increase");
        assert_eq!(next_leader.id(), wid);
        last_term = next_leader.term();
        leader = next_leader;
        std::mem::swap(&mut waiting, &mut idle);
    }
    samples.sort();
    let (p50, p99) = (pct(&samples, 0.5), pct(&samples, 0.99));
    println!(
        "graceful hand-over over {} rounds: p50 {p50:?}, p99 {p99:?}, max {:?}",
        samples.len(),
        samples[samples.len() - 1]
    );
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");

    // The observer saw every term in order, with "no leader" between resignations.
    let mut terms = Vec::new();
    while terms.len() < 41 {
        if let Observed::Leader(l) = next(&mut observer).await {
            terms.push(l.term);
        }
    }
    assert!(terms.windows(2).all(|w| w[0] < w[1]), "{terms:?}");
    assert_eq!(terms.last(), Some(&leader.term()));
    leader.resign().await.unwrap();
    assert_eq!(
        skip_until(&mut observer, |o| *o == Observed::NoLeader).await,
        Observed::NoLeader
    );
    let s = a.stats();
    println!("stats a: {s:?}, b: {:?}", b.stats());
}

#[tokio::test]
async fn crash_failover_within_ttl_plus_a_second_and_fencing_rejects_the_old_leader() {
    let server = NatsServer::start().await;
    let url = server.client_url();
    let mut samples = Vec::new();
    for round in 0..3 {
        let pa = FaultProxy::start(&url).await;
        let a = election(&pa.url(), "el", "crash", TTL).await;
        let b = election(&url, "el", "crash", TTL).await;
        let la = within("a elected", a.campaign(format!("a{round}")))
            .await
            .unwrap();
        let fenced = la.fencing();
        fenced.put("crash.data", "from a").await.unwrap();
        let a_rev = la.revision();
        let health = la.health();
        assert!(matches!(health.status(), HealthStatus::Leading { .. }));
        let bid = format!("b{round}");
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.campaign(bid).await }
        });
        // Let the waiter be waiting (registered, watching); renewals keep `a` alive meanwhile.
        until("b's campaign to watch", || {
            std::future::ready(b.stats().watches > 0)
        })
        .await;

        // The leader "crashes": nothing of it reaches the server any more.
        pa.blackhole();
        let t0 = Instant::now();
        let reason = within("a lost", la.lost()).await;
        let lost_at = Instant::now();
        assert_eq!(reason, LostReason::Expired);
        assert!(!health.is_ready(), "not ready once the deadline passed");
        let lb = within("b elected", waiter).await.unwrap().unwrap();
        let elected_at = Instant::now();
        let failover = elected_at - t0;
        samples.push(failover);
        println!(
            "crash failover round {round}: a self-demoted after {:?}, b elected after {failover:?}",
            lost_at - t0
        );
        assert!(lost_at < elected_at, "a gave up before b was elected");
        assert!(
            failover <= TTL + Duration::from_millis(1500),
            "{failover:?}"
        );
        assert!(lb.term() > la.term());

        // The deposed leader's guarded writes are refused, locally and by the server.
        pa.heal();
        let e = fenced.put("crash.data", "stale").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Lost);
        let e = b
            .bucket()
            .put("crash.data", "stale")
            .expect_on(b.leader_key(), a_rev)
            .await
            .unwrap_err();
        assert!(e.is_conflict(), "{e}");
        lb.fencing().put("crash.data", "from b").await.unwrap();
        lb.resign().await.unwrap();
        drop(la);
    }
    samples.sort();
    println!("crash failover (TTL {TTL:?}): {samples:?}");
}

#[tokio::test]
async fn observers_see_no_leader_after_expiry_and_resync_after_reconnect() {
    let server = NatsServer::start().await;
    let url = server.client_url();
    let po = FaultProxy::start(&url).await;
    let pa = FaultProxy::start(&url).await;
    let obs_election = election(&po.url(), "el", "obs", TTL).await;
    let a = election(&pa.url(), "el", "obs", TTL).await;
    let b = election(&url, "el", "obs", TTL).await;
    let mut o = obs_election.observe().await.unwrap();
    assert_eq!(next(&mut o).await, Observed::NoLeader);
    assert_eq!(o.current(), Some(&Observed::NoLeader));

    // A leader appears with its value.
    let la = a.campaign("a").value("10.0.0.1:1").await.unwrap();
    let Observed::Leader(l) = next(&mut o).await else {
        panic!("expected a leader")
    };
    assert_eq!(
        (l.id.as_str(), l.value.as_str(), l.term),
        ("a", "10.0.0.1:1", la.term())
    );

    // It expires with no candidate left: "no leader" within TTL + 1.5 s.
    pa.blackhole();
    let t0 = Instant::now();
    assert_eq!(next(&mut o).await, Observed::NoLeader);
    let seen = t0.elapsed();
    println!("no-leader after expiry seen after {seen:?}");
    assert!(seen <= TTL + Duration::from_millis(1500));
    assert_eq!(b.leader().await.unwrap(), None);
    drop(la);

    // The observer is cut off while b is elected; after healing it resyncs to b.
    po.cut();
    let lb = b.campaign("b").value("10.0.0.2:2").await.unwrap();
    assert_eq!(b.leader().await.unwrap().map(|l| l.term), Some(lb.term()));
    po.heal();
    let ev = skip_until(&mut o, |ev| matches!(ev, Observed::Leader(_))).await;
    let Observed::Leader(l) = ev else {
        unreachable!()
    };
    assert_eq!((l.id.as_str(), l.term), ("b", lb.term()));

    // A value change is a change; renewals are not.
    lb.proclaim("10.0.0.2:3").await.unwrap();
    let Observed::Leader(l) = next(&mut o).await else {
        panic!("expected the new value")
    };
    assert_eq!((l.value.as_str(), l.term), ("10.0.0.2:3", lb.term()));
    let before = lb.revision();
    // Renewals (every TTL/3) move the revision, not the term.
    let now = RefCell::new(None);
    until("a renewal of the leader key", || async {
        let l = b.leader().await.unwrap().unwrap();
        let renewed = l.revision > before;
        *now.borrow_mut() = Some(l);
        renewed
    })
    .await;
    let now = now.into_inner().unwrap();
    assert!(now.revision > before);
    assert_eq!(now.term, lb.term());
    assert!(lb.is_leader());
    lb.resign().await.unwrap();
    assert_eq!(next(&mut o).await, Observed::NoLeader);
}

#[tokio::test]
async fn transfer_goes_to_the_named_candidate_only() {
    let server = NatsServer::start().await;
    let url = server.client_url();
    let a = election(&url, "el", "xfer", TTL).await;
    let b = election(&url, "el", "xfer", TTL).await;
    let c = election(&url, "el", "xfer", TTL).await;
    let la = a.campaign("a").await.unwrap();
    let wb = tokio::spawn({
        let b = b.clone();
        async move { b.campaign("b").await }
    });
    let wc = tokio::spawn({
        let c = c.clone();
        async move { c.campaign("c").value("c-addr").await }
    });
    candidates_until(&a, |ids| ids == ["a", "b", "c"]).await;

    // Unknown targets are refused and we keep leading.
    let e = la.transfer_to("zz").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotCampaigning, "{e}");
    assert!(la.is_leader());

    let term_a = la.term();
    let t0 = Instant::now();
    la.transfer_to("c").await.unwrap();
    let lc = within("c takes over", wc).await.unwrap().unwrap();
    println!("transfer a -> c took {:?}", t0.elapsed());
    assert_eq!(lc.id(), "c");
    assert!(lc.term() > term_a);
    assert!(!wb.is_finished(), "b did not slip in");
    assert_eq!(la.lost().await, LostReason::Transferred);

    // Without a taker the hand-over expires and the normal race resumes.
    let ghost = Election::new(c.bucket().clone(), "xfer", TTL).unwrap();
    tokio::select! {
        r = ghost.campaign("ghost").into_future() => panic!("ghost keeps waiting: {r:?}"),
        _ = candidates_until(&ghost, |ids| ids.iter().any(|id| id == "ghost")) => {}
    }
    // ghost's campaign was dropped, its registration lives on for one TTL.
    let t1 = Instant::now();
    lc.transfer_to("ghost").await.unwrap();
    let lb = within("b after a failed hand-over", wb)
        .await
        .unwrap()
        .unwrap();
    println!("unanswered transfer: b elected after {:?}", t1.elapsed());
    assert!(t1.elapsed() <= Duration::from_secs(2) + Duration::from_millis(1500));
    lb.resign().await.unwrap();
}

#[tokio::test]
async fn bad_input_is_refused_with_clear_errors() {
    let server = NatsServer::start().await;
    let kv = Kv::new(server.connect().await);
    let ok = kv
        .create_or_open(Election::bucket_config("el"))
        .await
        .unwrap();
    for name in ["", "a.b", "a b", "jobs>", "_kv1"] {
        let e = Election::new(ok.clone(), name, TTL).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{name:?}: {e}");
    }
    for ttl in [
        Duration::ZERO,
        Duration::from_millis(500),
        Duration::from_millis(1500),
    ] {
        let e = Election::new(ok.clone(), "x", ttl).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidTtl, "{ttl:?}: {e}");
    }
    let e = Election::builder(ok.clone(), "x")
        .ttl(TTL)
        .transfer_ttl(Duration::from_millis(300))
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidTtl, "{e}");
    let el = Election::new(ok.clone(), "x", TTL).unwrap();
    for id in ["", "a.b", "a*", "x y"] {
        let e = el.campaign(id).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{id:?}: {e}");
        println!("{e}");
    }
    let l = el.campaign("me").await.unwrap();
    for id in ["me", "", "a.b"] {
        let e = l.transfer_to(id).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{id:?}: {e}");
    }
    assert!(l.is_leader());
    l.resign().await.unwrap();
    assert_eq!(el.leader().await.unwrap(), None);
}

#[tokio::test]
async fn buckets_unfit_for_elections_are_refused() {
    let server = NatsServer::start().await;
    let kv = Kv::new(server.connect().await);
    let hist = kv
        .create_or_open(BucketConfig::new("hist").history(5).per_key_ttl(TTL))
        .await
        .unwrap();
    let e = Election::new(hist, "x", TTL)
        .unwrap()
        .campaign("a")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadBucket, "{e}");
    let plain = kv.create_or_open(BucketConfig::new("plain")).await.unwrap();
    let e = Election::new(plain, "x", TTL)
        .unwrap()
        .campaign("a")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadBucket, "{e}");
}

/// PITFALLS 1 and 16: a stalled runtime wakes up past its deadline. The leadership reports
/// loss at once and never renews late.
#[tokio::test(flavor = "current_thread")]
#[allow(clippy::disallowed_methods)] // blocking the runtime is the point of this test
async fn a_stalled_leader_reports_loss_and_never_renews_late() {
    let server = NatsServer::start().await;
    let url = server.client_url();
    let a = election(&url, "el", "stall", TTL).await;
    let l = a.campaign("a").await.unwrap();
    let health = l.health();
    let rev = l.revision();
    // Block the whole runtime past TTL − margin: no renewal can run meanwhile. The stall's
    // length against the lease's clock is what is under test.
    std::thread::sleep(TTL + Duration::from_millis(300));
    assert!(!l.is_leader(), "loss is known before any task runs");
    assert!(!health.is_ready());
    assert_eq!(l.lost().await, LostReason::Expired);
    // Whatever the server holds now, it is not a renewal sent after the stall.
    tokio::task::yield_now().await;
    match a.leader().await.unwrap() {
        None => {}
        Some(info) => assert_eq!(info.revision, rev, "renewed late"),
    }
    let e = l.fencing().put("stall.x", "late").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Lost);
    // Resigning a lost leadership is a no-op that succeeds.
    l.resign().await.unwrap();
}

/// `step_down` rotates leadership through the candidates in line order, and the leader that
/// stepped down queues again on its old registration (no new registration is written).
#[tokio::test]
async fn stepping_down_rotates_in_line_order_on_the_same_registrations() {
    let server = NatsServer::start().await;
    let url = server.client_url();
    // A long grace: the order below is the line's, not who happens to be fastest.
    let make = || async {
        let b = bucket(client(&url).await, "el").await;
        Election::builder(b, "rot")
            .ttl(Duration::from_secs(10))
            .succession_grace(Duration::from_secs(3))
            .build()
            .unwrap()
    };
    let (a, b, c) = (make().await, make().await, make().await);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let spawn = |campaign: kvtk_leader::Campaign| {
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(campaign.await.unwrap());
        })
    };
    let mut leader = within("a elected", a.campaign("a")).await.unwrap();
    for (id, e) in [("b", &b), ("c", &c)] {
        spawn(e.campaign(id));
        candidates_until(&a, |ids| ids.iter().any(|x| x == id)).await;
    }
    let origins = || async {
        let mut out = Vec::new();
        for id in ["a", "b", "c"] {
            let e = a
                .bucket()
                .get(format!("rot.cand.{id}"))
                .await
                .unwrap()
                .unwrap();
            out.push(e.lease().unwrap().origin());
        }
        out
    };
    let before = origins().await;
    let mut order = Vec::new();
    for _ in 0..6 {
        let term = leader.term();
        spawn(leader.step_down().await);
        leader = within("next leader", rx.recv()).await.unwrap();
        assert!(leader.term() > term, "terms increase");
        order.push(leader.id().to_string());
    }
    assert_eq!(order, ["b", "c", "a", "b", "c", "a"]);
    assert_eq!(origins().await, before, "nobody registered again");
    leader.resign().await.unwrap();
}

#[tokio::test]
async fn without_a_ttl_the_lease_is_the_single_server_default() {
    let server = NatsServer::start().await;
    let b = bucket(client(server.client_url()).await, "el").await;
    let el = Election::builder(b, "svc").build().unwrap();
    let leader = within("c0 to lead", el.campaign("c0")).await.unwrap();
    assert_eq!(
        el.lease_config().ttl().as_duration(),
        kvtk_leader::DEFAULT_TTL
    );
    leader.resign().await.unwrap();
}
