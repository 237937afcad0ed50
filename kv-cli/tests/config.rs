//! `kvtk config` against a real server: validated writes (an invalid file changes nothing),
//! history, diff and rollback, edit through $EDITOR, and exec restarting its command on a
//! change but not on an identical rewrite.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use common::{code, exit_of, mark, marks, one_line_error, terminate, Kvtk};
use kvtk_core::Kv;
use kvtk_tests::NatsServer;
use serde_json::{json, Value};

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The revision a write reported (`revision N: …`).
fn written_rev(line: &str) -> u64 {
    line.trim_start_matches("revision ")
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

const SCHEMA: &str = r#"{
  "type": "object",
  "properties": { "pool": { "type": "integer", "minimum": 1 }, "name": { "type": "string" } },
  "required": ["pool"]
}"#;

#[tokio::test(flavor = "multi_thread")]
async fn apply_validates_and_rollback_restores() {
    let server = NatsServer::start().await;
    let kvtk = Kvtk::new(server.client_url());
    let schema = kvtk.path("schema.json");
    std::fs::write(&schema, SCHEMA).unwrap();
    let good = kvtk.path("good.json");
    std::fs::write(&good, r#"{"pool": 4, "name": "a"}"#).unwrap();
    let bad = kvtk.path("bad.json");
    std::fs::write(&bad, r#"{"pool": 0, "name": "b"}"#).unwrap();
    let run = |args: &[&str]| {
        kvtk.cmd()
            .args(["config", "--key", "app", "--schema"])
            .arg(&schema)
            .args(args)
            .output()
            .unwrap()
    };

    let r1 = written_rev(&ok(&run(&["apply", good.to_str().unwrap()])));
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let b = kv.open("config").await.unwrap();
    let stored = |e: kvtk_core::Entry| serde_json::from_slice::<Value>(e.value()).unwrap();
    assert_eq!(
        stored(b.get("app").await.unwrap().unwrap()),
        json!({"pool": 4, "name": "a"})
    );

    // Invalid: refused before writing, one line, nothing changed.
    let out = run(&["apply", bad.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(one_line_error(&out).contains("minimum"), "{out:?}");
    let out = run(&["set", "pool", "-3"]);
    assert_eq!(code(&out), 1);
    std::fs::write(&bad, "{ not json").unwrap();
    assert_eq!(code(&run(&["apply", bad.to_str().unwrap()])), 1);
    let e = b.get("app").await.unwrap().unwrap();
    assert_eq!(e.revision().get(), r1, "nothing was written");

    let r2 = written_rev(&ok(&run(&["set", "pool", "8"])));
    let r3 = written_rev(&ok(&run(&["set", "name", "zed"])));
    assert_eq!(ok(&run(&["get", "pool"])), "8");
    let got: Value = serde_json::from_str(&ok(&run(&["get", "--json"]))).unwrap();
    assert_eq!(
        got,
        json!({"revision": r3, "value": {"pool": 8, "name": "zed"}})
    );

    let history: Value = serde_json::from_str(&ok(&run(&["history", "--json"]))).unwrap();
    let revs: Vec<u64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revs, [r1, r2, r3]);
    let diff: Value = serde_json::from_str(&ok(&run(&[
        "diff",
        &r1.to_string(),
        &r3.to_string(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(
        diff,
        json!([{"path": "name", "old": "a", "new": "zed"}, {"path": "pool", "old": 4, "new": 8}])
    );

    let r4 = written_rev(&ok(&run(&["rollback", &r1.to_string()])));
    assert!(r4 > r3);
    assert_eq!(
        stored(b.get("app").await.unwrap().unwrap()),
        json!({"pool": 4, "name": "a"})
    );
    let out = run(&["rollback", "99999"]);
    assert_eq!(code(&out), 1);
    one_line_error(&out);
}

#[tokio::test(flavor = "multi_thread")]
async fn edit_writes_what_the_editor_saved_and_retries_on_conflict() {
    let server = NatsServer::start().await;
    let kvtk = Kvtk::new(server.client_url());
    let run = |args: &[&str]| kvtk.output(&[&["config", "--key", "app"], args].concat());
    ok(&run(&["set", "pool", "1"]));

    // An "editor" that writes a new value; the first time it also changes the stored value
    // behind kvtk's back (through kvtk itself), so the first write must conflict.
    let editor = kvtk.path("editor.sh");
    let flag = kvtk.path("conflicted");
    std::fs::write(
        &editor,
        format!(
            "#!/bin/sh\nif [ ! -e {flag} ]; then touch {flag}; {bin} config --key app set pool 2 >/dev/null; fi\nprintf '{{\"pool\": 42}}' > \"$1\"\n",
            flag = flag.display(),
            bin = common::BIN,
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&editor)
        .status()
        .unwrap();
    let out = kvtk
        .cmd()
        .env("EDITOR", &editor)
        .args(["config", "--key", "app", "edit"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("changed while you edited"), "{err}");
    assert_eq!(ok(&run(&["get", "pool"])), "42");

    // An editor that saves nothing new writes nothing.
    let out = kvtk
        .cmd()
        .env("EDITOR", "true")
        .args(["config", "--key", "app", "edit"])
        .output()
        .unwrap();
    assert_eq!(ok(&out), "no changes");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_restarts_on_a_change_and_not_on_an_identical_rewrite() {
    let server = NatsServer::start().await;
    let kvtk = Kvtk::new(server.client_url());
    let run = |args: &[&str]| kvtk.output(&[&["config", "--key", "app"], args].concat());
    ok(&run(&["set", "pool", "1"]));
    let file = kvtk.path("marks");
    let rendered = kvtk.path("app.json");
    let script = format!(
        "echo \"start $(cat $KVTK_CONFIG_FILE | tr -d ' \\n') $APP_POOL\" >> {f}; trap 'exit 0' TERM; sleep 60 & wait",
        f = file.display()
    );
    let mut exec = kvtk.spawn([
        "config",
        "--key",
        "app",
        "exec",
        "--file",
        rendered.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    mark(&file, "the first start", |l| l.starts_with("start ")).await;

    // An identical rewrite (a new revision, the same value), then a real change.
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let b = kv.open("config").await.unwrap();
    let same = b.get("app").await.unwrap().unwrap();
    b.put("app", same.value().clone()).await.unwrap();
    ok(&run(&["set", "pool", "2"]));
    mark(&file, "the restart with pool 2", |l| {
        l.contains("\"pool\":2")
    })
    .await;
    let lines = marks(&file);
    assert_eq!(
        lines.len(),
        2,
        "one start, one restart, none for the rewrite: {lines:?}"
    );

    terminate(&exec);
    assert_eq!(exit_of(&mut exec).await.code(), Some(0));

    // --env renders into the environment.
    let mut exec = kvtk.spawn([
        "config",
        "--key",
        "app",
        "exec",
        "--env",
        "APP",
        "--",
        "sh",
        "-c",
        &script.replace("$(cat $KVTK_CONFIG_FILE | tr -d ' \\n')", "env"),
    ]);
    mark(&file, "a start with APP_POOL", |l| l == "start env 2").await;
    terminate(&exec);
    assert_eq!(exit_of(&mut exec).await.code(), Some(0));
}
