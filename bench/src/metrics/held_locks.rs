//! Metric 7: one process holds many kvtk-locks at TTL 10 s for a while: memory per held lock,
//! renewal writes and CPU, and locks lost — with a lease per lock and with every lock bound to
//! one session (`Locks::bind_to_session`). Each run is a fresh child process that does nothing
//! else, so that its memory is the locks' alone; memory is counted by the allocator (heap
//! bytes) and read from the kernel (resident memory).

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

/// How the held locks keep their entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A lease per lock, renewed every TTL/3.
    Lease,
    /// Every lock bound to one session.
    Session,
}

impl Mode {
    fn tag(self) -> &'static str {
        match self {
            Mode::Lease => "lease",
            Mode::Session => "session",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Mode, BoxError> {
        match s {
            "lease" => Ok(Mode::Lease),
            "session" => Ok(Mode::Session),
            other => Err(format!("unknown mode {other:?}").into()),
        }
    }
}

/// Metric 7, in a child process of its own so that its memory is the locks' alone: holds
/// `n` locks at the default TTL of a single server (10 s) for `secs` in `mode`, prints one
/// JSON line.
pub(crate) async fn hold(url: &str, n: usize, secs: u64, mode: Mode) -> Result<(), BoxError> {
    let kv = Kv::connect(url).await?;
    let locks = Locks::open(&kv, &format!("bench_scale_{}", mode.tag())).await?;
    let locks = match mode {
        Mode::Lease => locks,
        Mode::Session => locks.bind_to_session(),
    };
    // The first acquisition also makes the session, which is not a held lock's cost.
    locks.mutex("warm")?.lock().await?.release().await?;
    let (rss0, heap0) = (rss_bytes(), heap_bytes());
    let t_acq = Instant::now();
    let mutexes: Vec<_> = (0..n)
        .map(|i| locks.mutex(&format!("held.l{i}")))
        .collect::<Result<_, _>>()?;
    let guards: Vec<_> =
        futures::stream::iter(mutexes.iter().map(|m| async move { m.lock().await }))
            .buffer_unordered(256)
            .collect()
            .await;
    let acquire_s = t_acq.elapsed().as_secs_f64();
    // Sized once: the growth slack of a doubling vector is the harness's, not a lock's.
    let mut held = Vec::with_capacity(n);
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
    let renewals0 = locks.stats().renewals;
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
    let renewals = locks.stats().renewals - renewals0;
    let rss2 = rss_bytes();
    futures::stream::iter(held.into_iter().map(|g| g.release()))
        .buffer_unordered(256)
        .for_each(|_| async {})
        .await;
    println!(
        "{}",
        json!({
            "locks": n,
            "mode": mode.tag(),
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
            "renewal_writes_per_s": renewals as f64 / hold_s,
            "losses": lost + failed,
        })
    );
    locks.shutdown().await;
    Ok(())
}

/// The child role that holds the locks.
pub(crate) const CHILD: &str = "held-locks";

/// (locks, seconds held, mode) of the child runs: 10,000 locks with a lease each and bound
/// to a session (memory and renewal writes per held lock, side by side), then many more
/// bound to a session.
fn runs(env: &Env) -> [(usize, u64, Mode); 3] {
    let secs = env.size.pick(20, 60);
    let many = env.size.pick(100_000, 1_000_000);
    [
        (10_000, secs, Mode::Lease),
        (10_000, secs, Mode::Session),
        (many, secs, Mode::Session),
    ]
}

/// Metric 7: runs the children one after the other and records what they printed.
pub(crate) async fn run(env: &Env, report: &mut Report) -> Result<(), BoxError> {
    let sync = Sync::Default;
    for (n, secs, mode) in runs(env) {
        env.progress(&format!(
            "metric 7: one client holding {n} locks ({}) at TTL 10 s for {secs} s",
            mode.tag()
        ));
        let args = [
            env.url(sync),
            n.to_string(),
            secs.to_string(),
            mode.tag().into(),
        ];
        let limit = Duration::from_secs(secs + 300 + n as u64 / 1000);
        let v = child::run_json(CHILD, &args, limit).await?;
        let cfg = with(
            env.nats_config(sync, Some(10)),
            json!({ "locks": n, "hold_s": secs, "mode": mode.tag() }),
        );
        let name = format!("scale_{}k_locks_{}", n / 1000, mode.tag());
        let mut row = Row::new(&name, "toolkit (kvtk-locks)", &Lat::new(), cfg).extra(v.clone());
        row.hist = None;
        report.push(row);
        ratios(report, n, secs, mode, &v);
    }
    Ok(())
}

/// The same-run figures of one child's line `v`.
fn ratios(report: &mut Report, n: usize, secs: u64, mode: Mode, v: &serde_json::Value) {
    let held = format!("{n} locks held by one process for {secs} s at TTL 10 s");
    match (n, mode) {
        (10_000, Mode::Lease) => report.ratio(
            "renewal_writes_per_s_10k_held_lease",
            v["renewal_writes_per_s"].as_f64(),
            ">=",
            0.0,
            format!("the reference of renewal_writes_per_s_10k_held (no goal of its own): renewal writes per second with a lease per lock, {held}"),
        ),
        (10_000, Mode::Session) => {
            report.ratio(
                "renewal_writes_per_s_10k_held",
                v["renewal_writes_per_s"].as_f64(),
                "<=",
                1.0,
                format!("renewal writes per second (the lease keeper's count) with every lock bound to one session, {held}"),
            );
            report.ratio(
                "bytes_per_held_lock",
                v["heap_bytes_per_held_lock"].as_f64(),
                "<=",
                512.0,
                "(heap bytes with 10,000 locks held − before) / 10,000, bound to one session, counted by the allocator of a fresh process that runs only this (one kvtk-locks client, TTL 10 s, handles included); the resident-memory difference, which depends on what the allocator keeps, is rss_bytes_per_held_lock in the row; with a lease per lock: the row scale_10k_locks_lease",
            );
        }
        (_, Mode::Session) => report.ratio(
            &format!("losses_{}", count_tag(n)),
            v["losses"].as_f64(),
            "<=",
            0.0,
            format!("locks lost (Guard::is_held false at any 1 s check, or never acquired) among {n} bound to one session, {held}; resident memory in the row (rss_held)"),
        ),
        _ => {}
    }
}

/// `100k`, `1m`.
fn count_tag(n: usize) -> String {
    if n >= 1_000_000 {
        format!("{}m", n / 1_000_000)
    } else {
        format!("{}k", n / 1000)
    }
}
