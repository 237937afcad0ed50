//! The nemesis and the cluster faults it uses, against real 3-node clusters.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use kvtk_tests::history::{History, Op, Outcome};
use kvtk_tests::nemesis::{Fault, FaultKind, Nemesis, Schedule, Step};
use kvtk_tests::{until, within, FaultProxy, NatsCluster, T};

/// A client of the given nodes only (300 ms requests), so a cut stays a cut.
async fn client(url: impl async_nats::ToServerAddrs) -> async_nats::Client {
    kvtk_tests::client::options(Duration::from_millis(300))
        .ignore_discovered_servers()
        .connect(url)
        .await
        .expect("connect")
}

/// Polls a request from `from` to a responder on node 0 until it answers as `want` (true:
/// answered), under `T`.
async fn until_routed(from: &async_nats::Client, want: bool) {
    until(&format!("requests to become answered={want}"), || async {
        from.request("echo", "ping".into()).await.is_ok() == want
    })
    .await;
}

#[tokio::test]
async fn a_partition_cuts_two_nodes_apart_and_heals() {
    let cluster = NatsCluster::start_partitionable().await;
    assert!(cluster.is_partitionable());
    let responder = client(cluster.node(0).client_url()).await;
    let mut requests = responder.subscribe("echo").await.expect("subscribe");
    let echo = tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            if let Some(reply) = msg.reply {
                let _ = responder.publish(reply, "pong".into()).await;
            }
        }
    });
    let far = client(cluster.node(1).client_url()).await;
    let third = client(cluster.node(2).client_url()).await;
    until_routed(&far, true).await;

    cluster.partition(0, 1);
    // NATS does not forward between routes: n1 cannot reach n0 while n2 still can.
    until_routed(&far, false).await;
    // Answered, however slowly: the 300 ms bound is for cuts (it failed once at load 12).
    let patient = async_nats::Request::new()
        .payload("ping".into())
        .timeout(Some(T));
    assert!(third.send_request("echo", patient).await.is_ok());
    assert!(cluster.meta_leader().await.is_some());

    cluster.heal_partition(0, 1);
    until_routed(&far, true).await;
    echo.abort();
}

#[tokio::test]
async fn a_paused_node_answers_nothing_until_resumed() {
    let cluster = NatsCluster::start().await;
    let c = client(cluster.node(2).client_url()).await;
    assert!(c.request("$JS.API.INFO", "".into()).await.is_ok());
    cluster.pause_node(2);
    let answer = c.request("$JS.API.INFO", "".into()).await;
    assert!(
        answer.is_err(),
        "answered while paused: {:?}",
        answer.map(|m| (
            m.status,
            m.headers,
            String::from_utf8_lossy(&m.payload).into_owned()
        ))
    );
    cluster.resume_node(2);
    until("the resumed node to answer again", || async {
        c.request("$JS.API.INFO", "".into()).await.is_ok()
    })
    .await;
}

#[test]
fn a_schedule_replays_from_its_seed_and_prints_it() {
    let kinds = FaultKind::ALL;
    let a = Schedule::generate(42, Duration::from_secs(600), &kinds, 2);
    assert_eq!(
        a,
        Schedule::generate(42, Duration::from_secs(600), &kinds, 2)
    );
    assert_ne!(
        a,
        Schedule::generate(43, Duration::from_secs(600), &kinds, 2)
    );
    // Ten minutes of steps draw every kind of fault.
    let drawn = |k: FaultKind| {
        a.steps.iter().any(|s| {
            matches!(
                (k, s.fault),
                (FaultKind::ClientCut, Fault::ClientCut(_))
                    | (FaultKind::ClientBlackhole, Fault::ClientBlackhole(_))
                    | (FaultKind::ClientLatency, Fault::ClientLatency(..))
                    | (FaultKind::Kill, Fault::Kill(_))
                    | (FaultKind::Pause, Fault::Pause(_))
                    | (FaultKind::Partition, Fault::Partition(..))
                    | (FaultKind::KillStreamLeader, Fault::KillStreamLeader(_))
                    | (FaultKind::Restart, Fault::Restart(_))
                    | (FaultKind::ClientStall, Fault::ClientStall(_))
            )
        })
    };
    assert!(kinds.iter().all(|&k| drawn(k)));
    assert!(a.steps.iter().all(|s| match s.fault {
        Fault::Partition(x, y) => x != y && x < 3 && y < 3,
        Fault::KillStreamLeader(s) => s < 2,
        // A stall outlasts a lease of the chaos workloads (12 s); other faults do not.
        Fault::ClientStall(_) => s.hold >= Duration::from_secs(13),
        _ => s.hold < Duration::from_secs(6),
    }));
    let text = a.to_string();
    assert!(text.starts_with("nemesis schedule, seed 42:"), "{text}");
    assert_eq!(text.lines().count(), a.steps.len() + 1);
}

#[tokio::test]
async fn the_nemesis_injects_heals_and_records_each_fault() {
    let mut cluster = NatsCluster::start_partitionable().await;
    let proxies = [
        FaultProxy::start(&cluster.node(0).client_url()).await,
        FaultProxy::start(&cluster.node(1).client_url()).await,
        FaultProxy::start(&cluster.node(2).client_url()).await,
    ];
    let urls: Vec<String> = proxies.iter().map(FaultProxy::url).collect();
    // An R3 stream's create is answered once its first election ends, which on a busy
    // machine took longer than the client's 300 ms requests (2 runs in 25 at load 12).
    let mut setup = jetstream::new(client(urls).await);
    setup.set_timeout(T);
    let store = within(
        "the bucket",
        setup.create_key_value(kv::Config {
            bucket: "nem".into(),
            num_replicas: 3,
            ..Default::default()
        }),
    )
    .await
    .expect("bucket");
    let step = |fault| Step {
        gap: Duration::from_millis(100),
        fault,
        hold: Duration::from_millis(700),
    };
    let schedule = Schedule {
        seed: 0,
        steps: vec![
            step(Fault::KillStreamLeader(0)),
            step(Fault::Partition(0, 2)),
            step(Fault::Pause(1)),
            step(Fault::ClientCut(0)),
        ],
    };
    let history = History::new();
    let streams = vec!["KV_nem".to_string()];
    let injected = Nemesis::new(&mut cluster, &proxies, streams, history.clone())
        .run(&schedule, Duration::from_secs(120))
        .await;
    assert_eq!(injected, 4);
    let faults: Vec<_> = history.records();
    let what: Vec<String> = faults
        .iter()
        .map(|r| match &r.op {
            Op::Fault { what } => what.clone(),
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(
        what,
        [
            "SIGKILL leader of stream #0",
            "partition n0 | n2",
            "SIGSTOP n1",
            "cut clients of n0"
        ]
    );
    assert!(faults
        .iter()
        .all(|r| r.outcome == Outcome::Ok
            && r.completed >= Some(r.invoked + Duration::from_millis(700))));
    // Healed: the bucket takes writes again through the proxies.
    until("the bucket to take writes after the schedule", || async {
        store.put("k", "v".into()).await.is_ok()
    })
    .await;
}
