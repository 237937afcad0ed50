//! Believed holds of locks and leaderships: mutual exclusion, token order and fencing.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
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
/// Each overfull start is reported once, at the start of the newest hold involved.
pub fn mutual_exclusion(records: &[Record]) -> Vec<Violation> {
    by_lock(records)
        .into_iter()
        .flat_map(|(lock, holds)| overlaps(&lock, &holds))
        .collect()
}

/// One lock's overfull starts, in the holds' order: a sweep over the starts that keeps the
/// holds begun and not yet ended, so a long history costs `n log n`, not `n²`.
fn overlaps(lock: &str, holds: &[Hold]) -> Vec<Violation> {
    let mut starts: Vec<usize> = (0..holds.len()).collect();
    starts.sort_by_key(|&i| holds[i].from);
    // Believers in the holds' order; the ends still to come, soonest first.
    let mut active = BTreeSet::new();
    let mut ends = BinaryHeap::new();
    let mut found = Vec::new();
    for group in starts.chunk_by(|&a, &b| holds[a].from == holds[b].from) {
        let t = holds[group[0]].from;
        for &i in group {
            active.insert(i);
            if let Some(until) = holds[i].until {
                ends.push(Reverse((until, i)));
            }
        }
        while ends.peek().is_some_and(|Reverse((until, _))| *until <= t) {
            if let Some(Reverse((_, i))) = ends.pop() {
                active.remove(&i);
            }
        }
        let believers: Vec<&Hold> = active.iter().map(|&i| &holds[i]).collect();
        if let Some(why) = overfull(&believers) {
            found.extend(
                group
                    .iter()
                    .map(|&i| (i, overlap(lock, &holds[i], &believers, &why))),
            );
        }
    }
    found.sort_by_key(|(i, _)| *i);
    found.into_iter().map(|(_, v)| v).collect()
}

fn overlap(lock: &str, newest: &Hold, believers: &[&Hold], why: &str) -> Violation {
    let ops = believers.iter().flat_map(|o| o.records()).collect();
    let who: Vec<String> = believers
        .iter()
        .map(|o| format!("{} (token {})", o.acquire.client, o.token))
        .collect();
    Violation::new(
        Property::MutualExclusion,
        format!(
            "{lock}: {why} at {:.3}s: {}",
            newest.from.as_secs_f64(),
            who.join(", ")
        ),
        ops,
    )
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
    by_lock(records)
        .into_iter()
        .flat_map(|(lock, holds)| {
            let mut found = tokens_twice(&lock, &holds);
            found.extend(tokens_backwards(&lock, &holds));
            // Pairs in the holds' order, as a comparison of every pair would list them.
            found.sort_by_key(|(pair, _)| *pair);
            found.into_iter().map(|(_, v)| v)
        })
        .collect()
}

/// A pair of holds (indices, the smaller first) and what is wrong with it.
type PairViolation = ((usize, usize), Violation);

/// The earlier-starting hold of a pair, then the other (the first of them on a tie).
fn in_start_order<'h>(a: &'h Hold, b: &'h Hold) -> (&'h Hold, &'h Hold) {
    if a.from <= b.from {
        (a, b)
    } else {
        (b, a)
    }
}

/// Every pair of holds of one lock with the same token.
fn tokens_twice(lock: &str, holds: &[Hold]) -> Vec<PairViolation> {
    let mut by_token: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, h) in holds.iter().enumerate() {
        by_token.entry(h.token).or_default().push(i);
    }
    let mut out = Vec::new();
    for same in by_token.values() {
        for (k, &i) in same.iter().enumerate() {
            for &j in &same[k + 1..] {
                let (first, later) = in_start_order(&holds[i], &holds[j]);
                let summary = format!("{lock}: token {} granted twice", first.token);
                let ops = vec![first.acquire.clone(), later.acquire.clone()];
                out.push(((i, j), Violation::new(Property::TokenOrder, summary, ops)));
            }
        }
    }
    out
}

/// Every pair of holds of one lock where the later one was asked for after the first had
/// been granted and got a smaller token. Only an acquisition preceded by a greater token
/// (the running maximum over the starts before it says so) is compared hold by hold.
fn tokens_backwards(lock: &str, holds: &[Hold]) -> Vec<PairViolation> {
    let mut starts: Vec<usize> = (0..holds.len()).collect();
    starts.sort_by_key(|&i| holds[i].from);
    let greatest: Vec<u64> = starts
        .iter()
        .scan(0, |max, &i| {
            *max = holds[i].token.max(*max);
            Some(*max)
        })
        .collect();
    let mut out = Vec::new();
    for (j, y) in holds.iter().enumerate() {
        let before = starts.partition_point(|&i| holds[i].from < y.acquire.invoked);
        if before == 0 || greatest[before - 1] <= y.token {
            continue;
        }
        for &i in &starts[..before] {
            let (first, later) = in_start_order(&holds[i.min(j)], &holds[i.max(j)]);
            if std::ptr::eq(later, y) && first.token > y.token {
                let summary = format!(
                    "{lock}: token {} granted after token {} had been granted",
                    later.token, first.token
                );
                let ops = vec![first.acquire.clone(), later.acquire.clone()];
                out.push((
                    (i.min(j), i.max(j)),
                    Violation::new(Property::TokenOrder, summary, ops),
                ));
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

#[cfg(test)]
mod tests;
