//! The Elections view: each election's leader, term and value, its candidates in line order,
//! its health (lease deadline, a pending hand-over, how often the leader changed) and a
//! timeline of the terms this console saw.
//!
//! The bucket watch says which election changed (`<name>.leader`, `<name>.cand.<id>`); the
//! feed then reads the leader ([`Election::leader`], from the stream leader) and the
//! candidates ([`Election::candidates`]). The line order is kvtk-leader's own [`Line`], fed
//! the same watch: the order in which the candidates race for a free leader key (a candidate
//! that led stands behind those registered before it stepped down). A renewal (same lease
//! origin and value) costs no read.

use std::collections::{BTreeMap, VecDeque};

use futures::future::BoxFuture;
use futures::FutureExt as _;
use kvtk_core::{Bucket, Entry};
use kvtk_leader::{CandidateInfo, Election, LeaderInfo, Line, DEFAULT_TTL};
use serde_json::{json, Value};

use super::{expires_ms, Change, Feed, Read};
use crate::hub::{now_ms, Hub, View};

/// Terms kept per election for its timeline.
const TIMELINE: usize = 50;

/// What one read brings back: the election, the revision it had to include, and the
/// leader and candidates.
pub(crate) type ReadOut = (
    String,
    u64,
    Result<(Option<LeaderInfo>, Vec<CandidateInfo>), String>,
);

#[derive(Debug, Clone)]
struct TermSeen {
    term: u64,
    id: String,
    /// `None`: it began before the console looked.
    from_ms: Option<u64>,
    to_ms: Option<u64>,
}

#[derive(Default)]
struct State {
    election: Option<Election>,
    /// The leader key's lease origin and value, to tell a renewal from a change.
    leader_key: Option<(u64, Vec<u8>)>,
    leader_expires_ms: Option<u64>,
    leader: Option<LeaderInfo>,
    /// Candidate id → (registration origin, lease deadline), live registrations only.
    line: BTreeMap<String, (u64, Option<u64>)>,
    /// The order of the line, from the same watch.
    order: Line,
    values: BTreeMap<String, String>,
    terms: VecDeque<TermSeen>,
    changed_at: u64,
    read_once: bool,
}

/// The elections feed.
pub(crate) struct ElectionsFeed {
    hub: std::sync::Arc<Hub>,
    bucket: Option<Bucket>,
    elections: BTreeMap<String, State>,
}

/// `<name>.leader` → (name, None); `<name>.cand.<id>` → (name, Some(id)).
fn parse(key: &str) -> Option<(&str, Option<&str>)> {
    let mut it = key.split('.');
    let name = it.next()?;
    match (it.next()?, it.next(), it.next()) {
        ("leader", None, None) => Some((name, None)),
        ("cand", Some(id), None) => Some((name, Some(id))),
        _ => None,
    }
}

impl ElectionsFeed {
    pub(crate) fn new(hub: std::sync::Arc<Hub>) -> ElectionsFeed {
        ElectionsFeed {
            hub,
            bucket: None,
            elections: BTreeMap::new(),
        }
    }

    fn read(&mut self, name: &str) -> Option<Read<ReadOut>> {
        let bucket = self.bucket.clone()?;
        let st = self.elections.get_mut(name)?;
        if st.election.is_none() {
            st.election = Election::new(bucket, name, DEFAULT_TTL).ok();
        }
        let election = st.election.clone()?;
        let (name, at) = (name.to_string(), st.changed_at);
        Some(
            async move {
                let res = futures::try_join!(election.leader(), election.candidates())
                    .map_err(|e| e.to_string());
                (name, at, res)
            }
            .boxed(),
        )
    }

    /// Applies a leader read to the term timeline.
    fn leader_read(st: &mut State, leader: Option<LeaderInfo>, ready: bool) {
        let now = now_ms();
        let open = st
            .terms
            .back()
            .filter(|t| t.to_ms.is_none())
            .map(|t| t.term);
        let current = leader.as_ref().map(|l| l.term.get());
        if open.is_some() && open != current {
            if let Some(t) = st.terms.back_mut() {
                t.to_ms = Some(now);
            }
        }
        if let Some(l) = leader.as_ref().filter(|_| open != current) {
            st.terms.push_back(TermSeen {
                term: l.term.get(),
                id: l.id.clone(),
                from_ms: ready.then_some(now),
                to_ms: None,
            });
            while st.terms.len() > TIMELINE {
                st.terms.pop_front();
            }
        }
        st.leader = leader;
    }

    fn publish(&self, name: &str) {
        let Some(st) = self.elections.get(name) else {
            return;
        };
        if !st.read_once {
            return;
        }
        if st.leader.is_none() && st.line.is_empty() && st.terms.is_empty() {
            self.hub.remove(View::Elections, name);
            return;
        }
        self.hub.put(View::Elections, name, election_json(name, st));
    }
}

