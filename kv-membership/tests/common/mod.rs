//! Shared helpers of the kvtk-membership real-server tests (the kit, `kvtk_tests`, has the
//! rest): watch events, and the R3 churn scenario run with leases and with sessions.
#![allow(dead_code)]
// Tests may unwrap: a panic is a test failure with a message.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use kvtk_core::Kv;
use kvtk_membership::{
    Group, LeaveReason, MemberInfo, Membership, MembershipEvent, MembershipWatch,
};
use kvtk_tests::{client, within, NatsCluster};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A `Kv` over `url` with short request timeouts (fault tests must not wait 5 s a request).
pub(crate) async fn connect(url: impl async_nats::ToServerAddrs) -> Kv {
    Kv::new(client::short_timeouts(url).await)
}

/// Starts the `kv-member` sidecar with `args`; returns it with the line it printed once
/// joined.
pub(crate) async fn sidecar(args: &[&str]) -> (tokio::process::Child, String) {
    use tokio::io::{AsyncBufReadExt as _, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kv-member"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = within("the sidecar's join", lines.next_line())
        .await
        .unwrap();
    (child, line.expect("the sidecar exited before joining"))
}

pub(crate) async fn next(w: &mut MembershipWatch) -> MembershipEvent {
    within("a membership event", w.next())
        .await
        .expect("watch ended")
        .expect("watch error")
}

/// The watch's initial snapshot: its `Present` members up to `InitialDone`.
pub(crate) async fn snapshot(w: &mut MembershipWatch) -> Vec<MemberInfo> {
    let mut out = Vec::new();
    loop {
        match next(w).await {
            MembershipEvent::Present(m) => out.push(m),
            MembershipEvent::InitialDone => return out,
            other => panic!("unexpected event before InitialDone: {other:?}"),
        }
    }
}

pub(crate) async fn left(w: &mut MembershipWatch) -> (MemberInfo, LeaveReason) {
    match next(w).await {
        MembershipEvent::Left { member, reason, .. } => (member, reason),
        other => panic!("expected Left, got {other:?}"),
    }
}

pub(crate) async fn joined(w: &mut MembershipWatch) -> MemberInfo {
    match next(w).await {
        MembershipEvent::Joined(m) => m,
        other => panic!("expected Joined, got {other:?}"),
    }
}

/// How long the members churn in [`churn_on_r3`].
const RUN: Duration = Duration::from_secs(6);

/// The group `svc` on its own connection to node `i` alone (a process of its own: its own
/// keeper, and its own session if `bound`).
async fn group_on_node(cluster: &NatsCluster, i: usize, bound: bool) -> Group {
    let kv = Kv::new(cluster.node_client(i).await);
    let membership = Membership::open(&kv, "mem").await.unwrap();
    let membership = if bound {
        membership.bind_to_session()
    } else {
        membership
    };
    membership.group("svc").unwrap()
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

/// On a 3-node cluster with an R3 bucket and no fault: a process on every node (bound to a
/// session of its own if `bound`) keeps one member `stay-<node>` and joins, updates and
/// leaves others in a loop without a failure; a watcher on every node follows them in order
/// — every member it saw join it sees leave, by itself, and no `stay-*` member leaves — and
/// every node lists the same members at the end.
pub(crate) async fn churn_on_r3(bound: bool) {
    let cluster = NatsCluster::start().await;
    let setup =
        Kv::new(client::with_request_timeout(cluster.client_urls(), client::QUORUM_TIMEOUT).await)
            .with_timeout(Duration::from_secs(30));
    setup
        .create_or_open(Membership::bucket_config("mem").replicas(3))
        .await
        .unwrap();
    let (mut groups, mut watches, mut stays) = (Vec::new(), Vec::new(), Vec::new());
    for node in 0..3 {
        let group = group_on_node(&cluster, node, bound).await;
        let mut watch = group.watch().await.unwrap();
        let first = within("the initial snapshot", watch.next()).await.unwrap();
        assert_eq!(first.unwrap(), MembershipEvent::InitialDone);
        groups.push(group);
        watches.push(watch);
    }
    for (node, group) in groups.iter().enumerate() {
        stays.push(group.join(format!("stay-{node}"), "").await.unwrap());
    }
    assert!(stays.iter().all(|m| m.session().is_some() == bound));
    let mut tasks = JoinSet::new();
    for (node, group) in groups.iter().cloned().enumerate() {
        tasks.spawn(churn(group, node));
    }
    let mut ids: Vec<String> = (0..3).map(|n| format!("stay-{n}")).collect();
    while let Some(r) = within("the members", tasks.join_next()).await {
        ids.extend(r.unwrap());
    }
    let sentinel = groups[0].join("end", "").await.unwrap();
    println!(
        "{} members joined, updated and left on R3 (bound: {bound})",
        ids.len()
    );
    for (node, watch) in watches.iter_mut().enumerate() {
        let seen = seen_until_end(watch).await;
        for (id, events) in &seen {
            assert!(ids.contains(id), "node {node}: a member nobody added: {id}");
            if id.starts_with("stay-") {
                assert_eq!(events.as_slice(), ["joined"], "node {node}, {id}");
                continue;
            }
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
    let want: BTreeSet<String> = ["stay-0", "stay-1", "stay-2", "end"]
        .into_iter()
        .map(String::from)
        .collect();
    for (node, group) in groups.iter().enumerate() {
        kvtk_tests::until("every node lists the same members", || async {
            let listed = group.members().await.unwrap();
            listed
                .iter()
                .map(|m| m.id().to_string())
                .collect::<BTreeSet<_>>()
                == want
        })
        .await;
        println!("node {node} lists {want:?}");
    }
    sentinel.leave().await.unwrap();
    for m in stays {
        m.leave().await.unwrap();
    }
}
