//! Believed holds of locks and leaderships: mutual exclusion, token order and fencing.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::{Property, Violation};
use crate::history::{Mode, Op, Record};

/// One believed hold: an acquisition that returned ok, from its completion until the client
/// released it (invocation of the release) or learned it was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The acquisition.
    pub acquire: Record,
    /// The release or loss that ended the belief, if any.
    pub end: Option<Record>,
    /// Lock or election name.
    pub lock: String,
    /// How it is held.
    pub mode: Mode,
    /// Token (or term).
    pub token: u64,
    /// When the client started believing.
    pub from: Duration,
    /// When it stopped believing (`None`: still believed when the history ended).
    pub until: Option<Duration>,
}

impl Hold {
    fn active_at(&self, t: Duration) -> bool {
        self.from <= t && self.until.is_none_or(|u| u > t)
    }

    fn exclusive(&self) -> bool {
        matches!(self.mode, Mode::Mutex | Mode::Write | Mode::Leader)
    }

    fn records(&self) -> Vec<Record> {
        std::iter::once(self.acquire.clone())
            .chain(self.end.clone())
            .collect()
    }
}

/// Every believed hold of `records`: ok acquisitions with a token, each ended by the first
/// release or loss of the same client, lock and token.
pub fn holds(records: &[Record]) -> Vec<Hold> {
    let ends = first_ends(records);
    records
        .iter()
        .filter_map(|r| match (&r.op, r.is_ok(), r.result, r.completed) {
            (Op::Acquire { lock, mode }, true, Some(token), Some(from)) => {
                let end = ends
                    .get(&(r.client.as_str(), lock.as_str(), token))
                    .copied();
                Some(Hold {
                    acquire: r.clone(),
                    end: end.cloned(),
                    lock: lock.clone(),
                    mode: *mode,
                    token,
                    from,
                    until: end.map(|e| e.invoked),
                })
            }
            _ => None,
        })
        .collect()
}

/// The first release or loss of each client, lock and token, in record order: one pass,
/// where a search per acquisition took minutes on a 15-minute chaos history.
fn first_ends(records: &[Record]) -> HashMap<(&str, &str, u64), &Record> {
    let mut out = HashMap::new();
    for r in records {
        if let Op::Release { lock, token } | Op::Lost { lock, token } = &r.op {
            out.entry((r.client.as_str(), lock.as_str(), *token))
                .or_insert(r);
        }
    }
    out
}

fn by_lock(records: &[Record]) -> BTreeMap<String, Vec<Hold>> {
    let mut map: BTreeMap<String, Vec<Hold>> = BTreeMap::new();
    for h in holds(records) {
        map.entry(h.lock.clone()).or_default().push(h);
    }
    map
}

/// At the moment each hold starts, the believers of its lock must fit the lock: one for a
/// mutex, a writer or a leader; `n` for a semaphore; any number of readers without a writer.
pub fn mutual_exclusion(records: &[Record]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (lock, holds) in by_lock(records) {
        for h in &holds {
            let active: Vec<&Hold> = holds.iter().filter(|o| o.active_at(h.from)).collect();
            if let Some(why) = overfull(&active) {
                // Report each overlap once: at the start of the newest hold involved.
                if active.iter().all(|o| o.from <= h.from) {
                    let ops = active.iter().flat_map(|o| o.records()).collect();
                    let who: Vec<String> = active
                        .iter()
                        .map(|o| format!("{} (token {})", o.acquire.client, o.token))
                        .collect();
                    out.push(Violation::new(
                        Property::MutualExclusion,
                        format!(
                            "{lock}: {why} at {:.3}s: {}",
                            h.from.as_secs_f64(),
                            who.join(", ")
                        ),
                        ops,
                    ));
                }
            }
        }
    }
    out
}

fn overfull(active: &[&Hold]) -> Option<String> {
    let n = active.len();
    let writers = active.iter().filter(|h| h.exclusive()).count();
    if writers > 0 && n > 1 {
        return Some(format!(
            "{n} believers while {writers} of them hold exclusively"
        ));
    }
    let permits = active
        .iter()
        .filter_map(|h| match h.mode {
            Mode::Semaphore(p) => Some(p),
            _ => None,
        })
        .min()?;
    (n > permits as usize).then(|| format!("{n} believers of {permits} permits"))
}

/// Tokens of believed holds are unique per lock, and a hold acquired after another completed
/// has a greater token.
pub fn token_order(records: &[Record]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (lock, holds) in by_lock(records) {
        for (i, a) in holds.iter().enumerate() {
            for b in &holds[i + 1..] {
                let (first, later) = if a.from <= b.from { (a, b) } else { (b, a) };
                let summary = if a.token == b.token {
                    format!("{lock}: token {} granted twice", a.token)
                } else if first.from < later.acquire.invoked && later.token < first.token {
                    format!(
                        "{lock}: token {} granted after token {} had been granted",
                        later.token, first.token
                    )
                } else {
                    continue;
                };
                let ops = vec![first.acquire.clone(), later.acquire.clone()];
                out.push(Violation::new(Property::TokenOrder, summary, ops));
            }
        }
    }
    out
}

/// No fenced write with a smaller token is accepted after one with a greater token was
/// accepted (acknowledged before the stale write was sent).
pub fn fencing(records: &[Record]) -> Vec<Violation> {
    let mut by_resource: BTreeMap<&str, Vec<(&Record, u64)>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.is_ok()) {
        if let Op::FencedWrite { resource, token } = &r.op {
            by_resource.entry(resource).or_default().push((r, *token));
        }
    }
    let mut out = Vec::new();
    for (resource, mut writes) in by_resource {
        writes.sort_by_key(|(r, _)| r.completed);
        // The accepted write with the greatest token among the first i completions.
        let mut newest: Vec<(&Record, u64)> = Vec::with_capacity(writes.len());
        for &(r, t) in &writes {
            let keep = newest.last().filter(|(_, best)| *best >= t).copied();
            newest.push(keep.unwrap_or((r, t)));
        }
        for &(stale, t_stale) in &writes {
            let done_before = writes.partition_point(|(r, _)| r.completed < Some(stale.invoked));
            let Some(&(newer, t_new)) = done_before.checked_sub(1).and_then(|i| newest.get(i))
            else {
                continue;
            };
            if t_new > t_stale {
                out.push(Violation::new(
                    Property::Fencing,
                    format!("{resource}: write with token {t_stale} accepted after token {t_new}"),
                    vec![newer.clone(), stale.clone()],
                ));
            }
        }
    }
    out
}
