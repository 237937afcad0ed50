//! Metric 3: contended hand-off (release acknowledged → next holder acquired) with 2, 8, 32
//! and 64 clients looping acquire → release on one lock.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use kvtk_core::{BucketConfig, Kv};
use kvtk_locks::Locks;
use serde_json::json;

use crate::harness::contended::{finish, finish_with, Outcome, Shared};
use crate::harness::stats::{Report, Row};
use crate::harness::wire::WriteCounter;
use crate::harness::{with, BoxError, Env, Sync};
use crate::systems::jetstream::{raw_headers, raw_write};

pub(crate) const METRIC: &str = "lock_handoff";
pub(crate) const WAITERS: [usize; 4] = [2, 8, 32, 64];
pub(crate) const TTL_S: u64 = 10;
pub(crate) const FLOOR: &str = "raw JetStream floor (watch + CAS herd)";
pub(crate) const TOOLKIT: &str = "toolkit (kvtk-locks)";
pub(crate) const ETCD: &str = "etcd Lock service";
pub(crate) const REDIS: &str = "redis Redlock (rslock retry loop)";

/// (target hand-offs, time limit) of one run.
pub(crate) fn budget(env: &Env, slow: bool) -> (u64, Duration) {
    if slow {
        (
            env.size.pick(60, 400),
            Duration::from_secs(env.size.pick(3, 20)),
        )
    } else {
        (
            env.size.pick(400, 3000),
            Duration::from_secs(env.size.pick(3, 20)),
        )
    }
}

pub(crate) fn push(
    report: &mut Report,
    system: &str,
    cfg: serde_json::Value,
    waiters: usize,
    o: &Outcome,
) {
    let cfg = with(cfg, json!({ "waiters": waiters }));
    report.push(Row::new(METRIC, system, &o.lat, cfg).extra(o.extra()));
}

pub(crate) async fn run(env: &Env, report: &mut Report) -> Result<(), BoxError> {
    let sync = Sync::Default;
    for w in waiters_override().unwrap_or(WAITERS.to_vec()) {
        env.progress(&format!("metric 3: raw JetStream floor, {w} waiters"));
        let o = raw_floor(env, sync, w).await?;
        push(report, FLOOR, env.nats_config(sync, Some(TTL_S)), w, &o);
        env.progress(&format!("metric 3: kvtk-locks, {w} waiters"));
        let o = toolkit(env, sync, w).await?;
        push(report, TOOLKIT, env.nats_config(sync, Some(TTL_S)), w, &o);
    }
    #[cfg(feature = "etcd")]
    if env.etcd.is_some() {
        for w in waiters_override().unwrap_or(WAITERS.to_vec()) {
            env.progress(&format!("metric 3: etcd Lock service, {w} waiters"));
            let (target, limit) = budget(env, true);
            let o = crate::systems::etcd::handoff(env, w, target, limit, TTL_S).await?;
            push(report, ETCD, env.etcd_config(Some(TTL_S)), w, &o);
        }
    }
    #[cfg(feature = "redis")]
    if env.redis.is_some() {
        for w in [2, 8] {
            env.progress(&format!("metric 3: redis Redlock, {w} waiters"));
            let (target, limit) = budget(env, true);
            let o = crate::systems::redis::handoff(env, w, target, limit, TTL_S).await?;
            push(report, REDIS, env.redis_config(Some(TTL_S)), w, &o);
        }
    }
    Ok(())
}

/// The fewest requests a watching waiter can get by with: every waiter watches the lock key;
/// on a tombstone it tries one conditional write expecting the tombstone's revision (with the
/// TTL); the winner releases with a conditional delete. Every waiter races every release.
async fn raw_floor(env: &Env, sync: Sync, waiters: usize) -> Result<Outcome, BoxError> {
    let url = env.url(sync);
    let kv = Kv::connect(&url).await?;
    let name = format!("bench_handoff_floor_{waiters}");
    let bucket = kv
        .create_or_open(
            BucketConfig::new(&name)
                .history(1)
                .per_key_ttl(Duration::from_secs(1)),
        )
        .await?;
    // A tombstone to start from, so every watcher sees "free" at once.
    let r = bucket.put("lock", "init").await?;
    bucket.delete("lock").revision(r).await?;

    let shared = Shared::new(waiters);
    let mut tasks = Vec::new();
    let mut ready = Vec::new();
    for id in 0..waiters {
        let client = async_nats::connect(&url).await?;
        let store = async_nats::jetstream::new(client.clone())
            .get_key_value(&name)
            .await?;
        let subject = format!("$KV.{name}.lock");
        let shared = shared.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        ready.push(rx);
        let (go_tx, go_rx) = tokio::sync::watch::channel(false);
        tasks.push((
            go_tx,
            tokio::spawn(async move {
                let Ok(mut w) = store.watch_with_history("lock").await else {
                    return;
                };
                let _ = tx.send(());
                let mut go = go_rx;
                let _ = go.wait_for(|g| *g).await;
                while let Some(Ok(e)) = w.next().await {
                    if e.operation == async_nats::jetstream::kv::Operation::Put {
                        continue;
                    }
                    shared.cas.fetch_add(1, Ordering::Relaxed);
                    let got = raw_write(
                        &client,
                        subject.clone(),
                        raw_headers(e.revision, Some(TTL_S), false),
                        Bytes::from_static(b"holder"),
                    )
                    .await;
                    let Ok(rev) = got else { continue };
                    shared.acquired(id);
                    shared.tracker.releasing();
                    if raw_write(
                        &client,
                        subject.clone(),
                        raw_headers(rev, None, true),
                        Bytes::new(),
                    )
                    .await
                    .is_err()
                    {
                        return;
                    }
                    shared.tracker.released(Instant::now());
                }
            }),
        ));
    }
    for r in ready {
        let _ = r.await;
    }
    let started = Instant::now();
    let mut handles = Vec::new();
    for (go, t) in tasks {
        let _ = go.send(true);
        handles.push((go, t));
    }
    let (target, limit) = budget(env, false);
    let (gos, handles): (Vec<_>, Vec<_>) = handles.into_iter().unzip();
    let o = finish(&shared, handles, started, target, limit, true).await;
    drop(gos);
    kv.delete_bucket(&name).await?;
    Ok(o)
}

