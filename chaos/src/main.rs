//! `kv-chaos`: runs the recipes' workloads on a 3-node cluster (R3 buckets, or with
//! `--replicas 1` R1 buckets, each on one node: the single-server paths such as kvtk-locks'
//! quiet-bucket bets, under the same faults) under a seeded nemesis, checks the recorded
//! history for safety and, while no fault is in place, liveness, and writes a report. The
//! nemesis runs for the given minutes between a fault-free start and a fault-free end. Exits 1
//! on any violation.
//!
//! ```text
//! kv-chaos [--minutes N] [--seed S] [--workload locks|leader|watch|config|members|all]
//!          [--replicas 1|3] [--out DIR]
//! ```

mod report;
mod workload;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvtk_core::lease::LeaseConfig;
use kvtk_core::{BucketConfig, Kv};
use kvtk_leader::Election;
use kvtk_locks::Locks;
use kvtk_membership::Membership;
use kvtk_tests::history::{History, Op, Record};
use kvtk_tests::nemesis::{FaultKind, Nemesis, Schedule, RECOVERY_TIMEOUT};
use kvtk_tests::{check, FaultProxy, NatsCluster};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Fault-free time before the nemesis starts: the workloads' start is checked for liveness.
const QUIET_START: Duration = Duration::from_secs(10);

/// Fault-free time after the nemesis healed its last fault and before the workloads stop: the
/// liveness grace, then 20 s checked for liveness.
const QUIET_END: Duration = workload::LIVENESS
    .grace
    .saturating_add(Duration::from_secs(20));

/// How long workloads get to finish (watchers to catch up) after the nemesis stopped.
const WIND_DOWN: Duration = Duration::from_secs(45);

#[derive(Debug)]
struct Args {
    minutes: f64,
    seed: u64,
    workload: String,
    replicas: usize,
    out: String,
}

fn args() -> Res<Args> {
    let mut a = Args {
        minutes: 2.0,
        seed: 1,
        workload: "all".into(),
        replicas: 3,
        out: "target/chaos".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--minutes" => a.minutes = value.parse()?,
            "--seed" => a.seed = value.parse()?,
            "--workload" => a.workload = value,
            "--replicas" => a.replicas = value.parse()?,
            "--out" => a.out = value,
            _ => return Err(format!("unknown option {flag}").into()),
        }
    }
    if !["locks", "leader", "watch", "config", "members", "all"].contains(&a.workload.as_str()) {
        return Err(format!("unknown workload {}", a.workload).into());
    }
    if ![1, 3].contains(&a.replicas) {
        return Err(format!("--replicas must be 1 or 3, not {}", a.replicas).into());
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match run().await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(n) => {
            eprintln!("kv-chaos: {n} violations");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("kv-chaos: {e}");
            ExitCode::from(2)
        }
    }
}

/// A client of the cluster through the client proxies only (discovered node addresses would
/// bypass them).
async fn connect(urls: &[String]) -> Res<Kv> {
    let client = async_nats::ConnectOptions::new()
        .ignore_discovered_servers()
        .request_timeout(Some(Duration::from_secs(5)))
        .connect(urls.to_vec())
        .await?;
    Ok(Kv::new(client))
}

