//! `kvtk ui` in a real browser (headless chromium through chromedriver) against a real
//! server: the Locks and Elections views follow `kvtk lock` and `kvtk elect` processes live,
//! the Configuration view diffs and rolls back (only with --allow-writes and the secret),
//! user data renders as text, ten tabs cost the server what one does. Each test saves a
//! screenshot under target/ui/.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod browser;
mod common;

use browser::{Browser, Console};
use common::{signal, terminate, Kvtk};
use kvtk_tests::{until, NatsServer};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::time::Duration;

/// `kvtk ui` on a free port with `extra` arguments.
async fn console(kvtk: &Kvtk, extra: &[&str]) -> Console {
    let mut args = vec!["ui", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Console::start(kvtk.spawn(args)).await
}

/// A throwaway server and kvtk pointed at it.
async fn start() -> (NatsServer, Kvtk) {
    let server = NatsServer::start().await;
    let kvtk = Kvtk::new(server.client_url());
    (server, kvtk)
}

/// Runs `kvtk <args>` to a successful end.
fn ok(kvtk: &Kvtk, args: &[&str]) {
    let out = kvtk.output(args);
    assert!(out.status.success(), "kvtk {args:?}: {out:?}");
}

/// Member `id` of group `api` (making the members bucket), with address `addr`.
fn member(kvtk: &Kvtk, id: &str, addr: &str) {
    if kvtk.output(&["kv", "info", "members"]).status.code() != Some(0) {
        ok(kvtk, &["kv", "add", "members", "--per-key-ttl", "60s"]);
    }
    let meta = json!({ "addr": addr }).to_string();
    ok(kvtk, &["kv", "put", "members", &format!("api.{id}"), &meta]);
}

/// Opens document `app` on the Configuration view and waits for its `revisions`.
async fn open_doc(b: &Browser, revisions: usize) {
    b.until(
        "the document",
        r#"document.querySelector('[data-doc="app"]') !== null"#,
    )
    .await;
    b.eval(r#"document.querySelector('[data-doc="app"]').click() || true"#)
        .await;
    let rows = "document.querySelectorAll('#config-doc tr[data-revision]').length";
    b.until("its history", &format!("{rows} === {revisions}"))
        .await;
}

/// A browser on the console's `view`.
async fn browse(c: &Console, view: &str) -> Browser {
    let b = Browser::start().await;
    b.client
        .goto(&format!("{}?view={view}", c.base))
        .await
        .unwrap();
    b
}

/// Asks the open document for its diff (the picker's default: the last two revisions) and
/// checks that `db.pool_size` went from 8 to 16.
async fn pool_size_diff_from_8_to_16(b: &Browser) {
    b.eval("document.getElementById('diff-go').click() || true")
        .await;
    let row = r#"document.querySelector('#diff-table tr[data-path="db.pool_size"]')"#;
    b.until("the diff", &format!("{row} !== null")).await;
    let diff = b.eval(&format!("{row}.textContent")).await;
    assert!(
        diff.as_str().unwrap().contains("816"),
        "from 8 to 16: {diff}"
    );
}

/// The lock item of `name` from `/api/locks`.
async fn lock_item(c: &Console, name: &str) -> Option<Value> {
    let all = c.get("/api/locks").await;
    all.as_array()?.iter().find(|l| l["name"] == name).cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_locks_view_shows_holder_and_queue_and_follows_a_killed_holder() {
    let (_server, kvtk) = start().await;
    let c = console(&kvtk, &[]).await;
    let lock = |ttl: &'static str| ["lock", "jobs.nightly", "--ttl", ttl, "--", "sleep", "600"];
    let mut holder = kvtk.spawn(lock("2s"));
    until("the holder to show", || async {
        lock_item(&c, "jobs.nightly")
            .await
            .is_some_and(|l| l["holders"].as_array().is_some_and(|h| h.len() == 1))
    })
    .await;
    let _w1 = kvtk.spawn(lock("10s"));
    until("one waiter", || async {
        lock_item(&c, "jobs.nightly")
            .await
            .is_some_and(|l| l["waiters"].as_array().is_some_and(|w| w.len() == 1))
    })
    .await;
    let _w2 = kvtk.spawn(lock("10s"));

    let b = Browser::start().await;
    b.client.goto(&c.url).await.unwrap();
    let row = r#"document.querySelector('tr[data-lock="jobs.nightly"]')"#;
    b.until("the lock with a holder and two waiters", &format!(
        "{row} !== null && {row}.querySelectorAll('[data-role=holder]').length === 1 && {row}.querySelectorAll('[data-role=waiter]').length === 2"
    ))
    .await;
    let tokens = |role: &str| {
        format!(
            "[...{row}.querySelectorAll('[data-role={role}]')].map(e => Number(e.dataset.token))"
        )
    };
    let held = b.eval(&tokens("holder")).await;
    let waiting = b.eval(&tokens("waiter")).await;
    let (h, w1, w2) = (
        held[0].as_u64().unwrap(),
        waiting[0].as_u64().unwrap(),
        waiting[1].as_u64().unwrap(),
    );
    assert!(
        h < w1 && w1 < w2,
        "tokens in queue order: holder {h}, waiters {w1}, {w2}"
    );
    let text = b.eval(&format!("{row}.textContent")).await;
    assert!(
        text.as_str().unwrap().contains(&format!("token {h}")),
        "{text}"
    );
    // The row opens on a click: the whole queue and the timeline of holds.
    b.eval(&format!("{row}.click() || true")).await;
    b.until(
        "the lock's details",
        r#"document.querySelector('tr[data-detail="jobs.nightly"] svg.timeline rect') !== null"#,
    )
    .await;
    let page = b.eval("window.__kvtkPage").await;
    b.shot("locks").await;

    // SIGKILL the holder's kvtk: its lease runs out (2 s) and the first waiter holds, on
    // the open page, without a reload.
    signal(&holder, Signal::SIGKILL);
    let _ = holder.wait().await;
    b.until("the first waiter to hold", &format!(
        "{row}.querySelector('[data-role=holder]') !== null && Number({row}.querySelector('[data-role=holder]').dataset.token) === {w1} && {row}.querySelectorAll('[data-role=waiter]').length === 1"
    ))
    .await;
    assert_eq!(
        b.eval("window.__kvtkPage").await,
        page,
        "the page was not reloaded"
    );
    b.until("two holds on the timeline", r#"document.querySelectorAll('tr[data-detail="jobs.nightly"] svg.timeline rect').length >= 2"#).await;
    b.shot("locks-after-handoff").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_elections_view_follows_a_leader_change_with_its_terms() {
    let (_server, kvtk) = start().await;
    let c = console(&kvtk, &[]).await;
    let first = kvtk.spawn([
        "elect",
        "scheduler",
        "--id",
        "node-1",
        "--value",
        "10.0.0.1:8080",
        "--",
        "sleep",
        "600",
    ]);
    let b = browse(&c, "elections").await;
    let card = r#"document.querySelector('[data-election="scheduler"]')"#;
    b.until("node-1 to lead", &format!("{card} !== null && {card}.querySelector('[data-leader]') !== null && {card}.querySelector('[data-leader]').dataset.leader === 'node-1'")).await;
    let _second = kvtk.spawn([
        "elect",
        "scheduler",
        "--id",
        "node-2",
        "--value",
        "10.0.0.2:8080",
        "--",
        "sleep",
        "600",
    ]);
    b.until(
        "node-2 in line",
        &format!("{card}.querySelector('[data-candidate=\"node-2\"]') !== null"),
    )
    .await;
    let term1 = b
        .eval(&format!(
            "Number({card}.querySelector('.term').textContent)"
        ))
        .await;
    b.shot("elections").await;

    // node-1's kvtk resigns on SIGTERM; node-2 takes over.
    terminate(&first);
    b.until("node-2 to lead", &format!("{card}.querySelector('[data-leader]') !== null && {card}.querySelector('[data-leader]').dataset.leader === 'node-2'")).await;
    let term2 = b
        .eval(&format!(
            "Number({card}.querySelector('.term').textContent)"
        ))
        .await;
    assert!(
        term2.as_u64() > term1.as_u64(),
        "terms grow: {term1} then {term2}"
    );
    b.until(
        "two terms on the timeline",
        &format!("{card}.querySelectorAll('svg.timeline rect').length >= 2"),
    )
    .await;
    b.shot("elections-after-change").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn config_diff_and_rollback_need_writes_and_the_secret() {
    let (_server, kvtk) = start().await;
    ok(
        &kvtk,
        &["config", "--key", "app", "set", "db.pool_size", "8"],
    );
    ok(
        &kvtk,
        &["config", "--key", "app", "set", "db.pool_size", "16"],
    );
    let c = console(&kvtk, &["--allow-writes"]).await;
    let secret = c.secret.clone().unwrap();
    let b = Browser::start().await;
    b.client
        .goto(&c.url.replace("/#", "/?view=config#"))
        .await
        .unwrap();
    open_doc(&b, 2).await;
    pool_size_diff_from_8_to_16(&b).await;
    let stray = "document.getElementById('diff-out').textContent.includes('null')";
    assert_eq!(b.eval(stray).await, json!(false), "nothing but the diff");
    let bare = "[...document.getElementById('config-doc').childNodes].filter(n => n.nodeType === Node.TEXT_NODE).map(n => n.textContent)";
    assert_eq!(
        b.eval(bare).await,
        json!([]),
        "no stray text in the document's panel"
    );
    b.shot("config").await;

    // Without the secret, or with a wrong one: 403, nothing written.
    let body = json!({"key": "app", "revision": 1}).to_string();
    let ct = ("content-type", "application/json");
    let (status, _) = c.http("POST", "/api/config/rollback", &[ct], &body).await;
    assert_eq!(status, 403);
    let (status, _) = c
        .http(
            "POST",
            "/api/config/rollback",
            &[ct, ("x-kvtk-secret", "guess")],
            &body,
        )
        .await;
    assert_eq!(status, 403);
    let doc = c.get("/api/item?view=config&id=app").await;
    assert_eq!(doc["value"]["db"]["pool_size"], 16);

    // Through the page: the button, the confirmation (the secret came in the link), done.
    b.eval(r#"document.querySelector('#config-doc tr[data-revision="1"] [data-action=rollback]').click() || true"#).await;
    b.until(
        "the confirmation",
        "document.getElementById('confirm').open === true",
    )
    .await;
    assert_eq!(
        b.eval("document.getElementById('confirm-secret').value")
            .await,
        json!(secret)
    );
    b.shot("config-confirm").await;
    b.eval("document.getElementById('confirm-ok').click() || true")
        .await;
    b.until("the rolled-back value", r#"document.getElementById('doc-value') !== null && JSON.parse(document.getElementById('doc-value').textContent).db.pool_size === 8"#).await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_console_has_no_buttons_and_refuses_writes() {
    let (_server, kvtk) = start().await;
    ok(&kvtk, &["config", "--key", "app", "set", "a", "1"]);
    ok(&kvtk, &["config", "--key", "app", "set", "a", "2"]);
    let _holder = kvtk.spawn(["lock", "job", "--", "sleep", "600"]);
    let c = console(&kvtk, &[]).await;
    assert!(c.secret.is_none());
    let b = Browser::start().await;
    b.client.goto(&c.base).await.unwrap();
    b.until(
        "the lock",
        r#"document.querySelector('tr[data-lock="job"] [data-role=holder]') !== null"#,
    )
    .await;
    b.eval(r#"document.querySelector('[data-view=config]').click() || true"#)
        .await;
    open_doc(&b, 2).await;
    assert_eq!(
        b.eval("document.querySelectorAll('[data-action]').length")
            .await,
        json!(0)
    );
    let ct = ("content-type", "application/json");
    for (path, body) in [
        ("/api/config/rollback", json!({"key": "app", "revision": 1})),
        ("/api/locks/release", json!({"name": "job", "token": 1})),
    ] {
        let (status, answer) = c
            .http(
                "POST",
                path,
                &[ct, ("x-kvtk-secret", "x")],
                &body.to_string(),
            )
            .await;
        assert_eq!(status, 403, "{path}: {answer}");
        assert!(answer.contains("--allow-writes"), "{answer}");
    }
    // A foreign Host name (DNS rebinding) is refused.
    let port = c.addr().rsplit_once(':').unwrap().1.to_string();
    let evil = format!("evil.example:{port}");
    let (status, _) = c.http("GET", "/api/locks", &[("host", &evil)], "").await;
    assert_eq!(status, 421);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn user_data_renders_as_text_and_runs_nothing() {
    let (server, kvtk) = start().await;
    let evil = r#"<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>"#;
    ok(&kvtk, &["config", "--key", "app", "set", "name", evil]);
    member(&kvtk, "i-1", evil);
    let kv = kvtk_core::Kv::connect(&server.client_url()).await.unwrap();
    let locks = kvtk_locks::Locks::open(&kv, "locks").await.unwrap();
    let locks = locks.holder(kvtk_locks::Holder::named(evil));
    let guard = locks.mutex("jobs.html").unwrap().lock().await.unwrap();
    let _elect = kvtk.spawn([
        "elect", "web", "--id", "n1", "--value", evil, "--", "sleep", "600",
    ]);
    let c = console(&kvtk, &[]).await;
    let b = Browser::start().await;
    b.client.goto(&c.base).await.unwrap();
    let shows = |sel: &str| {
        format!("document.querySelector('{sel}') !== null && document.querySelector('{sel}').textContent.includes('<script>window.__pwned=2</script>')")
    };
    b.until(
        "the holder's identity as text",
        &shows(r#"tr[data-lock="jobs.html"]"#),
    )
    .await;
    b.shot("escaping-locks").await;
    for (view, sel) in [
        ("elections", r#"[data-election="web"]"#),
        ("members", r#"[data-group="api"]"#),
    ] {
        b.eval(&format!(
            "document.querySelector('[data-view={view}]').click() || true"
        ))
        .await;
        b.until(&format!("{view}: the value as text"), &shows(sel))
            .await;
    }
    b.eval("document.querySelector('[data-view=config]').click() || true")
        .await;
    open_doc(&b, 1).await;
    b.until("config: the value as text", &shows("#doc-value"))
        .await;
    b.shot("escaping-config").await;
    assert_eq!(
        b.eval("document.querySelectorAll('main img, main script').length")
            .await,
        json!(0)
    );
    assert_eq!(b.eval("window.__pwned === undefined").await, json!(true));
    assert!(!b.dialog_open().await, "no dialog opened");
    b.close().await;
    guard.release().await.unwrap();
}

/// The consumers on the console's buckets, by the servers' stream info.
async fn consumers(kv: &kvtk_core::Kv) -> usize {
    let mut n = 0;
    for b in ["locks", "elections", "config", "members"] {
        if let Ok(info) = kv.stream_info(b).await {
            n += info.state.consumer_count;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_tabs_cost_the_server_no_more_consumers_than_one() {
    let (server, kvtk) = start().await;
    let kv = kvtk_core::Kv::connect(&server.client_url()).await.unwrap();
    ok(&kvtk, &["config", "--key", "app", "set", "a", "1"]);
    let _holder = kvtk.spawn(["lock", "job", "--", "sleep", "600"]);
    let c = console(&kvtk, &[]).await;
    let b = Browser::start().await;
    b.client.goto(&c.base).await.unwrap();
    let ready = r#"document.querySelector('tr[data-lock="job"] [data-role=holder]') !== null"#;
    b.until("the first tab", ready).await;
    until("the feeds' watches", || async { consumers(&kv).await >= 2 }).await;
    let one = consumers(&kv).await;
    for i in 1..10 {
        let w = b.client.new_window(true).await.unwrap();
        b.client.switch_to_window(w.handle).await.unwrap();
        b.client.goto(&c.base).await.unwrap();
        b.until(&format!("tab {}", i + 1), ready).await;
    }
    assert_eq!(b.client.windows().await.unwrap().len(), 10);
    let ten = consumers(&kv).await;
    println!("consumers: {one} with one tab, {ten} with ten");
    assert!(ten <= one, "ten tabs: {ten} consumers, one tab: {one}");
    let meta = c.get("/api/meta").await;
    assert_eq!(
        meta["tabs"], 1,
        "one event stream for the whole browser: {meta}"
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn members_and_buckets_views() {
    let (_server, kvtk) = start().await;
    member(&kvtk, "i-1", "10.0.0.1:8080");
    let _holder = kvtk.spawn(["lock", "job", "--", "sleep", "600"]);
    let c = console(&kvtk, &[]).await;
    let b = browse(&c, "members").await;
    b.until(
        "member i-1",
        r#"document.querySelector('[data-group="api"] tr[data-member="i-1"]') !== null"#,
    )
    .await;
    member(&kvtk, "i-2", "10.0.0.2:8080");
    b.until("i-2 joined", r#"document.querySelector('[data-group="api"] .ev-joined') !== null && document.querySelector('[data-group="api"] tr[data-member="i-2"]') !== null"#).await;
    ok(&kvtk, &["kv", "del", "members", "api.i-1"]);
    b.until(
        "i-1 left",
        r#"document.querySelector('[data-group="api"] .ev-left') !== null"#,
    )
    .await;
    b.shot("members").await;
    b.eval("document.querySelector('[data-view=buckets]').click() || true")
        .await;
    b.until("the buckets with the doctor's findings", r#"document.querySelector('tr[data-bucket="locks"]') !== null && document.querySelector('tr[data-bucket="locks"]').textContent.includes('findings')"#).await;
    b.shot("buckets").await;
    let buckets = c.get("/api/buckets").await;
    let members = buckets
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "members")
        .unwrap();
    assert_eq!(members["history"], 1);
    assert_eq!(members["marker_ttl"], 60.0);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_lock_of_a_multi_lock_is_marked_with_the_others() {
    let (server, kvtk) = start().await;
    let kv = kvtk_core::Kv::connect(&server.client_url()).await.unwrap();
    let locks = kvtk_locks::Locks::open(&kv, "locks").await.unwrap();
    // Taken and renewed before the console starts: the console never sees the transaction
    // that created the entries, only their renewals, whose values name the multi-lock.
    let early = ["acct.dave", "acct.erin"];
    let before = locks.multi(early).unwrap().lock();
    let before = before.ttl(Duration::from_secs(1)).await.unwrap();
    renewed(&locks, "acct.dave").await;
    let c = console(&kvtk, &[]).await;
    let plain = locks.mutex("plain").unwrap().lock().await.unwrap();
    let names = ["acct.alice", "acct.bob", "acct.carol"];
    let all = locks.multi(names).unwrap().lock().await.unwrap();
    // A second multi-lock on two of them waits behind the first, in both queues.
    let waiting = locks.multi(["acct.alice", "acct.bob"]).unwrap();
    let second = tokio::spawn(async move { waiting.lock().await.map(|g| g.tokens().count()) });

    let b = Browser::start().await;
    b.client.goto(&c.base).await.unwrap();
    let multi =
        |name: &str| format!(r#"document.querySelector('tr[data-lock="{name}"] [data-multi]')"#);
    for name in names {
        let others: Vec<&str> = names.iter().copied().filter(|n| *n != name).collect();
        b.until(
            &format!("{name} marked as taken with {others:?}"),
            &format!(
                "{m} !== null && {m}.dataset.multi === '{}'",
                others.join(" "),
                m = multi(name)
            ),
        )
        .await;
    }
    for (name, other) in [(early[0], early[1]), (early[1], early[0])] {
        b.until(
            &format!("{name}, renewed before the console started, marked with {other}"),
            &format!(
                "{m} !== null && {m}.dataset.multi === '{other}'",
                m = multi(name)
            ),
        )
        .await;
    }
    b.until(
        "the waiting multi-lock in alice's queue",
        r#"document.querySelector('tr[data-lock="acct.alice"]').querySelectorAll('[data-role=waiter]').length === 1"#,
    )
    .await;
    assert_eq!(
        b.eval(&format!("{} === null", multi("plain"))).await,
        json!(true)
    );
    let alice = lock_item(&c, "acct.alice").await.unwrap();
    assert_eq!(alice["multi_with"], json!(["acct.bob", "acct.carol"]));
    assert_eq!(
        alice["holders"][0]["multi_with"],
        json!(["acct.bob", "acct.carol"])
    );
    assert_eq!(alice["waiters"][0]["multi_with"], json!(["acct.bob"]));
    b.shot("locks-multi").await;

    all.release().await.unwrap();
    let taken = kvtk_tests::within("the second multi-lock", second).await;
    assert_eq!(taken.unwrap().unwrap(), 2);
    b.until(
        "carol no longer part of a multi-lock",
        &format!(
            "document.querySelector('tr[data-lock=\"acct.carol\"]') === null || {} === null",
            multi("acct.carol")
        ),
    )
    .await;
    plain.release().await.unwrap();
    before.release().await.unwrap();
    b.close().await;
}

/// Waits until the holder's queue entry of lock `name` was renewed (a revision above its
/// token), so no revision of the creating transaction is left in the bucket.
async fn renewed(locks: &kvtk_locks::Locks, name: &str) {
    let info = locks.inspect(name).await.unwrap();
    let holder = &info.holders[0];
    let mut w = locks.bucket().watch([holder.key.as_str()]).await.unwrap();
    loop {
        let event = kvtk_tests::next("a renewal", &mut w).await.unwrap();
        if let kvtk_core::WatchEvent::Entry(e) = event {
            if e.is_value() && e.revision() > holder.token.revision() {
                assert!(e.batch().is_none(), "a renewal is no transaction's");
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_shows_a_bound_acknowledgement_while_its_session_lives() {
    use kvtk_core::lease::{Keeper, LeaseConfig};
    let (server, kvtk) = start().await;
    let kv = kvtk_core::Kv::connect(&server.client_url()).await.unwrap();
    let config = kvtk_core::BucketConfig::new("config")
        .history(10)
        .per_key_ttl(Duration::from_secs(60))
        .atomic_batches(true);
    let bucket = kv.create_bucket(config).await.unwrap();
    ok(&kvtk, &["config", "--key", "app", "set", "a", "1"]);
    let applied = bucket.get("app").await.unwrap().unwrap().revision().get();
    // A reader process's acknowledgement bound to its session, as kvtk-config writes it.
    let cfg = LeaseConfig::new(Duration::from_secs(10)).unwrap();
    let session = Keeper::new(&bucket, cfg).unwrap().session().await.unwrap();
    let ack = json!({"v": 1, "applied": applied, "rejected": null, "stale": false});
    let bound = session
        .bind("_applied.app.web-2", ack.to_string())
        .await
        .unwrap();
    let c = console(&kvtk, &[]).await;
    let b = browse(&c, "config").await;
    open_doc(&b, 1).await;
    let row = r#"document.querySelector('tr[data-instance="web-2"]')"#;
    b.until("web-2 in the fleet", &format!("{row} !== null"))
        .await;
    let docs = "document.querySelectorAll('#config-docs li').length";
    assert_eq!(
        b.eval(docs).await,
        json!(1),
        "the session key is no document"
    );
    b.shot("config-fleet-bound").await;
    // The session ends; its acknowledgement stays in the bucket but no longer counts.
    session.close().await.unwrap();
    b.until("web-2 out of the fleet", &format!("{row} === null"))
        .await;
    b.shot("config-fleet-session-ended").await;
    bound.orphan();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prefix_shows_as_one_document_with_history_and_diffs() {
    let (_server, kvtk) = start().await;
    let svc = |args: &[&str]| {
        let mut all = vec!["config", "--prefix", "svc"];
        all.extend_from_slice(args);
        ok(&kvtk, &all);
    };
    svc(&["set", "db.pool_size", "8"]);
    svc(&["set", "name", "web"]);
    ok(&kvtk, &["config", "--key", "app", "set", "a", "1"]);
    let c = console(&kvtk, &["--allow-writes"]).await;
    let secret = c.secret.clone().unwrap();
    let b = browse(&c, "config").await;
    b.until(
        "svc as one prefix document beside app",
        r#"document.querySelector('[data-doc="svc"][data-mode="prefix"]') !== null && document.querySelector('[data-doc="app"][data-mode="document"]') !== null && document.querySelectorAll('#config-docs li').length === 2"#,
    )
    .await;
    b.eval(r#"document.querySelector('[data-doc="svc"]').click() || true"#)
        .await;
    let value = "JSON.parse(document.getElementById('doc-value').textContent)";
    b.until(
        "the value assembled from its keys",
        &format!("document.getElementById('doc-value') !== null && {value}.db.pool_size === 8 && {value}.name === 'web'"),
    )
    .await;
    let fields = b
        .eval("document.getElementById('doc-fields').textContent")
        .await;
    assert!(
        fields
            .as_str()
            .unwrap()
            .contains("svc.db.pool_size, svc.name"),
        "{fields}"
    );
    let item = c.get("/api/item?view=config&id=svc").await;
    let revs: Vec<u64> = item["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revs.len(), 2, "{item}");

    // A change shows live, with its diff.
    svc(&["set", "db.pool_size", "16"]);
    b.until("the new value", &format!("{value}.db.pool_size === 16"))
        .await;
    pool_size_diff_from_8_to_16(&b).await;
    b.shot("config-prefix").await;

    // A rollback writes the prefix's keys (the first revision had no name).
    let body = json!({"key": "svc", "revision": revs[0]}).to_string();
    let headers = [
        ("content-type", "application/json"),
        ("x-kvtk-secret", secret.as_str()),
    ];
    let (status, answer) = c
        .http("POST", "/api/config/rollback", &headers, &body)
        .await;
    assert_eq!(status, 200, "{answer}");
    b.until(
        "the rolled-back value",
        &format!("{value}.db.pool_size === 8 && {value}.name === undefined"),
    )
    .await;
    let out = kvtk.output(&["config", "--prefix", "svc", "get", "--json"]);
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["value"], json!({"db": {"pool_size": 8}}));
    b.close().await;
}
