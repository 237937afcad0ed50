//! The Members view: each group's members with their metadata, and the joined / updated /
//! left events this console saw, as they happen.
//!
//! The bucket watch says which group changed (a member key `<group>.<instance>` created,
//! rewritten with new metadata, or removed); the feed then lists the group through
//! [`Listing::members`] and compares the list with the one before. A renewal (same lease
//! origin and metadata) only moves the member's lease deadline. Session keys
//! (`_session.<id>`, there once members bind to sessions) are no group: when one shows its
//! session ended, the groups with members bound to it are listed again (the listing judges
//! sessions from the stream leader).

use std::collections::{BTreeMap, HashMap, VecDeque};

use futures::future::BoxFuture;
use futures::FutureExt as _;
use kvtk_core::lease::{SessionId, SessionState};
use kvtk_core::{Bucket, Entry, ReadOnlyBucket};
use kvtk_membership::{Listing, MemberInfo};
use serde_json::{json, Value};

use super::{expires_ms, Change, Feed, Read};
use crate::hub::{now_ms, Hub, View};

/// Events kept per group.
const EVENTS: usize = 100;

/// What one read brings back.
pub(crate) type ReadOut = (String, Result<Vec<MemberInfo>, String>);

#[derive(Default)]
struct Group {
    /// Instance → its live key.
    keys: HashMap<String, LiveKey>,
    /// The last listing: instance → (joined at, revision, metadata).
    members: BTreeMap<String, (u64, u64, Value)>,
    events: VecDeque<Value>,
    listed: bool,
    changed: bool,
}

/// What the watch showed of a live member key.
struct LiveKey {
    /// The lease origin: joined at.
    origin: u64,
    metadata: Vec<u8>,
    /// The lease deadline (none for a member bound to a session).
    expires_ms: Option<u64>,
    session: Option<SessionId>,
}

/// The members feed.
pub(crate) struct MembersFeed {
    hub: std::sync::Arc<Hub>,
    bucket: Option<ReadOnlyBucket>,
    groups: BTreeMap<String, Group>,
}

/// Metadata as JSON when it is JSON, else as text.
fn metadata(m: &[u8]) -> Value {
    serde_json::from_slice(m)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(m).into_owned()))
}

impl MembersFeed {
    pub(crate) fn new(hub: std::sync::Arc<Hub>) -> MembersFeed {
        MembersFeed {
            hub,
            bucket: None,
            groups: BTreeMap::new(),
        }
    }

    fn read(&self, group: &str) -> Option<Read<ReadOut>> {
        let listing = Listing::new(self.bucket.as_ref()?, group).ok()?;
        let group = group.to_string();
        Some(
            async move {
                let res = listing.members().await.map_err(|e| e.to_string());
                (group, res)
            }
            .boxed(),
        )
    }

    /// Compares a new listing with the last one: the events between them.
    fn listed(g: &mut Group, members: Vec<MemberInfo>) {
        let now = now_ms();
        let new: BTreeMap<String, (u64, u64, Value)> = members
            .iter()
            .map(|m| {
                let v = (
                    m.joined_at().get(),
                    m.revision().get(),
                    metadata(m.metadata()),
                );
                (m.id().to_string(), v)
            })
            .collect();
        if g.listed {
            let mut events = Vec::new();
            for (id, (joined, _, meta)) in &g.members {
                match new.get(id) {
                    None => events.push(json!({"at_ms": now, "event": "left", "id": id})),
                    Some((j, _, _)) if j != joined => {
                        events.push(json!({"at_ms": now, "event": "left", "id": id}));
                    }
                    Some((_, _, m)) if m != meta => {
                        events.push(
                            json!({"at_ms": now, "event": "updated", "id": id, "metadata": m}),
                        );
                    }
                    Some(_) => {}
                }
            }
            for (id, (joined, _, meta)) in &new {
                if g.members.get(id).is_none_or(|(j, _, _)| j != joined) {
                    events
                        .push(json!({"at_ms": now, "event": "joined", "id": id, "metadata": meta}));
                }
            }
            g.events.extend(events);
            while g.events.len() > EVENTS {
                g.events.pop_front();
            }
        }
        g.members = new;
        g.listed = true;
    }

