//! `kvtk kv`, `kvtk locks` and the connection flags against a real server: round trips with
//! the library both ways, JSON that parses, one-line errors with their exit codes, and no
//! credential in any message.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::time::Duration;

use common::{code, one_line_error, queued, Kvtk};
use kvtk_core::{BucketConfig, Kv};
use kvtk_locks::Locks;
use kvtk_tests::{within, NatsServer};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

fn json(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_round_trips_with_the_library_both_ways() {
    let server = NatsServer::start().await;
    let kvtk = Kvtk::new(server.client_url());
    let run = |args: &[&str]| kvtk.cmd().args(args).output().unwrap();
    assert!(run(&[
        "kv",
        "add",
        "app",
        "--history",
        "5",
        "--per-key-ttl",
        "1s",
        "--description",
        "d"
    ])
    .status
    .success());

    // kvtk writes, the library reads.
    let rev: u64 = stdout(&run(&["kv", "put", "app", "greeting", "hello"]))
        .parse()
        .unwrap();
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let b = kv.open("app").await.unwrap();
    let e = b.get("greeting").await.unwrap().unwrap();
    assert_eq!(e.value().as_ref(), b"hello");
    assert_eq!(e.revision().get(), rev);

    // The library writes (bytes that are not UTF-8), kvtk reads: raw and as JSON.
    let bin = vec![0u8, 159, 146, 150];
    let rev2 = b.put("blob", bin.clone()).await.unwrap();
    let out = run(&["kv", "get", "app", "blob"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, bin, "raw value, nothing added off a terminal");
    let j = json(&run(&["kv", "get", "app", "blob", "--json"]));
    use base64::Engine as _;
    assert_eq!(
        j["value_base64"],
        base64::engine::general_purpose::STANDARD.encode(&bin)
    );
    assert_eq!(j["revision"].as_u64(), Some(rev2.get()));

    // A value from stdin, and a per-key TTL.
    let out = kvtk
        .cmd()
        .args(["kv", "put", "app", "from.stdin", "--ttl", "30s"])
        .write_stdin("line one\nline two\n")
        .output()
        .unwrap();
    assert!(out.status.success());
    let e = b.get("from.stdin").await.unwrap().unwrap();
    assert_eq!(e.value().as_ref(), b"line one\nline two\n");
    assert_eq!(e.ttl(), Some(Duration::from_secs(30)));

    // create / update --revision: compare-and-set.
    let out = run(&["kv", "create", "app", "greeting", "again"]);
    assert_eq!(code(&out), 1);
    one_line_error(&out);
    let rev3: u64 = stdout(&run(&[
        "kv",
        "update",
        "app",
        "greeting",
        "hi",
        "--revision",
        &rev.to_string(),
    ]))
    .parse()
    .unwrap();
    let out = run(&[
        "kv",
        "update",
        "app",
        "greeting",
        "hey",
        "--revision",
        &rev.to_string(),
    ]);
    assert_eq!(code(&out), 1, "a stale revision conflicts");
    one_line_error(&out);
    let old = json(&run(&[
        "kv",
        "get",
        "app",
        "greeting",
        "--revision",
        &rev.to_string(),
        "--json",
    ]));
    assert_eq!(old["value"], "hello");

    // history, keys, info, ls as JSON.
    let h = json(&run(&["kv", "history", "app", "greeting", "--json"]));
    let revs: Vec<u64> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revs, [rev, rev3]);
    let keys = json(&run(&["kv", "keys", "app", "from.>", "--json"]));
    assert_eq!(keys, serde_json::json!(["from.stdin"]));
    let info = json(&run(&["kv", "info", "app", "--json"]));
    assert_eq!(info["history"], 5);
    assert_eq!(info["per_key_ttl"], true);
    assert_eq!(info["description"], "d");
    assert_eq!(
        json(&run(&["kv", "ls", "--json"])),
        serde_json::json!(["app"])
    );

    // del and purge; the library sees them.
    stdout(&run(&["kv", "del", "app", "greeting"]));
    assert!(b.get("greeting").await.unwrap().is_none());
    stdout(&run(&["kv", "purge", "app", "blob"]));
    assert_eq!(
        b.history("blob").await.unwrap().len(),
        1,
        "one purge marker left"
    );
    let out = run(&["kv", "get", "app", "greeting"]);
    assert_eq!(code(&out), 1);
    assert!(one_line_error(&out).contains("not found"));

    // rm wants a confirmation it cannot ask for here, then --yes.
    let out = run(&["kv", "rm", "app"]);
    assert_eq!(code(&out), 1);
    one_line_error(&out);
    assert!(run(&["kv", "rm", "app", "--yes"]).status.success());
    assert!(kv.bucket_names().await.unwrap().is_empty());
}

type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

async fn next(lines: &mut Lines) -> Value {
    let l = within("a line of kvtk's output", lines.next_line())
        .await
        .unwrap()
        .unwrap();
    serde_json::from_str(&l).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_prints_each_change_as_json() {
    let server = NatsServer::start().await;
    let kvtk = Kvtk::new(server.client_url());
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let b = kv
        .create_bucket(BucketConfig::new("w").history(10))
        .await
        .unwrap();
    let first = b.put("a.x", "1").await.unwrap();
    let mut w = kvtk.spawn(["kv", "watch", "w", "a.>", "--json"]);
    let mut lines = BufReader::new(w.stdout.take().unwrap()).lines();
    assert_eq!(
        next(&mut lines).await["revision"].as_u64(),
        Some(first.get())
    );
    b.put("b.y", "not watched").await.unwrap();
    let second = b.put("a.x", "2").await.unwrap();
    let v = next(&mut lines).await;
    assert_eq!(
        (v["revision"].as_u64(), v["value"].as_str()),
        (Some(second.get()), Some("2"))
    );
    let del = b.delete("a.x").await.unwrap();
    let v = next(&mut lines).await;
    assert_eq!(
        (v["revision"].as_u64(), v["operation"].as_str()),
        (Some(del.get()), Some("deleted"))
    );
    common::terminate(&w);
    let _ = common::exit_of(&mut w).await;

    // --from replays from a revision.
    let mut w = kvtk.spawn(["kv", "watch", "w", "--from", &second.to_string(), "--json"]);
    let mut lines = BufReader::new(w.stdout.take().unwrap()).lines();
    let v = next(&mut lines).await;
    assert_eq!(v["revision"].as_u64(), Some(second.get()));
    common::terminate(&w);
    let _ = common::exit_of(&mut w).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gives_one_line_and_its_exit_code() {
    let server = NatsServer::start().await;
    let kvtk = Kvtk::new(server.client_url());
    let run = |args: &[&str]| kvtk.cmd().args(args).output().unwrap();
    assert!(run(&["kv", "add", "b", "--per-key-ttl", "1s"])
        .status
        .success());

    let invalid_key = run(&["kv", "put", "b", "bad key", "v"]);
    assert_eq!(code(&invalid_key), 1);
    assert!(one_line_error(&invalid_key).contains("invalid key"));
    let fractional_ttl = run(&["kv", "put", "b", "k", "v", "--ttl", "1500ms"]);
    assert_eq!(code(&fractional_ttl), 1);
    assert!(one_line_error(&fractional_ttl).contains("whole number of seconds"));
    let garbled_ttl = run(&["kv", "put", "b", "k", "v", "--ttl", "soon"]);
    assert_eq!(code(&garbled_ttl), 2, "a usage error");
    one_line_error(&garbled_ttl);
    let missing = run(&["kv", "get", "nope", "k"]);
    assert_eq!(code(&missing), 1);
    assert!(one_line_error(&missing).contains("bucket nope not found"));
    let bad_revision = run(&["kv", "get", "b", "k", "--revision", "0"]);
    assert_eq!(code(&bad_revision), 2);
    one_line_error(&bad_revision);
    let no_command = run(&["lock", "x"]);
    assert_eq!(code(&no_command), 2);
    one_line_error(&no_command);
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_errors_exit_69_and_never_print_credentials() {
    let server = NatsServer::start().await;
    let kvtk = Kvtk::new("nats://127.0.0.1:1");
    let out = kvtk.output(&["--user", "alice", "--password", "s3cr3t-pw", "kv", "ls"]);
    assert_eq!(code(&out), 69);
    assert!(!one_line_error(&out).contains("s3cr3t-pw"));
    let out = kvtk.output(&["-s", "nats://bob:s3cr3t-pw@127.0.0.1:1", "kv", "ls"]);
    assert_eq!(code(&out), 69);
    let line = one_line_error(&out);
    assert!(
        !line.contains("s3cr3t-pw") && !line.contains("bob"),
        "{line}"
    );
    let out = kvtk.output(&["--token", "s3cr3t-tok", "--timeout", "1s", "kv", "ls"]);
    assert_eq!(code(&out), 69);
    assert!(!one_line_error(&out).contains("s3cr3t-tok"));

    // A nats CLI context: named, and selected by context.txt.
    let ctx_dir = kvtk.dir().join("cfg/nats/context");
    std::fs::create_dir_all(&ctx_dir).unwrap();
    let ctx = serde_json::json!({ "url": server.client_url(), "description": "test" });
    std::fs::write(ctx_dir.join("local.json"), ctx.to_string()).unwrap();
    let ok = |args: &[&str]| {
        let mut c = kvtk.cmd();
        c.env_remove("NATS_URL").args(args);
        c.output().unwrap()
    };
    assert!(ok(&["--context", "local", "kv", "ls"]).status.success());
    std::fs::write(kvtk.dir().join("cfg/nats/context.txt"), "local\n").unwrap();
    assert!(ok(&["kv", "ls"]).status.success(), "the selected context");
    let out = ok(&["--context", "missing", "kv", "ls"]);
    assert_eq!(code(&out), 1);
    one_line_error(&out);
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_ls_show_and_forced_release() {
    let server = NatsServer::start().await;
    let kvtk = Kvtk::new(server.client_url());
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let locks = Locks::open(&kv, "locks").await.unwrap();
    let held = locks.mutex("jobs.a").unwrap().lock().await.unwrap();
    let waiting = {
        let m = locks.mutex("jobs.a").unwrap();
        tokio::spawn(async move { m.lock().await })
    };
    queued(&locks, "jobs.a").await;

    let run = |args: &[&str]| kvtk.cmd().args(args).output().unwrap();
    let ls = json(&run(&["locks", "ls", "--json"]));
    assert_eq!(ls[0]["name"], "jobs.a");
    assert_eq!(
        ls[0]["holders"][0]["token"].as_u64(),
        Some(held.token().get())
    );
    assert_eq!(ls[0]["waiters"].as_array().unwrap().len(), 1);
    let show = json(&run(&["locks", "show", "jobs.a", "--json"]));
    assert_eq!(
        show["holders"][0]["pid"].as_u64(),
        Some(u64::from(std::process::id()))
    );
    assert!(stdout(&run(&["locks", "ls"])).contains(&format!("token {}", held.token())));

    let out = run(&["locks", "release", "jobs.a"]);
    assert_eq!(code(&out), 2, "--force is required");
    let out = run(&["locks", "release", "jobs.a", "--force"]);
    assert_eq!(code(&out), 1, "no terminal to confirm on");
    one_line_error(&out);
    assert!(run(&["locks", "release", "jobs.a", "--force", "--yes"])
        .status
        .success());
    // The evicted holder learns it; the waiter gets the lock.
    within("the evicted holder's loss", held.lost()).await;
    let next = within("the waiter's turn", waiting).await.unwrap().unwrap();
    assert!(next.token() > held.token());
    next.release().await.unwrap();
}