impl Feed for ElectionsFeed {
    type Done = ReadOut;

    fn view(&self) -> View {
        View::Elections
    }

    fn open(&mut self, bucket: Bucket) -> BoxFuture<'_, Result<(), String>> {
        async move {
            self.bucket = Some(bucket);
            for st in self.elections.values_mut() {
                st.election = None;
                st.leader_key = None;
                st.line.clear();
                st.changed_at = 0;
            }
            Ok(())
        }
        .boxed()
    }

    fn entry(&mut self, e: &Entry) -> Vec<Change> {
        let Some((name, cand)) = parse(e.key().as_str()) else {
            return Vec::new();
        };
        let rev = e.revision().get();
        let origin = e
            .is_value()
            .then(|| e.lease().map_or(rev, |l| l.origin().get()));
        let st = self.elections.entry(name.to_string()).or_default();
        st.order.observe(name, e);
        let changed = match cand {
            None => {
                let now = origin.map(|o| (o, e.value().to_vec()));
                st.leader_expires_ms = origin.and(expires_ms(e));
                let changed = st.leader_key != now;
                st.leader_key = now;
                changed
            }
            Some(id) => {
                let before = st.line.get(id).map(|(o, _)| *o);
                match origin {
                    Some(o) => st.line.insert(id.to_string(), (o, expires_ms(e))),
                    None => st.line.remove(id),
                };
                before != origin
            }
        };
        if !changed {
            return vec![Change::Renewed(name.to_string())];
        }
        st.changed_at = st.changed_at.max(rev);
        vec![Change::Changed(name.to_string())]
    }

    fn initial(&mut self) -> Vec<String> {
        self.elections
            .iter()
            .filter(|(_, s)| s.changed_at > 0)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn fetch(&mut self, name: &str) -> Option<Read<ReadOut>> {
        self.read(name)
    }

    fn done(&mut self, (name, _at, res): ReadOut) -> (String, bool) {
        let again = match (res, self.elections.get_mut(&name)) {
            // The leader is read from the stream leader: never older than the watch.
            (Ok((leader, cands)), Some(st)) => {
                ElectionsFeed::leader_read(st, leader, st.read_once);
                st.values = cands.into_iter().map(|c| (c.id, c.value)).collect();
                st.read_once = true;
                self.publish(&name);
                false
            }
            (Err(msg), _) => {
                tracing::debug!(election = %name, "read failed: {msg}");
                true
            }
            (Ok(_), None) => false,
        };
        (name, again)
    }

    fn renewed(&mut self, name: &str) {
        self.publish(name);
    }
}

/// The JSON item of one election (`/api/elections`, and the page's Elections view).
fn election_json(name: &str, st: &State) -> Value {
    let order = st.order.order();
    let place = |id: &str| order.iter().position(|o| o == id).unwrap_or(order.len());
    let mut line: Vec<(&String, &(u64, Option<u64>))> = st.line.iter().collect();
    line.sort_by_key(|(id, (origin, _))| (place(id), *origin));
    let leader_id = st.leader.as_ref().map(|l| l.id.as_str());
    let candidates: Vec<Value> = line
        .iter()
        .map(|(id, (origin, exp))| {
            json!({
                "id": id,
                "value": st.values.get(*id),
                "registered": origin,
                "expires_ms": exp,
                "leading": Some(id.as_str()) == leader_id,
            })
        })
        .collect();
    let terms: Vec<Value> = st
        .terms
        .iter()
        .map(|t| json!({"term": t.term, "id": t.id, "from_ms": t.from_ms, "to_ms": t.to_ms}))
        .collect();
    let leader = st.leader.as_ref().map(|l| {
        json!({
            "id": l.id,
            "value": l.value,
            "term": l.term.get(),
            "revision": l.revision.get(),
            "transfer_to": l.transfer_to,
            "expires_ms": st.leader_expires_ms,
        })
    });
    let health = match &st.leader {
        None => "no leader",
        Some(l) if l.transfer_to.is_some() => "handing over",
        Some(_) => "leading",
    };
    json!({
        "name": name,
        "leader": leader,
        "health": health,
        "candidates": candidates,
        "terms": terms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_their_election() {
        assert_eq!(parse("sched.leader"), Some(("sched", None)));
        assert_eq!(parse("sched.cand.node-1"), Some(("sched", Some("node-1"))));
        assert_eq!(parse("sched.cand"), None);
        assert_eq!(parse("sched.other.x"), None);
        assert_eq!(parse("sched"), None);
    }
}
