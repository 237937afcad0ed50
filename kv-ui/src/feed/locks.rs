//! The Locks view: every lock with its kind, holders and waiters in queue order (tokens,
//! identities, queue times, lease deadlines) and a timeline of the holds this console saw.
//!
//! The bucket watch says which lock changed: a queue entry created, removed or replaced by a
//! new acquisition (a new lease origin), or a semaphore's permit count. Such a change is read
//! through [`Locks::inspect`], whose rule decides who holds; a renewal (same origin) only
//! moves the entry's lease deadline, published at the next tick without any read.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::UNIX_EPOCH;

use futures::future::BoxFuture;
use futures::FutureExt as _;
use kvtk_core::{Bucket, Entry};
use kvtk_locks::{EntryKind, LockInfo, Locks, QueueEntry};
use serde_json::{json, Value};

use super::{expires_ms, Change, Feed, Read};
use crate::hub::{now_ms, Hub, View};

/// Holds kept per lock for its timeline.
const TIMELINE: usize = 50;

/// A queue key as the watch last showed it.
#[derive(Debug, Clone, Default)]
struct KeyState {
    /// The lease origin (the token) of a live entry; `None` once removed.
    origin: Option<u64>,
    /// When its lease runs out unless renewed (server timestamp + TTL).
    expires_ms: Option<u64>,
}

/// One hold, as this console saw it.
#[derive(Debug, Clone)]
struct Hold {
    token: u64,
    holder: String,
    from_ms: u64,
    to_ms: Option<u64>,
}

/// What the console remembers of one lock beyond the latest inspection.
#[derive(Debug, Default)]
struct Shown {
    info: Option<LockInfo>,
    /// Revision of the latest structural change the watch delivered.
    changed_at: u64,
    /// Tokens holding now → since when (ms).
    holding: HashMap<u64, u64>,
    timeline: VecDeque<Hold>,
    /// A reader was seen: a read-write lock even while only a writer holds.
    shared_seen: bool,
}

/// The result of one inspection: the lock, the revision it had to include, the answer.
pub(crate) type Inspected = (String, u64, Result<LockInfo, kvtk_locks::Error>);

/// The locks feed.
pub(crate) struct LocksFeed {
    hub: std::sync::Arc<Hub>,
    locks: Option<Locks>,
    keys: HashMap<String, KeyState>,
    shown: BTreeMap<String, Shown>,
}

impl LocksFeed {
    pub(crate) fn new(hub: std::sync::Arc<Hub>) -> LocksFeed {
        LocksFeed {
            hub,
            locks: None,
            keys: HashMap::new(),
            shown: BTreeMap::new(),
        }
    }

    /// An inspection of `name` that must include the latest change the watch delivered.
    fn inspect(&self, name: &str) -> Option<Read<Inspected>> {
        let locks = self.locks.clone()?;
        let at = self.shown.get(name).map_or(0, |s| s.changed_at);
        let name = name.to_string();
        Some(
            async move {
                let res = locks.inspect(&name).await;
                (name, at, res)
            }
            .boxed(),
        )
    }

    /// Publishes lock `name`; `renewal`: only lease deadlines moved since it was last
    /// published, so tabs get the deadlines alone.
    fn publish(&mut self, name: &str, renewal: bool) {
        let Some(shown) = self.shown.get(name) else {
            return;
        };
        let Some(info) = &shown.info else {
            return;
        };
        let idle = info.holders.is_empty() && info.waiters.is_empty();
        if idle && shown.timeline.is_empty() && info.permits.is_none() {
            self.hub.remove(View::Locks, name);
            return;
        }
        let item = lock_json(info, shown, &self.keys);
        if renewal {
            let leases: serde_json::Map<String, Value> = info
                .holders
                .iter()
                .chain(&info.waiters)
                .map(|e| {
                    let exp = self.keys.get(&e.key).and_then(|k| k.expires_ms);
                    (e.token.get().to_string(), json!(exp))
                })
                .collect();
            self.hub
                .put_leases(View::Locks, name, item, Value::Object(leases));
        } else {
            self.hub.put(View::Locks, name, item);
        }
    }

