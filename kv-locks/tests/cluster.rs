//! Every lock kind, contended on a 3-node cluster with an R3 bucket and no fault: no
//! acquisition may fail, and no two holders may overlap. Each client talks to one node, so
//! two of them read from a stream follower (a consumer or a direct get may be served by a
//! replica that lags the leader's acknowledgements).

// Tests may unwrap: a panic is a test failure with a message.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kvtk_core::{BucketConfig, Kv};
use kvtk_locks::{Guard, Locks, DEFAULT_MARKER_TTL};
use kvtk_tests::{client, within, NatsCluster};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long each workload runs.
const RUN: Duration = Duration::from_secs(6);

/// A started cluster with an R3 lock bucket `name`.
async fn r3_cluster(name: &str) -> NatsCluster {
    let cluster = NatsCluster::start().await;
    let kv =
        Kv::new(client::with_request_timeout(cluster.client_urls(), client::QUORUM_TIMEOUT).await)
            .with_timeout(Duration::from_secs(30));
    kv.create_or_open(
        BucketConfig::new(name)
            .history(1)
            .per_key_ttl(DEFAULT_MARKER_TTL)
            .atomic_batches(true)
            .replicas(3),
    )
    .await
    .unwrap();
    cluster
}

/// How the clients of a workload keep their queue entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A lease of its own per entry.
    Leases,
    /// Every other client binds its entries to its session.
    Mixed,
    /// Every client binds its entries to its session.
    Sessions,
}

/// A `Locks` handle on its own connection to node `i` alone; client `n` of the workload.
async fn locks_on_node(
    cluster: &NatsCluster,
    i: usize,
    bucket: &str,
    mode: Mode,
    n: usize,
) -> Locks {
    let kv = Kv::new(cluster.node_client(i).await);
    let locks = Locks::open(&kv, bucket).await.unwrap();
    match mode {
        Mode::Sessions => locks.bind_to_session(),
        Mode::Mixed if n.is_multiple_of(2) => locks.bind_to_session(),
        _ => locks,
    }
}

/// Counts holders of one lock at once: more than `limit` together is a safety violation.
#[derive(Default)]
struct Occupancy {
    now: AtomicU32,
    acquisitions: AtomicUsize,
}

