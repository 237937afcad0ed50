//! The Configuration view: each document with its current value, the revisions the bucket
//! still holds, the result of validating it against a schema when one is given, and the
//! fleet's acknowledgements (which reader instance applied which revision).
//!
//! An item is a document (one key holds it) or a prefix (kvtk-config's prefix mode: one key
//! per field under `<prefix>.`), shown alike: the value assembled from its keys, its
//! history and diffs. A key belongs to a prefix when a reader acknowledges that prefix
//! (`_applied.<prefix>.<instance>`, kvtk-config's [`Applied`]) or when it is a dotted key
//! whose value is not a JSON object (a field: prefix mode stores leaves, never objects; its
//! prefix is then the key's first token); any other key is a document. An item's history
//! is read through [`ConfigWriter::history`] when the watch shows one of its keys changed;
//! acknowledgements come from the watch itself. An acknowledgement bound to a session
//! (kvtk-config's `bind_ack_to_session`) counts while its session lives, as
//! `wait_applied` counts it: the same watch delivers the session keys (`_session.<id>`),
//! in order with the acknowledgements, and a session it did not deliver once its initial
//! values were complete — a state that holds the acknowledgement, so the session's creation
//! too — has ended.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt as _;
use kvtk_config::{Applied, ConfigWriter, Source};
use kvtk_core::lease::{SessionId, SessionState};
use kvtk_core::{Bucket, Entry};
use serde_json::{json, Value};

use super::{expires_ms, Change, Feed, Read};
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
    /// `Some` for a prefix: its live field keys.
    fields: Option<BTreeSet<String>>,
    history: Vec<Version>,
    /// Instance → (ack, lease deadline, the session it is bound to).
    fleet: BTreeMap<String, (Value, Option<u64>, Option<SessionId>)>,
    exists: bool,
    read_once: bool,
}

/// The configuration feed.
pub(crate) struct ConfigFeed {
    hub: Arc<Hub>,
    schemas: Arc<Schemas>,
    bucket: Option<Bucket>,
    docs: BTreeMap<String, Doc>,
    /// Key → the item it belongs to, for every key seen.
    items: HashMap<String, String>,
    /// The sessions the watch delivered: alive or ended.
    sessions: HashMap<SessionId, bool>,
    /// The watch's initial values are complete: a session it did not deliver has ended.
    settled: bool,
}

/// The source of an item of the view: a prefix when the item says so.
pub(crate) fn source_of(item: &Value, key: &str) -> Source {
    if item["mode"] == "prefix" {
        Source::prefix(key)
    } else {
        Source::document(key)
    }
}

/// The prefix a key belongs to: the longest acknowledged prefix it is under, else its first
/// token when it is a dotted key whose value (`None`: removed) is not a JSON object.
fn prefix_of<'a>(
    key: &'a str,
    value: Option<&[u8]>,
    acked: &'a BTreeSet<String>,
) -> Option<&'a str> {
    let under = |p: &&String| {
        key.len() > p.len() && key.starts_with(p.as_str()) && key.as_bytes()[p.len()] == b'.'
    };
    if let Some(p) = acked.iter().filter(under).max_by_key(|p| p.len()) {
        return Some(p);
    }
    let (first, _) = key.split_once('.')?;
    let object =
        value.is_some_and(|v| serde_json::from_slice::<Value>(v).is_ok_and(|v| v.is_object()));
    (!object).then_some(first)
}