    /// Records an inspection: who started and who stopped holding, for the timeline.
    fn inspected(&mut self, name: &str, info: LockInfo) {
        let now = now_ms();
        let shown = self.shown.entry(name.to_string()).or_default();
        // The first look at a lock: its holders held before the console looked.
        let first = shown.info.is_none();
        let holding: HashMap<u64, &QueueEntry> =
            info.holders.iter().map(|h| (h.token.get(), h)).collect();
        for (token, h) in &holding {
            if shown.holding.contains_key(token) {
                continue;
            }
            // Held before the console looked: since at most when it queued.
            let since = if first {
                queued_ms(h).unwrap_or(now)
            } else {
                now
            };
            shown.holding.insert(*token, since);
            shown.timeline.push_back(Hold {
                token: *token,
                holder: holder_id(h),
                from_ms: since,
                to_ms: None,
            });
        }
        shown.holding.retain(|t, _| holding.contains_key(t));
        for hold in shown.timeline.iter_mut().filter(|h| h.to_ms.is_none()) {
            if !holding.contains_key(&hold.token) {
                hold.to_ms = Some(now);
            }
        }
        while shown.timeline.len() > TIMELINE {
            shown.timeline.pop_front();
        }
        let shared = info.holders.iter().chain(&info.waiters);
        shown.shared_seen |= shared.into_iter().any(|e| e.kind == EntryKind::Shared);
        shown.info = Some(info);
    }
}

/// `<name>._q.<handle>` → (name, true); `<name>._s.permits` → (name, false).
fn lock_of(key: &str) -> Option<(&str, bool)> {
    let (rest, _) = key.rsplit_once('.')?;
    if let Some(name) = rest.strip_suffix("._q") {
        return Some((name, true));
    }
    rest.strip_suffix("._s").map(|name| (name, false))
}

impl LocksFeed {
    /// A queue key's entry: its new state; whether it changed more than a deadline.
    fn queue_entry(&mut self, e: &Entry) -> bool {
        let rev = e.revision().get();
        let origin = e
            .is_value()
            .then(|| e.lease().map_or(rev, |l| l.origin().get()));
        let state = KeyState {
            origin,
            expires_ms: origin.and(expires_ms(e)),
        };
        let prev = self.keys.insert(e.key().as_str().to_string(), state);
        prev.unwrap_or_default().origin != origin
    }
}

impl Feed for LocksFeed {
    type Done = Inspected;

    fn view(&self) -> View {
        View::Locks
    }

    fn open(&mut self, bucket: Bucket) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let name = bucket.name().to_string();
            let locks = Locks::new(bucket)
                .await
                .map_err(|e| format!("bucket {name} is not a locks bucket: {e}"))?;
            self.locks = Some(locks);
            for s in self.shown.values_mut() {
                s.changed_at = 0;
            }
            Ok(())
        }
        .boxed()
    }

    fn entry(&mut self, e: &Entry) -> Vec<Change> {
        let Some((name, queue)) = lock_of(e.key().as_str()) else {
            return Vec::new();
        };
        let name = name.to_string();
        if queue && !self.queue_entry(e) {
            return vec![Change::Renewed(name)];
        }
        let shown = self.shown.entry(name.clone()).or_default();
        shown.changed_at = shown.changed_at.max(e.revision().get());
        vec![Change::Changed(name)]
    }

    fn initial(&mut self) -> Vec<String> {
        self.shown
            .iter()
            .filter(|(_, s)| s.changed_at > 0)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn fetch(&mut self, name: &str) -> Option<Read<Inspected>> {
        self.inspect(name)
    }

    fn done(&mut self, (name, at, res): Inspected) -> (String, bool) {
        let again = match res {
            // A replica that lags the watch: read again soon.
            Ok(info) if info.as_of.is_some_and(|a| a.get() < at) => true,
            Ok(info) => {
                self.inspected(&name, info);
                self.publish(&name, false);
                false
            }
            // A lost connection or a lagging replica: again at the next tick. Anything else
            // (a key that is no lock name) will not get better.
            Err(e) if e.is_transient() => {
                tracing::debug!(lock = %name, "inspect failed: {e}");
                true
            }
            Err(e) => {
                tracing::debug!(lock = %name, "not shown: {e}");
                false
            }
        };
        (name, again)
    }

    fn renewed(&mut self, name: &str) {
        self.publish(name, true);
    }
}