/// Creates (or opens) a bucket, retrying while a fresh cluster cannot place R3 streams yet,
/// and waits until its stream has a leader: workloads start on a bucket that takes writes (a
/// put right after creation was answered "no responders" before the first fault).
async fn create(admin: &Kv, cluster: &NatsCluster, cfg: BucketConfig) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let stream = format!("KV_{}", cfg.name());
    loop {
        match admin.create_or_open(cfg.clone()).await {
            Ok(_) => {
                return match cluster.wait_stream_leader(&stream, RECOVERY_TIMEOUT).await {
                    Some(_) => Ok(()),
                    None => Err(format!("{stream} has no leader").into()),
                }
            }
            Err(e) if Instant::now() < deadline => {
                tracing::info!("bucket not created yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Creates the locks bucket `bucket` and `n` lock clients on it, each on its own connection:
/// every other one (0, 2, …) binds its entries to a session, the rest keep a lease per entry,
/// so both kinds meet in every queue.
async fn lock_clients(
    admin: &Kv,
    cluster: &NatsCluster,
    urls: &[String],
    bucket: &str,
    n: usize,
    replicas: usize,
) -> Res<Vec<Locks>> {
    let cfg = BucketConfig::new(bucket)
        .history(1)
        .per_key_ttl(kvtk_locks::DEFAULT_MARKER_TTL)
        .atomic_batches(true)
        .replicas(replicas);
    create(admin, cluster, cfg).await?;
    let mut handles = Vec::new();
    for (i, kv) in connections(urls, n).await?.into_iter().enumerate() {
        let locks = Locks::new(kv.open(bucket).await?).await?;
        let locks = locks.lease(LeaseConfig::new(workload::TTL)?)?;
        handles.push(match i % 2 {
            0 => locks.bind_to_session(),
            _ => locks,
        });
    }
    Ok(handles)
}

async fn connections(urls: &[String], n: usize) -> Res<Vec<Kv>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(connect(urls).await?);
    }
    Ok(out)
}

/// Starts the membership workload: two members (the first bound to a session, the second
/// with a lease of its own) and two watchers, each on its own connection; returns the
/// handles to shut down.
async fn members(
    admin: &Kv,
    cluster: &NatsCluster,
    urls: &[String],
    tasks: &mut JoinSet<()>,
    (history, stop): (&History, &CancellationToken),
    replicas: usize,
) -> Res<Vec<Membership>> {
    let bucket = "chaos-members";
    create(
        admin,
        cluster,
        Membership::bucket_config(bucket).replicas(replicas),
    )
    .await?;
    let mut handles = Vec::new();
    let mut groups = Vec::new();
    for (i, kv) in connections(urls, 4).await?.into_iter().enumerate() {
        let membership = match Membership::open(&kv, bucket).await? {
            m if i == 0 => m.bind_to_session(),
            m => m,
        };
        groups.push(membership.group(workload::members::GROUP)?);
        handles.push(membership);
    }
    let watchers = groups.split_off(2);
    workload::members::start(tasks, groups, watchers, history, stop);
    Ok(handles)
}

async fn run() -> Res<usize> {
    let args = args()?;
    let wants = |w: &str| args.workload == "all" || args.workload == w;
    let started = Instant::now();
    let mut cluster = NatsCluster::start_partitionable().await;
    let mut proxies = Vec::new();
    for i in 0..kvtk_tests::CLUSTER_SIZE {
        proxies.push(FaultProxy::start(&cluster.node(i).client_url()).await);
    }
    let urls: Vec<String> = proxies.iter().map(FaultProxy::url).collect();
    let admin = connect(&cluster.client_urls())
        .await?
        .with_timeout(Duration::from_secs(20));
    let history = History::new();
    let stop = CancellationToken::new();
    let writing = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut streams = Vec::new();
    let lock_counts = Arc::new(workload::locks::Counts::default());
    let watch_progress = Arc::new(workload::watch::Progress::default());
    let mut shutdown_locks = Vec::new();
    let mut shutdown_elections = Vec::new();
    let mut shutdown_members = Vec::new();

    if wants("locks") {
        let handles =
            lock_clients(&admin, &cluster, &urls, "chaos-locks", 3, args.replicas).await?;
        // Two more clients on a mutex alone in its own bucket, pausing between holds.
        let quiet = lock_clients(&admin, &cluster, &urls, "chaos-quiet", 2, args.replicas).await?;
        shutdown_locks.extend(handles.iter().chain(&quiet).cloned());
        let until = (&history, &stop);
        workload::multi::start(&mut tasks, &handles, 4, &history, &stop);
        let fence = handles[0].bucket().clone();
        workload::locks::start_quiet(&mut tasks, &quiet, &fence, until, &lock_counts);
        workload::locks::start(&mut tasks, handles, 3, until, &lock_counts);
        streams.push("KV_chaos-locks".to_string());
        streams.push("KV_chaos-quiet".to_string());
    }
    if wants("leader") {
        create(
            &admin,
            &cluster,
            Election::bucket_config("chaos-leader").replicas(args.replicas),
        )
        .await?;
        let mut elections = Vec::new();
        for (i, kv) in connections(&urls, 4).await?.into_iter().enumerate() {
            let bucket = kv.open("chaos-leader").await?;
            let election = Election::builder(bucket, "e0").ttl(workload::TTL);
            // Candidates 0 and 2 bind their registrations to a session (their step-downs
            // hand over in one write), candidate 1 keeps a lease: both meet in one line.
            elections.push(if i == 1 {
                election.build()?
            } else {
                election.bind_to_session().build()?
            });
        }
        shutdown_elections.extend(elections.iter().cloned());
        let observer = elections.split_off(3);
        workload::leader::start(&mut tasks, elections, observer, &history, &stop);
        streams.push("KV_chaos-leader".to_string());
    }
    if wants("watch") {
        create(
            &admin,
            &cluster,
            BucketConfig::new("chaos-watch")
                .history(64)
                .replicas(args.replicas),
        )
        .await?;
        let mut buckets = Vec::new();
        for kv in connections(&urls, 3).await? {
            buckets.push(kv.open("chaos-watch").await?);
        }
        let writer = buckets.remove(0);
        workload::watch::start(
            &mut tasks,
            writer,
            buckets,
            &history,
            &writing,
            &stop,
            &watch_progress,
        );
        streams.push("KV_chaos-watch".to_string());
    }
    if wants("config") {
        create(
            &admin,
            &cluster,
            BucketConfig::new("chaos-config")
                .history(1)
                .atomic_batches(true)
                .replicas(args.replicas),
        )
        .await?;
        let mut buckets = Vec::new();
        for kv in connections(&urls, 3).await? {
            buckets.push(kv.open("chaos-config").await?);
        }
        let writer = buckets.remove(0);
        workload::config::start(&mut tasks, writer, buckets, &history, &stop).await;
        streams.push("KV_chaos-config".to_string());
    }

    if wants("members") {
        let (until, replicas) = ((&history, &stop), args.replicas);
        shutdown_members = members(&admin, &cluster, &urls, &mut tasks, until, replicas).await?;
        streams.push("KV_chaos-members".to_string());
    }

    let run_for = Duration::from_secs_f64(args.minutes * 60.0);
    let schedule = Schedule::generate(args.seed, run_for, &FaultKind::ALL, streams.len());
    println!("{schedule}");
    tokio::time::sleep(QUIET_START).await;
    let faults = Nemesis::new(&mut cluster, &proxies, streams, history.clone())
        .run(&schedule, run_for)
        .await;
    tokio::time::sleep(QUIET_END).await;

    history.instant("runner", Op::Stop, None);
    writing.cancel();
    stop.cancel();
    let watchers_caught_up = tokio::time::timeout(WIND_DOWN, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    tasks.shutdown().await;
    for l in &shutdown_locks {
        l.shutdown().await;
    }
    for e in &shutdown_elections {
        e.shutdown().await;
    }
    for m in &shutdown_members {
        m.shutdown().await;
    }

    let extra = report::Extra {
        replay: format!(
            "scripts/chaos.sh --minutes {} --seed {} --workload {} --replicas {}",
            args.minutes, args.seed, args.workload, args.replicas
        ),
        schedule: schedule.to_string(),
        faults,
        already_lost: lock_counts.already_lost.load(Ordering::Relaxed),
        released: lock_counts.released.load(Ordering::Relaxed),
        reaped: shutdown_locks.iter().map(|l| l.stats().reaped).sum(),
        quiet_bets: shutdown_locks.iter().map(|l| l.stats().quiet_bets).sum(),
        quiet_bets_won: shutdown_locks
            .iter()
            .map(|l| l.stats().quiet_bets_won)
            .sum(),
        watch_restarts: watch_progress.restarts.load(Ordering::Relaxed),
        history_gone: watch_progress.history_gone.load(Ordering::Relaxed),
        watchers_caught_up,
        elapsed: started.elapsed(),
    };
    check_and_report(&history.records(), &args.out, &extra)
}

/// Checks `records` for safety and liveness, writes `report.md`, `timeline.svg` and
/// `history.txt` (every record, one a line) into `out`
/// and prints the report; returns the number of violations.
fn check_and_report(records: &[Record], out: &str, extra: &report::Extra) -> Res<usize> {
    let mut violations = check::all(records);
    violations.extend(check::liveness(records, &workload::LIVENESS));
    let md = report::markdown(records, &violations, extra);
    std::fs::create_dir_all(out)?;
    std::fs::write(format!("{out}/report.md"), &md)?;
    std::fs::write(
        format!("{out}/timeline.svg"),
        report::timeline(records, &violations),
    )?;
    let lines: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(format!("{out}/history.txt"), lines)?;
    println!("{md}");
    let faults_failed = records
        .iter()
        .filter(|r| matches!(r.op, Op::Fault { .. }) && !r.is_ok())
        .count();
    if faults_failed > 0 {
        println!("note: {faults_failed} faults did not apply or recover cleanly (see Faults)");
    }
    Ok(violations.len())
}