/// Reads an item's history through kvtk-config.
pub(crate) async fn history(bucket: Bucket, source: Source) -> Result<Vec<Version>, String> {
    let writer = ConfigWriter::<Value>::new(bucket, source);
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
            items: HashMap::new(),
            sessions: HashMap::new(),
            settled: false,
        }
    }

    /// Whether an acknowledgement bound to `session` (if any) counts: its session lives.
    fn counts(&self, session: Option<SessionId>) -> bool {
        session.is_none_or(|id| self.sessions.get(&id).copied().unwrap_or(!self.settled))
    }

    /// A session key's entry: the documents with an acknowledgement bound to it.
    fn session(&mut self, id: SessionId, e: &Entry) -> Vec<Change> {
        let alive = SessionState::judge(id, Some(e)).is_ok_and(|s| s.is_alive());
        self.sessions.insert(id, alive);
        self.docs
            .iter()
            .filter(|(_, d)| d.fleet.values().any(|(_, _, s)| *s == Some(id)))
            .map(|(k, _)| Change::Renewed(k.clone()))
            .collect()
    }

    fn read(&self, key: &str) -> Option<Read<ReadOut>> {
        let bucket = self.bucket.clone()?;
        let source = match self.docs.get(key)?.fields {
            Some(_) => Source::prefix(key),
            None => Source::document(key),
        };
        let key = key.to_string();
        Some(async move { (key.clone(), history(bucket, source).await) }.boxed())
    }

    /// The prefixes readers acknowledge: acknowledged names that are not a document's key.
    fn acked(&self) -> BTreeSet<String> {
        self.docs
            .iter()
            .filter(|(_, d)| !d.fleet.is_empty())
            .filter(|(_, d)| d.fields.is_some() || !d.exists)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether `key`, grouped in `item`, holds a value.
    fn live(&self, key: &str, item: &str) -> bool {
        self.docs.get(item).is_some_and(|d| match &d.fields {
            Some(f) => f.contains(key),
            None => d.exists,
        })
    }

    /// A configuration key's entry: the item it belongs to now.
    fn key_entry(&mut self, key: &str, e: &Entry) -> String {
        let value = e.is_value().then(|| e.value().as_ref());
        let item = match (self.items.get(key), value) {
            (Some(item), None) => item.clone(),
            _ => {
                let acked = self.acked();
                prefix_of(key, value, &acked).unwrap_or(key).to_string()
            }
        };
        if self
            .items
            .insert(key.to_string(), item.clone())
            .is_some_and(|old| old != item)
        {
            self.left(key);
        }
        let d = self.docs.entry(item.clone()).or_default();
        if item == key {
            d.exists = e.is_value();
            return item;
        }
        let fields = d.fields.get_or_insert_with(BTreeSet::new);
        if e.is_value() {
            fields.insert(key.to_string());
        } else {
            fields.remove(key);
        }
        d.exists = !fields.is_empty();
        item
    }

    /// A reader acknowledges `prefix`: the keys under it that were grouped elsewhere (a
    /// dotted prefix, first taken by its first token) move to it. Returns the items to read.
    fn regroup(&mut self, prefix: &str) -> Vec<Change> {
        if !self.acked().contains(prefix) {
            return Vec::new();
        }
        let under = format!("{prefix}.");
        let moved: Vec<(String, String)> = self
            .items
            .iter()
            .filter(|(k, item)| k.starts_with(&under) && item.as_str() != prefix)
            .filter(|(k, item)| self.live(k, item))
            .map(|(k, item)| (k.clone(), item.clone()))
            .collect();
        let mut changes = Vec::new();
        for (key, old) in moved {
            self.left(&key);
            self.items.insert(key.clone(), prefix.to_string());
            let d = self.docs.entry(prefix.to_string()).or_default();
            d.fields.get_or_insert_with(BTreeSet::new).insert(key);
            d.exists = true;
            changes.push(Change::Changed(old));
        }
        if !changes.is_empty() {
            changes.push(Change::Changed(prefix.to_string()));
        }
        changes
    }

    /// `key` no longer belongs to the item it was in (a field that became a document).
    fn left(&mut self, key: &str) {
        for d in self.docs.values_mut() {
            if let Some(f) = d.fields.as_mut() {
                f.remove(key);
                d.exists = !f.is_empty();
            }
        }
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
        let counts = |s: Option<SessionId>| self.counts(s);
        self.hub.put(
            View::Config,
            key,
            doc_json(key, doc, &self.schemas, &counts),
        );
    }

    /// An acknowledgement key's entry; returns the item it is about.
    fn ack(&mut self, rest: &str, e: &Entry) -> Option<String> {
        let (doc, instance) = rest.rsplit_once('.')?;
        let d = self.docs.entry(doc.to_string()).or_default();
        if e.is_value() {
            // Versions are checked as kvtk-config checks them: one of an unknown format is
            // shown as refused, not read.
            let ack = match kvtk_core::format::decode_json::<Applied>(e, "acknowledgement") {
                Ok(Some(a)) => {
                    json!({"applied": a.applied, "rejected": a.rejected, "stale": a.stale})
                }
                Ok(None) => json!({"unreadable": String::from_utf8_lossy(e.value())}),
                Err(refused) => json!({"refused": refused.to_string()}),
            };
            let session = SessionId::bound_by(e);
            d.fleet
                .insert(instance.to_string(), (ack, expires_ms(e), session));
        } else {
            d.fleet.remove(instance);
        }
        Some(doc.to_string())
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
            self.sessions.clear();
            self.settled = false;
            for d in self.docs.values_mut() {
                d.fleet.clear();
                d.exists = false;
                d.fields = d.fields.take().map(|_| BTreeSet::new());
            }
            Ok(())
        }
        .boxed()
    }

    fn entry(&mut self, e: &Entry) -> Vec<Change> {
        let key = e.key().as_str();
        if let Some(id) = SessionId::from_key(key) {
            return self.session(id, e);
        }
        if let Some(rest) = key.strip_prefix(APPLIED) {
            let Some(doc) = self.ack(rest, e) else {
                return Vec::new();
            };
            let mut changes = self.regroup(&doc);
            changes.push(Change::Renewed(doc));
            return changes;
        }
        vec![Change::Changed(self.key_entry(key, e))]
    }

    fn initial(&mut self) -> Vec<String> {
        self.settled = true;
        self.docs.keys().cloned().collect()
    }

    fn fetch(&mut self, key: &str) -> Option<Read<ReadOut>> {
        self.read(key)
    }

    fn done(&mut self, (key, res): ReadOut) -> (String, bool) {
        match (res, self.docs.get_mut(&key)) {
            (Ok(history), Some(d)) => {
                d.history = history;
                d.read_once = true;
                self.publish(&key);
            }
            (Err(msg), _) => tracing::debug!(key = %key, "config history failed: {msg}"),
            (Ok(_), None) => {}
        }
        (key, false)
    }

    fn renewed(&mut self, key: &str) {
        self.publish(key);
    }
}