/// Metric 3: `waiters` clients, each with its own connection and `Locks`, loop lock → release.
async fn toolkit(env: &Env, sync: Sync, waiters: usize) -> Result<Outcome, BoxError> {
    let url = env.url(sync);
    let bucket = format!("bench_handoff_kit_{waiters}");
    let monitor = Kv::connect(&url).await?;
    let wire = WriteCounter::start(monitor.client(), &bucket).await?;
    let shared = Shared::new(waiters);
    let ttl = Duration::from_secs(TTL_S);
    let mut all = Vec::new();
    for _ in 0..waiters {
        let kv = Kv::connect(&url).await?;
        all.push(Locks::open(&kv, &bucket).await?);
    }
    let before: u64 = all.iter().map(|l| l.stats().acquire_writes).sum();
    let wire_before = wire.mark().await?.total().cas;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (id, locks) in all.iter().enumerate() {
        let m = locks.mutex("contended")?;
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok(g) = m.lock().ttl(ttl).await else {
                    return;
                };
                shared.acquired(id);
                shared.tracker.releasing();
                if g.release().await.is_err() {
                    return;
                }
                shared.tracker.released(Instant::now());
            }
        }));
    }
    let (target, limit) = budget(env, false);
    // Count writes up to the moment the hand-offs are counted: the clients keep looping
    // while the run winds down, and those writes belong to no counted hand-off.
    let at_end = std::sync::Mutex::new(None);
    let mut o = finish_with(&shared, tasks, started, target, limit, false, async {
        let acq: u64 = all.iter().map(|l| l.stats().acquire_writes).sum();
        let w = wire.mark().await.ok().map(|c| c.total().cas);
        *at_end.lock().unwrap_or_else(|e| e.into_inner()) = Some((acq, w));
    })
    .await;
    let (acq, w) = at_end
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .ok_or("hand-off run ended without counting")?;
    o.cas = Some(acq.saturating_sub(before));
    o.wire_cas = w.map(|w| w.saturating_sub(wire_before));
    for l in &all {
        l.shutdown().await;
    }
    monitor.delete_bucket(&bucket).await?;
    Ok(o)
}

/// The row of `system` at `waiters` clients.
fn row<'a>(report: &'a Report, system: &str, waiters: u64) -> Option<&'a Row> {
    report
        .rows
        .iter()
        .find(|r| r.metric == METRIC && r.system == system && r.config["waiters"] == waiters)
}

pub(crate) fn ratios(report: &mut Report) {
    let p50 = |sys: &str, waiters: u64| row(report, sys, waiters).map(|r| r.p50_us);
    let p99 = |sys: &str, waiters: u64| row(report, sys, waiters).map(|r| r.p99_us);
    let div = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
    let ours_p50_64 = p50(TOOLKIT, 64);
    let ratios = [
        ("handoff_p50_us_64", ours_p50_64, "<=", 1000.0,
         "kvtk-locks, 64 clients on one mutex: p50 of release acked → next holder acquired, nats default sync (µs)"),
        ("handoff_p99_us_64", p99(TOOLKIT, 64), "<=", 5000.0,
         "kvtk-locks, 64 clients: p99 of the hand-off (µs)"),
        ("cas_per_handoff_64",
         row(report, TOOLKIT, 64).and_then(|r| r.extra["cas_per_handoff"].as_f64()), "<=", 2.0,
         "kvtk-locks, 64 clients: conditional writes that try to take the lock (kvtk-locks' acquire-write counter; a subscriber on the bucket's subjects counts the same writes on the wire, wire_cas_per_handoff) per hand-off, releases and renewals excluded"),
        ("handoff_64_vs_2_p50", div(ours_p50_64, p50(TOOLKIT, 2)), "<=", 1.5,
         "kvtk-locks hand-off p50 with 64 clients / with 2 clients, same run, nats default sync: the cost does not grow with the queue"),
        ("handoff_vs_herd_floor_p50_64", div(ours_p50_64, p50(FLOOR, 64)), "<=", 0.5,
         "p50 hand-off with 64 clients: kvtk-locks / the raw watch + CAS herd (every waiter watches the key and races one conditional write per release), same server, nats default sync"),
        ("etcd_handoff_vs_ours_p99_8", div(p99(ETCD, 8), p99(TOOLKIT, 8)), ">=", 20.0,
         "p99 hand-off with 8 clients: etcd Lock service (fsync every write) / kvtk-locks (nats default sync); etcd's next waiter usually returns with the unlock acknowledgement, but its tail waits for the ~100 ms unsynced-watcher sweep"),
    ];
    for (name, value, direction, goal, pairing) in ratios {
        report.ratio(name, value, direction, goal, pairing);
    }
}

/// `KV_BENCH_WAITERS=64` runs only those client counts (for investigating one case).
fn waiters_override() -> Option<Vec<usize>> {
    let v = std::env::var("KV_BENCH_WAITERS").ok()?;
    Some(v.split(',').filter_map(|x| x.parse().ok()).collect())
}
