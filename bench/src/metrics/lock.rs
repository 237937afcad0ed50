//! Metric 2: uncontended lock acquire + release.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kvtk_core::{BucketConfig, Kv};
use kvtk_locks::Locks;

use serde_json::{json, Value};

use crate::harness::child;
use crate::harness::cost::{Meter, Tally};
use crate::harness::stats::{Lat, Report, Row};
use crate::harness::{BoxError, Env, Sync};
use crate::systems::jetstream::{raw_headers, raw_write};

pub(crate) const METRIC: &str = "lock_acquire_release";
pub(crate) const TTL_S: u64 = 10;
pub(crate) const FLOOR: &str = "raw JetStream floor (2 writes)";
pub(crate) const TOOLKIT: &str = "toolkit (kvtk-locks)";
pub(crate) const ETCD: &str = "etcd Lock/Unlock";
pub(crate) const REDIS: &str = "redis Redlock (rslock)";

pub(crate) fn sizes(env: &Env) -> (usize, usize) {
    (env.size.pick(500, 5000), env.size.pick(50, 300))
}

pub(crate) async fn run(env: &Env, report: &mut Report) -> Result<(), BoxError> {
    let (n, warm) = sizes(env);
    for sync in [Sync::Default, Sync::Always] {
        env.progress(&format!(
            "metric 2: kvtk-locks and the raw floor in alternating blocks of {BLOCK} ({})",
            sync.short()
        ));
        let lats = timed(&env.url(sync), n, warm).await?;
        let cost = if sync == Sync::Default {
            env.progress("metric 2: cost of both sides, alternating in a process of their own");
            Some(counted(env, n, warm).await?)
        } else {
            None
        };
        for ((side, system), lat) in SIDES.into_iter().zip(&lats) {
            let mut row = Row::new(METRIC, system, lat, env.nats_config(sync, Some(TTL_S)));
            if let Some(c) = &cost {
                row = row.extra(json!({ "cost": c[side] }));
            }
            report.push(row);
        }
    }
    #[cfg(feature = "etcd")]
    if env.etcd.is_some() {
        env.progress("metric 2: etcd Lock/Unlock");
        let lat = crate::systems::etcd::lock_uncontended(env, n, warm, TTL_S).await?;
        report.push(Row::new(METRIC, ETCD, &lat, env.etcd_config(Some(TTL_S))));
    }
    #[cfg(feature = "redis")]
    if env.redis.is_some() {
        env.progress("metric 2: redis Redlock");
        let lat = crate::systems::redis::lock_uncontended(env, n, warm, TTL_S).await?;
        report.push(Row::new(METRIC, REDIS, &lat, env.redis_config(Some(TTL_S))));
    }
    Ok(())
}

/// One side of metric 2, ready to run lock + release (or its two raw writes) again and again.
enum Side {
    /// kvtk-locks: a reused mutex handle, which remembers its expectation between
    /// acquisitions.
    Toolkit {
        kv: Kv,
        locks: Locks,
        m: kvtk_locks::Mutex,
    },
    /// Lock + unlock as two conditional writes on one key: acquire expects the tombstone left
    /// by the previous release (0 on the fresh key) and carries the TTL, release is a delete
    /// that expects the acquisition's revision and whose ack gives the next tombstone's
    /// revision.
    Floor {
        kv: Kv,
        client: async_nats::Client,
        subject: String,
        tomb: u64,
    },
}

const FLOOR_BUCKET: &str = "bench_lock_floor";

impl Side {
    async fn open(url: &str, toolkit: bool) -> Result<Side, BoxError> {
        let kv = Kv::connect(url).await?;
        if toolkit {
            let locks = Locks::open(&kv, "bench_locks").await?;
            let m = locks.mutex("uncontended")?;
            return Ok(Side::Toolkit { kv, locks, m });
        }
        kv.create_or_open(
            BucketConfig::new(FLOOR_BUCKET)
                .history(1)
                .per_key_ttl(Duration::from_secs(1)),
        )
        .await?;
        // The floor's own connection, as a raw async-nats user would have.
        let client = async_nats::connect(url).await?;
        let subject = format!("$KV.{FLOOR_BUCKET}.floor");
        // The key may hold a tombstone of an earlier run: start from its revision.
        let tomb = kv
            .open(FLOOR_BUCKET)
            .await?
            .get_from_leader("floor")
            .await?
            .map_or(0, |e| e.revision().get());
        Ok(Side::Floor {
            kv,
            client,
            subject,
            tomb,
        })
    }

    /// The connection the side's requests go out on.
    fn client(&self) -> &async_nats::Client {
        match self {
            Side::Toolkit { kv, .. } => kv.client(),
            Side::Floor { client, .. } => client,
        }
    }

