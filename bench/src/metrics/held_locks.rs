//! Metric 7: one process holds many kvtk-locks at TTL 10 s for a while: memory per held lock,
//! renewal CPU, and locks lost. Each run is a fresh child process that does nothing else, so that
//! its memory is the locks' alone; memory is counted by the allocator (heap bytes) and read
//! from the kernel (resident memory).

use std::time::{Duration, Instant};

use futures::StreamExt;
use kvtk_core::Kv;
use kvtk_locks::Locks;
use serde_json::json;

use crate::harness::child;
use crate::harness::cost::heap_bytes;
use crate::harness::process::{cpu_secs, rss_bytes};
use crate::harness::stats::{Lat, Report, Row};
use crate::harness::{with, BoxError, Env, Sync};

/// Metric 7, in a child process of its own so that its memory is the locks' alone: holds
/// `n` locks at TTL 10 s for `secs`, prints one JSON line.
pub(crate) async fn hold(url: &str, n: usize, secs: u64) -> Result<(), BoxError> {
    let kv = Kv::connect(url).await?;
    let locks = Locks::open(&kv, "bench_scale").await?;
    let m0 = locks.mutex("warm")?;
    m0.lock()
        .ttl(Duration::from_secs(10))
        .await?
        .release()
        .await?;
    let (rss0, heap0) = (rss_bytes(), heap_bytes());
    let t_acq = Instant::now();
    let mutexes: Vec<_> = (0..n)
        .map(|i| locks.mutex(&format!("held.l{i}")))
        .collect::<Result<_, _>>()?;
    let guards: Vec<_> = futures::stream::iter(
        mutexes
            .iter()
            .map(|m| async move { m.lock().ttl(Duration::from_secs(10)).await }),
    )
    .buffer_unordered(256)
    .collect()
    .await;
    let acquire_s = t_acq.elapsed().as_secs_f64();
    let mut held = Vec::new();
    let mut failed = 0;
    for g in guards {
        match g {
            Ok(g) => held.push(g),
            Err(_) => failed += 1,
        }
    }
    // Let the allocator and the renewal tasks settle before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss1, heap1) = (rss_bytes(), heap_bytes());
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    let mut lost_at_any_check = 0;
    while t0.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        lost_at_any_check = lost_at_any_check.max(held.iter().filter(|g| !g.is_held()).count());
    }
    let cpu1 = cpu_secs();
    let hold_s = t0.elapsed().as_secs_f64();
    let lost = held
        .iter()
        .filter(|g| !g.is_held())
        .count()
        .max(lost_at_any_check);
    let renewals = locks.stats().renewals;
    let rss2 = rss_bytes();
    futures::stream::iter(held.into_iter().map(|g| g.release()))
        .buffer_unordered(256)
        .for_each(|_| async {})
        .await;
    println!(
        "{}",
        json!({
            "locks": n,
            "acquire_failed": failed,
            "acquire_s": acquire_s,
            "hold_s": hold_s,
            "rss_before": rss0,
            "rss_held": rss1,
            "rss_end": rss2,
            "rss_bytes_per_held_lock": (rss1.saturating_sub(rss0)) as f64 / n as f64,
            "heap_bytes_per_held_lock": (heap1 - heap0) as f64 / n as f64,
            "cpu_s_while_holding": cpu1 - cpu0,
            "cpu_percent_while_holding": (cpu1 - cpu0) / hold_s * 100.0,
            "renewals": renewals,
            "losses": lost + failed,
        })
    );
    locks.shutdown().await;
    Ok(())
}

/// The child role that holds the locks.
pub(crate) const CHILD: &str = "held-locks";

/// (locks, seconds held) of the child runs: 10,000 locks (memory per held lock, as before),
/// then 100,000.
fn runs(env: &Env) -> [(usize, u64); 2] {
    let secs = env.size.pick(20, 60);
    [(10_000, secs), (100_000, secs)]
}

/// Metric 7: runs the children one after the other and records what they printed.
pub(crate) async fn run(env: &Env, report: &mut Report) -> Result<(), BoxError> {
    let sync = Sync::Default;
    for (n, secs) in runs(env) {
        env.progress(&format!(
            "metric 7: one client holding {n} locks at TTL 10 s for {secs} s"
        ));
        let args = [env.url(sync), n.to_string(), secs.to_string()];
        let v = child::run_json(CHILD, &args, Duration::from_secs(secs + 300)).await?;
        let cfg = with(
            env.nats_config(sync, Some(10)),
            json!({ "locks": n, "hold_s": secs }),
        );
        let mut row = Row::new(
            &format!("scale_{}k_locks", n / 1000),
            "toolkit (kvtk-locks)",
            &Lat::new(),
            cfg,
        )
        .extra(v.clone());
        row.hist = None;
        report.push(row);
        if n == 10_000 {
            report.ratio(
                "bytes_per_held_lock",
                v["heap_bytes_per_held_lock"].as_f64(),
                "<=",
                1024.0,
                "(heap bytes with 10,000 locks held − before) / 10,000, counted by the allocator of a fresh process that runs only this (one kvtk-locks client, TTL 10 s, handles included); the resident-memory difference, which depends on what the allocator keeps, is rss_bytes_per_held_lock in the row",
            );
        }
        report.ratio(
            &format!("losses_{}k", n / 1000),
            v["losses"].as_f64(),
            "<=",
            0.0,
            format!("locks lost (Guard::is_held false at any 1 s check, or never acquired) among {n} held by one process for {secs} s at TTL 10 s"),
        );
    }
    Ok(())
}
