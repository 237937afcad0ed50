//! Membership on a 3-node cluster with an R3 bucket and no fault: members on every node join,
//! update and leave in a loop without a failure, and a watcher on every node follows them in
//! order: every member it saw join it sees leave, by itself. Each handle talks to one node, so
//! two of them read from stream followers.

// Tests may unwrap: a panic is a test failure with a message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use kvtk_core::Kv;
use kvtk_membership::{Group, LeaveReason, Membership, MembershipEvent, MembershipWatch};
use kvtk_tests::{client, within, NatsCluster};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long the members churn.
const RUN: Duration = Duration::from_secs(6);

/// The group `svc` on its own connection to node `i` alone.
async fn group_on_node(cluster: &NatsCluster, i: usize) -> Group {
    let kv = Kv::new(cluster.node_client(i).await);
    Membership::open(&kv, "mem")
        .await
        .unwrap()
        .group("svc")
        .unwrap()
}

/// Joins, updates and leaves as `n<node>-<k>` in a loop for [`RUN`]; returns the ids used.
async fn churn(group: Group, node: usize) -> Vec<String> {
    let end = Instant::now() + RUN;
    let mut ids = Vec::new();
    while Instant::now() < end {
        let id = format!("n{node}-{}", ids.len());
        let member = group.join(id.as_str(), "up").await.unwrap();
        member.update("busy").await.unwrap();
        member.leave().await.unwrap();
        ids.push(id);
    }
    ids
}

/// What one watcher saw of each member (its events' names, in order) until the sentinel
/// member `end` joined: events come in revision order, so everything written before it has
/// been processed by then.
async fn seen_until_end(watch: &mut MembershipWatch) -> BTreeMap<String, Vec<&'static str>> {
    let mut seen: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    loop {
        let ev = within("a membership event", watch.next()).await.unwrap();
        let (id, what) = match ev.unwrap() {
            MembershipEvent::Joined(m) if m.id() == "end" => return seen,
            MembershipEvent::Joined(m) => (m.id().to_string(), "joined"),
            MembershipEvent::Updated(m) => (m.id().to_string(), "updated"),
            MembershipEvent::Left { member, reason, .. } => {
                assert_eq!(reason, LeaveReason::Left, "{} left by itself", member.id());
                (member.id().to_string(), "left")
            }
            other => panic!("unexpected event after the start: {other:?}"),
        };
        seen.entry(id).or_default().push(what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_churn_and_every_watcher_follows_them_on_r3() {
    let cluster = NatsCluster::start().await;
    let setup =
        Kv::new(client::with_request_timeout(cluster.client_urls(), client::QUORUM_TIMEOUT).await)
            .with_timeout(Duration::from_secs(30));
    setup
        .create_or_open(Membership::bucket_config("mem").replicas(3))
        .await
        .unwrap();
    let (mut groups, mut watches) = (Vec::new(), Vec::new());
    for node in 0..3 {
        let group = group_on_node(&cluster, node).await;
        let mut watch = group.watch().await.unwrap();
        let first = within("the initial snapshot", watch.next()).await.unwrap();
        assert_eq!(first.unwrap(), MembershipEvent::InitialDone);
        groups.push(group);
        watches.push(watch);
    }
    let mut tasks = JoinSet::new();
    for (node, group) in groups.into_iter().enumerate() {
        tasks.spawn(churn(group, node));
    }
    let mut ids = Vec::new();
    while let Some(r) = within("the members", tasks.join_next()).await {
        ids.extend(r.unwrap());
    }
    let sentinel = group_on_node(&cluster, 0)
        .await
        .join("end", "")
        .await
        .unwrap();
    println!("{} members joined, updated and left on R3", ids.len());
    for (node, watch) in watches.iter_mut().enumerate() {
        let seen = seen_until_end(watch).await;
        for (id, events) in &seen {
            assert!(ids.contains(id), "node {node}: a member nobody added: {id}");
            // A join or an update replaced before the watcher's consumer reached it is
            // compacted (history 1, see kvtk-core's watch docs, "Pacing"); the order, and
            // the leave, always show.
            let whole = events.as_slice() == ["joined", "updated", "left"];
            assert!(
                whole || events.as_slice() == ["joined", "left"],
                "node {node}, {id}: {events:?}"
            );
        }
        println!(
            "node {node}: {} of {} members seen joining and leaving",
            seen.len(),
            ids.len()
        );
    }
    sentinel.leave().await.unwrap();
}
