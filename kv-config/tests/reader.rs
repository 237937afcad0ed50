//! The reader against a real nats-server: load, hot reload, last-known-good, deduplication,
//! layering.

mod common;

use std::time::Instant;

use common::*;
use kvtk_config::{ConfigEvent, ConfigReader, ConfigWriter, Origin, RejectKind, Source};
use kvtk_tests::{within, NatsServer};

#[tokio::test]
async fn initial_load_and_defaults_when_missing() {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;

    // Nothing stored: the defaults, no revision.
    let r = ConfigReader::<App>::builder(doc())
        .bucket(b.clone())
        .defaults(App::default())
        .start()
        .await
        .unwrap();
    let cur = r.current();
    assert_eq!(*cur.value(), App::default());
    assert_eq!(cur.revision(), None);
    assert_eq!(cur.origin(), Origin::Kv);
    assert!(r.is_ready() && r.health().is_healthy());

    // A stored document, merged over the defaults (db comes from the defaults).
    let rev = b
        .put("app.config", r#"{"name":"svc","pool_size":8}"#)
        .await
        .unwrap();
    let r2 = ConfigReader::<App>::builder(doc())
        .bucket(b.clone())
        .defaults(App::default())
        .await
        .unwrap();
    r2.ready().await;
    assert_eq!(*r2.current().value(), app("svc", 8));
    assert_eq!(r2.current().revision(), Some(rev));
    assert_eq!(r2.revision(), Some(rev));
}

#[tokio::test]
async fn hot_update_reaches_changed_quickly() {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    b.put("app.config", json(&app("v1", 1))).await.unwrap();
    let mut r = validated_reader(&b).await;
    let mut events = r.events();
    let w = ConfigWriter::<App>::new(b.clone(), doc()).validate(validate);

    let mut lat = Vec::new();
    for i in 2..=11u32 {
        let t0 = Instant::now();
        let written = w.update(|c| c.pool_size = i).await.unwrap();
        let snap = within("the reader's change", r.changed()).await;
        lat.push(t0.elapsed());
        assert_eq!(snap.pool_size, i);
        assert_eq!(snap.revision(), written.revision);
        assert_eq!(written.changed, vec!["pool_size".to_string()]);
        match next_event(&mut events).await {
            ConfigEvent::Changed(c) => {
                assert_eq!(c.paths, vec!["pool_size".to_string()]);
                assert_eq!(c.old.pool_size, i - 1);
                assert_eq!(c.new.pool_size, i);
                assert_eq!(c.revision, written.revision);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    lat.sort();
    println!(
        "update-to-changed latency, 1 reader: min {:?} median {:?} max {:?}",
        lat[0],
        lat[lat.len() / 2],
        lat[lat.len() - 1]
    );
}

#[tokio::test]
async fn bad_input_keeps_last_known_good_and_names_the_revision() {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    let good = app("good", 10);
    b.put("app.config", json(&good)).await.unwrap();
    let r = ConfigReader::<App>::builder(doc())
        .bucket(b.clone())
        .strict(true)
        .validate(validate)
        .await
        .unwrap();
    let mut events = r.events();
    let good_rev = r.current().revision();

    let cases: Vec<(RejectKind, Option<&[u8]>)> = vec![
        (RejectKind::Malformed, Some(b"{not json")),
        (
            RejectKind::WrongType,
            Some(br#"{"name":"x","pool_size":"many"}"#),
        ),
        (
            RejectKind::UnknownField,
            Some(br#"{"name":"x","pool_size":5,"extra":true}"#),
        ),
        (RejectKind::Invalid, Some(br#"{"name":"x","pool_size":0}"#)),
        (RejectKind::Deleted, None),
    ];
    for (kind, bytes) in cases {
        let rev = match bytes {
            Some(b2) => b.put("app.config", b2.to_vec()).await.unwrap(),
            None => b.delete("app.config").await.unwrap(),
        };
        match next_event(&mut events).await {
            ConfigEvent::Rejected(rej) => {
                assert_eq!(rej.kind(), kind, "{rej}");
                assert_eq!(rej.revision(), Some(rev));
                if kind == RejectKind::UnknownField {
                    assert_eq!(rej.fields(), ["extra"]);
                }
            }
            other => panic!("expected a rejection of {kind:?}, got {other:?}"),
        }
        let cur = r.current();
        assert_eq!(*cur.value(), good, "last good value kept after {kind:?}");
        assert_eq!(cur.revision(), good_rev);
        let h = r.health();
        assert!(!h.is_healthy());
        assert_eq!(h.rejected.as_ref().map(|x| x.revision()), Some(Some(rev)));
    }

    // A good value again: applied, health clears.
    let rev = b.put("app.config", json(&app("fixed", 20))).await.unwrap();
    match next_event(&mut events).await {
        ConfigEvent::Changed(c) => {
            assert_eq!(c.revision, Some(rev));
            assert_eq!(c.paths, vec!["name", "pool_size"]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(r.health().is_healthy());
    assert_eq!(r.revision(), Some(rev));
}

#[tokio::test]
async fn no_duplicate_events() {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    b.put("app.config", json(&app("a", 1))).await.unwrap();
    let r = ConfigReader::<App>::builder(doc())
        .bucket(b.clone())
        .await
        .unwrap();
    let mut events = r.events();

    // The same value again, also reformatted with reordered fields: no event.
    b.put("app.config", json(&app("a", 1))).await.unwrap();
    b.put(
        "app.config",
        r#"{ "pool_size": 1, "db": {"port": 5432, "host": "localhost"}, "name": "a" }"#,
    )
    .await
    .unwrap();
    let rev = b.put("app.config", json(&app("b", 1))).await.unwrap();
    // The first event is the real change, not either rewrite.
    match next_event(&mut events).await {
        ConfigEvent::Changed(c) => {
            assert_eq!(c.revision, Some(rev));
            assert_eq!(c.paths, vec!["name"]);
        }
        other => panic!("unexpected {other:?}"),
    }
    // A bad value twice in a row is reported once; the repeat of the good value is silent.
    let bad = b.put("app.config", "{").await.unwrap();
    b.put("app.config", json(&app("b", 1))).await.unwrap();
    let rev = b.put("app.config", json(&app("c", 1))).await.unwrap();
    match next_event(&mut events).await {
        ConfigEvent::Rejected(rej) => assert_eq!(rej.revision(), Some(bad)),
        other => panic!("unexpected {other:?}"),
    }
    match next_event(&mut events).await {
        ConfigEvent::Changed(c) => assert_eq!(c.revision, Some(rev)),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn layering_defaults_file_kv_env() {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.json");
    std::fs::write(
        &file,
        r#"{"db": {"host": "filehost", "port": 1111}, "name": "file"}"#,
    )
    .unwrap();
    b.put("app.config", r#"{"name":"kv","db":{"port":2222}}"#)
        .await
        .unwrap();
    let r = ConfigReader::<App>::builder(doc())
        .bucket(b.clone())
        .defaults(App::default())
        .local_file(&file)
        .env_prefix("MYAPP")
        .env_vars([
            ("MYAPP__POOL_SIZE".to_string(), "42".to_string()),
            ("MYAPP__DB__HOST".to_string(), "envhost".to_string()),
            ("OTHER__NAME".to_string(), "ignored".to_string()),
        ])
        .await
        .unwrap();
    let c = r.current();
    // name: kv over file; db.port: kv over file; db.host: env over file; pool_size: env over
    // defaults.
    assert_eq!(
        *c.value(),
        App {
            name: "kv".into(),
            pool_size: 42,
            db: Db {
                host: "envhost".into(),
                port: 2222
            }
        }
    );
}

#[tokio::test]
async fn prefix_mode_reads_fields_and_raw_strings() {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    b.put("app.name", "plain text").await.unwrap();
    b.put("app.pool_size", "7").await.unwrap();
    b.put("app.db.port", "6543").await.unwrap();
    b.put("app.db", r#"{"host":"objhost","port":1}"#)
        .await
        .unwrap();
    b.put("application.name", "not ours").await.unwrap();
    let r = ConfigReader::<App>::builder(Source::prefix("app"))
        .bucket(b.clone())
        .await
        .unwrap();
    assert_eq!(
        *r.current().value(),
        App {
            name: "plain text".into(),
            pool_size: 7,
            db: Db {
                host: "objhost".into(),
                port: 6543
            }
        }
    );
}

/// Health and revision show a change before anyone is told of it: a listener woken by
/// `changed()` or reading health inside the `Changed` event never sees the rejection the
/// change cleared. Two worker threads, so the listener runs while the reader's task goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_announced_after_health_and_revision_show_it() {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    b.put("app.config", json(&app("v", 1))).await.unwrap();
    let mut r = validated_reader(&b).await;
    let mut events = r.events();
    for i in 2..=41u32 {
        let bad = b.put("app.config", json(&app("v", 0))).await.unwrap();
        match next_event(&mut events).await {
            ConfigEvent::Rejected(rej) => assert_eq!(rej.revision(), Some(bad)),
            other => panic!("unexpected {other:?}"),
        }
        let good = b.put("app.config", json(&app("v", i))).await.unwrap();
        let snap = within("the reader's change", r.changed()).await;
        let (health, revision) = (r.health(), r.revision());
        assert_eq!(snap.revision(), Some(good));
        assert!(health.is_healthy(), "round {i}: woken with {health:?}");
        assert_eq!(revision, Some(good), "round {i}");
        match next_event(&mut events).await {
            ConfigEvent::Changed(c) => assert_eq!(c.revision, Some(good)),
            other => panic!("unexpected {other:?}"),
        }
    }
}
