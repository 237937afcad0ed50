//! The console as a library against a real server, over plain HTTP: the JSON endpoints, a
//! bucket not made yet, schema checks, the actions and their refusals, loopback only, and
//! the lifetime of tabs and tasks. The page itself is tested in a real browser by kvtk's
//! tests (kv-cli/tests/ui.rs).

#![allow(clippy::unwrap_used)] // tests panic on failure by design

use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::time::Duration;

use kvtk_core::Kv;
use kvtk_locks::Locks;
use kvtk_tests::{until, within, NatsServer};
use kvtk_ui::{ErrorKind, Server, Ui, SECRET_HEADER};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ANY_PORT: ([u8; 4], u16) = ([127, 0, 0, 1], 0);

/// Sends one request and reads the whole answer: (status, body).
async fn request(server: &Server, head: &str, body: &str) -> (u16, String) {
    let addr = server.local_addr();
    let mut s = within("a connection", TcpStream::connect(addr))
        .await
        .unwrap();
    let text = format!(
        "{head}\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(text.as_bytes()).await.unwrap();
    let mut answer = String::new();
    within("the answer", s.read_to_string(&mut answer))
        .await
        .unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

async fn get(server: &Server, path: &str) -> Value {
    let (status, body) = request(server, &format!("GET {path} HTTP/1.1"), "").await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The bucket `config`, with the history and per-key TTLs readers' acknowledgements use.
async fn config_bucket(kv: &Kv) -> kvtk_core::Bucket {
    let cfg = kvtk_core::BucketConfig::new("config")
        .history(10)
        .per_key_ttl(Duration::from_secs(60));
    kv.create_bucket(cfg).await.unwrap()
}

/// One item of a view, once it is there.
async fn item(server: &Server, view: &str, id: &str) -> Value {
    let path = format!("GET /api/item?view={view}&id={id} HTTP/1.1");
    let (status, body) = request(server, &path, "").await;
    if status == 200 {
        serde_json::from_str(&body).unwrap()
    } else {
        Value::Null
    }
}

/// Opens the event stream and returns it with its first event (the whole state).
async fn events(server: &Server) -> (TcpStream, Value) {
    let addr = server.local_addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let snapshot = within("the first event", async {
        loop {
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream closed");
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen);
            if let Some(data) = text.split("event: snapshot\ndata: ").nth(1) {
                if let Some((line, _)) = data.split_once('\n') {
                    return serde_json::from_str::<Value>(line).unwrap();
                }
            }
        }
    })
    .await;
    (s, snapshot)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_not_made_yet_is_said_and_shows_once_made() {
    let server = NatsServer::start().await;
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let ui = Ui::new(kv.clone())
        .listen(ANY_PORT.into())
        .start()
        .await
        .unwrap();
    until("the locks view to say its bucket is missing", || async {
        let (_s, snap) = events(&ui).await;
        snap["locks"]["status"]["state"] == "missing"
    })
    .await;
    assert_eq!(get(&ui, "/api/locks").await, json!([]));

    let locks = Locks::open(&kv, "locks").await.unwrap();
    let guard = locks.mutex("jobs.a").unwrap().lock().await.unwrap();
    until("the lock to show", || async {
        get(&ui, "/api/locks").await[0]["holders"][0]["token"] == json!(guard.token().get())
    })
    .await;
    let one = get(&ui, "/api/item?view=locks&id=jobs.a").await;
    assert_eq!(one["kind"], "mutex");
    assert_eq!(one["waiters"], json!([]));
    guard.release().await.unwrap();
    until("the lock to be free", || async {
        get(&ui, "/api/item?view=locks&id=jobs.a").await["holders"] == json!([])
    })
    .await;
    ui.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_are_checked_against_the_schema_and_diffed() {
    let server = NatsServer::start().await;
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let b = kv
        .create_bucket(kvtk_core::BucketConfig::new("config").history(10))
        .await
        .unwrap();
    b.put("app", r#"{"db":{"pool_size":8}}"#).await.unwrap();
    b.put("app", r#"{"db":{"pool_size":16},"name":"x"}"#)
        .await
        .unwrap();
    let schema = json!({"properties": {"db": {"properties": {"pool_size": {"maximum": 10}}}}});
    let ui = Ui::new(kv)
        .listen(ANY_PORT.into())
        .schema(None, &schema)
        .unwrap()
        .start()
        .await
        .unwrap();
    until("the document's two revisions", || async {
        get(&ui, "/api/config").await[0]["history"]
            .as_array()
            .map(Vec::len)
            == Some(2)
    })
    .await;
    let doc = get(&ui, "/api/item?view=config&id=app").await;
    assert_eq!(doc["schema"]["valid"], false);
    assert!(
        doc["schema"]["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("/db/pool_size"),
        "{doc}"
    );
    let diff = get(&ui, "/api/config/diff?key=app&from=1&to=2").await;
    assert_eq!(
        diff,
        json!([
            {"path": "db.pool_size", "from": 8, "to": 16},
            {"path": "name", "from": null, "to": "x"},
        ])
    );
    let bad =
        Ui::new(Kv::connect(&server.client_url()).await.unwrap()).schema(None, &json!({"type": 7}));
    assert_eq!(bad.unwrap_err().kind(), ErrorKind::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread")]
async fn force_release_needs_writes_and_the_secret() {
    let server = NatsServer::start().await;
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let locks = Locks::open(&kv, "locks").await.unwrap();
    let guard = locks.mutex("job").unwrap().lock().await.unwrap();
    let body = json!({"name": "job", "token": guard.token().get()}).to_string();
    let post = "POST /api/locks/release HTTP/1.1";

    let read_only = Ui::new(kv.clone())
        .listen(ANY_PORT.into())
        .start()
        .await
        .unwrap();
    assert!(read_only.secret().is_none());
    let with = format!("{post}\r\n{SECRET_HEADER}: anything");
    let (status, answer) = request(&read_only, &with, &body).await;
    assert_eq!(status, 403, "{answer}");

    let ui = Ui::new(kv.clone())
        .listen(ANY_PORT.into())
        .allow_writes(true)
        .secret("s3cret")
        .start()
        .await
        .unwrap();
    assert_eq!(ui.secret(), Some("s3cret"));
    assert_eq!(request(&ui, post, &body).await.0, 403, "no secret");
    let wrong = format!("{post}\r\n{SECRET_HEADER}: s3cres");
    assert_eq!(request(&ui, &wrong, &body).await.0, 403, "a wrong secret");
    let held = locks.inspect("job").await.unwrap().holders;
    assert_eq!(held[0].token, guard.token(), "nothing was done");
    let right = format!("{post}\r\n{SECRET_HEADER}: s3cret");
    let (status, answer) = request(&ui, &right, &body).await;
    assert_eq!((status, answer.as_str()), (200, r#"{"evicted":true}"#));
    within("the holder to learn it lost the lock", guard.lost()).await;
    // No credential of the connection and no secret in what the console serves.
    let meta = get(&ui, "/api/meta").await.to_string();
    assert!(
        !meta.contains("s3cret") && !meta.contains(&server.client_url()),
        "{meta}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_loopback_unless_allowed() {
    let server = NatsServer::start().await;
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let everywhere: SocketAddr = ([0, 0, 0, 0], 0).into();
    let e = Ui::new(kv.clone())
        .listen(everywhere)
        .start()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotLoopback);
    assert!(e.to_string().contains("--allow-remote"), "{e}");
    let e = Ui::new(kv).secret(" ").start().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_tab_leaves_nothing_and_shutdown_ends_open_ones() {
    let server = NatsServer::start().await;
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let ui = Ui::new(kv).listen(ANY_PORT.into()).start().await.unwrap();
    let (tab, _) = events(&ui).await;
    let (_open, _) = events(&ui).await;
    assert_eq!(ui.tabs(), 2);
    drop(tab);
    until("the closed tab's stream to end", || async {
        ui.tabs() == 1
    })
    .await;
    within("shutdown with a tab open", ui.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_shows_which_reader_applied_which_revision() {
    let server = NatsServer::start().await;
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let b = config_bucket(&kv).await;
    let rev = b.put("app", r#"{"a":1}"#).await.unwrap();
    let reader = kvtk_config::ConfigReader::<Value>::builder(kvtk_config::Source::document("app"))
        .bucket(b.clone())
        .instance("web-1")
        .await
        .unwrap();
    let ui = Ui::new(kv).listen(ANY_PORT.into()).start().await.unwrap();
    until("web-1's acknowledgement", || async {
        let doc = item(&ui, "config", "app").await;
        doc["fleet"][0]["instance"] == "web-1"
            && doc["fleet"][0]["ack"]["applied"] == json!(rev.get())
    })
    .await;
    let next = b.put("app", r#"{"a":2}"#).await.unwrap();
    until("web-1 to apply the next revision", || async {
        let doc = item(&ui, "config", "app").await;
        doc["fleet"][0]["ack"]["applied"] == json!(next.get())
            && doc["revision"] == json!(next.get())
    })
    .await;
    reader.shutdown().await;
    ui.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bound_acknowledgement_counts_while_its_session_lives_and_sessions_are_no_documents() {
    use kvtk_core::lease::{Keeper, LeaseConfig};
    let server = NatsServer::start().await;
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let b = config_bucket(&kv).await;
    let rev = b.put("app", r#"{"a":1}"#).await.unwrap();
    // A reader process's acknowledgement bound to its session, as kvtk-config writes it.
    let cfg = LeaseConfig::new(Duration::from_secs(10)).unwrap();
    let session = Keeper::new(&b, cfg).unwrap().session().await.unwrap();
    let ack = json!({"v": 1, "applied": rev.get(), "rejected": null, "stale": false});
    let bound = session
        .bind("_applied.app.web-2", ack.to_string())
        .await
        .unwrap();
    let ui = Ui::new(kv).listen(ANY_PORT.into()).start().await.unwrap();
    until("web-2's acknowledgement", || async {
        let doc = item(&ui, "config", "app").await;
        doc["fleet"][0]["instance"] == "web-2"
            && doc["fleet"][0]["ack"]["applied"] == json!(rev.get())
    })
    .await;
    let keys: Vec<Value> = (get(&ui, "/api/config").await.as_array().unwrap().iter())
        .map(|d| d["key"].clone())
        .collect();
    assert_eq!(keys, [json!("app")], "the session key is no document");
    // The session ends; its acknowledgement stays in the bucket but no longer counts.
    session.close().await.unwrap();
    until("web-2 out of the fleet", || async {
        item(&ui, "config", "app").await["fleet"] == json!([])
    })
    .await;
    assert!(b
        .get("_applied.app.web-2")
        .await
        .unwrap()
        .unwrap()
        .is_value());
    bound.orphan();
    ui.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bound_members_are_listed_while_their_session_lives_and_sessions_are_no_group() {
    use kvtk_core::lease::LeaseConfig;
    use kvtk_membership::Membership;
    let server = NatsServer::start().await;
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    kv.create_or_open(Membership::bucket_config("members"))
        .await
        .unwrap();
    let cfg = LeaseConfig::new(Duration::from_secs(10)).unwrap();
    let membership = Membership::open(&kv, "members").await.unwrap();
    let api = membership.bind_to_session_with(cfg).group("api").unwrap();
    let member = api.join("a-1", r#"{"addr":"10.0.0.1:80"}"#).await.unwrap();
    let ui = Ui::new(kv).listen(ANY_PORT.into()).start().await.unwrap();
    until("a-1 in group api", || async {
        item(&ui, "members", "api").await["members"][0]["id"] == "a-1"
    })
    .await;
    let groups: Vec<Value> = (get(&ui, "/api/members").await.as_array().unwrap().iter())
        .map(|g| g["group"].clone())
        .collect();
    assert_eq!(groups, [json!("api")], "the session key is no group");
    // Its session ends while the member key is still there: the member is gone.
    let bucket = Kv::connect(&server.client_url())
        .await
        .unwrap()
        .open("members")
        .await
        .unwrap();
    let session =
        kvtk_core::lease::SessionId::from_key(bucket.keys("_session.*").await.unwrap()[0].as_str())
            .unwrap();
    let closed = bucket
        .delete(session.key())
        .expect(kvtk_core::Expect::Revision(
            bucket.get(session.key()).await.unwrap().unwrap().revision(),
        ))
        .await;
    closed.unwrap();
    until("a-1 gone from group api", || async {
        let g = item(&ui, "members", "api").await;
        g["members"] == json!([])
            && g["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["event"] == "left")
    })
    .await;
    assert!(bucket.get("api.a-1").await.unwrap().is_some());
    drop(member);
    ui.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn candidates_are_listed_in_line_order() {
    use kvtk_leader::Election;
    let server = NatsServer::start().await;
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let bucket = kv
        .create_or_open(Election::bucket_config("elections"))
        .await
        .unwrap();
    let election = Election::new(bucket, "sched", Duration::from_secs(5)).unwrap();
    let ui = Ui::new(kv).listen(ANY_PORT.into()).start().await.unwrap();
    let ids = |item: &Value| -> Vec<String> {
        item["candidates"].as_array().map_or(Vec::new(), |c| {
            c.iter().map(|c| c["id"].as_str().unwrap().into()).collect()
        })
    };
    let a = election.campaign("a").await.unwrap();
    let b = tokio::spawn(election.campaign("b").into_future());
    until("b to register", || async {
        ids(&item(&ui, "elections", "sched").await) == ["a", "b"]
    })
    .await;
    let c = tokio::spawn(election.campaign("c").into_future());
    until("c to register", || async {
        ids(&item(&ui, "elections", "sched").await) == ["a", "b", "c"]
    })
    .await;
    // a steps down (keeping its registration) and b, first in line, takes over: a now stands
    // behind c, registered before a stepped down, and b, who leads, last.
    let a_again = tokio::spawn(a.step_down().await.into_future());
    let b = within("b to win", b).await.unwrap().unwrap();
    until("the line after the hand-over", || async {
        let e = item(&ui, "elections", "sched").await;
        e["leader"]["id"] == "b" && ids(&e) == ["c", "a", "b"]
    })
    .await;
    b.resign().await.unwrap();
    let _ = within("c to win", c).await.unwrap().unwrap();
    a_again.abort();
    ui.shutdown().await;
}