    /// A session key's entry: once it shows the session ended, the groups with members
    /// bound to it, to list again.
    fn session(&mut self, id: SessionId, e: &Entry) -> Vec<Change> {
        if SessionState::judge(id, Some(e)).is_ok_and(|s| s.is_alive()) {
            return Vec::new();
        }
        let bound = |g: &Group| g.keys.values().any(|k| k.session == Some(id));
        let mut changes = Vec::new();
        for (name, g) in self.groups.iter_mut().filter(|(_, g)| bound(g)) {
            g.changed = true;
            changes.push(Change::Changed(name.clone()));
        }
        changes
    }

    fn publish(&self, name: &str) {
        let Some(g) = self.groups.get(name) else {
            return;
        };
        if !g.listed {
            return;
        }
        if g.members.is_empty() && g.events.is_empty() {
            self.hub.remove(View::Members, name);
            return;
        }
        let members: Vec<Value> = g
            .members
            .iter()
            .map(|(id, (joined, rev, meta))| {
                json!({
                    "id": id,
                    "joined_at": joined,
                    "revision": rev,
                    "metadata": meta,
                    "expires_ms": g.keys.get(id).and_then(|k| k.expires_ms),
                })
            })
            .collect();
        let events: Vec<&Value> = g.events.iter().collect();
        self.hub.put(
            View::Members,
            name,
            json!({"group": name, "members": members, "events": events}),
        );
    }
}

impl Feed for MembersFeed {
    type Done = ReadOut;

    fn view(&self) -> View {
        View::Members
    }

    fn open(&mut self, bucket: Bucket) -> BoxFuture<'_, Result<(), String>> {
        async move {
            self.bucket = Some(bucket.read_only());
            for g in self.groups.values_mut() {
                g.keys.clear();
                g.changed = false;
            }
            Ok(())
        }
        .boxed()
    }

    fn entry(&mut self, e: &Entry) -> Vec<Change> {
        if let Some(session) = SessionId::from_key(e.key().as_str()) {
            return self.session(session, e);
        }
        let Some((group, id)) = e.key().as_str().rsplit_once('.') else {
            return Vec::new();
        };
        let g = self.groups.entry(group.to_string()).or_default();
        let rev = e.revision().get();
        let now = e.is_value().then(|| {
            let origin = e.lease().map_or(rev, |l| l.origin().get());
            LiveKey {
                origin,
                metadata: e.value().to_vec(),
                expires_ms: expires_ms(e),
                session: SessionId::bound_by(e),
            }
        });
        let shown = |k: &LiveKey| (k.origin, k.metadata.clone());
        let changed = g.keys.get(id).map(shown) != now.as_ref().map(shown);
        match now {
            Some(k) => g.keys.insert(id.to_string(), k),
            None => g.keys.remove(id),
        };
        if !changed {
            return vec![Change::Renewed(group.to_string())];
        }
        g.changed = true;
        vec![Change::Changed(group.to_string())]
    }

    fn initial(&mut self) -> Vec<String> {
        self.groups
            .iter()
            .filter(|(_, g)| g.changed)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn fetch(&mut self, group: &str) -> Option<Read<ReadOut>> {
        self.read(group)
    }

    fn done(&mut self, (name, res): ReadOut) -> (String, bool) {
        match (res, self.groups.get_mut(&name)) {
            (Ok(members), Some(g)) => {
                MembersFeed::listed(g, members);
                self.publish(&name);
            }
            (Err(msg), _) => tracing::debug!(group = %name, "listing failed: {msg}"),
            (Ok(_), None) => {}
        }
        (name, false)
    }

    fn renewed(&mut self, name: &str) {
        self.publish(name);
    }
}
