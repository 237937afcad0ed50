//! kvtk as tried by hand: reads of buckets nobody made yet answer empty (exit 0) without
//! making them, a first `config set` names the field it wrote, and the command of a
//! `kvtk lock` or `kvtk elect` killed with SIGKILL does not outlive it.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use common::{signal, Kvtk};
use kvtk_tests::{until, NatsServer};
use nix::sys::signal::Signal;

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
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
