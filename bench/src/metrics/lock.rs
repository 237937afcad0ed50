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
pub(crate) const WIRE: &str = "raw JetStream, kvtk-locks' 2 writes";
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
            "metric 2: kvtk-locks, its writes sent raw and the raw floor in alternating blocks of {BLOCK} ({})",
            sync.short()
        ));
        let lats = timed(&env.url(sync), n, warm).await?;
        let cost = if sync == Sync::Default {
            env.progress("metric 2: cost of the sides, alternating in a process of their own");
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
    /// The two writes kvtk-locks sends for a lock + release on a quiet bucket, sent raw
    /// through async-nats to a lock of a bucket made as the toolkit makes its own (same
    /// stream configuration; see [`Side::open_wire`]): the same headers (expectation on the queue key, TTL, lease tag; the delete's 900 s
    /// tombstone TTL), a value of the same length, encoded once. Against the floor: what
    /// kvtk-locks' writes cost the server and the wire; against the toolkit: what its client
    /// costs.
    Wire {
        client: async_nats::Client,
        subject: String,
        value: Bytes,
        tomb: u64,
    },
}

/// The three sides of metric 2.
#[derive(Clone, Copy)]
enum Kind {
    Floor,
    Wire,
    Toolkit,
}

const FLOOR_BUCKET: &str = "bench_lock_floor";
const WIRE_BUCKET: &str = "bench_lock_wire";

