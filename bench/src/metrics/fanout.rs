//! Metric 9: configuration fan-out across processes. Ten child processes each run 100
//! kvtk-config readers built on clones of one bucket handle (so they share one watch: one
//! consumer per process) and, on the same connection, 100 plain core-NATS subscribers of one
//! subject. The parent writes version `i` of the document; each child reports over core NATS
//! once all 100 of its readers have applied it (decoded into a typed struct and validated).
//! Then the parent publishes version `i` on the core subject, and each child reports once all
//! 100 subscribers have it, through the same reporting path. A sample is the parent's send →
//! the last child's report. The bucket's consumers are counted from the server (STREAM.INFO)
//! while every reader runs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kvtk_config::{ConfigReader, Source};
use kvtk_core::{Bucket, BucketConfig, Kv};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;

use crate::harness::child::{self, Running};
use crate::harness::process::cpu_secs;
use crate::harness::propagation::{payload, sample, settle, version_of, Sample, WARM};
use crate::harness::stats::{Lat, Report, Row};
use crate::harness::{with, BoxError, Env, Sync};
use crate::metrics::config::{check, AppConfig, KEY};

pub(crate) const METRIC: &str = "config_fanout";
/// The child role that runs one process's readers and subscribers.
pub(crate) const CHILD: &str = "config-fanout";
pub(crate) const TOOLKIT: &str = "toolkit (kvtk-config readers, one watch per process)";
pub(crate) const CORE: &str = "core NATS publish (plain subscribers)";
const PROCESSES: usize = 10;
const PER_PROCESS: usize = 100;
const BUCKET: &str = "bench_fanout";
/// How a child labels its reports: all readers applied a version, all subscribers got one.
const KV: &str = "kv";
const PLAIN: &str = "core";

type Reports = mpsc::UnboundedReceiver<(usize, Instant)>;

fn samples(env: &Env) -> usize {
    env.size.pick(100, 500)
}

pub(crate) async fn run(env: &Env, report: &mut Report) -> Result<(), BoxError> {
    let sync = Sync::Default;
    let url = env.url(sync);
    let kv = Kv::connect(&url).await?;
    let bucket = kv
        .create_or_open(BucketConfig::new(BUCKET).history(1))
        .await?;
    bucket.put(KEY, payload(0)).await?;
    let client = kv.client().clone();
    let id = std::process::id();
    let core_subject = format!("bench.fanout.{id}.core");
    let report_subject = format!("bench.fanout.{id}.reports");
    let (kv_tx, mut kv_rx) = mpsc::unbounded_channel();
    let (core_tx, mut core_rx) = mpsc::unbounded_channel();
    let sub = client.subscribe(report_subject.clone()).await?;
    let _forward = AbortOnDropHandle::new(tokio::spawn(forward(sub, kv_tx, core_tx)));
    env.progress(&format!(
        "metric 9: {PROCESSES} processes × ({PER_PROCESS} kvtk-config readers + {PER_PROCESS} core-NATS subscribers)"
    ));
    let args = [
        url,
        BUCKET.to_string(),
        core_subject.clone(),
        report_subject,
        PER_PROCESS.to_string(),
    ];
    let children = futures::future::try_join_all(
        (0..PROCESSES).map(|_| Running::start(CHILD, &args, Duration::from_secs(120))),
    )
    .await?;
    let mut consumers = vec![consumer_count(&bucket).await?];
    let measured = measure(
        env,
        &bucket,
        &client,
        &core_subject,
        (&mut kv_rx, &mut core_rx),
        &mut consumers,
    )
    .await;
    consumers.push(consumer_count(&bucket).await?);
    let done = futures::future::try_join_all(
        children
            .into_iter()
            .map(|c| c.finish(Duration::from_secs(60))),
    )
    .await?;
    kv.delete_bucket(BUCKET).await?;
    let (kv_lat, core_lat) = measured?;
    push(env, report, (&kv_lat, &core_lat), &consumers, &done);
    Ok(())
}

/// Interleaves the two kinds of sample (which goes first alternates) so that both see the
/// same machine; returns (kv samples, core samples) and reads the consumer count midway.
async fn measure(
    env: &Env,
    bucket: &Bucket,
    client: &async_nats::Client,
    core_subject: &str,
    (kv_rx, core_rx): (&mut Reports, &mut Reports),
    consumers: &mut Vec<u64>,
) -> Result<(Vec<Sample>, Vec<Sample>), BoxError> {
    settle(kv_rx).await;
    settle(core_rx).await;
    let n = samples(env);
    let (mut kv_lat, mut core_lat) = (Vec::new(), Vec::new());
    for i in 1..=WARM + n {
        let put = async {
            bucket.put(KEY, payload(i)).await?;
            Ok(())
        };
        let publish = async {
            client.publish(core_subject.to_string(), payload(i)).await?;
            Ok(())
        };
        let (k, c) = if i % 2 == 0 {
            let k = sample(kv_rx, i, PROCESSES, put).await?;
            pause().await;
            (k, sample(core_rx, i, PROCESSES, publish).await?)
        } else {
            let c = sample(core_rx, i, PROCESSES, publish).await?;
            pause().await;
            (sample(kv_rx, i, PROCESSES, put).await?, c)
        };
        pause().await;
        if i > WARM {
            kv_lat.push(k);
            core_lat.push(c);
        }
        if i == WARM + n / 2 {
            consumers.push(consumer_count(bucket).await?);
        }
    }
    Ok((kv_lat, core_lat))
}

