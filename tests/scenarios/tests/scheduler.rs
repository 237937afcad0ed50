//! One app on all three recipes against a real server: a scheduler whose elected leader takes
//! a lock to run a job, with the job's parameters from live configuration.
//!
//! Each node is a candidate in the election `scheduler`, has a lock handle and reads the
//! document `job`. The leader runs the job under the lock `jobs.reindex`: each step writes
//! its status guarded by the leadership (`Fencing::put`) and its output through a `KvFence`
//! checking the lock's token. The test checks that a configuration change reaches the running
//! job, that leadership moves on resign to the waiting node, that the lock is handed over to
//! it (its acquisition waited in the queue while the old leader still held), that terms and
//! tokens increase, and that the old leader's late writes are refused by the server.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::time::Duration;

use kvtk_config::{ConfigReader, ConfigWriter, Source};
use kvtk_core::{BucketConfig, Kv};
use kvtk_leader::{Election, Leadership};
use kvtk_locks::{Guard, KvFence, Locks, Released, Token};
use kvtk_tests::{until, within, NatsServer, T};
use serde::{Deserialize, Serialize};

const ELECTION: &str = "scheduler";
const LOCK: &str = "jobs.reindex";
const OUTPUT: &str = "reindex.output";

/// The job's parameters, read from live configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    batch: u32,
}

/// What one step of the job wrote, and under which term and token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Step {
    node: String,
    term: u64,
    token: u64,
    batch: u32,
}

/// One node of the app: its own connection, election handle, lock handle and config reader.
struct Node {
    id: &'static str,
    election: Election,
    locks: Locks,
    config: ConfigReader<Job>,
}

impl Node {
    async fn start(server: &NatsServer, id: &'static str) -> Node {
        let kv = Kv::new(server.connect().await);
        let el = kv
            .create_or_open(Election::bucket_config("el"))
            .await
            .unwrap();
        let cfg = kv.create_or_open(config_bucket()).await.unwrap();
        Node {
            id,
            election: Election::new(el, ELECTION, Duration::from_secs(3)).unwrap(),
            locks: Locks::open(&kv, "locks").await.unwrap(),
            config: ConfigReader::<Job>::builder(Source::document("job"))
                .bucket(cfg)
                .await
                .unwrap(),
        }
    }

    /// The fence of the job's output (a key next to the lock, checked by the server).
    fn fence(&self) -> KvFence {
        KvFence::new(self.locks.bucket().clone(), "reindex.fence")
    }

    /// One step of the job with the configuration as it is now: the status write guarded by
    /// the leadership, then the output write fenced by the lock's token.
    async fn step(&self, leadership: &Leadership, guard: &Guard) -> Step {
        let step = Step {
            node: self.id.into(),
            term: leadership.term().get(),
            token: guard.token().get(),
            batch: self.config.current().batch,
        };
        let json = serde_json::to_vec(&step).unwrap();
        let fencing = leadership.fencing();
        fencing.put("scheduler.status", json.clone()).await.unwrap();
        self.fence()
            .write(guard.token(), OUTPUT, json)
            .await
            .unwrap();
        step
    }
}

fn config_bucket() -> BucketConfig {
    BucketConfig::new("cfg").history(10).atomic_batches(true)
}

/// The job's output as the resource holds it.
async fn output(node: &Node) -> Step {
    let entry = node.locks.bucket().get(OUTPUT).await.unwrap().unwrap();
    serde_json::from_slice(entry.value()).unwrap()
}

#[tokio::test]
async fn the_leader_runs_the_job_under_the_lock_with_live_config_and_hands_both_over() {
    let server = NatsServer::start().await;
    let admin = Kv::new(server.connect().await);
    let cfg = admin.create_or_open(config_bucket()).await.unwrap();
    let writer = ConfigWriter::<Job>::new(cfg, Source::document("job"));
    writer.set(&Job { batch: 10 }).await.unwrap();

    let mut a = Node::start(&server, "a").await;
    let b = Node::start(&server, "b").await;
    let leader_a = within("a to lead", a.election.campaign(a.id))
        .await
        .unwrap();
    let waiting_b = {
        let campaign = b.election.campaign(b.id);
        tokio::spawn(async move { campaign.await })
    };
    until("b to stand as a candidate", || async {
        let candidates = a.election.candidates().await.unwrap();
        candidates.iter().any(|c| c.id == "b")
    })
    .await;

    // The leader takes the lock and runs the job with the configuration it reads.
    let guard_a = a
        .locks
        .mutex(LOCK)
        .unwrap()
        .lock()
        .timeout(T)
        .await
        .unwrap();
    let first = a.step(&leader_a, &guard_a).await;
    assert_eq!(first.batch, 10);
    assert_eq!(output(&a).await, first);

    // A configuration change reaches the running job.
    let written = writer.set(&Job { batch: 20 }).await.unwrap();
    let seen = within("a's job to see the change", a.config.changed()).await;
    assert_eq!((seen.batch, seen.revision()), (20, written.revision));
    let second = a.step(&leader_a, &guard_a).await;
    assert_eq!(
        (second.batch, second.term, second.token),
        (20, first.term, first.token)
    );
    assert_eq!(output(&a).await, second);

    // a resigns; b leads with a higher term and queues for the lock a still holds.
    let stale_fencing = leader_a.fencing();
    leader_a.resign().await.unwrap();
    let leader_b = within("b to lead", waiting_b).await.unwrap().unwrap();
    assert!(leader_b.term() > stale_fencing.term(), "terms increase");
    let acquiring_b = {
        let acquire = b.locks.mutex(LOCK).unwrap().lock().timeout(T);
        tokio::spawn(async move { acquire.await })
    };
    until("b to queue behind a for the lock", || async {
        let info = b.locks.inspect(LOCK).await.unwrap();
        info.holders.len() == 1 && info.waiters.len() == 1
    })
    .await;
    let refused = stale_fencing
        .put("scheduler.status", "late")
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), kvtk_leader::ErrorKind::Lost, "{refused}");

    // a's job stops and releases the lock; b's acquisition completes with a higher token.
    let stale_token: Token = guard_a.token();
    assert_eq!(guard_a.release().await.unwrap(), Released::Released);
    let guard_b = within("the lock to pass to b", acquiring_b)
        .await
        .unwrap()
        .unwrap();
    assert!(guard_b.token() > stale_token, "tokens increase");
    let third = b.step(&leader_b, &guard_b).await;
    assert_eq!((third.node.as_str(), third.batch), ("b", 20));
    assert_eq!(third.term, leader_b.term().get());
    assert_eq!(output(&b).await, third);

    // a's late output write is refused by the server: its token is behind b's.
    let late = a
        .fence()
        .write(stale_token, OUTPUT, "late")
        .await
        .unwrap_err();
    assert_eq!(late.kind(), kvtk_locks::ErrorKind::StaleToken, "{late}");
    assert_eq!(output(&b).await, third);

    // The next change reaches b's job.
    writer.set(&Job { batch: 30 }).await.unwrap();
    let mut b = b;
    within("b's job to see the change", async {
        while b.config.changed().await.batch != 30 {}
    })
    .await;
    assert_eq!(b.step(&leader_b, &guard_b).await.batch, 30);
    guard_b.release().await.unwrap();
    leader_b.resign().await.unwrap();
}
