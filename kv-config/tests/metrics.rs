//! Configuration metrics against a real nats-server, read through a local test recorder.

use std::time::Duration;

use futures::StreamExt;
use kvtk_config::{ConfigEvent, ConfigReader, ConfigWriter, Source};
use kvtk_core::{BucketConfig, Kv};
use kvtk_tests::metrics::TestRecorder;
use kvtk_tests::{within, NatsServer};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct App {
    pool_size: u32,
}

fn check(a: &App) -> Result<(), String> {
    if a.pool_size == 0 {
        return Err("pool_size must be positive".into());
    }
    Ok(())
}

#[tokio::test]
async fn applied_rejected_and_revision_lag_follow_the_reader() {
    let rec = TestRecorder::new();
    let _installed = rec.install_local();
    let server = NatsServer::start().await;
    let kv = Kv::new(server.connect().await).with_timeout(Duration::from_secs(2));
    let bucket = kv
        .create_or_open(BucketConfig::new("cm").history(5))
        .await
        .unwrap();
    let source = Source::document("svc.app");
    let writer = ConfigWriter::<App>::new(bucket.clone(), source.clone()).validate(check);
    writer.set(&App { pool_size: 4 }).await.unwrap();
    let mut reader = ConfigReader::<App>::builder(source)
        .bucket(bucket.clone())
        .validate(check)
        .await
        .unwrap();
    let mut events = reader.events();
    let by = [("config", "svc.app")];
    assert_eq!(rec.counter("kv_config_applied_total", &by), 1, "at start");
    let first_applied = rec
        .gauge("kv_config_last_applied_timestamp_seconds", &by)
        .unwrap();
    assert!(
        first_applied > 1.6e9,
        "seconds since the epoch: {first_applied}"
    );
    assert_eq!(rec.gauge("kv_config_revision_lag", &by), Some(0.0));

    writer.set(&App { pool_size: 8 }).await.unwrap();
    within("the reader's change", reader.changed()).await;
    assert_eq!(rec.counter("kv_config_applied_total", &by), 2);

    let good = reader.current().revision().unwrap();
    // Behind the writer's back: the reader refuses it and keeps pool_size 8.
    let bad = bucket.put("svc.app", r#"{"pool_size":0}"#).await.unwrap();
    match within("the reader's next event", events.next()).await {
        Some(ConfigEvent::Changed(_)) => {
            let ev = within("the rejection", events.next()).await;
            assert!(matches!(ev, Some(ConfigEvent::Rejected(_))), "{ev:?}");
        }
        Some(ConfigEvent::Rejected(_)) => {}
        other => panic!("expected a rejection, got {other:?}"),
    }
    let invalid = [("config", "svc.app"), ("reason", "invalid")];
    assert_eq!(rec.counter("kv_config_rejected_total", &invalid), 1);
    assert_eq!(rec.counter("kv_config_applied_total", &by), 2);
    let lag = rec.gauge("kv_config_revision_lag", &by).unwrap();
    assert_eq!(lag, (bad.get() - good.get()) as f64, "revisions behind");
    assert!(lag > 0.0);

    // A good value again: applied, no lag.
    writer.set(&App { pool_size: 16 }).await.unwrap();
    within("the reader's change", reader.changed()).await;
    assert_eq!(rec.counter("kv_config_applied_total", &by), 3);
    assert_eq!(rec.gauge("kv_config_revision_lag", &by), Some(0.0));
    assert!(
        rec.gauge("kv_config_last_applied_timestamp_seconds", &by)
            .unwrap()
            >= first_applied
    );
    reader.shutdown().await;
}

/// This crate's metric names, and the rows of docs/metrics.md that document them.
const PREFIXES: [&str; 1] = ["kv_config_"];

mod names {
    use super::PREFIXES;
    use kvtk_config::metrics::*;
    const NAMES: [&str; 4] = [
        CONFIG_APPLIED,
        CONFIG_REJECTED,
        CONFIG_LAST_APPLIED,
        CONFIG_REVISION_LAG,
    ];

    #[test]
    fn the_names_are_the_metrics_doc_table() {
        let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
        kvtk_tests::metrics::assert_documented(&doc, &PREFIXES, &NAMES);
    }
}
