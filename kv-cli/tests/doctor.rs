//! `kvtk doctor` against servers with an unsafe setting and with a safe one: one line per
//! finding (severity, code, message, fix) or JSON, exit 3 when a finding is an error, and
//! the servers' sync_interval read through a system-account user.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod common;

use std::process::Output;

use common::{code, one_line_error, Kvtk};
use kvtk_tests::{Account, NatsServer, User};

const APP_PW: &str = "app-pw-Tq47s";
const SYS_PW: &str = "sys-pw-Hc92m";

/// An application account and a system account with one user each.
async fn server(sync_always: bool) -> NatsServer {
    let mut b = NatsServer::builder()
        .account(
            Account::new("APP")
                .jetstream()
                .user(User::password("app", APP_PW)),
        )
        .account(Account::new("SYS").user(User::password("sys", SYS_PW)))
        .system_account("SYS");
    if sync_always {
        b = b.sync_always();
    }
    b.start().await
}

fn run(kvtk: &Kvtk, args: &[&str]) -> Output {
    let out = kvtk
        .cmd()
        .args(["--user", "app", "--password", APP_PW])
        .env("KVTK_SYSTEM_PASSWORD", SYS_PW)
        .args(args)
        .output()
        .unwrap();
    let all = format!("{out:?}");
    assert!(!all.contains(APP_PW) && !all.contains(SYS_PW), "{all}");
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The (severity, code) of each finding in a JSON report.
fn findings(report: &serde_json::Value) -> Vec<(String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap().to_string();
            (s("severity"), s("code"))
        })
        .collect()
}

/// The locks bucket made as `kvtk lock` makes it.
fn make_locks_bucket(kvtk: &Kvtk) {
    let out = run(kvtk, &["lock", "setup", "--", "true"]);
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_sync_interval_is_an_error_for_locks() {
    let server = server(false).await;
    let kvtk = Kvtk::new(server.client_url());
    make_locks_bucket(&kvtk);

    let out = run(&kvtk, &["doctor", "locks", "--system-user", "sys"]);
    assert_eq!(code(&out), 3, "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("bucket \"locks\" (R1, file storage) for locks: 1 error(s)"),
        "{text}"
    );
    let sync = lines
        .iter()
        .find(|l| l.starts_with("error sync-not-always: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(sync.contains("(fix: ") && sync.contains("always"), "{sync}");

    let out = run(
        &kvtk,
        &["doctor", "locks", "--system-user", "sys", "--json"],
    );
    assert_eq!(code(&out), 3, "{out:?}");
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["bucket"], "locks");
    let found = findings(&report);
    assert!(
        found.contains(&("error".into(), "sync-not-always".into())),
        "{found:?}"
    );
    // One line per finding, under the summary line.
    assert_eq!(lines.len(), 1 + found.len(), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_always_passes_and_kvtk_buckets_are_found_by_default() {
    let server = server(true).await;
    let kvtk = Kvtk::new(server.client_url());
    let out = run(&kvtk, &["doctor"]);
    assert_eq!(code(&out), 1, "none of kvtk's buckets exists yet: {out:?}");
    assert!(one_line_error(&out).contains("locks, elections, config"));
    make_locks_bucket(&kvtk);

    let out = run(&kvtk, &["doctor", "--system-user", "sys"]);
    assert_eq!(code(&out), 0, "{out:?}");
    let text = stdout(&out);
    assert!(
        text.starts_with("bucket \"locks\" (R1, file storage) for locks: 0 error(s)"),
        "{text}"
    );
    assert!(!text.lines().any(|l| l.starts_with("error")), "{text}");

    // Only the bucket that exists is checked (no elections or config bucket here).
    let out = run(&kvtk, &["doctor", "--system-user", "sys", "--json"]);
    assert_eq!(code(&out), 0, "{out:?}");
    let reports: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0]["servers"][0]["sync"], "always", "{reports:?}");
    assert_eq!(
        findings(&reports[0]),
        vec![("warning".to_string(), "few-replicas".to_string())],
        "a single server is R1 and nothing else is wrong"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_system_account_memory_storage_is_an_error_and_misuse_is_one_line() {
    let server = server(true).await;
    let kvtk = Kvtk::new(server.client_url());
    let out = run(&kvtk, &["kv", "add", "mem", "--storage", "memory"]);
    assert!(out.status.success(), "{out:?}");

    let out = run(&kvtk, &["doctor", "mem", "--for", "locks", "--json"]);
    assert_eq!(code(&out), 3, "{out:?}");
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let found = findings(&report);
    assert!(
        found.contains(&("error".into(), "memory-storage".into())),
        "{found:?}"
    );
    // Without a system account the locks bucket's sync_interval is unchecked: a warning,
    // and warnings alone exit 0.
    make_locks_bucket(&kvtk);
    let out = run(&kvtk, &["doctor", "locks", "--json"]);
    assert_eq!(code(&out), 0, "{out:?}");
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        findings(&report),
        vec![
            ("warning".to_string(), "sync-unchecked".to_string()),
            ("warning".to_string(), "few-replicas".to_string())
        ]
    );

    let out = run(&kvtk, &["doctor", "mem"]);
    assert_eq!(
        code(&out),
        2,
        "what the bucket is for is not known: {out:?}"
    );
    assert!(one_line_error(&out).contains("--for"));
    let out = run(&kvtk, &["doctor", "locks", "--lease-ttl", "1500ms"]);
    assert_eq!(code(&out), 1, "a lease TTL is whole seconds: {out:?}");
    assert!(one_line_error(&out).contains("whole number of seconds"));
    let out = run(&kvtk, &["doctor", "nothing", "--for", "config"]);
    assert_eq!(code(&out), 1, "{out:?}");
    one_line_error(&out);
    let out = run(
        &kvtk,
        &[
            "doctor",
            "mem",
            "--for",
            "config",
            "--system-user",
            "nobody",
        ],
    );
    assert_eq!(code(&out), 69, "a refused system user: {out:?}");
    assert!(one_line_error(&out).contains("system account"));
}
