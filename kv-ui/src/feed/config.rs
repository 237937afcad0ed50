//! The Configuration view: each document with its current value, the revisions the bucket
//! still holds, the result of validating it against a schema when one is given, and the
//! fleet's acknowledgements (which reader instance applied which revision).
//!
//! A document is any key outside `_applied.`; its history is read through
//! [`ConfigWriter::history`] when the watch shows it changed. Acknowledgements
//! (`_applied.<document>.<instance>`, kvtk-config's [`Applied`]) come from the watch itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt as _;
use kvtk_config::{Applied, ConfigWriter, Source};
use kvtk_core::{Bucket, Entry};
use serde_json::{json, Value};

use super::{expires_ms, Book, Feed, Read};
use crate::hub::{Hub, View};
use crate::schema::Schemas;

/// The prefix of fleet acknowledgement keys.
const APPLIED: &str = "_applied.";

/// One revision of a document: its value, or why it is not a valid one.
pub(crate) type Version = (u64, Result<Value, String>);

/// What one read brings back.
pub(crate) type ReadOut = (String, Result<Vec<Version>, String>);

#[derive(Default)]
struct Doc {
    history: Vec<Version>,
    /// Instance → (ack, lease deadline).
    fleet: BTreeMap<String, (Value, Option<u64>)>,
    exists: bool,
    read_once: bool,
}

/// The configuration feed.
pub(crate) struct ConfigFeed {
    hub: Arc<Hub>,
    schemas: Arc<Schemas>,
    bucket: Option<Bucket>,
    docs: BTreeMap<String, Doc>,
    book: Book,
}

/// Reads a document's history through kvtk-config.
pub(crate) async fn history(bucket: Bucket, key: String) -> Result<Vec<Version>, String> {
    let writer = ConfigWriter::<Value>::new(bucket, Source::document(key));
    let versions = writer.history().await.map_err(|e| e.to_string())?;
    Ok(versions
        .into_iter()
        .map(|v| {
            (
                v.revision.get(),
                v.value.map_err(|r| r.message().to_string()),
            )
        })
        .collect())
}

impl ConfigFeed {
    pub(crate) fn new(hub: Arc<Hub>, schemas: Arc<Schemas>) -> ConfigFeed {
        ConfigFeed {
            hub,
            schemas,
            bucket: None,
            docs: BTreeMap::new(),
            book: Book::default(),
        }
    }

    fn read(&mut self, key: &str) -> Option<Read<ReadOut>> {
        if !self.book.start(key) {
            return None;
        }
        self.fetch(key)
    }

    fn fetch(&self, key: &str) -> Option<Read<ReadOut>> {
        let bucket = self.bucket.clone()?;
        let key = key.to_string();
        Some(async move { (key.clone(), history(bucket, key).await) }.boxed())
    }

    fn publish(&self, key: &str) {
        let Some(doc) = self.docs.get(key) else {
            return;
        };
        if !doc.read_once && doc.fleet.is_empty() {
            return;
        }
        if !doc.exists && doc.fleet.is_empty() {
            self.hub.remove(View::Config, key);
            return;
        }
        self.hub
            .put(View::Config, key, doc_json(key, doc, &self.schemas));
    }

    /// An acknowledgement key's entry.
    fn ack(&mut self, rest: &str, e: &Entry) {
        let Some((doc, instance)) = rest.rsplit_once('.') else {
            return;
        };
        let d = self.docs.entry(doc.to_string()).or_default();
        if e.is_value() {
            let ack = serde_json::from_slice::<Applied>(e.value())
                .map(|a| json!({"applied": a.applied, "rejected": a.rejected, "stale": a.stale}))
                .unwrap_or_else(|_| json!({"unreadable": String::from_utf8_lossy(e.value())}));
            d.fleet.insert(instance.to_string(), (ack, expires_ms(e)));
        } else {
            d.fleet.remove(instance);
        }
        self.book.renewed.insert(doc.to_string());
    }
}

impl Feed for ConfigFeed {
    type Done = ReadOut;

    fn view(&self) -> View {
        View::Config
    }

    fn open(&mut self, bucket: Bucket) -> BoxFuture<'_, Result<(), String>> {
        async move {
            self.bucket = Some(bucket);
            self.book.reset();
            for d in self.docs.values_mut() {
                d.fleet.clear();
                d.exists = false;
            }
            Ok(())
        }
        .boxed()
    }

    fn entry(&mut self, e: &Entry) -> Vec<Read<ReadOut>> {
        let key = e.key().as_str();
        if let Some(rest) = key.strip_prefix(APPLIED) {
            self.ack(rest, e);
            return Vec::new();
        }
        let d = self.docs.entry(key.to_string()).or_default();
        d.exists = e.is_value();
        if !self.book.ready {
            return Vec::new();
        }
        let key = key.to_string();
        self.read(&key).into_iter().collect()
    }

    fn initial_done(&mut self) -> Vec<Read<ReadOut>> {
        let keys: Vec<String> = self.docs.keys().cloned().collect();
        self.book.initial(&self.hub, View::Config, &keys);
        keys.iter().filter_map(|k| self.read(k)).collect()
    }

    fn done(&mut self, (key, res): ReadOut) -> Vec<Read<ReadOut>> {
        match (res, self.docs.get_mut(&key)) {
            (Ok(history), Some(d)) => {
                d.history = history;
                d.read_once = true;
                self.publish(&key);
            }
            (Err(msg), _) => tracing::debug!(key = %key, "config history failed: {msg}"),
            (Ok(_), None) => {}
        }
        if self.book.finish(&key) {
            return self.fetch(&key).into_iter().collect();
        }
        Vec::new()
    }

    fn tick(&mut self) -> Vec<Read<ReadOut>> {
        for key in self.book.take().0 {
            self.publish(&key);
        }
        Vec::new()
    }
}

/// The JSON item of one document (`/api/config`, and the page's Configuration view).
fn doc_json(key: &str, doc: &Doc, schemas: &Schemas) -> Value {
    let history: Vec<Value> = doc
        .history
        .iter()
        .map(|(rev, v)| match v {
            Ok(value) => json!({"revision": rev, "value": value}),
            Err(msg) => json!({"revision": rev, "rejected": msg}),
        })
        .collect();
    let current = doc.history.last();
    let value = current.and_then(|(_, v)| v.as_ref().ok());
    let schema = match (value, schemas.for_key(key)) {
        (Some(v), Some(s)) => Some(s.check(v)),
        _ => None,
    };
    let fleet: Vec<Value> = doc
        .fleet
        .iter()
        .map(|(instance, (ack, exp))| json!({"instance": instance, "ack": ack, "expires_ms": exp}))
        .collect();
    json!({
        "key": key,
        "exists": doc.exists,
        "revision": current.map(|(r, _)| r),
        "value": value,
        "history": history,
        "schema": schema,
        "fleet": fleet,
    })
}