fn holder_id(e: &QueueEntry) -> String {
    e.holder.as_ref().map_or_else(String::new, |h| h.id.clone())
}

fn queued_ms(e: &QueueEntry) -> Option<u64> {
    let d = e.queued_at?.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(d.as_millis()).ok()
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::Exclusive => "exclusive",
        EntryKind::Shared => "shared",
        EntryKind::Permit => "permit",
        _ => "unknown",
    }
}

/// The other locks a multi-lock entry was queued with, as its value says (empty for a
/// plain entry).
fn taken_with<'a>(e: &'a QueueEntry, lock: &'a str) -> impl Iterator<Item = &'a String> + 'a {
    e.multi.iter().filter(move |n| n.as_str() != lock)
}

fn entry_json(
    e: &QueueEntry,
    lock: &str,
    shown: &Shown,
    keys: &HashMap<String, KeyState>,
) -> Value {
    let key = keys.get(&e.key).cloned().unwrap_or_default();
    let with: Vec<&String> = taken_with(e, lock).collect();
    let token = e.token.get();
    json!({
        "token": token,
        "key": e.key,
        "revision": e.revision.get(),
        "kind": kind_name(e.kind),
        "holder": e.holder.as_ref().map(|h| h.id.as_str()),
        "host": e.holder.as_ref().and_then(|h| h.host.as_deref()),
        "pid": e.holder.as_ref().and_then(|h| h.pid),
        "queued_ms": queued_ms(e),
        "held_since_ms": shown.holding.get(&token),
        "expires_ms": key.expires_ms,
        "multi": !e.multi.is_empty(),
        "multi_with": with,
    })
}

/// The JSON item of one lock (`/api/locks`, and the page's Locks view).
fn lock_json(info: &LockInfo, shown: &Shown, keys: &HashMap<String, KeyState>) -> Value {
    let entries = |v: &[QueueEntry]| -> Vec<Value> {
        v.iter()
            .map(|e| entry_json(e, &info.name, shown, keys))
            .collect()
    };
    let holders = entries(&info.holders);
    let waiters = entries(&info.waiters);
    let all = || info.holders.iter().chain(&info.waiters);
    let multi = all().any(|e| !e.multi.is_empty());
    let with: BTreeSet<&String> = all().flat_map(|e| taken_with(e, &info.name)).collect();
    let kind = match info.permits {
        Some(_) => "semaphore",
        None if shown.shared_seen => "read-write",
        None => "mutex",
    };
    let timeline: Vec<Value> = shown
        .timeline
        .iter()
        .map(|h| json!({"token": h.token, "holder": h.holder, "from_ms": h.from_ms, "to_ms": h.to_ms}))
        .collect();
    json!({
        "name": info.name,
        "kind": kind,
        "permits": info.permits,
        "multi": multi,
        "multi_with": with,
        "holders": holders,
        "waiters": waiters,
        "as_of": info.as_of.map(|r| r.get()),
        "timeline": timeline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_their_lock() {
        assert_eq!(lock_of("jobs.nightly._q.abc"), Some(("jobs.nightly", true)));
        assert_eq!(lock_of("sem._s.permits"), Some(("sem", false)));
        assert_eq!(lock_of("plain"), None);
        assert_eq!(lock_of("a.b"), None);
    }
}
