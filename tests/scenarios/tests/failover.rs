//! Every recipe's default lease rides through server failures on a 3-node cluster.
//!
//! One R3 bucket holds a lock, an election (a leader and a standby), a group of three members
//! with two watchers, and a configuration document with two readers that acknowledge what
//! they applied (fleet acks). Nothing chooses a lease: every recipe takes its default for a
//! replicated bucket. Every client connects only to the two nodes that do not lead the
//! bucket's stream. Then the stream leader's server is killed, and after it rejoined a
//! follower is killed. After each fault nothing healthy is lost, expelled or failed: the
//! guard is still held, the leader keeps its term, no member leaves, every lease renews
//! again, the watchers see a member's update, and the readers apply and acknowledge a new
//! configuration.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::future::IntoFuture;
use std::time::Duration;

use kvtk_config::{ConfigReader, ConfigWriter, Source};
use kvtk_core::lease::REPLICATED_TTL;
use kvtk_core::{Backoff, Bucket, BucketConfig, Kv, Revision};
use kvtk_leader::{Election, Leadership};
use kvtk_locks::{Guard, Locks};
use kvtk_membership::{Member, Membership, MembershipEvent};
use kvtk_tests::{client, until, within, NatsCluster, T};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const BUCKET: &str = "app";
const STREAM: &str = "KV_app";
const GROUP: &str = "workers";

/// The configuration the readers follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    batch: u32,
}

/// One bucket for all recipes: history 1, per-key TTLs, atomic batches, three replicas.
fn bucket_config() -> BucketConfig {
    BucketConfig::new(BUCKET)
        .history(1)
        .per_key_ttl(Duration::from_secs(60))
        .atomic_batches(true)
        .replicas(3)
}

/// A bucket handle over its own connection to `urls` only (discovered servers ignored).
async fn open(urls: &[String]) -> Bucket {
    let client = client::options(Duration::from_secs(2))
        .ignore_discovered_servers()
        .retry_on_initial_connect()
        .connect(urls.to_vec())
        .await
        .unwrap();
    Kv::new(client).open(BUCKET).await.unwrap()
}

/// The application: every recipe on the bucket, with default leases.
struct App {
    guard: Guard,
    leader: Leadership,
    term: kvtk_leader::Term,
    /// The standby's election handle and its pending campaign.
    standby: Election,
    standby_campaign: tokio::task::JoinHandle<Result<Leadership, kvtk_leader::Error>>,
    members: Vec<Member>,
    watchers: Vec<UnboundedReceiver<MembershipEvent>>,
    writer: ConfigWriter<Job>,
    readers: Vec<ConfigReader<Job>>,
    /// The last configuration written.
    batch: u32,
}

impl App {
    async fn start(urls: &[String]) -> App {
        let locks = Locks::new(open(urls).await).await.unwrap();
        assert_eq!(locks.default_lease().ttl().as_duration(), REPLICATED_TTL);
        let guard = locks.mutex("jobs.nightly").unwrap().lock().await.unwrap();
        let (leader, standby, standby_campaign) = elect(urls).await;
        let (members, watchers) = join(urls).await;
        let (writer, readers) = configure(urls).await;
        App {
            term: leader.term(),
            guard,
            leader,
            standby,
            standby_campaign,
            members,
            watchers,
            writer,
            readers,
            batch: 1,
        }
    }

    /// The revisions of every lease the test can see, to tell when all renewed.
    fn revisions(&self) -> Vec<Revision> {
        let mut out = vec![self.guard.lease().revision(), self.leader.revision()];
        out.extend(self.members.iter().map(|m| m.lease().revision()));
        out
    }

    /// Panics when anything healthy was lost.
    fn assert_held(&self, phase: &str) {
        assert!(self.guard.is_held(), "{phase}: the lock guard was lost");
        assert!(self.leader.is_leader(), "{phase}: the leader lost its term");
        assert_eq!(self.leader.term(), self.term, "{phase}: a new term");
        assert!(
            !self.standby_campaign.is_finished(),
            "{phase}: the standby's campaign ended"
        );
        for m in &self.members {
            assert!(m.is_alive(), "{phase}: member {} was lost", m.id());
        }
    }