/// Changes do not overlap: each sample measures one change alone.
async fn pause() {
    tokio::time::sleep(Duration::from_millis(2)).await;
}

/// The consumers on the bucket's stream, as the server counts them (STREAM.INFO).
async fn consumer_count(bucket: &Bucket) -> Result<u64, BoxError> {
    Ok(bucket.status().await?.stream_info.state.consumer_count as u64)
}

/// Routes the children's reports (`kv <version>` / `core <version>`), stamped on arrival.
async fn forward(
    mut sub: async_nats::Subscriber,
    kv: mpsc::UnboundedSender<(usize, Instant)>,
    core: mpsc::UnboundedSender<(usize, Instant)>,
) {
    while let Some(m) = sub.next().await {
        let at = Instant::now();
        let text = String::from_utf8_lossy(&m.payload);
        let Some((kind, v)) = text.split_once(' ') else {
            continue;
        };
        let Ok(v) = v.parse() else { continue };
        let to = if kind == KV { &kv } else { &core };
        let _ = to.send((v, at));
    }
}

fn lat_of(samples: &[Sample], d: impl Fn(&Sample) -> Duration) -> Lat {
    let mut lat = Lat::new();
    for s in samples {
        lat.record(d(s));
    }
    lat
}

/// The sum of a number every child printed.
fn total(done: &[Value], field: &str) -> f64 {
    done.iter().filter_map(|d| d[field].as_f64()).sum()
}

fn push(
    env: &Env,
    report: &mut Report,
    (kv, core): (&[Sample], &[Sample]),
    consumers: &[u64],
    done: &[Value],
) {
    let readers = PROCESSES * PER_PROCESS;
    let cfg = with(
        env.nats_config(Sync::Default, None),
        json!({ "readers": readers, "processes": PROCESSES, "connections": PROCESSES }),
    );
    let from_ack = lat_of(kv, Sample::since_return);
    let puts = (WARM + kv.len()) as f64;
    let extra = json!({
        "server_consumers": consumers.iter().max(),
        "server_consumer_reads": consumers,
        "readers_running_at_end": total(done, "readers_running"),
        "validations_per_reader_per_put": total(done, "validations") / (readers as f64 * puts),
        "from_ack_p50_us": from_ack.q(0.5),
        "from_ack_p99_us": from_ack.q(0.99),
        "children_cpu_ms_per_sample": total(done, "cpu_s") * 1000.0 / puts,
    });
    report.push(
        Row::new(
            METRIC,
            TOOLKIT,
            &lat_of(kv, Sample::since_send),
            cfg.clone(),
        )
        .extra(extra),
    );
    let extra = json!({ "subscribers_running_at_end": total(done, "subscribers_running") });
    report.push(Row::new(METRIC, CORE, &lat_of(core, Sample::since_send), cfg).extra(extra));
}

pub(crate) fn ratios(report: &mut Report) {
    let p99_ms = |sys: &str| report.find(METRIC, sys).map(|r| r.p99_us / 1000.0);
    let (ours, core) = (p99_ms(TOOLKIT), p99_ms(CORE));
    let consumers = report
        .find(METRIC, TOOLKIT)
        .and_then(|r| r.extra["server_consumers"].as_f64());
    report.ratio(
        "core_fanout_1000_p99_ms",
        core,
        ">=",
        0.0,
        "the reference of config_fanout_1000_p99_ms (no goal of its own): p99 of a core-NATS publish → every one of 1,000 plain subscribers (100 per process, 10 processes, one connection each) has it, as the last process's report reaches the publisher (ms)",
    );
    report.ratio(
        "config_fanout_1000_p99_ms",
        core.and(ours),
        "<=",
        core.map_or(0.0, |c| (1.5 * c * 1000.0).round() / 1000.0),
        "goal 1.5 × core_fanout_1000_p99_ms of the same run: p99 of a put's send → every one of 1,000 kvtk-config readers (100 per process on clones of one bucket handle, 10 processes) has applied the decoded, validated value, as the last process's report reaches the writer over core NATS (the same path as the core reference); nats default sync (ms)",
    );
    report.ratio(
        "server_consumers_per_1000_readers",
        consumers,
        "<=",
        10.0,
        "consumers on the bucket's stream (STREAM.INFO, the most of three reads while all 1,000 kvtk-config readers in 10 processes run) per 1,000 readers",
    );
}

