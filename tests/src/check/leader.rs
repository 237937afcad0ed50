//! Election observers: terms never go backwards, and no term is missed while connected.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{holds, Hold, Property, Violation};
use crate::history::{Mode, Op, Record};

/// For each observer (a client that recorded [`Op::ObserveStart`]): the terms it saw never
/// decrease, and it saw the term of every believed leadership that began and ended inside one
/// of its observation segments (from a start to its last observation before the next start)
/// while no fault was in progress or had healed less than [`FAULT_AFTERMATH`] before.
pub fn observers(records: &[Record]) -> Vec<Violation> {
    let leaders: Vec<Hold> = holds(records)
        .into_iter()
        .filter(|h| h.mode == Mode::Leader)
        .collect();
    let faults: Vec<&Record> = records
        .iter()
        .filter(|r| matches!(r.op, Op::Fault { .. }))
        .collect();
    let mut out = Vec::new();
    for ((client, election), ops) in observations(records) {
        out.extend(backwards(&election, &ops));
        let seen: BTreeSet<u64> = ops.iter().filter_map(|r| r.result).collect();
        for (start, end) in segments(&ops) {
            for h in &leaders {
                let inside = h.lock == election
                    && h.acquire.invoked > start.completed.unwrap_or(start.invoked)
                    && h.until.is_some_and(|u| u < end.invoked);
                let faulted = faults
                    .iter()
                    .any(|f| overlaps(f, h.acquire.invoked, h.until.unwrap_or(end.invoked)));
                if inside && !faulted && !seen.contains(&h.token) {
                    let mut involved = h.acquire.clone();
                    involved.note = format!("term {}", h.token);
                    out.push(Violation::new(
                        Property::Observer,
                        format!(
                            "{client} missed term {} of {election} while observing",
                            h.token
                        ),
                        vec![start.clone(), involved, end.clone()],
                    ));
                }
            }
        }
    }
    out
}

type Observations = BTreeMap<(String, String), Vec<Record>>;

/// Observer records (starts and observations) by client and election.
fn observations(records: &[Record]) -> Observations {
    let mut map: Observations = BTreeMap::new();
    for r in records {
        let election = match &r.op {
            Op::ObserveStart { election } => election,
            Op::Observe { election } if r.is_ok() => election,
            _ => continue,
        };
        map.entry((r.client.clone(), election.clone()))
            .or_default()
            .push(r.clone());
    }
    map
}

fn backwards(election: &str, ops: &[Record]) -> Vec<Violation> {
    let seen: Vec<&Record> = ops.iter().filter(|r| r.result.is_some()).collect();
    seen.windows(2)
        .filter(|w| w[1].result < w[0].result)
        .map(|w| {
            Violation::new(
                Property::Observer,
                format!(
                    "{} saw term {:?} of {election} after term {:?}",
                    w[1].client, w[1].result, w[0].result
                ),
                vec![w[0].clone(), w[1].clone()],
            )
        })
        .collect()
}

/// (start, last observation) pairs: one per [`Op::ObserveStart`] that observed something.
fn segments(ops: &[Record]) -> Vec<(&Record, &Record)> {
    let mut out = Vec::new();
    let mut current: Option<(&Record, &Record)> = None;
    for r in ops {
        if matches!(r.op, Op::ObserveStart { .. }) {
            out.extend(current.take());
            current = Some((r, r));
        } else if let Some((_, last)) = current.as_mut() {
            *last = r;
        }
    }
    out.extend(current);
    out.into_iter().filter(|(s, e)| s.id != e.id).collect()
}

/// How long after a fault heals its effects still count (reconnects, stream-leader elections
/// of up to ~10 s on a cluster).
pub const FAULT_AFTERMATH: Duration = Duration::from_secs(12);

fn overlaps(fault: &Record, from: Duration, until: Duration) -> bool {
    fault.invoked <= until && fault.completed.is_none_or(|c| c + FAULT_AFTERMATH >= from)
}
