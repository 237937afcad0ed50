//! Configuration readers: never an invalid revision, never half a transaction.

use std::collections::{BTreeMap, HashMap};

use super::{Property, Violation};
use crate::history::{Op, Record};

/// Each applied configuration ([`Op::ConfigApply`]) must equal, as a whole, a valid
/// configuration that was written (ok or unknown outcome): equal to an invalid write means an
/// invalid revision was applied; equal to no write means a torn (partly applied) or invented
/// one. A reader's applied revisions strictly increase.
pub fn configs(records: &[Record]) -> Vec<Violation> {
    let written: HashMap<&str, &Record> = records
        .iter()
        .filter(|r| r.may_have_happened())
        .filter_map(|r| match &r.op {
            Op::ConfigWrite { value, .. } => Some((value.as_str(), r)),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    let mut last: BTreeMap<&str, &Record> = BTreeMap::new();
    for r in records.iter().filter(|r| r.is_ok()) {
        let Op::ConfigApply { value } = &r.op else {
            continue;
        };
        let who = &r.client;
        let rev = r.result.unwrap_or(0);
        match written.get(value.as_str()) {
            None => out.push(violation(
                format!("{who} applied {value} at revision {rev}, which no write produced (torn?)"),
                vec![r.clone()],
            )),
            Some(w) if matches!(w.op, Op::ConfigWrite { valid: false, .. }) => out.push(violation(
                format!("{who} applied the invalid configuration {value} at revision {rev}"),
                vec![(*w).clone(), r.clone()],
            )),
            Some(_) => {}
        }
        if let Some(prev) = last.insert(who, r) {
            if prev.result.unwrap_or(0) >= rev {
                out.push(violation(
                    format!(
                        "{who} applied revision {rev} after revision {:?}",
                        prev.result
                    ),
                    vec![prev.clone(), r.clone()],
                ));
            }
        }
    }
    out
}

fn violation(summary: String, ops: Vec<Record>) -> Violation {
    Violation::new(Property::Config, summary, ops)
}
