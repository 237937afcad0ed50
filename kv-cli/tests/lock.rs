//! `kvtk lock` against a real server: mutual exclusion between processes, the token in the
//! child's environment, exit codes, --no-wait, and a holder cut off from the server.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::time::Duration;

use common::{code, exit_of, mark, marks, one_line_error, queued, Kvtk};
use kvtk_core::Kv;
use kvtk_locks::Locks;
use kvtk_tests::{FaultProxy, NatsServer};
use tokio::time::Instant;

/// A child that appends `start <token>` and `end <token>` around a one-second sleep.
fn marking_child(file: &std::path::Path) -> String {
    format!(
        "echo \"start $KVTK_FENCING_TOKEN $KVTK_LOCK_NAME\" >> {f}; sleep 1; echo \"end $KVTK_FENCING_TOKEN\" >> {f}",
        f = file.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_commands_under_one_lock_never_overlap() {
    let server = NatsServer::start().await;
    let kvtk = Kvtk::new(server.client_url());
    let file = kvtk.path("marks");
    let script = marking_child(&file);
    let started = Instant::now();
    let mut a = kvtk.spawn(["lock", "job", "--", "sh", "-c", &script]);
    let mut b = kvtk.spawn(["lock", "job", "--", "sh", "-c", &script]);
    assert!(exit_of(&mut a).await.success());
    assert!(exit_of(&mut b).await.success());
    let took = started.elapsed();

    let lines = marks(&file);
    assert_eq!(lines.len(), 4, "{lines:?}");
    let token = |l: &str| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
    // start t1, end t1, start t2, end t2: never two starts in a row.
    assert!(
        lines[0].starts_with("start ") && lines[0].ends_with(" job"),
        "{lines:?}"
    );
    assert_eq!(lines[1], format!("end {}", token(&lines[0])), "{lines:?}");
    assert!(lines[2].starts_with("start "), "{lines:?}");
    assert_eq!(lines[3], format!("end {}", token(&lines[2])), "{lines:?}");
    assert!(
        token(&lines[2]) > token(&lines[0]),
        "tokens grow: {lines:?}"
    );
    // One after the other: at least the two one-second holds.
    assert!(took >= Duration::from_secs(2), "took {took:?}");
    println!("two 1 s holds one after the other took {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_child_sees_its_token_and_its_status_passes_through() {
    let server = NatsServer::start().await;
    let kvtk = Kvtk::new(server.client_url());
    let out = kvtk.output(&[
        "lock",
        "jobs.x",
        "--",
        "sh",
        "-c",
        "echo $KVTK_FENCING_TOKEN; exit 7",
    ]);
    assert_eq!(code(&out), 7, "{out:?}");
    let first: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();

    // The next holder's token is greater, and the library sees the same sequence.
    let out = kvtk.output(&[
        "lock",
        "jobs.x",
        "--",
        "sh",
        "-c",
        "echo $KVTK_FENCING_TOKEN",
    ]);
    assert!(out.status.success());
    let second: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(second > first, "{first} then {second}");
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let locks = Locks::open(&kv, "locks").await.unwrap();
    let g = locks.mutex("jobs.x").unwrap().lock().await.unwrap();
    assert!(g.token().get() > second);
    g.release().await.unwrap();

    // Death by signal: 128 + N, as shells say it.
    let out = kvtk.output(&["lock", "jobs.x", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(code(&out), 143);

    // A command that does not exist: 127, one line, and the lock is free again.
    let out = kvtk.output(&["lock", "jobs.x", "--", "/nonexistent/cmd"]);
    assert_eq!(code(&out), 127);
    one_line_error(&out);
    assert!(locks.inspect("jobs.x").await.unwrap().holders.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_wait_and_wait_give_up_with_their_code() {
    let server = NatsServer::start().await;
    let kvtk = Kvtk::new(server.client_url());
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let locks = Locks::open(&kv, "locks").await.unwrap();
    let held = locks.mutex("job").unwrap().lock().await.unwrap();

    let t0 = Instant::now();
    let out = kvtk.output(&["lock", "job", "--no-wait", "--", "true"]);
    let no_wait = t0.elapsed();
    assert_eq!(code(&out), 75, "{out:?}");
    let line = one_line_error(&out);
    assert!(line.contains(&format!("token {}", held.token())), "{line}");
    assert!(
        no_wait < Duration::from_secs(2),
        "--no-wait took {no_wait:?}"
    );

    let t0 = Instant::now();
    let out = kvtk.output(&["lock", "job", "--wait", "1s", "--", "true"]);
    let waited = t0.elapsed();
    assert_eq!(code(&out), 75, "{out:?}");
    one_line_error(&out);
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    println!("--no-wait gave up after {no_wait:?}, --wait 1s after {waited:?}");

    // Semaphore and shared modes take their kind of place beside the others.
    held.release().await.unwrap();
    let reader = locks.rwlock("job").unwrap().read().await.unwrap();
    let out = kvtk.output(&["lock", "job", "--shared", "--no-wait", "--", "true"]);
    assert!(out.status.success(), "readers share: {out:?}");
    let out = kvtk.output(&["lock", "job", "--no-wait", "--", "true"]);
    assert_eq!(code(&out), 75, "a writer waits for the reader");
    reader.release().await.unwrap();
    let permit = locks.semaphore("pool", 2).unwrap().acquire().await.unwrap();
    let out = kvtk.output(&["lock", "pool", "-n", "2", "--no-wait", "--", "true"]);
    assert!(out.status.success(), "a second permit is free: {out:?}");
    permit.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_holder_cut_off_stops_its_command_before_the_server_expires_it() {
    const TTL: Duration = Duration::from_secs(3);
    let server = NatsServer::start().await;
    let proxy = FaultProxy::start(&server.client_url()).await;
    let cut_off = Kvtk::new(proxy.url());
    let direct = Kvtk::new(server.client_url());
    let file = cut_off.path("marks");
    let child = |who: &str| {
        format!(
            "trap 'echo term {who} >> {f}; exit 143' TERM; echo start {who} >> {f}; sleep 60 & wait",
            f = file.display()
        )
    };
    let mut a = cut_off.spawn(["lock", "job", "--ttl", "3s", "--", "sh", "-c", &child("a")]);
    mark(&file, "start a", |l| l == "start a").await;
    let mut b = direct.spawn(["lock", "job", "--ttl", "3s", "--", "sh", "-c", &child("b")]);
    // b is queued before the cut (its kvtk has connected and entered the queue).
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let locks = Locks::open(&kv, "locks").await.unwrap();
    queued(&locks, "job").await;

    let cut = Instant::now();
    proxy.cut();
    let (terminated, _) = mark(&file, "term a", |l| l == "term a").await;
    let (b_started, _) = mark(&file, "start b", |l| l == "start b").await;
    let status = exit_of(&mut a).await;
    assert_eq!(status.code(), Some(76), "lock lost");
    let lines = marks(&file);
    assert_eq!(lines[..3], ["start a", "term a", "start b"], "{lines:?}");
    let stopped_after = terminated - cut;
    assert!(
        stopped_after < TTL,
        "stopped {stopped_after:?} after the cut, TTL {TTL:?}"
    );
    println!(
        "cut-off holder's command stopped {stopped_after:?} after the cut (TTL {TTL:?}); the waiter's started {:?} after the cut",
        b_started - cut
    );
    // SIGTERM reaches the command through kvtk, which then exits with its status.
    common::terminate(&b);
    assert_eq!(exit_of(&mut b).await.code(), Some(143));
    assert_eq!(marks(&file).last().map(String::as_str), Some("term b"));
}
