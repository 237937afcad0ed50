//! Metric 8: the writes an election costs with 50 kvtk-leader candidates. Each candidate (own
//! connection, own `Election` handle) campaigns; whoever wins steps down at once
//! (`Leadership::step_down`: resign and campaign again on the same registration), so every
//! term is a graceful failover with 49 others waiting. A subscriber on the
//! bucket's subjects counts every write the candidates send — attempts to take the leader key
//! (won or lost), resignations, candidate registrations and renewals — whatever the library
//! counts itself. Runs in a child process of its own, like metric 7, twice: with a lease
//! per registration (a step-down resigns, the next in line takes the key: two writes per
//! term), and with registrations bound to one session per candidate
//! (`ElectionBuilder::bind_to_session`: a step-down hands the key over in one write that the
//! successor takes without writing).

use std::sync::atomic::{AtomicU64, Ordering};
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
pub(crate) const TOOLKIT_BOUND: &str = "toolkit (kvtk-leader, sessions)";
pub(crate) const CANDIDATES: usize = 50;
const TTL_S: u64 = 10;
const BUCKET: &str = "bench_elect_herd";
/// Terms before counting starts: all candidates registered and watching.
const WARM_TERMS: usize = 5;

/// How the candidates hold their registrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A lease each.
    Lease,
    /// Bound to one session per candidate.
    Session,
}

impl Mode {
    pub(crate) fn parse(s: &str) -> Result<Mode, BoxError> {
        match s {
            "lease" => Ok(Mode::Lease),
            "session" => Ok(Mode::Session),
            other => Err(format!("unknown election mode {other:?}").into()),
        }
    }

    fn arg(self) -> &'static str {
        match self {
            Mode::Lease => "lease",
            Mode::Session => "session",
        }
    }
}

