//! The hub: what every view shows now, and the stream of changes every open tab follows.
//!
//! Feeds (one per bucket) put and remove items; each change is serialised once and
//! broadcast to every subscriber (the server-sent event streams of open tabs). A subscriber
//! takes the state and its receiver under the same lock, so it neither misses a change nor
//! sees one twice; a subscriber that falls behind the channel gets the whole state again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

/// The views of the console. Their names are the keys of the JSON state and of `/api/<view>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum View {
    Locks,
    Elections,
    Members,
    Config,
    Buckets,
}

impl View {
    pub(crate) const ALL: [View; 5] = [
        View::Locks,
        View::Elections,
        View::Members,
        View::Config,
        View::Buckets,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            View::Locks => "locks",
            View::Elections => "elections",
            View::Members => "members",
            View::Config => "config",
            View::Buckets => "buckets",
        }
    }
}

/// How many changes a slow tab may fall behind before it gets the whole state again.
const CAPACITY: usize = 4096;

#[derive(Default)]
struct State {
    items: BTreeMap<View, BTreeMap<String, Value>>,
    /// One line per view about its feed: which bucket, whether it exists, the last error.
    status: BTreeMap<View, Value>,
}

/// Shared by the feeds (writers) and the HTTP handlers (readers).
pub(crate) struct Hub {
    state: Mutex<State>,
    tx: broadcast::Sender<Arc<str>>,
}

/// Milliseconds since the Unix epoch, by this process' wall clock (for display only).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Hub {
    pub(crate) fn new() -> Arc<Hub> {
        let (tx, _) = broadcast::channel(CAPACITY);
        Arc::new(Hub {
            state: Mutex::new(State::default()),
            tx,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-written in a way that
        // matters for display: keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets item `id` of `view` and tells every tab; unchanged values are not sent.
    pub(crate) fn put(&self, view: View, id: &str, item: Value) {
        let mut st = self.lock();
        let items = st.items.entry(view).or_default();
        if items.get(id) == Some(&item) {
            return;
        }
        let msg = json!({"view": view.as_str(), "id": id, "item": &item, "now_ms": now_ms()});
        items.insert(id.to_string(), item);
        let _ = self.tx.send(msg.to_string().into());
    }

    /// Sets item `id` of `view` when only lease deadlines changed (renewals): every tab gets
    /// `leases` (token → deadline in ms) instead of the whole item, and updates the deadlines
    /// it shows without drawing the item again. A tab opened later gets the whole item.
    pub(crate) fn put_leases(&self, view: View, id: &str, item: Value, leases: Value) {
        let mut st = self.lock();
        let items = st.items.entry(view).or_default();
        if items.get(id) == Some(&item) {
            return;
        }
        let msg = json!({"view": view.as_str(), "id": id, "leases": leases, "now_ms": now_ms()});
        items.insert(id.to_string(), item);
        let _ = self.tx.send(msg.to_string().into());
    }

    /// Removes item `id` of `view` and tells every tab.
    pub(crate) fn remove(&self, view: View, id: &str) {
        let mut st = self.lock();
        let Some(items) = st.items.get_mut(&view) else {
            return;
        };
        if items.remove(id).is_none() {
            return;
        }
        let msg = json!({"view": view.as_str(), "id": id, "item": null, "now_ms": now_ms()});
        let _ = self.tx.send(msg.to_string().into());
    }

    /// Replaces every item of `view` (after a feed restarted): removes the ones not in `keep`.
    pub(crate) fn retain(&self, view: View, keep: &dyn Fn(&str) -> bool) {
        let gone: Vec<String> = {
            let st = self.lock();
            st.items
                .get(&view)
                .map(|m| m.keys().filter(|k| !keep(k)).cloned().collect())
                .unwrap_or_default()
        };
        for id in gone {
            self.remove(view, &id);
        }
    }

    /// Sets the status line of `view`'s feed.
    pub(crate) fn status(&self, view: View, status: Value) {
        let mut st = self.lock();
        if st.status.get(&view) == Some(&status) {
            return;
        }
        let msg = json!({"view": view.as_str(), "status": &status, "now_ms": now_ms()});
        st.status.insert(view, status);
        let _ = self.tx.send(msg.to_string().into());
    }

    /// One item of a view.
    pub(crate) fn item(&self, view: View, id: &str) -> Option<Value> {
        self.lock().items.get(&view)?.get(id).cloned()
    }

    /// Every item of a view, by id.
    pub(crate) fn items(&self, view: View) -> Vec<Value> {
        let st = self.lock();
        st.items
            .get(&view)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn snapshot_of(st: &State) -> Value {
        let mut out = Map::new();
        for v in View::ALL {
            let items: Vec<&Value> = st
                .items
                .get(&v)
                .map(|m| m.values().collect())
                .unwrap_or_default();
            out.insert(
                v.as_str().to_string(),
                json!({"items": items, "status": st.status.get(&v)}),
            );
        }
        out.insert("now_ms".to_string(), json!(now_ms()));
        Value::Object(out)
    }

    /// The whole state and a receiver of every change after it.
    pub(crate) fn subscribe(&self) -> (String, broadcast::Receiver<Arc<str>>) {
        let st = self.lock();
        let rx = self.tx.subscribe();
        (Hub::snapshot_of(&st).to_string(), rx)
    }

    /// How many tabs follow the changes now.
    pub(crate) fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_reach_subscribers_once_and_unchanged_values_are_not_sent() {
        let hub = Hub::new();
        hub.put(View::Locks, "a", json!({"name": "a"}));
        let (snap, mut rx) = hub.subscribe();
        assert!(snap.contains("\"name\":\"a\""), "{snap}");
        hub.put(View::Locks, "a", json!({"name": "a"}));
        hub.put(View::Locks, "a", json!({"name": "a", "x": 1}));
        hub.remove(View::Locks, "a");
        hub.remove(View::Locks, "a");
        let first = rx.try_recv().map(|m| m.to_string()).unwrap_or_default();
        assert!(first.contains("\"x\":1"), "{first}");
        let second = rx.try_recv().map(|m| m.to_string()).unwrap_or_default();
        assert!(second.contains("\"item\":null"), "{second}");
        assert!(rx.try_recv().is_err());
        assert!(hub.items(View::Locks).is_empty());
    }
}
