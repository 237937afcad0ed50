//! Metric 2: uncontended lock acquire + release.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kvtk_core::{BucketConfig, Kv};
use kvtk_locks::Locks;

use serde_json::{json, Value};

use crate::harness::child;
use crate::harness::cost::Meter;
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
        for (toolkit, system) in [(false, FLOOR), (true, TOOLKIT)] {
            env.progress(&format!("metric 2: {system} ({})", sync.short()));
            let lat = timed(env, sync, toolkit, n, warm).await?;
            let mut row = Row::new(METRIC, system, &lat, env.nats_config(sync, Some(TTL_S)));
            if sync == Sync::Default {
                env.progress(&format!(
                    "metric 2: {system}: cost, in a process of its own"
                ));
                row = row.extra(json!({ "cost": counted(env, toolkit, n, warm).await? }));
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

/// Metric 2's latency: `warm` operations, then `n` timed ones.
async fn timed(
    env: &Env,
    sync: Sync,
    toolkit: bool,
    n: usize,
    warm: usize,
) -> Result<Lat, BoxError> {
    let mut side = Side::open(&env.url(sync), toolkit).await?;
    let mut lat = Lat::new();
    for i in 0..warm + n {
        let t0 = Instant::now();
        side.op().await?;
        if i >= warm {
            lat.record(t0.elapsed());
        }
    }
    side.close().await?;
    Ok(lat)
}

/// The child role that counts what one side's operations cost.
pub(crate) const COST_CHILD: &str = "lock-cost";

/// In a child process of its own (nothing else runs in it): `warm` operations, then the
/// requests, CPU time and allocations of `n` more; for the toolkit also the requests of a
/// first lock + release on a fresh handle. Prints one JSON line.
pub(crate) async fn cost(url: &str, side: &str, n: u64, warm: u64) -> Result<(), BoxError> {
    let toolkit = side == "toolkit";
    let mut s = Side::open(url, toolkit).await?;
    for _ in 0..warm {
        s.op().await?;
    }
    let meter = Meter::start(s.client());
    for _ in 0..n {
        s.op().await?;
    }
    let mut out = meter.per_op(n);
    if let Side::Toolkit { locks, .. } = &s {
        let fresh = Meter::start(s.client());
        let m = locks.mutex("uncontended")?;
        m.lock()
            .ttl(Duration::from_secs(TTL_S))
            .await?
            .release()
            .await?;
        out["first_op_requests"] = fresh.requests().into();
    }
    s.close().await?;
    println!("{out}");
    Ok(())
}

/// Runs the cost child of one side on the default-sync server.
async fn counted(env: &Env, toolkit: bool, n: usize, warm: usize) -> Result<Value, BoxError> {
    let side = if toolkit { "toolkit" } else { "floor" };
    let args = [
        env.url(Sync::Default),
        side.to_string(),
        n.to_string(),
        warm.to_string(),
    ];
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
        "p50(kvtk-locks lock+release) / p50(raw floor: 2 conditional writes), both on nats default sync, TTL 10 s",
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
        "p99(kvtk-locks lock+release) / p99(raw floor: 2 conditional writes), both on nats default sync, TTL 10 s",
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
        "requests kvtk-locks sends per uncontended lock+release on a reused mutex handle (the floor sends 2), counted by async-nats on the client's connection in a process of its own; a first lock+release on a fresh handle: see the row's cost.first_op_requests",
    );
    report.ratio(
        "floor_cpu_us_per_op",
        floor_cpu,
        ">=",
        0.0,
        "the reference of lock_cpu_us_per_op (no goal of its own): user+sys CPU (getrusage, every thread of a process of its own) per raw floor lock+release (2 conditional writes through async-nats), µs",
    );
    report.ratio(
        "lock_cpu_us_per_op",
        floor_cpu.and(ours_cpu),
        "<=",
        floor_cpu.map_or(0.0, |c| (1.3 * c * 10.0).round() / 10.0),
        "goal 1.3 × floor_cpu_us_per_op of the same run: user+sys CPU (getrusage, every thread of a process of its own) per kvtk-locks lock+release on a reused handle, µs",
    );
    for (name, value, sys) in allocs {
        report.ratio(
            name,
            value,
            ">=",
            0.0,
            format!("reference (no goal): heap allocations per lock+release of {sys}, counted by the process's allocator in a process of its own"),
        );
    }
}