/// The JSON item of one document (`/api/config`, and the page's Configuration view); the
/// fleet's acknowledgements that `counts`.
fn doc_json(
    key: &str,
    doc: &Doc,
    schemas: &Schemas,
    counts: &dyn Fn(Option<SessionId>) -> bool,
) -> Value {
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
        .filter(|(_, (_, _, session))| counts(*session))
        .map(|(instance, (ack, exp, _))| json!({"instance": instance, "ack": ack, "expires_ms": exp}))
        .collect();
    json!({
        "key": key,
        "mode": if doc.fields.is_some() { "prefix" } else { "document" },
        "fields": doc.fields,
        "exists": doc.exists,
        "revision": current.map(|(r, _)| r),
        "value": value,
        "history": history,
        "schema": schema,
        "fleet": fleet,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_group_under_their_prefix_documents_stand_alone() {
        let none = BTreeSet::new();
        assert_eq!(
            prefix_of("svc.db.pool_size", Some(b"8"), &none),
            Some("svc")
        );
        assert_eq!(prefix_of("svc.name", Some(b"\"x\""), &none), Some("svc"));
        assert_eq!(prefix_of("svc.name", None, &none), Some("svc"));
        assert_eq!(prefix_of("app", Some(b"{\"a\":1}"), &none), None);
        assert_eq!(prefix_of("app.prod", Some(b"{\"a\":1}"), &none), None);
        let acked: BTreeSet<String> = ["apps.web".to_string()].into();
        assert_eq!(
            prefix_of("apps.web.port", Some(b"80"), &acked),
            Some("apps.web")
        );
        assert_eq!(
            prefix_of("apps.webx.port", Some(b"80"), &acked),
            Some("apps")
        );
        assert_eq!(prefix_of("apps.web", Some(b"80"), &acked), Some("apps"));
    }
}
