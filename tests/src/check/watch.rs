//! Watches: every revision exactly once, in order, with the value that was written.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Property, Violation};
use crate::history::{Op, Record};

/// For each watcher (a client that recorded [`Op::WatchStart`]) and each of its watch segments
/// (a start and the deliveries up to the next start): revisions strictly increase and lie after
/// the start; each delivery carries the value of an ok or unknown write of that key (an ok
/// write at that very revision); and every ok write of a matching key between the start and the
/// last delivery was delivered. A watch that cannot resume must say so ([`Op::HistoryGone`]) and
/// restart after a later revision — never skip.
pub fn watches(records: &[Record]) -> Vec<Violation> {
    let writes: HashMap<&str, &Record> = records
        .iter()
        .filter_map(|r| match &r.op {
            Op::Write { value, .. } => Some((value.as_str(), r)),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for segment in segments(records) {
        out.extend(check_segment(&segment, &writes, records));
    }
    out
}

struct Segment<'a> {
    start: &'a Record,
    filter: &'a str,
    after: u64,
    deliveries: Vec<&'a Record>,
}

fn segments(records: &[Record]) -> Vec<Segment<'_>> {
    let mut open: BTreeMap<&str, Segment<'_>> = BTreeMap::new();
    let mut out = Vec::new();
    for r in records {
        match &r.op {
            Op::WatchStart { key, after } => {
                let seg = Segment {
                    start: r,
                    filter: key,
                    after: *after,
                    deliveries: Vec::new(),
                };
                out.extend(open.insert(&r.client, seg));
            }
            Op::Deliver { .. } if r.is_ok() => {
                if let Some(seg) = open.get_mut(r.client.as_str()) {
                    seg.deliveries.push(r);
                }
            }
            _ => {}
        }
    }
    out.extend(open.into_values());
    out
}

fn check_segment(
    seg: &Segment<'_>,
    writes: &HashMap<&str, &Record>,
    all: &[Record],
) -> Vec<Violation> {
    let mut out = Vec::new();
    let who = &seg.start.client;
    let mut last: Option<&Record> = None;
    for &d in &seg.deliveries {
        let rev = d.result.unwrap_or(0);
        let prev_rev = last.and_then(|l| l.result).unwrap_or(seg.after);
        if rev <= prev_rev {
            let mut ops = vec![seg.start.clone()];
            ops.extend(last.cloned());
            ops.push(d.clone());
            out.push(violation(
                format!("{who} delivered revision {rev} after revision {prev_rev} (duplicate or out of order)"),
                ops,
            ));
        }
        out.extend(check_value(d, rev, writes));
        last = Some(d);
    }
    let Some(last_rev) = last.and_then(|l| l.result) else {
        return out;
    };
    let delivered: BTreeSet<u64> = seg.deliveries.iter().filter_map(|d| d.result).collect();
    for w in all.iter().filter(|w| w.is_ok()) {
        let (Op::Write { key, .. }, Some(rev)) = (&w.op, w.result) else {
            continue;
        };
        if matches(seg.filter, key)
            && rev > seg.after
            && rev <= last_rev
            && !delivered.contains(&rev)
        {
            out.push(violation(
                format!("{who} skipped revision {rev} of {key} (delivered up to {last_rev} without reporting a gap)"),
                vec![seg.start.clone(), w.clone()],
            ));
        }
    }
    out
}

fn check_value(d: &Record, rev: u64, writes: &HashMap<&str, &Record>) -> Option<Violation> {
    let Op::Deliver { key, value } = &d.op else {
        return None;
    };
    let who = &d.client;
    let Some(&w) = writes.get(value.as_str()) else {
        return Some(violation(
            format!("{who} delivered {key}={value} at revision {rev}, which nobody wrote"),
            vec![d.clone()],
        ));
    };
    let wrong = match (&w.op, w.outcome, w.result) {
        (Op::Write { key: k, .. }, _, _) if k != key => Some(format!("written to {k}")),
        (_, crate::history::Outcome::Fail, _) => Some("from a failed write".to_string()),
        (_, _, Some(r)) if r != rev => Some(format!("written at revision {r}")),
        _ => None,
    }?;
    Some(violation(
        format!("{who} delivered {key}={value} at revision {rev}, {wrong}"),
        vec![w.clone(), d.clone()],
    ))
}

/// Whether a watch on `filter` (a key, `prefix.>` or `>`) sees `key`.
fn matches(filter: &str, key: &str) -> bool {
    filter == key
        || filter == ">"
        || filter
            .strip_suffix('>')
            .is_some_and(|prefix| prefix.ends_with('.') && key.starts_with(prefix))
}

fn violation(summary: String, ops: Vec<Record>) -> Violation {
    Violation::new(Property::Watch, summary, ops)
}
