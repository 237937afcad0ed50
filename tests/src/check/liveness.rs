//! Liveness: while no fault is in place (and for a grace period after one heals), nothing
//! fails, every lock waiter gets its turn, every observer sees every term, every
//! configuration reader converges and every membership watcher sees every join and leave.

use std::collections::BTreeMap;
use std::time::Duration;

use super::leader::missed_terms;
use super::membership::unseen_members;
use super::{Property, Violation};
use crate::history::{end, fault_free, fault_windows, FaultWindow, Mode, Op, Record};

/// How long a replicated stream may take to elect a new leader after a node dies or
/// returns (4–9 s measured on the test cluster, rounded up).
pub const STREAM_LEADER_ELECTION: Duration = Duration::from_secs(10);

/// The bounds the liveness checks allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// After a fault heals, how long its effects still count: a stream-leader election plus
    /// the lease TTL in use (a holder cut off by the fault keeps its lock until its lease
    /// expires, and its waiters wait that long).
    pub grace: Duration,
    /// How long a lock waiter may wait without a fault before it must hold.
    pub wait: Duration,
    /// How long an observer, configuration reader or membership watcher may take to see a
    /// term, a write, a join or a leave.
    pub deliver: Duration,
}

impl Bounds {
    /// The bounds for leases of `ttl`: grace [`STREAM_LEADER_ELECTION`] + `ttl`, waiters
    /// 10 s, deliveries 5 s.
    pub const fn for_lease_ttl(ttl: Duration) -> Bounds {
        Bounds {
            grace: STREAM_LEADER_ELECTION.saturating_add(ttl),
            wait: Duration::from_secs(10),
            deliver: Duration::from_secs(5),
        }
    }
}

/// Runs every liveness check over `records`. Time after [`Op::Stop`] is not checked: what
/// the stop cut short did not fail.
pub fn liveness(records: &[Record], bounds: &Bounds) -> Vec<Violation> {
    let faults = fault_windows(records);
    let end = end(records);
    let mut out = unavailable(records, &faults, bounds, end);
    out.extend(slow_waiters(records, &faults, bounds, end));
    out.extend(missed_terms(records, &faults, bounds, end));
    out.extend(divergent_readers(records, &faults, bounds, end));
    out.extend(unseen_members(records, &faults, bounds, end));
    out
}

fn is_lock_acquire(op: &Op) -> bool {
    matches!(op, Op::Acquire { mode, .. } if *mode != Mode::Leader)
}

/// Operations that failed or ended unknown, and holds lost, while fault-free: from their
/// invocation to their end, with the grace after any fault. Lock acquisitions that waited
/// longer than [`Bounds::wait`] are [`slow_waiters`]' to report.
fn unavailable(
    records: &[Record],
    faults: &[FaultWindow],
    bounds: &Bounds,
    end: Duration,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for r in records {
        if matches!(r.op, Op::Fault { .. } | Op::Stop) {
            continue;
        }
        let lost = matches!(r.op, Op::Lost { .. });
        let Some(done) = r.completed.filter(|c| *c < end) else {
            continue;
        };
        let waited_long = is_lock_acquire(&r.op) && done - r.invoked > bounds.wait;
        if (r.is_ok() && !lost) || waited_long {
            continue;
        }
        if fault_free(faults, r.invoked, done, bounds.grace) {
            let what = if lost { "lost its hold" } else { "failed" };
            out.push(Violation::new(
                Property::Unavailable,
                format!("{} {what} without a fault: {}", r.client, r.op),
                vec![r.clone()],
            ));
        }
    }
    out
}

/// Lock acquisitions not granted within [`Bounds::wait`] of their invocation while
/// fault-free (granted later, ended otherwise, or still waiting at the end).
fn slow_waiters(
    records: &[Record],
    faults: &[FaultWindow],
    bounds: &Bounds,
    end: Duration,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for r in records.iter().filter(|r| is_lock_acquire(&r.op)) {
        let due = r.invoked + bounds.wait;
        let in_time = r.is_ok() && r.completed.is_some_and(|c| c <= due);
        if in_time || due >= end || r.completed.is_some_and(|c| c <= due) {
            continue;
        }
        if fault_free(faults, r.invoked, due, bounds.grace) {
            out.push(Violation::new(
                Property::SlowWaiter,
                format!(
                    "{} waited more than {:?} without a fault: {}",
                    r.client, bounds.wait, r.op
                ),
                vec![r.clone()],
            ));
        }
    }
    out
}

/// Each configuration reader (a client that recorded [`Op::ConfigApply`]) applied, within
/// [`Bounds::deliver`] of each ok valid write made while it ran, that write's revision or a
/// later one, while fault-free. A reader that lags is reported once per lag, at the first
/// write it missed.
fn divergent_readers(
    records: &[Record],
    faults: &[FaultWindow],
    bounds: &Bounds,
    end: Duration,
) -> Vec<Violation> {
    let writes: Vec<&Record> = records
        .iter()
        .filter(|r| r.is_ok() && matches!(r.op, Op::ConfigWrite { valid: true, .. }))
        .collect();
    let mut out = Vec::new();
    for (reader, applies) in applies_by_reader(records) {
        let mut lagging = false;
        for w in &writes {
            let (Some(done), Some(rev)) = (w.completed, w.result) else {
                continue;
            };
            let due = done + bounds.deliver;
            let running = applies.first().is_some_and(|a| a.invoked <= done);
            if !running || due >= end || !fault_free(faults, w.invoked, due, bounds.grace) {
                continue;
            }
            let applied = applied_by(&applies, due);
            let behind = applied < rev;
            if behind && !lagging {
                let mut ops = vec![(*w).clone()];
                ops.extend(applies.iter().rev().find(|a| a.invoked <= due).cloned());
                out.push(Violation::new(
                    Property::Divergence,
                    format!(
                        "{reader} had applied revision {applied}, not {rev}, {:?} after it was written, without a fault",
                        bounds.deliver
                    ),
                    ops,
                ));
            }
            lagging = behind;
        }
    }
    out
}

/// Each reader's applies in invocation order.
fn applies_by_reader(records: &[Record]) -> BTreeMap<&str, Vec<Record>> {
    let mut map: BTreeMap<&str, Vec<Record>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.is_ok()) {
        if matches!(r.op, Op::ConfigApply { .. }) {
            map.entry(r.client.as_str()).or_default().push(r.clone());
        }
    }
    map
}

/// The revision of the last of `applies` (in invocation order) invoked by `t`; readers'
/// revisions increase (or [`super::configs`] reports it).
fn applied_by(applies: &[Record], t: Duration) -> u64 {
    let n = applies.partition_point(|a| a.invoked <= t);
    n.checked_sub(1)
        .and_then(|i| applies.get(i))
        .and_then(|a| a.result)
        .unwrap_or(0)
}
