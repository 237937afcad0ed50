//! Metric 6: 8 concurrent incrementers of one counter. A naive CAS loop through kvtk-core (read,
//! conditional update, retry at once on conflict), kvtk-core's own `Counter` (the same CAS loop
//! with jittered backoff) — on 8 handles, and on one handle shared by the 8 incrementers so
//! it combines concurrent increments — and kvtk-core's server-side `Counters` (ADR-49: one
//! `Nats-Incr` request per increment, no read, no conflicts; each carries a `Nats-Msg-Id` so
//! that a lost acknowledgement is re-sent without counting twice).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kvtk_core::{BucketConfig, Kv};
use serde_json::json;

use crate::harness::stats::{Lat, Report, Row};
use crate::harness::{with, BoxError, Env, Sync};

const WORKERS: usize = 8;

struct Outcome {
    lat: Lat,
    increments: u64,
    conflicts: u64,
    secs: f64,
}

pub(crate) async fn run(env: &Env, report: &mut Report) -> Result<(), BoxError> {
    let sync = Sync::Default;
    let dur = Duration::from_secs(env.size.pick(3, 15));
    let url = env.url(sync);
    let cfg = with(
        env.nats_config(sync, None),
        json!({ "incrementers": WORKERS, "seconds": dur.as_secs() }),
    );

    env.progress("metric 6: counter, naive CAS loop through kvtk-core");
    let kv = Kv::connect(&url).await?;
    kv.create_or_open(BucketConfig::new("bench_ctr").history(1))
        .await?;
    let naive = workers(dur, &url, |kv: Kv, stop, lat| async move {
        let b = kv.open("bench_ctr").await?;
        let (mut inc, mut conf) = (0u64, 0u64);
        let mut lat_local = Lat::new();
        while !stop.load(Ordering::Relaxed) {
            let t0 = Instant::now();
            loop {
                let e = b.entry("n").await?;
                let (cur, rev) = match &e {
                    Some(e) if e.is_value() => (
                        std::str::from_utf8(e.value())?.parse::<i64>()?,
                        Some(e.revision()),
                    ),
                    _ => (0, e.as_ref().map(|e| e.revision())),
                };
                let next = Bytes::from((cur + 1).to_string());
                let w = match rev {
                    Some(r) => b.update("n", next, r).await,
                    None => b.create("n", next).await,
                };
                match w {
                    Ok(_) => break,
                    Err(e)
                        if e.is_conflict() || e.kind() == kvtk_core::ErrorKind::AlreadyExists =>
                    {
                        conf += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            lat_local.record(t0.elapsed());
            inc += 1;
        }
        lat.lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(&lat_local);
        Ok((inc, conf))
    })
    .await?;
    let b = kv.open("bench_ctr").await?;
    let stored: i64 = b
        .get("n")
        .await?
        .map(|e| String::from_utf8_lossy(e.value()).parse().unwrap_or(-1))
        .unwrap_or(0);
    push(
        report,
        "naive CAS loop (kvtk-core get+update)",
        &naive,
        &cfg,
        stored,
    );

    env.progress("metric 6: counter, kvtk-core Counter::add (CAS with backoff)");
    let toolkit = workers(dur, &url, |kv: Kv, stop, lat| async move {
        let b = kv.open("bench_ctr").await?;
        let c = b.counter("m");
        let c = &c;
        increment_until(&stop, &lat, || c.add(1)).await
    })
    .await?;
    let stored = b.counter("m").get().await?;
    push(
        report,
        "toolkit Counter::add (kvtk-core rmw)",
        &toolkit,
        &cfg,
        stored,
    );

    env.progress("metric 6: counter, kvtk-core Counter shared by the 8 incrementers (combining)");
    let shared = b.counter("c");
    let combining = workers(dur, &url, |_kv: Kv, stop, lat| {
        let c = shared.clone();
        async move {
            let c = &c;
            increment_until(&stop, &lat, || c.add(1)).await
        }
    })
    .await?;
    let stored = b.counter("c").get().await?;
    push(
        report,
        "toolkit Counter::add, one shared handle (combining)",
        &combining,
        &cfg,
        stored,
    );

    env.progress("metric 6: counter, kvtk-core Counters (server-side, ADR-49 Nats-Incr)");
    let _ = kv.counters("bench_ctr").await?.destroy().await;
    let server = workers(dur, &url, |kv: Kv, stop, lat| async move {
        let counters = kv.counters("bench_ctr").await?;
        let counters = &counters;
        increment_until(&stop, &lat, || counters.add("n", 1)).await
    })
    .await?;
    let counters = kv.counters("bench_ctr").await?;
    let stored = counters.get("n").await?;
    push(
        report,
        "toolkit Counters::add (server-side, ADR-49)",
        &server,
        &cfg,
        stored,
    );

    env.progress(
        "metric 6: counter, one Counters::add at a time (the round trip that bounds combining)",
    );
    let lone = alone(dur.min(Duration::from_secs(5)), &counters).await?;
    push(
        report,
        "toolkit Counters::add, one at a time (the round trip)",
        &lone,
        &cfg,
        counters.get("lone").await?,
    );

    env.progress("metric 6: counter, kvtk-core CounterHandle shared by the 8 incrementers (server-side, combining)");
    let hot = counters.counter("h")?;
    let server_combining = workers(dur, &url, |_kv: Kv, stop, lat| {
        let c = hot.clone();
        async move {
            let c = &c;
            increment_until(&stop, &lat, || c.add(1)).await
        }
    })
    .await?;
    let stored = hot.get().await?;
    push(
        report,
        "toolkit CounterHandle::add, one shared handle (server-side, combining)",
        &server_combining,
        &cfg,
        stored,
    );
    counters.destroy().await?;
    kv.delete_bucket("bench_ctr").await?;

    let rate = |o: &Outcome| o.increments as f64 / o.secs;
    let candidates = [
        (&server, "kvtk-core Counters (server-side, 8 connections)"),
        (
            &combining,
            "kvtk-core Counter shared by the 8 incrementers (combining)",
        ),
        (
            &server_combining,
            "kvtk-core CounterHandle shared by the 8 incrementers (server-side, combining)",
        ),
    ];
    let (best, which) = candidates
        .iter()
        .map(|(o, name)| (rate(o), *name))
        .fold((0.0, ""), |a, b| if b.0 > a.0 { b } else { a });
    report.ratio(
        "counter_speedup_8",
        (rate(&naive) > 0.0).then(|| best / rate(&naive)),
        ">=",
        10.0,
        format!("increments/s of the faster toolkit counter ({which}) / increments/s of a naive CAS loop through kvtk-core (8 incrementers on 8 connections), same server, nats default sync"),
    );
    // 8 callers that each wait for their own acknowledged value allow at most 8 increments
    // per round trip (Little's law), whatever combines them.
    let bound = WORKERS as f64 * 1e6 / lone.lat.q(0.5).max(1.0);
    report.ratio(
        "counter_bound_8",
        (rate(&naive) > 0.0).then(|| bound / rate(&naive)),
        ">=",
        0.0,
        "the reference of counter_speedup_8 (no goal of its own): the most increments/s 8 incrementers that each wait for their own acknowledged value can reach — 8 / p50 of one Counters::add at a time, measured in the same run — / increments/s of the naive CAS loop",
    );
    report.ratio(
        "counter_vs_bound_8",
        (bound > 0.0).then(|| rate(&server_combining) / bound),
        ">=",
        0.0,
        "the reference of counter_speedup_8 (no goal of its own): increments/s of the shared CounterHandle / 8 / p50 of one Counters::add at a time, same run (1.0: one round trip per batch of all 8)",
    );
    Ok(())
}

/// One caller adding to a server-side counter, one add at a time, for `dur`.
async fn alone(dur: Duration, counters: &kvtk_core::Counters) -> Result<Outcome, BoxError> {
    let mut lat = Lat::new();
    let started = Instant::now();
    while started.elapsed() < dur {
        let t0 = Instant::now();
        counters.add("lone", 1).await?;
        lat.record(t0.elapsed());
    }
    Ok(Outcome {
        increments: lat.n(),
        lat,
        conflicts: 0,
        secs: started.elapsed().as_secs_f64(),
    })
}

fn push(report: &mut Report, system: &str, o: &Outcome, cfg: &serde_json::Value, stored: i64) {
    report.push(
        Row::new("counter_increment_8", system, &o.lat, cfg.clone()).extra(json!({
            "increments_per_s": o.increments as f64 / o.secs,
            "conflicts_per_increment": o.conflicts as f64 / (o.increments.max(1)) as f64,
            "increments": o.increments,
            "final_value": stored,
            "lost_increments": o.increments as i64 - stored,
        })),
    );
}

type SharedLat = Arc<std::sync::Mutex<Lat>>;

/// Calls `increment` until `stop`, adding each call's latency to `lat`; returns
/// (increments, 0 conflicts).
async fn increment_until<F, Fut, T, E>(
    stop: &AtomicBool,
    lat: &SharedLat,
    mut increment: F,
) -> Result<(u64, u64), BoxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    let mut inc = 0u64;
    let mut lat_local = Lat::new();
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        increment().await.map_err(Into::into)?;
        lat_local.record(t0.elapsed());
        inc += 1;
    }
    lat.lock()
        .unwrap_or_else(|e| e.into_inner())
        .add(&lat_local);
    Ok((inc, 0))
}

async fn workers<F, Fut>(dur: Duration, url: &str, f: F) -> Result<Outcome, BoxError>
where
    F: Fn(Kv, Arc<AtomicBool>, SharedLat) -> Fut,
    Fut: std::future::Future<Output = Result<(u64, u64), BoxError>> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let lat: SharedLat = Arc::new(std::sync::Mutex::new(Lat::new()));
    let mut kvs = Vec::new();
    for _ in 0..WORKERS {
        kvs.push(Kv::connect(url).await?);
    }
    // Warm-up: one increment's worth of connection set-up happens before the clock starts.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for kv in kvs {
        tasks.push(tokio::spawn(f(kv, stop.clone(), lat.clone())));
    }
    tokio::time::sleep(dur).await;
    stop.store(true, Ordering::Relaxed);
    let (mut inc, mut conf) = (0, 0);
    for t in tasks {
        let (i, c) = t.await.map_err(|e| e.to_string())??;
        inc += i;
        conf += c;
    }
    let secs = started.elapsed().as_secs_f64();
    let lat = lat.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(Outcome {
        lat,
        increments: inc,
        conflicts: conf,
        secs,
    })
}
