//! Metric r3: does a healthy lock holder on an R3 bucket, at default settings, keep its lock
//! when the stream leader is killed? A 3-node cluster (the kvtk-tests kit), one mutex held by
//! a client connected to all nodes; each round kills the stream leader, waits for a new one,
//! restarts the killed node and waits until the holder has renewed through the new leader
//! (or lost the lock). Counted: losses, and how long the stream had no leader.

use std::time::{Duration, Instant};

use kvtk_core::{BucketConfig, Kv};
use kvtk_locks::{Guard, LeaseConfig, Locks, DEFAULT_MARKER_TTL};
use kvtk_tests::NatsCluster;
use serde_json::json;

use crate::harness::stats::{Lat, Report, Row};
use crate::harness::{BoxError, Env};

pub(crate) const METRIC: &str = "r3_leader_kill_under_held_lock";
const BUCKET: &str = "bench_r3";
const STREAM: &str = "KV_bench_r3";
/// Longer than any stream-leader election seen (5.8–9.7 s), with room for a restart.
const LEADER_WAIT: Duration = Duration::from_secs(40);

pub(crate) async fn run(env: &Env, report: &mut Report) -> Result<(), BoxError> {
    let kills = env.size.pick(3, 20);
    env.progress(&format!(
        "metric r3: {kills} stream-leader kills under a held lock, R3, default lease"
    ));
    let mut cluster = NatsCluster::start().await;
    let kv = Kv::new(cluster.connect().await);
    let bucket = kv
        .create_or_open(
            BucketConfig::new(BUCKET)
                .replicas(3)
                .history(1)
                .per_key_ttl(DEFAULT_MARKER_TTL)
                .atomic_batches(true),
        )
        .await?;
    let locks = Locks::new(bucket).await?;
    let mutex = locks.mutex("held")?;
    let mut guard = mutex.lock().await?;
    let lease = locks.default_lease();
    let ttl = lease.ttl().as_duration();
    let (mut losses, mut outage) = (0u64, Lat::new());
    for round in 0..kills {
        let leader = cluster
            .wait_stream_leader(STREAM, LEADER_WAIT)
            .await
            .ok_or("no stream leader")?;
        let rev = guard.lease().revision();
        let killed_at = Instant::now();
        cluster.kill_node(leader);
        cluster
            .wait_stream_leader(STREAM, LEADER_WAIT)
            .await
            .ok_or_else(|| format!("round {round}: no new stream leader"))?;
        outage.record(killed_at.elapsed());
        cluster.restart_node(leader).await;
        if !renewed_after(&guard, rev, lease).await {
            losses += 1;
            env.progress(&format!(
                "metric r3: round {round}: the holder lost the lock"
            ));
            drop(guard);
            guard = mutex.lock().await?;
        }
    }
    let cfg = json!({ "replicas": 3, "kills": kills, "lease_ttl_s": ttl.as_secs() });
    report.push(
        Row::new(METRIC, "toolkit (kvtk-locks)", &outage, cfg).extra(json!({
            "losses": losses,
            "latency": "stream leader killed → a new stream leader named (polled)",
        })),
    );
    let name = "r3_spurious_losses_20";
    if kills >= 20 {
        report.ratio(
            name,
            Some(losses as f64),
            "<=",
            0.0,
            "kvtk-locks on an R3 bucket at default settings: locks lost by a healthy holder over 20 kills of the stream leader (each followed by a restart and a renewal through the new leader)",
        );
    } else {
        report.missing(format!("{name}: a quick run kills the leader {kills} times (losses: {losses}); the full run kills it 20 times"));
    }
    guard.release().await?;
    locks.shutdown().await;
    Ok(())
}

/// Whether the holder renewed past revision `rev` (so through the new stream leader) before
/// losing the lock: waits up to one renewal interval plus two stream-leader elections.
async fn renewed_after(guard: &Guard, rev: kvtk_core::Revision, lease: LeaseConfig) -> bool {
    let limit = lease.renew_every() + kvtk_core::lease::STREAM_LEADER_ELECTION * 2;
    let renewed = async {
        while guard.lease().revision() <= rev {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        _ = guard.lost() => false,
        _ = tokio::time::sleep(limit) => false,
        _ = renewed => guard.is_held(),
    }
}
