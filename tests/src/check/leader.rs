//! Election observers: terms never go backwards (safety), and no term is missed while no
//! fault is in place (liveness, see [`super::liveness`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{holds, Bounds, Property, Violation};
use crate::history::{fault_free, FaultWindow, Mode, Op, Record};

/// For each observer (a client that recorded [`Op::ObserveStart`]): the terms it saw never
/// decrease.
pub fn observers(records: &[Record]) -> Vec<Violation> {
    observations(records)
        .into_iter()
        .flat_map(|((_, election), ops)| backwards(&election, &ops))
        .collect()
}

/// Liveness of observers: each saw the term of every believed leadership of its election
/// that began inside one of its observation segments (from a start to the next start or the
/// end) at least `bounds.deliver` before the segment ended, while fault-free with
/// `bounds.grace` (from the campaign's invocation to `bounds.deliver` after it began).
pub(super) fn missed_terms(
    records: &[Record],
    faults: &[FaultWindow],
    bounds: &Bounds,
    end: Duration,
) -> Vec<Violation> {
    let leaders: Vec<_> = holds(records)
        .into_iter()
        .filter(|h| h.mode == Mode::Leader)
        .collect();
    let mut out = Vec::new();
    for ((client, election), ops) in observations(records) {
        let seen: BTreeSet<u64> = ops.iter().filter_map(|r| r.result).collect();
        for (start, until) in segments(&ops, end) {
            for h in &leaders {
                let due = h.from + bounds.deliver;
                let inside = h.lock == election
                    && h.acquire.invoked > start.completed.unwrap_or(start.invoked)
                    && due < until;
                if inside
                    && !seen.contains(&h.token)
                    && fault_free(faults, h.acquire.invoked, due, bounds.grace)
                {
                    let mut involved = h.acquire.clone();
                    involved.note = format!("term {}", h.token);
                    out.push(Violation::new(
                        Property::MissedTerm,
                        format!(
                            "{client} missed term {} of {election} without a fault",
                            h.token
                        ),
                        vec![start.clone(), involved],
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

/// (start, end) of each observation segment: from an [`Op::ObserveStart`] to the next one,
/// the last to `end`.
fn segments(ops: &[Record], end: Duration) -> Vec<(&Record, Duration)> {
    let starts: Vec<&Record> = ops
        .iter()
        .filter(|r| matches!(r.op, Op::ObserveStart { .. }))
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, starts.get(i + 1).map_or(end, |n| n.invoked)))
        .collect()
}