    /// After a fault: every lease renews again, the leader is still the one observed, the
    /// watchers see a member's update and no departure, the readers apply and acknowledge a
    /// new configuration.
    async fn check(&mut self, phase: &str, before: &[Revision]) {
        let renewed = format!("{phase}: every lease renewed after the fault");
        until(&renewed, || {
            self.assert_held(phase);
            let now = self.revisions();
            std::future::ready(now.iter().zip(before).all(|(n, b)| n > b))
        })
        .await;
        let seen = within("the leader, observed", async {
            Backoff::DEFAULT.retry(|| self.standby.leader()).await
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!((seen.id.as_str(), seen.term), ("c0", self.term), "{phase}");
        self.check_watchers(phase).await;
        self.check_config(phase).await;
        self.assert_held(phase);
    }

    async fn check_watchers(&mut self, phase: &str) {
        let meta = phase.to_string();
        within("the member update", async {
            Backoff::DEFAULT
                .retry(|| self.members[0].update(meta.clone()))
                .await
        })
        .await
        .unwrap();
        for (i, w) in self.watchers.iter_mut().enumerate() {
            let what = format!("{phase}: watcher {i} to see m0's update");
            within(&what, async {
                loop {
                    match w.recv().await.expect("the watcher ended") {
                        MembershipEvent::Updated(m)
                            if m.id() == "m0" && m.metadata().as_ref() == meta.as_bytes() =>
                        {
                            return;
                        }
                        MembershipEvent::Updated(_) => {}
                        other => panic!("{what}: unexpected {other:?}"),
                    }
                }
            })
            .await;
        }
    }

    async fn check_config(&mut self, phase: &str) {
        self.batch += 1;
        let job = Job { batch: self.batch };
        let written = within("the config write", async {
            Backoff::DEFAULT.retry(|| self.writer.set(&job)).await
        })
        .await
        .unwrap();
        for r in &mut self.readers {
            let what = format!("{phase}: a reader to apply batch {}", job.batch);
            within(&what, async {
                while r.current().batch != job.batch {
                    r.changed().await;
                }
            })
            .await;
        }
        let rev = written.revision.unwrap();
        let acked = within("both fleet acks", self.writer.wait_applied(rev, 2))
            .await
            .unwrap();
        assert_eq!(acked, ["r0", "r1"], "{phase}");
    }

    async fn stop(self) {
        self.guard.release().await.unwrap();
        self.leader.resign().await.unwrap();
        let standby = within("the standby to take over", self.standby_campaign)
            .await
            .unwrap()
            .unwrap();
        standby.resign().await.unwrap();
        for m in self.members {
            assert!(m.leave().await.unwrap().was_held);
        }
        for r in &self.readers {
            r.shutdown().await;
        }
    }
}

/// A leader `c0` and a standby `c1` on their own connections, default lease.
async fn elect(
    urls: &[String],
) -> (
    Leadership,
    Election,
    tokio::task::JoinHandle<Result<Leadership, kvtk_leader::Error>>,
) {
    let el = Election::builder(open(urls).await, "svc").build().unwrap();
    let leader = within("c0 to lead", el.campaign("c0")).await.unwrap();
    assert_eq!(el.lease_config().ttl().as_duration(), REPLICATED_TTL);
    let standby = Election::builder(open(urls).await, "svc").build().unwrap();
    let campaign = tokio::spawn(standby.campaign("c1").into_future());
    until("c1 to stand", || async {
        let cands = standby.candidates().await.unwrap_or_default();
        cands.iter().any(|c| c.id == "c1")
    })
    .await;
    (leader, standby, campaign)
}

/// Three members (default TTL) and two watchers, each on its own connection. The watchers'
/// events go through channels after their initial snapshots.
async fn join(urls: &[String]) -> (Vec<Member>, Vec<UnboundedReceiver<MembershipEvent>>) {
    let mut watchers = Vec::new();
    for _ in 0..2 {
        let group = Membership::new(&open(urls).await)
            .await
            .unwrap()
            .group(GROUP)
            .unwrap();
        let mut w = group.watch().await.unwrap();
        let (tx, rx) = unbounded_channel();
        tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(ev) = w.next().await {
                // Errors while the servers fail over are reported and the watch goes on.
                match ev {
                    Ok(MembershipEvent::Present(_) | MembershipEvent::InitialDone) => {}
                    Ok(ev) => {
                        if tx.send(ev).is_err() {
                            return;
                        }
                    }
                    Err(e) => println!("watch error (it goes on): {e}"),
                }
            }
        });
        watchers.push(rx);
    }
    let mut members = Vec::new();
    for i in 0..3 {
        let membership = Membership::new(&open(urls).await).await.unwrap();
        assert_eq!(
            membership.default_lease().ttl().as_duration(),
            REPLICATED_TTL
        );
        let group = membership.group(GROUP).unwrap();
        // The bucket was placed a moment ago: a transient error is retried (and shown).
        let join = || {
            let j = group.join(format!("m{i}"), "v0").into_future();
            async { j.await.inspect_err(|e| println!("join m{i}: {e:?}")) }
        };
        members.push(
            within("a join", Backoff::DEFAULT.retry(join))
                .await
                .unwrap(),
        );
    }
    for w in &mut watchers {
        let mut joined = 0;
        while joined < 3 {
            match within("a member to join", w.recv()).await.unwrap() {
                MembershipEvent::Joined(_) => joined += 1,
                MembershipEvent::Updated(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    (members, watchers)
}

/// A writer and two readers `r0`, `r1` that acknowledge (default ack TTL).
async fn configure(urls: &[String]) -> (ConfigWriter<Job>, Vec<ConfigReader<Job>>) {
    let writer = ConfigWriter::<Job>::new(open(urls).await, Source::document("job"));
    let rev = writer
        .set(&Job { batch: 1 })
        .await
        .unwrap()
        .revision
        .unwrap();
    let mut readers = Vec::new();
    for i in 0..2 {
        let r = ConfigReader::<Job>::builder(Source::document("job"))
            .instance(format!("r{i}"))
            .bucket(open(urls).await)
            .await
            .unwrap();
        readers.push(r);
    }
    within("both fleet acks", writer.wait_applied(rev, 2))
        .await
        .unwrap();
    (writer, readers)
}

/// The client URLs of every node but `skip`.
fn urls_but(cluster: &NatsCluster, skip: usize) -> Vec<String> {
    (0..3)
        .filter(|i| *i != skip)
        .map(|i| cluster.node(i).client_url())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_leases_ride_through_a_stream_leader_crash_and_a_follower_crash() {
    let mut cluster = NatsCluster::start().await;
    // Placing an R3 stream on a freshly started cluster can take seconds.
    let admin = Kv::new(cluster.connect().await).with_timeout(Duration::from_secs(30));
    admin.create_or_open(bucket_config()).await.unwrap();
    let leader = cluster.wait_stream_leader(STREAM, T).await.unwrap();
    let mut app = App::start(&urls_but(&cluster, leader)).await;

    // The stream leader's server dies. Nothing observable happens until the two others
    // elect a new stream leader (seconds): that is what the wait is on.
    let before = app.revisions();
    let killed = std::time::Instant::now();
    cluster.kill_node(leader);
    let new_leader = cluster.wait_stream_leader(STREAM, T).await.unwrap();
    println!(
        "stream leader n{leader} killed; n{new_leader} leads after {:?}",
        killed.elapsed()
    );
    app.check("after the stream leader's crash", &before).await;
    cluster.restart_node(leader).await;

    // A follower the clients may be connected to dies: no stream election, reconnects.
    let leader_now = cluster.wait_stream_leader(STREAM, T).await.unwrap();
    let follower = (0..3).find(|i| *i != leader_now && *i != leader).unwrap();
    let before = app.revisions();
    cluster.kill_node(follower);
    println!("follower n{follower} killed; n{leader_now} leads");
    app.check("after a follower's crash", &before).await;
    cluster.restart_node(follower).await;
    app.stop().await;
}
