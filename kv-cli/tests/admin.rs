//! `kvtk kv ls|edit|compact` against a real server: settings listed, edited (and refused),
//! old delete markers removed; the library sees the same. And kvtk as tried by hand: reads
//! of buckets nobody made yet answer empty (exit 0) without making them, a first `config
//! set` names the field it wrote, and the command of a `kvtk lock` or `kvtk elect` killed
//! with SIGKILL does not outlive it.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use common::{code, one_line_error, signal, Kvtk};
use kvtk_core::Kv;
use kvtk_tests::{until, NatsServer};
use nix::sys::signal::Signal;
use serde_json::Value;

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn ls_edit_and_compact_round_trip() {
    let server = NatsServer::start().await;
    let kvtk = Kvtk::new(server.client_url());
    stdout(&kvtk.output(&["kv", "add", "app", "--history", "2"]));
    stdout(&kvtk.output(&["kv", "put", "app", "a", "1"]));
    let line = stdout(&kvtk.output(&["kv", "ls"]));
    assert!(line.starts_with("app  history 2  keys 1"), "{line}");
    let names: Value =
        serde_json::from_str(&stdout(&kvtk.output(&["kv", "ls", "--json"]))).unwrap();
    assert_eq!(names, serde_json::json!(["app"]));

    let edited = stdout(&kvtk.output(&[
        "kv",
        "edit",
        "app",
        "--history",
        "4",
        "--ttl",
        "1h",
        "--compression",
        "on",
        "--per-key-ttl",
        "30s",
        "--max-consumers",
        "5000",
    ]));
    assert!(
        edited.contains("history 4") && edited.contains("max-age 1h") && edited.contains("+s2"),
        "{edited}"
    );
    assert!(edited.contains("consumers 0/5000"), "{edited}");
    let long: Value =
        serde_json::from_str(&stdout(&kvtk.output(&["kv", "ls", "--json", "--long"]))).unwrap();
    assert_eq!(long[0]["history"], 4);
    assert_eq!(long[0]["max_age"], 3600.0);
    assert_eq!(long[0]["marker_ttl"], 30.0);
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    assert_eq!(
        kv.buckets().await.unwrap()[0].history,
        4,
        "the library sees the edit"
    );
    assert_eq!(long[0]["max_consumers"], 5000);
    stdout(&kvtk.output(&[
        "kv",
        "edit",
        "app",
        "--ttl",
        "none",
        "--max-consumers",
        "none",
    ]));
    let now = &kv.buckets().await.unwrap()[0];
    assert_eq!((now.max_age, now.max_consumers), (None, None));

    // Refused: by the server (one line, exit 1), or nothing asked (usage).
    let out = kvtk.output(&["kv", "edit", "app", "--replicas", "3"]);
    assert_eq!(code(&out), 1);
    let line = one_line_error(&out);
    assert!(
        line.contains("cannot change bucket app") && line.contains("replicas"),
        "{line}"
    );
    assert_eq!(code(&kvtk.output(&["kv", "edit", "app"])), 2);
    let out = kvtk.output(&["kv", "edit", "nope", "--history", "2"]);
    assert!(one_line_error(&out).contains("bucket nope not found"));

    // Compact: asks unless --yes; removes the old marker with the key's history.
    stdout(&kvtk.output(&["kv", "del", "app", "a"]));
    let out = kvtk.output(&["kv", "compact", "app", "--older-than", "0s"]);
    assert!(one_line_error(&out).contains("pass --yes"));
    let done = stdout(&kvtk.output(&["kv", "compact", "app", "--older-than", "0s", "--yes"]));
    assert!(done.starts_with("removed 1 delete markers"), "{done}");
    let b = kv.open("app").await.unwrap();
    assert!(
        b.history("a").await.unwrap().is_empty(),
        "the library sees the compaction"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_of_buckets_not_made_yet_are_empty() {
    let server = NatsServer::start().await;
    let kvtk = Kvtk::new(server.client_url());
    assert_eq!(stdout(&kvtk.output(&["locks", "ls"])), "");
    assert_eq!(
        stdout(&kvtk.output(&["locks", "ls", "--json"])).trim(),
        "[]"
    );
    assert_eq!(
        stdout(&kvtk.output(&["locks", "show", "jobs.nightly"])).trim(),
        "lock jobs.nightly\nfree"
    );
    assert_eq!(
        stdout(&kvtk.output(&["leader", "scheduler"])).trim(),
        "no leader"
    );
    assert_eq!(
        stdout(&kvtk.output(&["leader", "scheduler", "--json"])).trim(),
        r#"{"leader":null}"#
    );
    assert_eq!(stdout(&kvtk.output(&["config", "get"])).trim(), "{}");
    assert_eq!(
        stdout(&kvtk.output(&["config", "history", "--json"])).trim(),
        "[]"
    );
    assert_eq!(
        stdout(&kvtk.output(&["kv", "ls"])),
        "",
        "no read made a bucket"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_config_set_names_the_field() {
    let server = NatsServer::start().await;
    let kvtk = Kvtk::new(server.client_url());
    let out = stdout(&kvtk.output(&["config", "set", "db.pool_size", "8"]));
    assert_eq!(out.trim(), "revision 1: db.pool_size");
    let out = stdout(&kvtk.output(&["config", "set", "db.pool_size", "9"]));
    assert_eq!(out.trim(), "revision 2: db.pool_size");
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

async fn killed_kvtk_takes_its_command_along(kvtk: &Kvtk, args: &[&str]) {
    let pidfile = kvtk.path(&format!("pid-{}", args[0]));
    let script = format!("echo $$ > {}; exec sleep 600", pidfile.display());
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--", "sh", "-c", &script]);
    let mut k = kvtk.spawn(all);
    until("the command to start", || async {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!gone(pid));
    signal(&k, Signal::SIGKILL);
    let _ = k.wait().await;
    until("the command to end with kvtk", || async { gone(pid) }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_does_not_outlive_a_killed_kvtk() {
    let server = NatsServer::start().await;
    let kvtk = Kvtk::new(server.client_url());
    killed_kvtk_takes_its_command_along(&kvtk, &["lock", "job"]).await;
    killed_kvtk_takes_its_command_along(&kvtk, &["elect", "sched", "--id", "a"]).await;
}
