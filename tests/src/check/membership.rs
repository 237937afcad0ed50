//! Membership watchers (liveness): each sees every join and leave while no fault is in place.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Bounds, Property, Violation};
use crate::history::{fault_free, FaultWindow, Op, Record};

/// For each membership watcher (a client that recorded [`Op::MembersWatch`]) and each of its
/// segments (from a start to the next start or the end): every ok [`Op::Join`] and
/// [`Op::Leave`] of its group invoked after the segment started and completed at least
/// `bounds.deliver` before it ended was seen ([`Op::MemberSeen`]) within `bounds.deliver` of
/// its completion, while fault-free with `bounds.grace`.
pub(super) fn unseen_members(
    records: &[Record],
    faults: &[FaultWindow],
    bounds: &Bounds,
    end: Duration,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for ((client, group), ops) in watchers(records) {
        for (start, until) in segments(&ops, end) {
            let from = start.completed.unwrap_or(start.invoked);
            for change in records.iter().filter(|r| r.is_ok() && r.invoked > from) {
                let Some((member, joined)) = change_of(&change.op, &group) else {
                    continue;
                };
                let Some(due) = change.completed.map(|c| c + bounds.deliver) else {
                    continue;
                };
                let seen = ops.iter().any(|r| {
                    r.invoked >= from
                        && r.invoked <= due
                        && matches!(&r.op, Op::MemberSeen { member: m, joined: j, .. } if m == member && *j == joined)
                });
                if due < until && !seen && fault_free(faults, change.invoked, due, bounds.grace) {
                    out.push(Violation::new(
                        Property::MissedMember,
                        format!(
                            "{client} did not see {} within {:?} without a fault",
                            change.op, bounds.deliver
                        ),
                        vec![start.clone(), change.clone()],
                    ));
                }
            }
        }
    }
    out
}

/// The member and direction of a join or leave of `group`.
fn change_of<'a>(op: &'a Op, group: &str) -> Option<(&'a str, bool)> {
    match op {
        Op::Join { group: g, member } if g == group => Some((member, true)),
        Op::Leave { group: g, member } if g == group => Some((member, false)),
        _ => None,
    }
}

type Watchers = BTreeMap<(String, String), Vec<Record>>;

/// Watcher records (starts and sightings) by client and group.
fn watchers(records: &[Record]) -> Watchers {
    let mut map: Watchers = BTreeMap::new();
    for r in records.iter().filter(|r| r.is_ok()) {
        let group = match &r.op {
            Op::MembersWatch { group } | Op::MemberSeen { group, .. } => group,
            _ => continue,
        };
        map.entry((r.client.clone(), group.clone()))
            .or_default()
            .push(r.clone());
    }
    map
}

/// (start, end) of each watch segment: from an [`Op::MembersWatch`] to the next, the last to
/// `end`.
fn segments(ops: &[Record], end: Duration) -> Vec<(&Record, Duration)> {
    let starts: Vec<&Record> = ops
        .iter()
        .filter(|r| matches!(r.op, Op::MembersWatch { .. }))
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, starts.get(i + 1).map_or(end, |n| n.invoked)))
        .collect()
}