/// Starts the candidates; each reports its wins on `won` and hands its tracker the resigns.
async fn candidates(
    url: &str,
    name: &str,
    mode: Mode,
    tracker: &Arc<Handoff>,
    won: &mpsc::UnboundedSender<()>,
    wins: &Arc<AtomicU64>,
) -> Result<(JoinSet<()>, Vec<Election>), BoxError> {
    let mut set = JoinSet::new();
    let mut elections = Vec::new();
    for id in 0..CANDIDATES {
        let bucket = Kv::connect(url).await?.open(BUCKET).await?;
        let mut b = Election::builder(bucket, name).ttl(Duration::from_secs(TTL_S));
        if mode == Mode::Session {
            b = b.bind_to_session();
        }
        let e = b.build()?;
        elections.push(e.clone());
        let (tracker, won, wins) = (tracker.clone(), won.clone(), wins.clone());
        set.spawn(async move {
            let mut campaign = e.campaign(format!("c{id}"));
            while let Ok(leadership) = campaign.await {
                tracker.acquired(Instant::now());
                wins.fetch_add(1, Ordering::SeqCst);
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

/// Writes to the whole bucket and to the leader key so far, and the terms won so far (the
/// candidates do not wait for the counting loop, so its count of received wins lags).
async fn snapshot(
    wire: &WriteCounter,
    leader_key: &str,
    won: &AtomicU64,
) -> Result<(Writes, Writes, u64), BoxError> {
    let c = wire.mark().await?;
    Ok((c.total(), c.key(leader_key), won.load(Ordering::SeqCst)))
}

/// The child role that runs metric 8.
pub(crate) const CHILD: &str = "election-herd";

/// Metric 8, in a child process of its own (as metric 7's held locks): in a full run the
/// other metrics' leftovers (tasks, connections, allocator state) slowed its terms, and with
/// them its renewals per term, from 2.1 to 3.3 writes per term. Prints one JSON line.
pub(crate) async fn herd(url: &str, terms: usize, mode: Mode) -> Result<(), BoxError> {
    let kv = Kv::connect(url).await?;
    kv.create_or_open(Election::bucket_config(BUCKET)).await?;
    let wire = WriteCounter::start(kv.client(), BUCKET).await?;
    let name = format!("herd{}", std::process::id());
    let tracker = Arc::new(Handoff::default());
    let (won_tx, mut won) = mpsc::unbounded_channel();
    let wins = Arc::new(AtomicU64::new(0));
    let (set, elections) = candidates(url, &name, mode, &tracker, &won_tx, &wins).await?;
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
            start = Some((snapshot(&wire, &leader_key, &wins).await?, Instant::now()));
        }
    }
    let end = snapshot(&wire, &leader_key, &wins).await?;
    let lat = tracker.lat();
    drop(set);
    for e in &elections {
        e.shutdown().await;
    }
    kv.delete_bucket(BUCKET).await?;
    let ((all0, leader0, won0), t0) = start.ok_or("no term counted")?;
    let (all, leader) = (end.0 - all0, end.1 - leader0);
    let terms = end.2.saturating_sub(won0).max(1);
    let per_term = |x: u64| x as f64 / terms as f64;
    let out = json!({
        "writes_per_term": per_term(all.all),
        "leader_key_cas_per_term": per_term(leader.cas),
        "leader_key_removals_per_term": per_term(leader.removals),
        "other_key_writes_per_term": per_term(all.all - leader.all),
        "terms_counted": terms,
        "terms_per_s": terms as f64 / t0.elapsed().as_secs_f64(),
        "latency": "resign acknowledged → next leader elected",
        "lat_us": lat.to_json(),
    });
    println!("{out}");
    Ok(())
}

pub(crate) async fn run(env: &Env, report: &mut Report) -> Result<(), BoxError> {
    let terms = env.size.pick(300, 1500);
    env.progress(&format!(
        "metric 8: {CANDIDATES} kvtk-leader candidates, {terms} step-downs, in a process of their own, with a lease per registration and bound to sessions"
    ));
    for mode in [Mode::Lease, Mode::Session] {
        run_mode(env, report, terms, mode).await?;
    }
    Ok(())
}

async fn run_mode(
    env: &Env,
    report: &mut Report,
    terms: usize,
    mode: Mode,
) -> Result<(), BoxError> {
    let sync = Sync::Default;
    let args = [env.url(sync), terms.to_string(), mode.arg().to_string()];
    let mut v = child::run_json(CHILD, &args, Duration::from_secs(600)).await?;
    let lat = Lat::from_json(&v["lat_us"]);
    if let Some(o) = v.as_object_mut() {
        o.remove("lat_us");
    }
    let cfg = with(
        env.nats_config(sync, Some(TTL_S)),
        json!({ "candidates": CANDIDATES, "terms": terms, "registrations": mode.arg() }),
    );
    let writes = v["writes_per_term"].as_f64();
    let (system, name, goal, how) = match mode {
        Mode::Lease => (
            TOOLKIT,
            "election_writes_per_term_50_lease",
            0.0,
            "the reference of election_writes_per_term_50 (no goal of its own): a lease per registration, a step-down resigns and the next in line takes the key",
        ),
        Mode::Session => (
            TOOLKIT_BOUND,
            "election_writes_per_term_50",
            2.0,
            "registrations bound to one session per candidate (ElectionBuilder::bind_to_session), a step-down hands the key to the next in line in one write",
        ),
    };
    report.push(Row::new(METRIC, system, &lat, cfg).extra(v));
    let direction = if goal > 0.0 { "<=" } else { ">=" };
    report.ratio(
        name,
        writes,
        direction,
        goal,
        format!("kvtk-leader, {CANDIDATES} candidates on {CANDIDATES} connections in a process of their own, repeated graceful failovers (Leadership::step_down); {how}: every write the candidates send to the election's bucket, counted on the wire by a subscriber (takes won and lost, resignations, hand-overs, registrations, renewals of leases and sessions) / terms; nats default sync, TTL 10 s"),
    );
    Ok(())
}
