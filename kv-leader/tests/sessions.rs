//! Elections whose registrations are bound to sessions (`ElectionBuilder::bind_to_session`)
//! against real nats-servers: a step-down is one write — a hand-over the successor takes
//! over without writing — rotating in line order; a hand-over to a candidate that left
//! (its registration or its whole session gone) is removed by the next in line, who leads;
//! a resignation cut short never grants its term again; and on a 3-node cluster with R3 buckets, contended step-downs never fail, terms only
//! grow, and observers on every node see them in order.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::time::Duration;

use futures::StreamExt as _;
use kvtk_core::lease::{Keeper, LeaseConfig, SessionId};
use kvtk_core::{Include, Kv, WatchEvent};
use kvtk_leader::{Campaign, Election, Leadership, Observed, Term};
use kvtk_tests::{within, FaultProxy, NatsCluster, NatsServer};
use tokio::sync::mpsc;

mod common;
use common::{bucket, candidates_until, client};

/// A bound election `name` in bucket `el` reached through `url`, with a long succession
/// grace so that the line's order, not speed, decides who races.
async fn bound(url: &str, name: &str) -> Election {
    let b = bucket(client(url).await, "el").await;
    Election::builder(b, name)
        .ttl(Duration::from_secs(10))
        .succession_grace(Duration::from_secs(3))
        .bind_to_session()
        .build()
        .unwrap()
}

/// Runs `campaign`, sending the leadership it wins to `tx`.
fn spawn(tx: &mpsc::UnboundedSender<Leadership>, campaign: Campaign) {
    let tx = tx.clone();
    tokio::spawn(async move {
        let _ = tx.send(campaign.await.unwrap());
    });
}

/// The number of races for the leader key the handles made.
fn races(handles: &[&Election]) -> u64 {
    handles.iter().map(|e| e.stats().cas_attempts).sum()
}

#[tokio::test]
async fn a_step_down_hands_over_in_one_write_that_the_successor_takes_without_writing() {
    let server = NatsServer::start().await;
    let url = server.client_url();
    let (a, b, c) = (
        bound(&url, "rot").await,
        bound(&url, "rot").await,
        bound(&url, "rot").await,
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut leader = within("a elected", a.campaign("a")).await.unwrap();
    for (id, e) in [("b", &b), ("c", &c)] {
        spawn(&tx, e.campaign(id));
        candidates_until(&a, |ids| ids.iter().any(|x| x == id)).await;
    }
    let raced = races(&[&a, &b, &c]);
    let mut order = Vec::new();
    for _ in 0..6 {
        let term = leader.term();
        spawn(&tx, leader.step_down().await);
        leader = within("next leader", rx.recv()).await.unwrap();
        // The leader key is the hand-over itself: its revision is the term, it names the new
        // leader, and it is bound to the new leader's session (no TTL of its own).
        let e = a
            .bucket()
            .get_from_leader("rot.leader")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.revision(), leader.term().revision());
        assert!(leader.term() > term, "terms increase");
        assert!(e.ttl().is_none());
        assert!(SessionId::bound_by(&e).is_some());
        order.push(leader.id().to_string());
    }
    assert_eq!(order, ["b", "c", "a", "b", "c", "a"]);
    assert_eq!(
        races(&[&a, &b, &c]),
        raced,
        "no successor wrote to take over"
    );
    // The adopted leadership is a leadership like any: its fenced write lands, and its
    // resignation frees the key for the next in line.
    leader.fencing().put("rot.work", "x").await.unwrap();
    leader.resign().await.unwrap();
    let next = within("the next leader after a resignation", rx.recv())
        .await
        .unwrap();
    assert_eq!(next.id(), "b");
    next.resign().await.unwrap();
}

