//! `kv-bench`: the toolkit against raw async-nats, etcd and Redis. Run it through
//! `scripts/bench.sh [--quick]`, which installs and starts etcd and Redis and passes their
//! endpoints in `KV_BENCH_ETCD` / `KV_BENCH_REDIS` (each `url|version`). The NATS servers (one
//! with default sync, one with `sync_interval: always`) are started here through the kvtk-tests
//! kit. Metric `ui` runs kvtk's console bench, whose path scripts/bench.sh passes in
//! `KV_BENCH_UI`. Writes `report.json`, `report.md` and `latency.svg` to `--out` (default
//! `target/bench`).
#![allow(missing_docs, reason = "a benchmark binary, not a library")]
// Some helpers serve only the etcd and redis features.
#![allow(dead_code, reason = "helpers shared with feature-gated systems")]

mod harness;
mod metrics;
mod systems;

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use harness::stats::Report;
use harness::{child, BoxError, Env, Size};
use kvtk_tests::NatsServer;
use metrics::{
    config, core_ops, counter, election_herd, failover, fanout, handoff, held_locks, lock, r3, ui,
};

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
                println!("kv-bench [--quick] [--out DIR] [--only 1,2,3,4,5,6,7,8,9,r3,ui]");
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
    if argv.get(1).map(String::as_str) == Some(child::ARG) {
        return rt.block_on(run_child(&argv[2..]));
    }
    rt.block_on(run())
}

/// `kv-bench child <role> <args>...`: see [`harness::child`].
async fn run_child(argv: &[String]) -> Result<(), BoxError> {
    let arg = |i: usize| {
        argv.get(i)
            .map(String::as_str)
            .ok_or("child: missing argument")
    };
    match arg(0)? {
        failover::CHILD => failover::lead(arg(1)?, arg(2)?, arg(3)?.parse()?).await,
        #[cfg(feature = "etcd")]
        systems::etcd::CHILD => systems::etcd::lead(arg(1)?, arg(2)?, arg(3)?.parse()?).await,
        lock::COST_CHILD => lock::cost(arg(1)?, arg(2)?.parse()?, arg(3)?.parse()?).await,
        held_locks::CHILD => {
            let mode = held_locks::Mode::parse(arg(4)?)?;
            held_locks::hold(arg(1)?, arg(2)?.parse()?, arg(3)?.parse()?, mode).await
        }
        election_herd::CHILD => {
            let mode = election_herd::Mode::parse(arg(3)?)?;
            election_herd::herd(arg(1)?, arg(2)?.parse()?, mode).await
        }
        fanout::CHILD => fanout::serve(arg(1)?, arg(2)?, arg(3)?, arg(4)?, arg(5)?.parse()?).await,
        other => Err(format!("unknown child role {other:?}").into()),
    }
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
    metric!("1", core_ops::run(&env, &mut report));
    metric!("2", lock::run(&env, &mut report));
    metric!("3", handoff::run(&env, &mut report));
    metric!("4", failover::run(&env, &mut report));
    metric!("5", config::run(&env, &mut report));
    metric!("6", counter::run(&env, &mut report));
    metric!("7", held_locks::run(&env, &mut report));
    metric!("8", election_herd::run(&env, &mut report));
    metric!("9", fanout::run(&env, &mut report));
    metric!("r3", r3::run(&env, &mut report));
    metric!("ui", ui::run(&env, &mut report));

    env.progress("ratios");
    type Ratios = fn(&mut Report);
    let ratios: [(&str, Ratios); 6] = [
        ("2", lock::ratios),
        ("3", handoff::ratios),
        ("4", failover::ratios),
        ("5", config::ratios),
        ("9", fanout::ratios),
        ("ui", ui::ratios),
    ];
    for (m, ratios) in ratios {
        if want(m) {
            ratios(&mut report);
        }
    }

    let secs = started.elapsed().as_secs_f64();
    report
        .meta
        .insert("duration_s".into(), json!((secs * 10.0).round() / 10.0));
    harness::report::write_all(&report, &a.out)?;
    env.progress(&format!(
        "wrote {}/report.json, report.md, latency.svg",
        a.out.display()
    ));
    Ok(())
}
