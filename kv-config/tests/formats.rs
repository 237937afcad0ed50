//! TOML and YAML documents end to end against a real nats-server: written by the writer in
//! the document's format, hot-reloaded by a reader, and a malformed document rejected without
//! its text in the rejection. Runs with the `toml` and `yaml` features (CI builds every
//! feature).
#![cfg(all(feature = "toml", feature = "yaml"))]
#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod common;

use common::*;
use kvtk_config::{ConfigEvent, ConfigReader, ConfigWriter, Format, RejectKind, Source};
use kvtk_tests::NatsServer;

async fn round_trip(format: Format, key: &str, stored_by_hand: &str, malformed: &str) {
    let server = NatsServer::start().await;
    let b = bucket(&server, "cfg").await;
    let source = Source::document_in(key, format);

    b.put(key, stored_by_hand.to_string()).await.unwrap();
    let reader = ConfigReader::<App>::builder(source.clone())
        .bucket(b.clone())
        .validate(validate)
        .await
        .unwrap();
    reader.ready().await;
    let mut expected = app("by-hand", 7);
    expected.db.host = "db.local".into();
    assert_eq!(*reader.current().value(), expected);
    let mut events = reader.events();

    // The writer encodes in the document's format; the reader reloads it.
    let writer = ConfigWriter::<App>::new(b.clone(), source).validate(validate);
    let written = writer.update(|a| a.pool_size = 9).await.unwrap();
    let stored = b.get(key).await.unwrap().unwrap();
    let text = std::str::from_utf8(stored.value()).unwrap();
    assert!(
        text.contains("pool_size") && !text.trim_start().starts_with('{'),
        "{text}"
    );
    match next_event(&mut events).await {
        ConfigEvent::Changed(c) => assert_eq!(c.revision, written.revision),
        other => panic!("expected the change, got {other:?}"),
    }
    assert_eq!(reader.current().pool_size, 9);

    // A malformed document is refused; the message names no part of it.
    let bad = b.put(key, malformed.to_string()).await.unwrap();
    match next_event(&mut events).await {
        ConfigEvent::Rejected(r) => {
            assert_eq!((r.kind(), r.revision()), (RejectKind::Malformed, Some(bad)));
            assert!(!r.message().contains("s3cr3t"), "{}", r.message());
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(reader.current().pool_size, 9);
}

#[tokio::test]
async fn yaml_documents_are_read_written_and_rejected() {
    round_trip(
        Format::Yaml,
        "app.yaml",
        "name: by-hand\npool_size: 7\ndb:\n  host: db.local\n  port: 5432\n",
        "name: by-hand\npassword: \"s3cr3t\npool_size: 3\n",
    )
    .await;
}

#[tokio::test]
async fn toml_documents_are_read_written_and_rejected() {
    round_trip(
        Format::Toml,
        "app.toml",
        "name = \"by-hand\"\npool_size = 7\n\n[db]\nhost = \"db.local\"\nport = 5432\n",
        "name = \"by-hand\"\npassword = \"s3cr3t\npool_size = 3\n",
    )
    .await;
}
