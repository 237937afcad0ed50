//! `kvtk kv ls|edit|compact` against a real server: settings listed, edited (and refused),
//! old delete markers removed; the library sees the same.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use common::{code, one_line_error, Kvtk};
use kvtk_core::Kv;
use kvtk_tests::NatsServer;
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
    ]));
    assert!(
        edited.contains("history 4") && edited.contains("max-age 1h") && edited.contains("+s2"),
        "{edited}"
    );
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
    stdout(&kvtk.output(&["kv", "edit", "app", "--ttl", "none"]));
    assert_eq!(kv.buckets().await.unwrap()[0].max_age, None);

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
