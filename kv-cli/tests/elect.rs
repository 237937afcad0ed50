//! `kvtk elect` and `kvtk leader` against a real server: three candidate processes, one
//! running child, failover after SIGKILL, a graceful hand-over on SIGUSR1, and an observer
//! that prints every term in order.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{exit_of, mark, marks, signal, terminate, Kvtk};
use kvtk_tests::within;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(2);

/// Collects a background kvtk's stdout lines.
fn lines_of(child: &mut tokio::process::Child) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next observed leader's id (skipping "no leader" lines), with its term.
async fn next_leader(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: &mut Vec<Value>,
) -> (String, u64) {
    loop {
        let line = within("an observed leader", rx.recv()).await.unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        seen.push(v.clone());
        if let Some(l) = v["leader"].as_object() {
            return (
                l["id"].as_str().unwrap().to_string(),
                l["term"].as_u64().unwrap(),
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_child_runs_and_another_takes_over_after_a_crash() {
    let server = kvtk_tests::NatsServer::start().await;
    let kvtk = Kvtk::new(server.client_url());
    let file = kvtk.path("marks");
    let mut observer = kvtk.spawn(["elect", "sched", "--observe", "--json"]);
    let mut observed = lines_of(&mut observer);
    let mut seen = Vec::new();

    let script = format!(
        "echo \"start $KVTK_LEADER_ID $KVTK_LEADER_TERM $$\" >> {f}; trap 'echo \"stop $KVTK_LEADER_ID\" >> {f}; exit 0' TERM; sleep 60 & wait",
        f = file.display()
    );
    let mut candidates: HashMap<String, tokio::process::Child> = HashMap::new();
    for id in ["a", "b", "c"] {
        let c = kvtk.spawn([
            "elect", "sched", "--id", id, "--ttl", "2s", "--", "sh", "-c", &script,
        ]);
        candidates.insert(id.to_string(), c);
    }

    let (first, first_term) = next_leader(&mut observed, &mut seen).await;
    let (_, line) = mark(&file, "a start", |l| l.starts_with("start ")).await;
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[1], first, "the observed leader runs the child");
    assert_eq!(
        fields[2].parse::<u64>().unwrap(),
        first_term,
        "the child sees its term"
    );
    let orphan = Pid::from_raw(fields[3].parse().unwrap());
    // `kvtk leader` agrees.
    let out = kvtk.output(&["leader", "sched", "--json"]);
    let now: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(now["leader"]["id"], first.as_str());
    assert_eq!(
        marks(&file).len(),
        1,
        "exactly one child runs: {:?}",
        marks(&file)
    );

    // SIGKILL the leader's kvtk: nobody resigns, the term expires on the server's clock.
    let mut victim = candidates.remove(&first).unwrap();
    let killed = Instant::now();
    signal(&victim, Signal::SIGKILL);
    let _ = exit_of(&mut victim).await;
    // A killed kvtk cannot stop its command: the test does (its process group).
    let _ = killpg(orphan, Signal::SIGKILL);
    let (second, second_term) = next_leader(&mut observed, &mut seen).await;
    let (started, line) = mark(&file, "a second start", |l| {
        l.starts_with("start ") && !l.starts_with(&format!("start {first} "))
    })
    .await;
    let failover = started - killed;
    assert!(
        line.starts_with(&format!("start {second} {second_term} ")),
        "{line}"
    );
    assert!(second_term > first_term);
    assert!(
        failover <= TTL + Duration::from_secs(1),
        "failover took {failover:?}"
    );
    println!("SIGKILL of the leader's kvtk → next child started after {failover:?} (TTL {TTL:?})");

    // SIGUSR1: the leader stops its child and hands over to the last candidate.
    let handing = Instant::now();
    signal(candidates.get(&second).unwrap(), Signal::SIGUSR1);
    mark(&file, "the stop", |l| l == format!("stop {second}")).await;
    let (third, third_term) = next_leader(&mut observed, &mut seen).await;
    assert_ne!(third, second, "another candidate took over");
    let (started, _) = mark(&file, "a third start", |l| {
        l.starts_with(&format!("start {third} {third_term} "))
    })
    .await;
    println!(
        "SIGUSR1 hand-over: next child started after {:?}",
        started - handing
    );

    for (_, mut c) in candidates {
        terminate(&c);
        let status = exit_of(&mut c).await;
        // The leader's child exits 0 on SIGTERM; a waiting candidate ends by the signal.
        assert!(matches!(status.code(), Some(0 | 143)), "{status:?}");
    }
    let _ = next_leader_or_none(&mut observed, &mut seen).await;
    terminate(&observer);
    let _ = exit_of(&mut observer).await;
    while let Ok(l) = observed.try_recv() {
        seen.push(serde_json::from_str(&l).unwrap());
    }

    // Every term, in order: the three we met, strictly increasing, nothing out of order.
    let terms: Vec<u64> = seen
        .iter()
        .filter_map(|v| v["leader"]["term"].as_u64())
        .collect();
    assert!(terms.windows(2).all(|w| w[0] <= w[1]), "{terms:?}");
    let mut distinct = terms.clone();
    distinct.dedup();
    for t in [first_term, second_term, third_term] {
        assert!(distinct.contains(&t), "term {t} printed: {terms:?}");
    }
}

/// Waits for the observer's "no leader" after everyone stopped.
async fn next_leader_or_none(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: &mut Vec<Value>,
) -> Option<(String, u64)> {
    within("the observer's \"no leader\"", async {
        // The observer's output ends with its process: nothing more will come.
        while let Some(line) = rx.recv().await {
            let v: Value = serde_json::from_str(&line).unwrap();
            seen.push(v.clone());
            if v["leader"].is_null() {
                return None;
            }
        }
        None
    })
    .await
}
