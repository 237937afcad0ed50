//! The toolkit side of metrics 2, 3 and 7: kv-locks (feature `locks`).

use std::time::{Duration, Instant};

use futures::StreamExt;
use kv_core::Kv;
use kv_locks::Locks;
use serde_json::json;

use crate::common::{with, BoxError, Env, Sync, WriteCounter};
use crate::handoff::{finish_with, Outcome, Shared};
use crate::stats::{Lat, Report, Row};

/// Metric 2: lock + release of one mutex, uncontended, TTL 10 s.
pub async fn uncontended(env: &Env, sync: Sync, n: usize, warm: usize) -> Result<Lat, BoxError> {
    let kv = Kv::connect(&env.url(sync)).await?;
    let locks = Locks::open(&kv, "bench_locks").await?;
    let m = locks.mutex("uncontended")?;
    let ttl = Duration::from_secs(crate::m2_lock::TTL_S);
    let mut lat = Lat::new();
    for i in 0..warm + n {
        let t0 = Instant::now();
        let g = m.lock().ttl(ttl).await?;
        g.release().await?;
        if i >= warm {
            lat.record(t0.elapsed());
        }
    }
    locks.shutdown().await;
    Ok(lat)
}

/// Metric 3: `waiters` clients, each with its own connection and `Locks`, loop lock → release.
pub async fn handoff(env: &Env, sync: Sync, waiters: usize) -> Result<Outcome, BoxError> {
    let url = env.url(sync);
    let bucket = format!("bench_handoff_kit_{waiters}");
    let monitor = Kv::connect(&url).await?;
    let wire = WriteCounter::start(monitor.client(), &bucket).await?;
    let shared = Shared::new(waiters);
    let ttl = Duration::from_secs(crate::m3_handoff::TTL_S);
    let mut all = Vec::new();
    for _ in 0..waiters {
        let kv = Kv::connect(&url).await?;
        all.push(Locks::open(&kv, &bucket).await?);
    }
    let before: u64 = all.iter().map(|l| l.stats().acquire_writes).sum();
    let wire_before = wire.snapshot();
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
    let (target, limit) = crate::m3_handoff::budget(env, false);
    // Count writes up to the moment the hand-offs are counted: the clients keep looping
    // while the run winds down, and those writes belong to no counted hand-off.
    let at_end = std::sync::Mutex::new((0u64, 0u64));
    let after = {
        let mut o = finish_with(&shared, tasks, started, target, limit, false, async {
            let acq: u64 = all.iter().map(|l| l.stats().acquire_writes).sum();
            let w = wire.snapshot();
            *at_end.lock().unwrap_or_else(|e| e.into_inner()) = (acq, w.0);
        })
        .await;
        let (acq, w) = *at_end.lock().unwrap_or_else(|e| e.into_inner());
        o.cas = Some(acq - before);
        (o, w - wire_before.0)
    };
    for l in &all {
        l.shutdown().await;
    }
    let (mut o, wire_cas) = after;
    o.wire_cas = Some(wire_cas);
    monitor.delete_bucket(&bucket).await?;
    Ok(o)
}

/// Metric 7, in a child process of its own so that its memory is the locks' alone: holds
/// `n` locks at TTL 10 s for `secs`, prints one JSON line.
pub async fn child_scale(url: &str, n: usize, secs: u64) -> Result<(), BoxError> {
    let kv = Kv::connect(url).await?;
    let locks = Locks::open(&kv, "bench_scale").await?;
    let m0 = locks.mutex("warm")?;
    m0.lock()
        .ttl(Duration::from_secs(10))
        .await?
        .release()
        .await?;
    let rss0 = rss_bytes();
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
    let rss1 = rss_bytes();
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
            "bytes_per_held_lock": (rss1.saturating_sub(rss0)) as f64 / n as f64,
            "cpu_s_while_holding": cpu1 - cpu0,
            "cpu_percent_while_holding": (cpu1 - cpu0) / hold_s * 100.0,
            "renewals": renewals,
            "losses": lost + failed,
        })
    );
    locks.shutdown().await;
    Ok(())
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// utime + stime of this process, in seconds.
fn cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the ')'.
    let hz = 100.0; // USER_HZ on Linux
    (ticks(11) + ticks(12)) / hz
}

/// Metric 7: runs the child and records what it printed.
pub async fn scale(env: &Env, report: &mut Report) -> Result<(), BoxError> {
    let sync = Sync::Default;
    let n = 10_000usize;
    let secs = env.size.pick(20u64, 60);
    env.progress(&format!(
        "metric 7: one client holding {n} locks at TTL 10 s for {secs} s"
    ));
    let out = tokio::time::timeout(
        Duration::from_secs(secs + 120),
        tokio::process::Command::new(std::env::current_exe()?)
            .args([
                "child-scale",
                &env.url(sync),
                &n.to_string(),
                &secs.to_string(),
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim()).map_err(|e| {
        format!(
            "scale child printed {line:?} ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let cfg = with(
        env.nats_config(sync, Some(10)),
        json!({ "locks": n, "hold_s": secs }),
    );
    let mut row =
        Row::new("scale_10k_locks", "toolkit (kv-locks)", &Lat::new(), cfg).extra(v.clone());
    row.hist = None;
    report.push(row);
    report.ratio(
        "bytes_per_held_lock",
        v["bytes_per_held_lock"].as_f64(),
        "<=",
        2048.0,
        "(VmRSS with 10,000 locks held − VmRSS before) / 10,000, one kv-locks client in its own process, TTL 10 s",
    );
    report.ratio(
        "losses_10k",
        v["losses"].as_f64(),
        "<=",
        0.0,
        format!("locks lost (Guard::is_held false at any 1 s check, or never acquired) among 10,000 held for {secs} s at TTL 10 s"),
    );
    Ok(())
}