impl Occupancy {
    fn enter(&self, limit: u32, what: &str) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(n <= limit, "{n} holders of {what} at once (limit {limit})");
        self.acquisitions.fetch_add(1, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Holds `guard` briefly inside `occupancy`, then releases it; any error fails the test.
async fn hold(guard: Guard, occupancy: &Occupancy, limit: u32, what: &str) {
    occupancy.enter(limit, what);
    tokio::task::yield_now().await;
    occupancy.leave();
    guard.release().await.unwrap();
}

/// Runs `clients` tasks per node, each on its own handle, each calling `work` in a loop for
/// [`RUN`]; every error fails the test. Returns how many loops completed.
async fn contend<F, Fut>(
    cluster: &NatsCluster,
    bucket: &str,
    (clients, mode): (usize, Mode),
    work: F,
) -> usize
where
    F: Fn(Locks, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut tasks = JoinSet::new();
    let loops = Arc::new(AtomicUsize::new(0));
    for node in 0..3 {
        for c in 0..clients {
            let locks = locks_on_node(cluster, node, bucket, mode, node * clients + c).await;
            let (work, loops) = (work.clone(), loops.clone());
            tasks.spawn(async move {
                let end = Instant::now() + RUN;
                let mut round = 0;
                while Instant::now() < end {
                    work(locks.clone(), node * clients + c + round).await;
                    loops.fetch_add(1, Ordering::SeqCst);
                    round += 1;
                }
                locks.shutdown().await;
            });
        }
    }
    within("the workload", async {
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
    .await;
    loops.load(Ordering::SeqCst)
}

/// The workload of `a_contended_mutex_never_fails_on_r3`, its clients in `mode`.
async fn a_contended_mutex_workload(bucket: String, mode: Mode) {
    let cluster = r3_cluster(&bucket).await;
    let occupancy = Arc::new(Occupancy::default());
    let occ = occupancy.clone();
    let loops = contend(&cluster, &bucket, (2, mode), move |locks, _| {
        let occ = occ.clone();
        async move {
            let g = locks.mutex("m").unwrap().lock().await.unwrap();
            hold(g, &occ, 1, "mutex m").await;
        }
    })
    .await;
    println!("{loops} mutex acquisitions on R3");
    assert!(occupancy.acquisitions.load(Ordering::SeqCst) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contended_mutex_never_fails_on_r3() {
    a_contended_mutex_workload("cm".to_string(), Mode::Leases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contended_mutex_with_leases_and_sessions_mixed_never_fails_on_r3() {
    a_contended_mutex_workload("cms".to_string(), Mode::Mixed).await;
}

/// The workload of `overlapping_multi_locks_never_fail_on_r3`, its clients in `mode`.
async fn overlapping_multi_locks_workload(bucket: String, mode: Mode) {
    let cluster = r3_cluster(&bucket).await;
    let occupancy: Arc<[Occupancy; 3]> = Arc::new(Default::default());
    let occ = occupancy.clone();
    let loops = contend(&cluster, &bucket, (1, mode), move |locks, i| {
        let occ = occ.clone();
        async move {
            let g = locks.mutex("r.0").unwrap().lock().await.unwrap();
            hold(g, &occ[0], 1, "r.0").await;
            let set = if i % 2 == 0 { [1, 2] } else { [2, 0] };
            let multi = locks.multi(set.map(|n| format!("r.{n}"))).unwrap();
            let all = multi.lock().await.unwrap();
            for n in set {
                occ[n].enter(1, "a lock of a multi-lock");
            }
            tokio::task::yield_now().await;
            for n in set {
                occ[n].leave();
            }
            all.release().await.unwrap();
        }
    })
    .await;
    println!("{loops} rounds of a mutex and a multi-lock on R3");
    assert!(occupancy
        .iter()
        .all(|o| o.acquisitions.load(Ordering::SeqCst) > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_multi_locks_never_fail_on_r3() {
    overlapping_multi_locks_workload("cmulti".to_string(), Mode::Leases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_session_bound_multi_locks_never_fail_on_r3() {
    overlapping_multi_locks_workload("cmultis".to_string(), Mode::Sessions).await;
}

/// The workload of `a_contended_semaphore_never_fails_on_r3`, its clients in `mode`.
async fn a_contended_semaphore_workload(bucket: String, mode: Mode) {
    let cluster = r3_cluster(&bucket).await;
    let occupancy = Arc::new(Occupancy::default());
    let occ = occupancy.clone();
    let loops = contend(&cluster, &bucket, (2, mode), move |locks, _| {
        let occ = occ.clone();
        async move {
            let g = locks.semaphore("pool", 2).unwrap().acquire().await.unwrap();
            hold(g, &occ, 2, "semaphore pool").await;
        }
    })
    .await;
    println!("{loops} semaphore acquisitions on R3");
    assert!(occupancy.acquisitions.load(Ordering::SeqCst) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contended_semaphore_never_fails_on_r3() {
    a_contended_semaphore_workload("csem".to_string(), Mode::Leases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contended_session_bound_semaphore_never_fails_on_r3() {
    a_contended_semaphore_workload("csems".to_string(), Mode::Sessions).await;
}

/// The workload of `a_contended_read_write_lock_never_fails_on_r3`, its clients in `mode`.
async fn a_contended_read_write_lock_workload(bucket: String, mode: Mode) {
    let cluster = r3_cluster(&bucket).await;
    let writers = Arc::new(Occupancy::default());
    let readers = Arc::new(Occupancy::default());
    let (w, r) = (writers.clone(), readers.clone());
    let loops = contend(&cluster, &bucket, (2, mode), move |locks, i| {
        let (w, r) = (w.clone(), r.clone());
        async move {
            let rw = locks.rwlock("doc").unwrap();
            if i % 3 == 0 {
                let g = rw.write().await.unwrap();
                assert_eq!(r.now.load(Ordering::SeqCst), 0, "a writer beside readers");
                hold(g, &w, 1, "the write lock").await;
            } else {
                let g = rw.read().await.unwrap();
                assert_eq!(w.now.load(Ordering::SeqCst), 0, "a reader beside a writer");
                hold(g, &r, u32::MAX, "the read lock").await;
            }
        }
    })
    .await;
    println!("{loops} read-write acquisitions on R3");
    assert!(writers.acquisitions.load(Ordering::SeqCst) > 0);
    assert!(readers.acquisitions.load(Ordering::SeqCst) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contended_read_write_lock_never_fails_on_r3() {
    a_contended_read_write_lock_workload("crw".to_string(), Mode::Leases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contended_read_write_lock_with_sessions_mixed_never_fails_on_r3() {
    a_contended_read_write_lock_workload("crws".to_string(), Mode::Mixed).await;
}
