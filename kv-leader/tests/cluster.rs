//! A 3-node cluster with an R3 election bucket: killing the node that leads the bucket's
//! stream never yields two leaders.

// Tests may unwrap: a panic is a test failure with a message.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use kvtk_core::Kv;
use kvtk_leader::{Election, Term};
use kvtk_tests::{until, within, NatsCluster};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const TTL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
struct Tenure {
    who: usize,
    term: Term,
    start: Instant,
    end: Instant,
}

/// Polls `el`'s leader key until it names a leader for which `pred` holds; returns it.
async fn leader_once(
    what: &str,
    el: &Election,
    pred: impl Fn(&kvtk_leader::LeaderInfo) -> bool,
) -> kvtk_leader::LeaderInfo {
    let found = std::cell::RefCell::new(None);
    until(what, || async {
        let l = el.leader().await.ok().flatten().filter(|l| pred(l));
        let seen = l.is_some();
        *found.borrow_mut() = l;
        seen
    })
    .await;
    found.into_inner().expect("a leader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_never_yields_two_leaders() {
    let mut cluster = NatsCluster::start().await;
    let urls = cluster.client_urls();
    // Creating an R3 stream on a freshly started cluster can take longer than the tests'
    // short request timeout: the set-up waits longer.
    let setup = Kv::new(client(urls.clone()).await).with_timeout(Duration::from_secs(15));
    setup
        .create_or_open(Election::bucket_config("el").replicas(3))
        .await
        .unwrap();

    let tenures = Arc::new(Mutex::new(Vec::<Tenure>::new()));
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut elections = Vec::new();
    for i in 0..3 {
        let b = bucket(client(urls.clone()).await, "el").await;
        let el = Election::new(b, "svc", TTL).unwrap();
        elections.push(el.clone());
        let (tenures, stop) = (tenures.clone(), stop.clone());
        tasks.spawn(async move {
            loop {
                let l = tokio::select! {
                    _ = stop.cancelled() => return,
                    l = el.campaign(format!("c{i}")) => l.unwrap(),
                };
                let start = Instant::now();
                let fencing = l.fencing();
                // Act as leader: guarded writes until lost or stopped.
                let stopped = loop {
                    tokio::select! {
                        _ = l.lost() => break false,
                        _ = stop.cancelled() => break true,
                        // The leader's pace: a guarded write every 200 ms (the workload).
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {
                            let _ = fencing.put("svc.work", format!("{i}")).await;
                        }
                    }
                };
                let end = Instant::now().min(l.deadline());
                tenures.lock().unwrap().push(Tenure {
                    who: i,
                    term: l.term(),
                    start,
                    end,
                });
                if stopped {
                    let _ = l.resign().await;
                    return;
                }
            }
        });
    }

    let observer_el = elections[0].clone();
    let first = leader_once("a first leader", &observer_el, |_| true).await;
    println!("first leader {} term {}", first.id, first.term);

    for round in 0..2 {
        let node = cluster
            .wait_stream_leader("KV_el", Duration::from_secs(20))
            .await
            .expect("a stream leader");
        let before = observer_el.leader().await.ok().flatten();
        let t0 = Instant::now();
        cluster.kill_node(node);
        // Wait for a leader with a newer term than the one before the kill, or the same
        // leader still renewing after the stream recovered.
        let after = leader_once("a leader after the kill", &observer_el, |l| {
            before
                .as_ref()
                .is_none_or(|b| l.term > b.term || l.revision > b.revision)
        })
        .await;
        println!(
            "round {round}: killed stream leader n{node}; leader {} term {} (was {:?}) after {:?}",
            after.id,
            after.term,
            before.map(|b| (b.id, b.term)),
            t0.elapsed()
        );
        cluster.restart_node(node).await;
    }

    stop.cancel();
    while let Some(r) = within("candidates stop", tasks.join_next()).await {
        r.unwrap();
    }
    let mut ts = tenures.lock().unwrap().clone();
    ts.sort_by_key(|t| t.start);
    println!(
        "tenures: {:?}",
        ts.iter().map(|t| (t.who, t.term.get())).collect::<Vec<_>>()
    );
    for w in ts.windows(2) {
        assert!(w[0].end <= w[1].start, "overlap: {:?} / {:?}", w[0], w[1]);
        assert!(w[0].term < w[1].term, "terms must increase: {w:?}");
    }
}

/// PITFALLS 33: three candidates, one per node, campaign and resign in a loop on an R3
/// bucket with no fault, while an observer on every node follows (polled as it goes, as an
/// application would): no campaign or resignation fails, terms never overlap, and every
/// observer reports terms in increasing order, all of them won terms, and skips none
/// silently (a term that began and ended before an observer's consumer reached it is
/// compacted by the bucket's history of 1 — see kvtk-core's watch docs, "Pacing" — and the
/// observer counts a gap there; how many is printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contended_campaigns_with_an_observer_per_node_on_r3() {
    let cluster = NatsCluster::start().await;
    let urls = cluster.client_urls();
    let setup = Kv::new(client(urls).await).with_timeout(Duration::from_secs(15));
    setup
        .create_or_open(Election::bucket_config("oc").replicas(3))
        .await
        .unwrap();
    let on_node = |i: usize| {
        let cluster = &cluster;
        async move {
            let kv = Kv::new(cluster.node_client(i).await);
            Election::new(kv.open("oc").await.unwrap(), "svc", TTL).unwrap()
        }
    };
    let mut observers = tokio::task::JoinSet::new();
    let stop = CancellationToken::new();
    for i in 0..3 {
        // Made with the setup timeout: creating its consumer on R3 took longer than the
        // node client's 5 s in CI at load 13.
        let kv = Kv::new(cluster.node_client(i).await).with_timeout(Duration::from_secs(15));
        let election = Election::new(kv.open("oc").await.unwrap(), "svc", TTL).unwrap();
        let mut observer = election.observe().await.unwrap();
        let stop = stop.clone();
        observers.spawn(async move {
            let mut terms: Vec<Term> = Vec::new();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return (terms, observer.gaps()),
                    Some(o) = observer.next() => if let kvtk_leader::Observed::Leader(l) = o {
                        if terms.last() != Some(&l.term) {
                            terms.push(l.term);
                        }
                    },
                }
            }
        });
    }
    let mut candidates = tokio::task::JoinSet::new();
    for i in 0..3 {
        let el = on_node(i).await;
        candidates.spawn(async move {
            let end = Instant::now() + Duration::from_secs(6);
            let mut won = Vec::new();
            while Instant::now() < end {
                let l = el.campaign(format!("c{i}")).await.unwrap();
                won.push((l.term(), Instant::now()));
                l.resign().await.unwrap();
            }
            el.shutdown().await;
            won
        });
    }
    let mut won = Vec::new();
    while let Some(r) = within("the candidates", candidates.join_next()).await {
        won.extend(r.unwrap());
    }
    won.sort_by_key(|(_, at)| *at);
    let terms: Vec<Term> = won.iter().map(|(t, _)| *t).collect();
    assert!(
        terms.windows(2).all(|w| w[0] < w[1]),
        "terms in order of winning"
    );
    stop.cancel();
    while let Some(r) = within("the observers", observers.join_next()).await {
        let (seen, gaps) = r.unwrap();
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "observed terms in order"
        );
        assert!(
            seen.iter().all(|t| terms.contains(t)),
            "only won terms observed"
        );
        // A term skipped between two reported ones is never skipped silently.
        let (first, last) = (seen[0], seen[seen.len() - 1]);
        let skipped = terms
            .iter()
            .filter(|t| (first..last).contains(t) && !seen.contains(t));
        let skipped = skipped.count();
        assert!(
            skipped == 0 || gaps > 0,
            "{skipped} terms skipped without a gap"
        );
        println!(
            "an observer reported {} of {} terms ({skipped} skipped, {gaps} gaps)",
            seen.len(),
            terms.len()
        );
    }
}
