//! docs/protocol.md is enough to take part: the Python client written from it alone
//! (clients/python/kvtk_view.py, nats-py installed by scripts/ensure-python-client.sh) reads
//! a held lock with two waiters, a semaphore, an election with three candidates and a group
//! with members (one bound to a live session, one to a closed one) from a real server, and
//! what it prints is what kvtk's libraries report. It
//! refuses a value of a format version it does not know.

use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use kvtk_core::{Bucket, BucketConfig, Kv};
use kvtk_leader::Election;
use kvtk_locks::{Holder, LockInfo, Locks, QueueEntry};
use kvtk_membership::Membership;
use kvtk_tests::{until, within, NatsServer};
use serde_json::{json, Value};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// Where nats-py is: `KVTK_PYTHON_CLIENT_PATH` (scripts/test.sh sets it), else what
/// scripts/ensure-python-client.sh installs and prints.
fn python_path() -> String {
    if let Ok(p) = std::env::var("KVTK_PYTHON_CLIENT_PATH") {
        return p;
    }
    let script = repo_root().join("scripts/ensure-python-client.sh");
    let out = std::process::Command::new(script)
        .output()
        .expect("scripts/ensure-python-client.sh runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("a path")
        .trim()
        .to_string()
}

/// Runs the Python client with `args` against `url`.
async fn view(url: &str, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(repo_root().join("clients/python/kvtk_view.py"))
        .args(["--url", url])
        .args(args)
        .env("PYTHONPATH", python_path())
        .kill_on_drop(true);
    within("the python client", cmd.output())
        .await
        .expect("python3 runs")
}

async fn bucket(kv: &Kv, config: BucketConfig) -> Bucket {
    kv.create_or_open(config).await.expect("bucket")
}

/// A queue entry as the Python client prints it.
fn entry(e: &QueueEntry) -> Value {
    let kind = match e.kind {
        kvtk_locks::EntryKind::Exclusive => "x",
        kvtk_locks::EntryKind::Shared => "s",
        kvtk_locks::EntryKind::Permit => "p",
        _ => "?",
    };
    json!({
        "key": e.key,
        "ticket": e.token.get(),
        "holder": e.holder.as_ref().map(|h| h.id.as_str()),
        "kind": kind,
        "multi": e.multi,
    })
}

fn lock(info: &LockInfo) -> Value {
    json!({
        "permits": info.permits,
        "holders": info.holders.iter().map(entry).collect::<Vec<_>>(),
        "waiters": info.waiters.iter().map(entry).collect::<Vec<_>>(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_client_written_from_the_protocol_sees_what_kvtk_sees() {
    let server = NatsServer::start().await;
    let url = server.client_url();
    let kv = Kv::new(server.connect().await);

    // A mutex held by one holder with two waiters, and a semaphore of 2 with a waiter. The
    // holder and the second waiter bind their entries to a session.
    let locks = Locks::open(&kv, "locks").await.expect("locks");
    let named = |id: &str| locks.clone().holder(Holder::named(id));
    let held = named("holder")
        .bind_to_session()
        .mutex("jobs.x")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let mut waiting = Vec::new();
    for (i, id) in ["waiter-1", "waiter-2"].into_iter().enumerate() {
        let waiter = if i == 1 {
            named(id).bind_to_session()
        } else {
            named(id)
        };
        let acq = waiter.mutex("jobs.x").unwrap().lock();
        waiting.push(tokio::spawn(acq.into_future()));
        until("the waiter queued", || async {
            locks.inspect("jobs.x").await.unwrap().waiters.len() == i + 1
        })
        .await;
    }
    let sem = |id: &str| named(id).semaphore("pool", 2).unwrap();
    let permits = [
        sem("p-1").acquire().await.unwrap(),
        sem("p-2").acquire().await.unwrap(),
    ];
    waiting.push(tokio::spawn(sem("p-3").acquire().into_future()));
    until("the permit waiter queued", || async {
        locks.inspect("pool").await.unwrap().waiters.len() == 1
    })
    .await;
    let multi = locks
        .multi(["acct.a", "acct.b"])
        .unwrap()
        .lock()
        .await
        .unwrap();

    // An election with three candidates, one leading.
    let el_bucket = bucket(&kv, Election::bucket_config("elections")).await;
    let el = Election::new(el_bucket.clone(), "sched", Duration::from_secs(10)).unwrap();
    let leader = el.campaign("c-1").value("10.0.0.1:80").await.unwrap();
    let campaigns: Vec<_> = ["c-2", "c-3"]
        .map(|id| tokio::spawn(el.campaign(id).into_future()))
        .into();
    until("three candidates", || async {
        el.candidates().await.unwrap().len() == 3
    })
    .await;

    // An election bound to sessions whose leader stepped down: the leader key is the
    // hand-over, bound to the successor's session, its term the hand-over's revision.
    let handed = Election::builder(el_bucket, "handed")
        .ttl(Duration::from_secs(10))
        .bind_to_session()
        .build()
        .unwrap();
    let first = handed.campaign("h-1").await.unwrap();
    let second = tokio::spawn(handed.campaign("h-2").into_future());
    until("two bound candidates", || async {
        handed.candidates().await.unwrap().len() == 2
    })
    .await;
    let again = first.step_down().await;
    let successor = second.await.unwrap().unwrap();
    assert_eq!(successor.id(), "h-2");

    // A group with members.
    let mem_bucket = bucket(&kv, Membership::bucket_config("members")).await;
    let membership = Membership::new(&mem_bucket).await.unwrap();
    let api = membership.group("api").unwrap();
    let bound = Membership::new(&mem_bucket)
        .await
        .unwrap()
        .bind_to_session();
    let members = [
        api.join("i-1", "10.0.0.1:8080").await.unwrap(),
        api.join("i-2", "10.0.0.2:8080").await.unwrap(),
        bound
            .group("api")
            .unwrap()
            .join("b-1", "10.0.0.3:8080")
            .await
            .unwrap(),
    ];
    assert!(members[2].session().is_some());
    // A member bound to a session that ended (closed while it was registered): present for
    // neither until someone removes it.
    let cfg = kvtk_core::lease::LeaseConfig::new(Duration::from_secs(10)).unwrap();
    let keeper = kvtk_core::lease::Keeper::new(&mem_bucket, cfg).unwrap();
    let session = keeper.session().await.unwrap();
    let dead = session.bind("api.dead", "10.0.0.4:8080");
    let dead = dead.format(kvtk_core::format::RECIPE_FORMAT).await.unwrap();
    session.close().await.unwrap();

    let out = view(
        &url,
        &[
            "--lock",
            "jobs.x",
            "--lock",
            "pool",
            "--lock",
            "acct.a",
            "--election",
            "sched",
            "--election",
            "handed",
            "--group",
            "api",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("JSON");

    // What kvtk's libraries report, read after the client (nothing changes in between).
    for name in ["jobs.x", "pool", "acct.a"] {
        let info = locks.inspect(name).await.unwrap();
        assert_eq!(seen["locks"][name], lock(&info), "lock {name}");
    }
    assert_eq!(
        seen["locks"]["jobs.x"]["waiters"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        seen["locks"]["pool"]["holders"].as_array().map(Vec::len),
        Some(2)
    );
    let l = el.leader().await.unwrap().expect("a leader");
    let want = json!({"id": l.id, "value": l.value, "term": l.term.get()});
    assert_eq!(seen["elections"]["sched"]["leader"], want);
    assert_eq!(l.term, leader.term());
    let h = handed.leader().await.unwrap().expect("the successor");
    let want = json!({"id": "h-2", "value": "", "term": successor.term().get()});
    assert_eq!(seen["elections"]["handed"]["leader"], want);
    assert_eq!(h.term, successor.term());
    assert_eq!(
        seen["elections"]["handed"]["candidates"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let mut ids: Vec<String> = seen["elections"]["sched"]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let kvtk_ids: Vec<String> = el
        .candidates()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, kvtk_ids);
    let listed: Vec<Value> = api
        .members()
        .await
        .unwrap()
        .iter()
        .map(|m| {
            let meta = String::from_utf8_lossy(m.metadata()).into_owned();
            json!({"id": m.id(), "joined_at": m.joined_at().get(), "metadata": meta})
        })
        .collect();
    assert_eq!(seen["groups"]["api"], json!(listed));
    assert_eq!(
        listed.len(),
        3,
        "i-1, i-2 and b-1; not the dead session's member"
    );
    drop(dead);

    // A value of a format version it does not know: refused, exit status 2.
    let b = locks.bucket();
    let future = r#"{"v":99,"holder":{"id":"future"},"kind":"x"}"#;
    b.put("jobs.v99._q.0123456789abcdef0123456789abcdef", future)
        .await
        .unwrap();
    let out = view(&url, &["--lock", "jobs.v99"]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("format version 99"), "{err}");

    for c in campaigns {
        c.abort();
    }
    for w in waiting {
        w.abort();
    }
    for m in members {
        m.leave().await.unwrap();
    }
    multi.release().await.unwrap();
    for p in permits {
        p.release().await.unwrap();
    }
    leader.resign().await.unwrap();
    successor.resign().await.unwrap();
    drop(again);
    held.release().await.unwrap();
}