/// A bound election with a 2 s lease reached through `url`.
async fn bound_short(url: &str) -> Election {
    let b = bucket(client(url).await, "el").await;
    Election::builder(b, "cr")
        .ttl(Duration::from_secs(2))
        .bind_to_session()
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_handed_over_leader_that_is_cut_off_loses_it_and_the_next_in_line_leads() {
    let server = NatsServer::start().await;
    let url = server.client_url();
    let pb = FaultProxy::start(&url).await;
    let (a, b, c) = (
        bound_short(&url).await,
        bound_short(&pb.url()).await,
        bound_short(&url).await,
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let leader = within("a elected", a.campaign("a")).await.unwrap();
    for (id, e) in [("b", &b), ("c", &c)] {
        spawn(&tx, e.campaign(id));
        candidates_until(&a, |ids| ids.iter().any(|x| x == id)).await;
    }
    let again = leader.step_down().await;
    let lb = within("b to take over", rx.recv()).await.unwrap();
    assert_eq!(lb.id(), "b");
    // b's process is cut off: its session expires on the server, b demotes itself first on
    // its own clock, and c (first in line now) removes the hand-over and leads.
    pb.blackhole();
    let t0 = tokio::time::Instant::now();
    within("b to lose its leadership", lb.lost()).await;
    let lost_after = t0.elapsed();
    let lc = within("c to lead", rx.recv()).await.unwrap();
    assert_eq!(lc.id(), "c");
    assert!(lc.term() > lb.term());
    assert!(lost_after <= t0.elapsed(), "b stopped before c began");
    println!(
        "b lost it after {lost_after:?}, c led after {:?}",
        t0.elapsed()
    );
    drop(again);
    lc.resign().await.unwrap();
}

/// The chain the chaos checker caught (seed 47): a leader by hand-over resigns while its
/// link is dark, and its caller's timeout cuts the resignation short; its session lives on,
/// and so — bound, without a TTL — would the leader key and its registration. Once the link
/// is back, its next campaign must lead in a **new** term, never adopt the old hand-over.
/// The code before dcb2cba granted the same term again here (term 6, then term 6).
#[tokio::test]
async fn a_resignation_cut_short_never_grants_its_term_again() {
    let server = NatsServer::start().await;
    let url = server.client_url();
    let pb = FaultProxy::start(&url).await;
    let (a, b) = (bound(&url, "rc").await, bound(&pb.url(), "rc").await);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let la = within("a elected", a.campaign("a")).await.unwrap();
    spawn(&tx, b.campaign("b"));
    candidates_until(&a, |ids| ids.iter().any(|x| x == "b")).await;
    // a hands over to b and leaves the line.
    drop(la.step_down().await);
    let lb = within("b to take over", rx.recv()).await.unwrap();
    candidates_until(&a, |ids| ids == ["b"]).await;
    let old = lb.term();
    pb.blackhole();
    let cut = tokio::time::timeout(Duration::from_millis(300), lb.resign()).await;
    assert!(cut.is_err(), "the resignation was cut short: {cut:?}");
    // Dark for longer than the deregistration's own bound (1 s on the client's clock), far
    // shorter than the session's TTL: on the old code both entries outlived the attempt
    // (with 300 ms dark, a late deregistration landed and hid the fault).
    tokio::time::sleep(Duration::from_secs(2)).await;
    pb.heal();
    spawn(&tx, b.campaign("b"));
    let again = within("b to lead again", rx.recv()).await.unwrap();
    assert!(
        again.term() > old,
        "a new term: {:?} after {old:?}",
        again.term()
    );
    again.resign().await.unwrap();
}

/// A leader hands over to `ghost`, whose registration a bare session made (nobody
/// campaigns for it); `end` ends the ghost; then `b`, next in line, must lead.
async fn hand_over_to_a_ghost(
    end: impl AsyncFnOnce(kvtk_core::lease::Session, kvtk_core::lease::Lease),
) {
    let server = NatsServer::start().await;
    let url = server.client_url();
    let (a, b) = (bound(&url, "gh").await, bound(&url, "gh").await);
    let leader = within("a elected", a.campaign("a")).await.unwrap();
    let kv = Kv::new(client(&url).await);
    let ghost_bucket = kv.open("el").await.unwrap();
    let keeper = Keeper::new(
        &ghost_bucket,
        LeaseConfig::new(Duration::from_secs(10)).unwrap(),
    )
    .unwrap();
    let session = keeper.session().await.unwrap();
    let reg = session
        .bind("gh.cand.ghost", r#"{"v":1,"id":"ghost","value":""}"#)
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn(&tx, b.campaign("b"));
    candidates_until(&a, |ids| ids.len() == 3).await;
    let again = leader.step_down().await;
    let e = a
        .bucket()
        .get_from_leader("gh.leader")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        SessionId::bound_by(&e),
        Some(session.id()),
        "handed to the ghost"
    );
    let ghost = session.id().get();
    let mut writes = a
        .bucket()
        .watch(["gh.leader"])
        .include(Include::UpdatesOnly)
        .await
        .unwrap();
    end(session, reg).await;
    let next = within("b to lead after the ghost left", rx.recv())
        .await
        .unwrap();
    assert_eq!(next.id(), "b");
    assert!(next.term().revision() > e.revision());
    let removal = loop {
        match within("the removal", writes.next()).await {
            Some(Ok(WatchEvent::Entry(e))) => break e,
            Some(Ok(_)) => continue,
            other => panic!("the watch ended: {other:?}"),
        }
    };
    let mark = removal
        .lease()
        .expect("the removal carries the hand-over's mark");
    assert_eq!(
        (removal.is_value(), mark.nonce(), mark.completed()),
        (false, ghost, false)
    );
    drop(again);
    next.resign().await.unwrap();
}

#[tokio::test]
async fn a_hand_over_whose_successor_deregistered_is_removed_and_the_next_in_line_leads() {
    hand_over_to_a_ghost(async |session, reg| {
        reg.release().await.unwrap();
        std::mem::forget(session);
    })
    .await;
}

#[tokio::test]
async fn a_hand_over_whose_successors_session_ended_is_removed_and_the_next_in_line_leads() {
    hand_over_to_a_ghost(async |session, reg| {
        drop(reg);
        session.close().await.unwrap();
    })
    .await;
}

/// Step-downs contended by candidates on every node of a 3-node cluster (R3 bucket): none
/// fails, terms only grow, and an observer per node sees them in order, skipping none
/// silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contended_step_downs_bound_to_sessions_on_r3() {
    let cluster = NatsCluster::start().await;
    let setup = Kv::new(client(cluster.client_urls()).await).with_timeout(Duration::from_secs(15));
    setup
        .create_or_open(Election::bucket_config("sr").replicas(3))
        .await
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..6 {
        let kv = Kv::new(cluster.node_client(i % 3).await).with_timeout(Duration::from_secs(15));
        let b = kv.open("sr").await.unwrap();
        handles.push(
            Election::builder(b, "svc")
                .bind_to_session()
                .build()
                .unwrap(),
        );
    }
    let (last_tx, last) = tokio::sync::watch::channel(None::<Term>);
    let mut observers = tokio::task::JoinSet::new();
    for e in handles.iter().take(3) {
        let mut o = e.observe().await.unwrap();
        let mut last = last.clone();
        observers.spawn(async move {
            let mut seen: Vec<Term> = Vec::new();
            // Until the last term, which nobody steps down from, was seen.
            while last.borrow().is_none_or(|t| seen.last() != Some(&t)) {
                tokio::select! {
                    _ = last.changed() => {}
                    Some(Observed::Leader(l)) = o.next() => if seen.last() != Some(&l.term) {
                        seen.push(l.term);
                    },
                }
            }
            (seen, o.gaps())
        });
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    for (i, e) in handles.iter().enumerate() {
        spawn(&tx, e.campaign(format!("c{i}")));
    }
    let mut terms = Vec::new();
    for _ in 0..40 {
        let l = within("a leader", rx.recv()).await.unwrap();
        terms.push(l.term());
        spawn(&tx, l.step_down().await);
    }
    let last = within("the last leader", rx.recv()).await.unwrap();
    terms.push(last.term());
    assert!(
        terms.windows(2).all(|w| w[0] < w[1]),
        "terms grow: {terms:?}"
    );
    last_tx.send_replace(Some(last.term()));
    while let Some(r) = within("the observers", observers.join_next()).await {
        let (seen, gaps) = r.unwrap();
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "observed in order");
        let skipped = terms
            .iter()
            .filter(|t| (seen[0]..seen[seen.len() - 1]).contains(t) && !seen.contains(t))
            .count();
        assert!(
            skipped == 0 || gaps > 0,
            "{skipped} terms skipped without a gap"
        );
    }
    for e in &handles {
        e.shutdown().await;
    }
}