    /// One uncontended lock + release.
    async fn op(&mut self) -> Result<(), BoxError> {
        match self {
            Side::Toolkit { m, .. } => {
                let g = m.lock().ttl(Duration::from_secs(TTL_S)).await?;
                g.release().await?;
            }
            Side::Floor {
                client,
                subject,
                tomb,
                ..
            } => {
                let rev = raw_write(
                    client,
                    subject.clone(),
                    raw_headers(*tomb, Some(TTL_S), false),
                    Bytes::from_static(b"holder"),
                )
                .await?;
                *tomb = raw_write(
                    client,
                    subject.clone(),
                    raw_headers(rev, None, true),
                    Bytes::new(),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn close(self) -> Result<(), BoxError> {
        match self {
            Side::Toolkit { locks, .. } => locks.shutdown().await,
            Side::Floor { kv, .. } => {
                kv.delete_bucket(FLOOR_BUCKET).await?;
            }
        }
        Ok(())
    }
}

/// The two sides of metric 2 as (name in the cost child's output, system), in the order
/// [`open_both`] opens them.
const SIDES: [(&str, &str); 2] = [("floor", FLOOR), ("toolkit", TOOLKIT)];

/// Operations in one block of one side before the other side's block. Short (a block takes
/// about 15 ms), so that load on the machine drifting from one moment to the next falls on
/// both sides alike: timed one after the other in long runs, the two sides' p50s moved by
/// ±25 % against each other between runs.
const BLOCK: usize = 50;

/// The floor and the toolkit side, opened and warmed up with `warm` operations each.
async fn open_both(url: &str, warm: usize) -> Result<[Side; 2], BoxError> {
    let mut sides = [Side::open(url, false).await?, Side::open(url, true).await?];
    for side in &mut sides {
        for _ in 0..warm {
            side.op().await?;
        }
    }
    Ok(sides)
}

async fn close_both(sides: [Side; 2]) -> Result<(), BoxError> {
    for side in sides {
        side.close().await?;
    }
    Ok(())
}

/// The blocks of an alternating run, as (side index, operations): `n` operations per side
/// in blocks of [`BLOCK`], the side that opens each pair alternating (floor, toolkit,
/// toolkit, floor, ...) so that neither always runs right after the other.
fn blocks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n.div_ceil(BLOCK)).flat_map(move |b| {
        let ops = BLOCK.min(n - b * BLOCK);
        let first = b % 2;
        [(first, ops), (1 - first, ops)]
    })
}

/// Metric 2's latency, `[floor, toolkit]`: both sides open in this process, `warm`
/// operations each, then `n` timed ones each in alternating blocks.
async fn timed(url: &str, n: usize, warm: usize) -> Result<[Lat; 2], BoxError> {
    let mut sides = open_both(url, warm).await?;
    let mut lats = [Lat::new(), Lat::new()];
    for (k, ops) in blocks(n) {
        for _ in 0..ops {
            let t0 = Instant::now();
            sides[k].op().await?;
            lats[k].record(t0.elapsed());
        }
    }
    close_both(sides).await?;
    Ok(lats)
}

/// The child role that counts what both sides' operations cost.
pub(crate) const COST_CHILD: &str = "lock-cost";

/// In a child process of its own (nothing else runs in it): both sides, `warm` operations
/// each, then the requests, CPU time and allocations of `n` more each, counted per block of
/// the same alternation as [`timed`] (the side not running is idle and costs nothing); for
/// the toolkit also the requests of a first lock + release on a fresh handle. Prints one
/// JSON line, `{"floor": .., "toolkit": ..}`.
pub(crate) async fn cost(url: &str, n: usize, warm: usize) -> Result<(), BoxError> {
    let mut sides = open_both(url, warm).await?;
    let mut tallies = [Tally::default(), Tally::default()];
    for (k, ops) in blocks(n) {
        let meter = Meter::start(sides[k].client());
        for _ in 0..ops {
            sides[k].op().await?;
        }
        meter.add_to(&mut tallies[k], ops as u64);
    }
    let mut toolkit = tallies[1].per_op();
    if let Side::Toolkit { locks, .. } = &sides[1] {
        let fresh = Meter::start(sides[1].client());
        let m = locks.mutex("uncontended")?;
        m.lock()
            .ttl(Duration::from_secs(TTL_S))
            .await?
            .release()
            .await?;
        toolkit["first_op_requests"] = fresh.requests().into();
    }
    let out = json!({ "floor": tallies[0].per_op(), "toolkit": toolkit });
    close_both(sides).await?;
    println!("{out}");
    Ok(())
}

/// Runs the cost child on the default-sync server.
async fn counted(env: &Env, n: usize, warm: usize) -> Result<Value, BoxError> {
    let args = [env.url(Sync::Default), n.to_string(), warm.to_string()];
    child::run_json(COST_CHILD, &args, Duration::from_secs(300)).await
}

/// The ratios of metric 2, once every side has run.
pub(crate) fn ratios(report: &mut Report) {
    let p50 = |sys: &str, fsync: &str| {
        report
            .rows
            .iter()
            .find(|r| r.metric == METRIC && r.system == sys && r.config["fsync"] == fsync)
            .map(|r| r.p50_us)
    };
    let ours_d = p50(TOOLKIT, "default");
    let ours_a = p50(TOOLKIT, "sync-always");
    let floor_d = p50(FLOOR, "default");
    let etcd = p50(ETCD, "fsync-every-write");
    let div = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
    report.ratio(
        "lock_vs_floor_p50",
        div(ours_d, floor_d),
        "<=",
        1.15,
        "p50(kvtk-locks lock+release) / p50(raw floor: 2 conditional writes), both on nats default sync, TTL 10 s, timed in alternating blocks of 50 operations in one process",
    );
    let p99 = |sys: &str| {
        report
            .rows
            .iter()
            .find(|r| r.metric == METRIC && r.system == sys && r.config["fsync"] == "default")
            .map(|r| r.p99_us)
    };
    report.ratio(
        "lock_vs_floor_p99",
        div(p99(TOOLKIT), p99(FLOOR)),
        "<=",
        1.5,
        "p99(kvtk-locks lock+release) / p99(raw floor: 2 conditional writes), both on nats default sync, TTL 10 s, timed in alternating blocks of 50 operations in one process",
    );
    cost_ratios(report);
    report.ratio(
        "etcd_lock_vs_ours_p50_default",
        div(etcd, ours_d),
        ">=",
        3.0,
        "p50(etcd Lock+Unlock, fsync every write: etcd's default) / p50(kvtk-locks, nats default periodic sync): each at its default durability",
    );
    report.ratio(
        "etcd_lock_vs_ours_p50_matched",
        div(etcd, ours_a),
        ">=",
        1.2,
        "p50(etcd Lock+Unlock, fsync every write) / p50(kvtk-locks, nats sync_interval: always): both fsync every write",
    );
}

/// The counted cost of metric 2: requests, CPU time and allocations per lock + release.
fn cost_ratios(report: &mut Report) {
    let cost = |report: &Report, sys: &str, what: &str| {
        report
            .find(METRIC, sys)
            .and_then(|r| r.extra["cost"][what].as_f64())
    };
    let requests = cost(report, TOOLKIT, "requests_per_op");
    let (floor_cpu, ours_cpu) = (
        cost(report, FLOOR, "cpu_us_per_op"),
        cost(report, TOOLKIT, "cpu_us_per_op"),
    );
    let allocs = [
        (
            "lock_allocs_per_op",
            cost(report, TOOLKIT, "allocs_per_op"),
            TOOLKIT,
        ),
        (
            "floor_allocs_per_op",
            cost(report, FLOOR, "allocs_per_op"),
            FLOOR,
        ),
    ];
    report.ratio(
        "lock_requests_per_op",
        requests,
        "<=",
        2.0,
        "requests kvtk-locks sends per uncontended lock+release on a reused mutex handle (the floor sends 2), counted by async-nats on the client's connection in the cost child; a first lock+release on a fresh handle: see the row's cost.first_op_requests",
    );
    report.ratio(
        "floor_cpu_us_per_op",
        floor_cpu,
        ">=",
        0.0,
        "the reference of lock_cpu_us_per_op (no goal of its own): user+sys CPU (getrusage, every thread of the cost child, counted over the floor's blocks while both sides alternate in blocks of 50) per raw floor lock+release (2 conditional writes through async-nats), µs",
    );
    report.ratio(
        "lock_cpu_us_per_op",
        floor_cpu.and(ours_cpu),
        "<=",
        floor_cpu.map_or(0.0, |c| (1.3 * c * 10.0).round() / 10.0),
        "goal 1.3 × floor_cpu_us_per_op of the same run: user+sys CPU (getrusage, every thread of the cost child, counted over the toolkit's blocks while both sides alternate in blocks of 50) per kvtk-locks lock+release on a reused handle, µs",
    );
    for (name, value, sys) in allocs {
        report.ratio(
            name,
            value,
            ">=",
            0.0,
            format!("reference (no goal): heap allocations per lock+release of {sys}, counted by the cost child's allocator over that side's blocks"),
        );
    }
}
