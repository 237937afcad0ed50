//! Metric 8: the writes an election costs with 50 kvtk-leader candidates. Each candidate (own
//! connection, own `Election` handle) campaigns; whoever wins steps down at once
//! (`Leadership::step_down`: resign and campaign again on the same registration), so every
//! term is a graceful failover with 49 others waiting. A subscriber on the
//! bucket's subjects counts every write the candidates send — attempts to take the leader key
//! (won or lost), resignations, candidate registrations and renewals — whatever the library
//! counts itself. Runs in a child process of its own, like metric 7.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvtk_core::Kv;
use kvtk_leader::Election;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::harness::child;
use crate::harness::stats::{Handoff, Lat, Report, Row};
use crate::harness::wire::{WriteCounter, Writes};
use crate::harness::{with, BoxError, Env, Sync};

pub(crate) const METRIC: &str = "election_writes_per_term";
pub(crate) const TOOLKIT: &str = "toolkit (kvtk-leader)";
pub(crate) const CANDIDATES: usize = 50;
const TTL_S: u64 = 10;
const BUCKET: &str = "bench_elect_herd";
/// Terms before counting starts: all candidates registered and watching.
const WARM_TERMS: usize = 5;

/// Starts the candidates; each reports its wins on `won` and hands its tracker the resigns.
async fn candidates(
    url: &str,
    name: &str,
    tracker: &Arc<Handoff>,
    won: &mpsc::UnboundedSender<()>,
) -> Result<(JoinSet<()>, Vec<Election>), BoxError> {
    let mut set = JoinSet::new();
    let mut elections = Vec::new();
    for id in 0..CANDIDATES {
        let bucket = Kv::connect(url).await?.open(BUCKET).await?;
        let e = Election::new(bucket, name, Duration::from_secs(TTL_S))?;
        elections.push(e.clone());
        let (tracker, won) = (tracker.clone(), won.clone());
        set.spawn(async move {
            let mut campaign = e.campaign(format!("c{id}"));
            while let Ok(leadership) = campaign.await {
                tracker.acquired(Instant::now());
                if won.send(()).is_err() {
                    return;
                }
                tracker.releasing();
                campaign = leadership.step_down().await;
                tracker.released(Instant::now());
            }
        });
    }
    Ok((set, elections))
}

/// Writes to the whole bucket and to the leader key so far.
async fn snapshot(wire: &WriteCounter, leader_key: &str) -> Result<(Writes, Writes), BoxError> {
    let c = wire.mark().await?;
    Ok((c.total(), c.key(leader_key)))
}

/// The child role that runs metric 8.
pub(crate) const CHILD: &str = "election-herd";

/// Metric 8, in a child process of its own (as metric 7's held locks): in a full run the
/// other metrics' leftovers (tasks, connections, allocator state) slowed its terms, and with
/// them its renewals per term, from 2.1 to 3.3 writes per term. Prints one JSON line.
pub(crate) async fn herd(url: &str, terms: usize) -> Result<(), BoxError> {
    let kv = Kv::connect(url).await?;
    kv.create_or_open(Election::bucket_config(BUCKET)).await?;
    let wire = WriteCounter::start(kv.client(), BUCKET).await?;
    let name = format!("herd{}", std::process::id());
    let tracker = Arc::new(Handoff::default());
    let (won_tx, mut won) = mpsc::unbounded_channel();
    let (set, elections) = candidates(url, &name, &tracker, &won_tx).await?;
    let leader_key = elections
        .first()
        .map(|e| e.leader_key().to_string())
        .unwrap_or_default();
    let mut start = None;
    for term in 0..=WARM_TERMS + terms {
        tokio::time::timeout(Duration::from_secs(30), won.recv())
            .await
            .map_err(|_| format!("no leader elected within 30 s (term {term})"))?
            .ok_or("every candidate stopped")?;
        if term == WARM_TERMS {
            start = Some((snapshot(&wire, &leader_key).await?, Instant::now()));
        }
    }
    let end = snapshot(&wire, &leader_key).await?;
    let lat = tracker.lat();
    drop(set);
    for e in &elections {
        e.shutdown().await;
    }
    kv.delete_bucket(BUCKET).await?;
    let ((all0, leader0), t0) = start.ok_or("no term counted")?;
    let (all, leader) = (end.0 - all0, end.1 - leader0);
    let per_term = |x: u64| x as f64 / terms as f64;
    let out = json!({
        "writes_per_term": per_term(all.all),
        "leader_key_cas_per_term": per_term(leader.cas),
        "leader_key_removals_per_term": per_term(leader.removals),
        "other_key_writes_per_term": per_term(all.all - leader.all),
        "terms_per_s": terms as f64 / t0.elapsed().as_secs_f64(),
        "latency": "resign acknowledged → next leader elected",
        "lat_us": lat.to_json(),
    });
    println!("{out}");
    Ok(())
}

pub(crate) async fn run(env: &Env, report: &mut Report) -> Result<(), BoxError> {
    let sync = Sync::Default;
    let terms = env.size.pick(300, 1500);
    env.progress(&format!(
        "metric 8: {CANDIDATES} kvtk-leader candidates, {terms} resign failovers, in a process of their own"
    ));
    let args = [env.url(sync), terms.to_string()];
    let mut v = child::run_json(CHILD, &args, Duration::from_secs(600)).await?;
    let lat = Lat::from_json(&v["lat_us"]);
    if let Some(o) = v.as_object_mut() {
        o.remove("lat_us");
    }
    let cfg = with(
        env.nats_config(sync, Some(TTL_S)),
        json!({ "candidates": CANDIDATES, "terms": terms }),
    );
    let writes = v["writes_per_term"].as_f64();
    report.push(Row::new(METRIC, TOOLKIT, &lat, cfg).extra(v));
    report.ratio(
        "election_writes_per_term_50",
        writes,
        "<=",
        2.0,
        "kvtk-leader, 50 candidates on 50 connections in a process of their own, repeated graceful failovers (the leader steps down: resigns and campaigns again on its registration): every write the candidates send to the election's bucket, counted on the wire by a subscriber (takes won and lost, resignations, registrations, renewals) / terms; nats default sync, TTL 10 s",
    );
    Ok(())
}
