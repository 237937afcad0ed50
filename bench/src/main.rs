//! `kv-bench`: the toolkit against raw async-nats, etcd and Redis. Run it through
//! `scripts/bench.sh [--quick]`, which installs and starts etcd and Redis and passes their
//! endpoints in `KV_BENCH_ETCD` / `KV_BENCH_REDIS` (each `url|version`). The NATS servers (one
//! with default sync, one with `sync_interval: always`) are started here through the kv-tests
//! kit. Writes `report.json`, `report.md` and `latency.svg` to `--out` (default
//! `target/bench`).
#![allow(missing_docs, reason = "a benchmark binary, not a library")]
// Some helpers serve only the etcd and redis features, or metrics not yet wired up.
#![allow(dead_code, reason = "helpers shared with feature-gated metrics")]
#![allow(
    unreachable_pub,
    reason = "a benchmark binary: nothing outside it can reach its items"
)]

mod common;
#[cfg(feature = "etcd")]
mod etcd;
mod handoff;
mod leader;
#[cfg(feature = "locks")]
mod locks;
mod m1_core;
mod m2_lock;
mod m3_handoff;
mod m4_failover;
mod m5_config;
mod m6_counter;
#[cfg(feature = "redis")]
mod redis;
mod report;
mod stats;

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use common::{BoxError, Env, Size};
use kv_tests::NatsServer;
use stats::Report;

struct Args {
    quick: bool,
    out: PathBuf,
    only: Option<Vec<String>>,
}

fn args() -> Result<Args, BoxError> {
    let mut a = Args {
        quick: false,
        out: PathBuf::from("target/bench"),
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--quick" => a.quick = true,
            "--out" => a.out = it.next().ok_or("--out needs a directory")?.into(),
            "--only" => {
                a.only = Some(
                    it.next()
                        .ok_or("--only needs a list such as 1,6")?
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                )
            }
            "-h" | "--help" => {
                println!("kv-bench [--quick] [--out DIR] [--only 1,2,3,4,5,6,7]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    Ok(a)
}

/// `url|version` from an environment variable.
fn endpoint(var: &str) -> Option<(String, String)> {
    let v = std::env::var(var).ok().filter(|v| !v.is_empty())?;
    let (url, version) = v.split_once('|').unwrap_or((v.as_str(), "unknown"));
    Some((url.to_string(), version.to_string()))
}

fn main() -> Result<(), BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let argv: Vec<String> = std::env::args().collect();
    // Child processes of the crash tests: leaders that get SIGKILLed.
    match argv.get(1).map(String::as_str) {
        #[cfg(feature = "etcd")]
        Some("child-etcd-leader") if argv.len() == 5 => {
            let ttl: u64 = argv[4].parse()?;
            return rt.block_on(etcd::child_leader(&argv[2], &argv[3], ttl));
        }
        #[cfg(feature = "locks")]
        Some("child-scale") if argv.len() == 5 => {
            let (n, secs): (usize, u64) = (argv[3].parse()?, argv[4].parse()?);
            return rt.block_on(locks::child_scale(&argv[2], n, secs));
        }
        Some("child-nats-leader") if argv.len() == 5 => {
            let ttl: u64 = argv[4].parse()?;
            return rt.block_on(leader::child_leader(&argv[2], &argv[3], ttl));
        }
        _ => {}
    }
    rt.block_on(run())
}

async fn run() -> Result<(), BoxError> {
    let a = args()?;
    let started = Instant::now();
    let nats_default = NatsServer::builder().start().await;
    let nats_always = NatsServer::builder().sync_always().start().await;
    let nats_version = nats_default.connect().await.server_info().version.clone();
    let env = Env {
        size: Size { quick: a.quick },
        nats_default,
        nats_always,
        nats_version,
        etcd: endpoint("KV_BENCH_ETCD"),
        redis: endpoint("KV_BENCH_REDIS"),
        started,
    };
    let mut report = Report::default();
    report
        .meta
        .insert("mode".into(), json!(if a.quick { "quick" } else { "full" }));
    report.meta.insert(
        "machine".into(),
        json!(format!(
            "{} cores, {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            std::env::consts::ARCH
        )),
    );
    report
        .meta
        .insert("nats-server".into(), json!(env.nats_version));
    report.meta.insert(
        "etcd".into(),
        json!(env.etcd.as_ref().map_or("not run".into(), |e| e.1.clone())),
    );
    report.meta.insert(
        "redis".into(),
        json!(env.redis.as_ref().map_or("not run".into(), |e| e.1.clone())),
    );
    let want = |m: &str| a.only.as_ref().is_none_or(|o| o.iter().any(|x| x == m));

    let mut failures = Vec::new();
    macro_rules! metric {
        ($n:literal, $f:expr) => {
            if want($n) {
                if let Err(e) = $f.await {
                    env.progress(&format!("metric {} FAILED: {e}", $n));
                    report.missing(format!("metric {} failed: {e}", $n));
                    failures.push($n);
                }
            }
        };
    }
    metric!("1", m1_core::run(&env, &mut report));
    metric!("2", m2_lock::run(&env, &mut report));
    metric!("3", m3_handoff::run(&env, &mut report));
    metric!("4", m4_failover::run(&env, &mut report));
    metric!("5", m5_config::run(&env, &mut report));
    metric!("6", m6_counter::run(&env, &mut report));
    #[cfg(feature = "locks")]
    metric!("7", locks::scale(&env, &mut report));
    #[cfg(not(feature = "locks"))]
    if want("7") {
        report.missing(
            "metric 7 and the kv-locks rows of metrics 2 and 3: built without the `locks` feature",
        );
    }

    env.progress("ratios");
    if want("2") {
        m2_lock::ratios(&mut report);
    }
    if want("3") {
        m3_handoff::ratios(&mut report);
    }
    if want("4") {
        m4_failover::ratios(&mut report);
    }
    if want("5") {
        m5_config::ratios(&mut report);
    }

    let secs = started.elapsed().as_secs_f64();
    report
        .meta
        .insert("duration_s".into(), json!((secs * 10.0).round() / 10.0));
    report::write_all(&report, &a.out)?;
    env.progress(&format!(
        "wrote {}/report.json, report.md, latency.svg",
        a.out.display()
    ));
    Ok(())
}