impl Side {
    async fn open(url: &str, kind: Kind) -> Result<Side, BoxError> {
        let kv = Kv::connect(url).await?;
        match kind {
            Kind::Toolkit => {
                let locks = Locks::open(&kv, "bench_locks").await?;
                let m = locks.mutex("uncontended")?;
                return Ok(Side::Toolkit { kv, locks, m });
            }
            Kind::Wire => return Side::open_wire(url, &kv).await,
            Kind::Floor => {}
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

    /// Side `Wire` on a new lock of a bucket of its own made as the toolkit makes its own
    /// (its writes would otherwise land between the toolkit's and end its bets on a quiet
    /// bucket, see kvtk-locks' `acquire`), its value as long as a toolkit queue entry's
    /// (read from the bucket: one of lock `probe`).
    async fn open_wire(url: &str, kv: &Kv) -> Result<Side, BoxError> {
        let locks = Locks::open(kv, WIRE_BUCKET).await?;
        let guard = locks.mutex("probe")?.lock().await?;
        let bucket = kv.open(WIRE_BUCKET).await?;
        let key = bucket
            .keys("probe._q.*")
            .await?
            .into_iter()
            .next()
            .ok_or("the toolkit's queue entry is missing")?;
        let entry = bucket.get(&key).await?;
        let len = entry
            .ok_or("the toolkit's queue entry is missing")?
            .value()
            .len();
        guard.release().await?;
        locks.shutdown().await;
        // Names as long as the toolkit's ("uncontended"), of a lock no earlier opening wrote to.
        let id = key.as_str().rsplit('.').next().unwrap_or_default();
        let lock = format!("w{}", id.get(..10).unwrap_or(id));
        let client = async_nats::connect(url).await?;
        let (subject, tomb) = (format!("$KV.{WIRE_BUCKET}.{lock}._q.{id}"), 0);
        let value = Bytes::from(vec![b'x'; len]);
        Ok(Side::Wire {
            client,
            subject,
            value,
            tomb,
        })
    }

    /// The connection the side's requests go out on.
    fn client(&self) -> &async_nats::Client {
        match self {
            Side::Toolkit { kv, .. } => kv.client(),
            Side::Floor { client, .. } | Side::Wire { client, .. } => client,
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
            Side::Wire {
                client,
                subject,
                value,
                tomb,
            } => {
                let lease = "0123456789abcdef0123456789abcdef";
                let mut h = raw_headers(*tomb, Some(TTL_S), false);
                h.insert("Kv-Lease", lease);
                let rev = raw_write(client, subject.clone(), h, value.clone()).await?;
                let mut h = raw_headers(rev, Some(TOMBSTONE_TTL_S), true);
                h.insert("Kv-Lease", format!("{lease}:{rev}:done").as_str());
                *tomb = raw_write(client, subject.clone(), h, Bytes::new()).await?;
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
            Side::Wire { .. } => {}
        }
        Ok(())
    }
}

/// The TTL kvtk-locks gives a released entry's tombstone.
const TOMBSTONE_TTL_S: u64 = 900;

/// The sides of metric 2 as (name in the cost child's output, system), in the order
/// [`open_all`] opens them.
const SIDES: [(&str, &str); 3] = [("floor", FLOOR), ("wire", WIRE), ("toolkit", TOOLKIT)];

/// Operations in one block of one side before the other side's block. Short (a block takes
/// about 15 ms), so that load on the machine drifting from one moment to the next falls on
/// both sides alike: timed one after the other in long runs, the two sides' p50s moved by
/// ±25 % against each other between runs.
const BLOCK: usize = 50;

/// The sides, opened and warmed up with `warm` operations each.
async fn open_all(url: &str, warm: usize) -> Result<[Side; 3], BoxError> {
    let mut sides = [
        Side::open(url, Kind::Floor).await?,
        Side::open(url, Kind::Wire).await?,
        Side::open(url, Kind::Toolkit).await?,
    ];
    for side in &mut sides {
        for _ in 0..warm {
            side.op().await?;
        }
    }
    Ok(sides)
}

async fn close_all(sides: [Side; 3]) -> Result<(), BoxError> {
    for side in sides {
        side.close().await?;
    }
    Ok(())
}

/// The blocks of an alternating run, as (side index, operations): `n` operations per side
/// in blocks of [`BLOCK`], the order of the sides rotating from round to round (0 1 2,
/// 1 2 0, 2 0 1, ...) so that no side always runs right after the same other.
fn blocks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    let sides = SIDES.len();
    (0..n.div_ceil(BLOCK)).flat_map(move |b| {
        let ops = BLOCK.min(n - b * BLOCK);
        (0..sides).map(move |i| ((b + i) % sides, ops))
    })
}

/// Metric 2's latency, in the order of [`SIDES`]: every side open in this process, `warm`
/// operations each, then `n` timed ones each in alternating blocks.
async fn timed(url: &str, n: usize, warm: usize) -> Result<[Lat; 3], BoxError> {
    let mut sides = open_all(url, warm).await?;
    let mut lats = [Lat::new(), Lat::new(), Lat::new()];
    for (k, ops) in blocks(n) {
        for _ in 0..ops {
            let t0 = Instant::now();
            sides[k].op().await?;
            lats[k].record(t0.elapsed());
        }
    }
    close_all(sides).await?;
    Ok(lats)
}

/// The child role that counts what both sides' operations cost.
pub(crate) const COST_CHILD: &str = "lock-cost";

/// In a child process of its own (nothing else runs in it): every side, `warm` operations
/// each, then the requests, CPU time and allocations of `n` more each, counted per block of
/// the same alternation as [`timed`] (the sides not running are idle and cost nothing); for
/// the toolkit also the requests of a first lock + release on a fresh handle. Prints one
/// JSON line, `{"floor": .., "wire": .., "toolkit": ..}`.
pub(crate) async fn cost(url: &str, n: usize, warm: usize) -> Result<(), BoxError> {
    let mut sides = open_all(url, warm).await?;
    let mut tallies = [Tally::default(), Tally::default(), Tally::default()];
    for (k, ops) in blocks(n) {
        let meter = Meter::start(sides[k].client());
        for _ in 0..ops {
            sides[k].op().await?;
        }
        meter.add_to(&mut tallies[k], ops as u64);
    }
    let mut toolkit = tallies[2].per_op();
    if let Side::Toolkit { locks, .. } = &sides[2] {
        let fresh = Meter::start(sides[2].client());
        let m = locks.mutex("uncontended")?;
        m.lock()
            .ttl(Duration::from_secs(TTL_S))
            .await?
            .release()
            .await?;
        toolkit["first_op_requests"] = fresh.requests().into();
    }
    let out = json!({
        "floor": tallies[0].per_op(),
        "wire": tallies[1].per_op(),
        "toolkit": toolkit,
    });
    close_all(sides).await?;
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
    let wire_d = p50(WIRE, "default");
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
    report.ratio(
        "lock_wire_vs_floor_p50",
        div(wire_d, floor_d),
        ">=",
        0.0,
        "reference (no goal): p50(kvtk-locks' two writes sent raw through async-nats) / p50(raw floor): what the toolkit's headers and value cost the server and the wire, nats default sync, timed in the same alternation",
    );
    report.ratio(
        "lock_vs_wire_p50",
        div(ours_d, wire_d),
        ">=",
        0.0,
        "reference (no goal): p50(kvtk-locks lock+release) / p50(its two writes sent raw through async-nats): what the toolkit's client costs, nats default sync, timed in the same alternation",
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