/// In a child: `readers` kvtk-config readers on clones of one bucket handle and `readers`
/// core-NATS subscribers of `core_subject`, reporting each version that all of one kind have
/// to `report_subject`, until the parent closes stdin. Prints one JSON line.
pub(crate) async fn serve(
    url: &str,
    bucket: &str,
    core_subject: &str,
    report_subject: &str,
    readers: usize,
) -> Result<(), BoxError> {
    let kv = Kv::connect(url).await?;
    // One handle for the whole process: readers on its clones share one watch.
    let bucket = kv.open(bucket).await?;
    let client = kv.client().clone();
    let validations = Arc::new(AtomicU64::new(0));
    let (kv_tx, kv_rx) = mpsc::unbounded_channel();
    let (core_tx, core_rx) = mpsc::unbounded_channel();
    let mut readers_tasks = JoinSet::new();
    let mut handles = Vec::new();
    for _ in 0..readers {
        let counted = validations.clone();
        let mut reader = ConfigReader::<AppConfig>::builder(Source::document(KEY))
            .bucket(bucket.clone())
            .validate(move |c| {
                counted.fetch_add(1, Ordering::Relaxed);
                check(c)
            })
            .start()
            .await?;
        handles.push(reader.clone());
        let tx = kv_tx.clone();
        readers_tasks.spawn(async move {
            // Only an accepted (decoded and validated) value becomes the current snapshot.
            while tx.send(reader.changed().await.version).is_ok() {}
        });
    }
    let mut subscriber_tasks = JoinSet::new();
    for _ in 0..readers {
        let mut sub = client.subscribe(core_subject.to_string()).await?;
        let tx = core_tx.clone();
        subscriber_tasks.spawn(async move {
            while let Some(m) = sub.next().await {
                if let Some(v) = version_of(&m.payload) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
    }
    // The subscriptions are on the server before the parent hears READY.
    client.flush().await?;
    let mut tallies = JoinSet::new();
    tallies.spawn(tally(
        kv_rx,
        readers,
        client.clone(),
        report_subject.into(),
        KV,
    ));
    tallies.spawn(tally(
        core_rx,
        readers,
        client.clone(),
        report_subject.into(),
        PLAIN,
    ));
    let cpu0 = cpu_secs();
    child::ready_until_stdin_closed().await?;
    let cpu = cpu_secs() - cpu0;
    println!(
        "{}",
        json!({
            "readers_running": running(&mut readers_tasks),
            "subscribers_running": running(&mut subscriber_tasks),
            "validations": validations.load(Ordering::Relaxed),
            "cpu_s": cpu,
        })
    );
    for h in handles {
        h.shutdown().await;
    }
    Ok(())
}

/// How many of the tasks are still running.
fn running(tasks: &mut JoinSet<()>) -> usize {
    while tasks.try_join_next().is_some() {}
    tasks.len()
}

/// Counts the versions the readers report and publishes `<kind> <version>` once all
/// `readers` have one.
async fn tally(
    mut rx: mpsc::UnboundedReceiver<usize>,
    readers: usize,
    client: async_nats::Client,
    subject: String,
    kind: &'static str,
) {
    let mut tally = Tally::new(readers);
    while let Some(v) = rx.recv().await {
        if tally.add(v) {
            let _ = client
                .publish(subject.clone(), format!("{kind} {v}").into())
                .await;
        }
    }
}

/// How many readers reported each version.
struct Tally {
    readers: usize,
    counts: BTreeMap<usize, usize>,
}

impl Tally {
    fn new(readers: usize) -> Tally {
        Tally {
            readers,
            counts: BTreeMap::new(),
        }
    }

    /// Counts one reader's report of version `v`; true when it was the last one missing.
    fn add(&mut self, v: usize) -> bool {
        let n = self.counts.entry(v).or_default();
        *n += 1;
        if *n < self.readers {
            return false;
        }
        // Versions are written one at a time: an older one still short will not complete.
        self.counts = self.counts.split_off(&(v + 1));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn a_version_completes_with_its_last_reader_only() {
        let mut t = Tally::new(3);
        assert!(!t.add(1));
        assert!(!t.add(2));
        assert!(!t.add(1));
        assert!(t.add(1), "the third report of version 1 completes it");
        assert!(!t.add(1), "a fourth report does not complete it again");
        assert!(!t.add(2), "version 2 has two reports of three");
        assert!(t.add(2));
    }

    #[test]
    fn older_versions_still_short_are_forgotten() {
        let mut t = Tally::new(2);
        assert!(!t.add(1));
        assert!(!t.add(2));
        assert!(t.add(2));
        assert!(t.counts.is_empty(), "version 1 can no longer complete");
    }
}
