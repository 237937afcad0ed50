//! The sweeps of `mutual_exclusion` and `token_order` against the comparison of every pair
//! they replaced, on random histories.

use proptest::prelude::*;
use proptest::strategy::ValueTree;

use super::*;
use crate::history::Outcome;

/// Every hold against every other, as the checker did before its sweeps.
fn mutual_exclusion_by_pairs(records: &[Record]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (lock, holds) in by_lock(records) {
        for h in &holds {
            let active: Vec<&Hold> = holds.iter().filter(|o| active_at(o, h.from)).collect();
            if let Some(why) = overfull(&active) {
                out.push(overlap(&lock, h, &active, &why));
            }
        }
    }
    out
}

fn active_at(h: &Hold, t: Duration) -> bool {
    h.from <= t && h.until.is_none_or(|u| u > t)
}

fn token_order_by_pairs(records: &[Record]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (lock, holds) in by_lock(records) {
        for (i, a) in holds.iter().enumerate() {
            for b in &holds[i + 1..] {
                let (first, later) = in_start_order(a, b);
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

fn record(id: usize, client: usize, op: Op, invoked: u64, completed: u64, token: u64) -> Record {
    Record {
        id,
        client: format!("c{client}"),
        op,
        invoked: Duration::from_millis(invoked),
        completed: Some(Duration::from_millis(completed)),
        outcome: Outcome::Ok,
        result: Some(token),
        note: String::new(),
    }
}

/// One acquisition: (lock, mode, client, invoked, time to acquire, token, time held or never
/// released, ended by a loss).
type Acq = (usize, Mode, usize, u64, u64, u64, Option<u64>, bool);

fn acquisition() -> impl Strategy<Value = Acq> {
    let mode = prop_oneof![
        Just(Mode::Mutex),
        Just(Mode::Read),
        Just(Mode::Write),
        Just(Mode::Leader),
        (1u32..3).prop_map(Mode::Semaphore),
    ];
    (
        0usize..2,
        mode,
        0usize..4,
        0u64..40,
        0u64..4,
        0u64..12,
        proptest::option::of(0u64..15),
        any::<bool>(),
    )
}

/// Records in invocation order, as a history gives them.
fn history(acqs: &[Acq]) -> Vec<Record> {
    let mut rs = Vec::new();
    for &(lock, mode, client, invoked, wait, token, held, lost) in acqs {
        let lock = format!("l{lock}");
        let granted = invoked + wait;
        let acquire = Op::Acquire {
            lock: lock.clone(),
            mode,
        };
        rs.push(record(0, client, acquire, invoked, granted, token));
        if let Some(held) = held {
            let end = if lost {
                Op::Lost { lock, token }
            } else {
                Op::Release { lock, token }
            };
            rs.push(record(
                0,
                client,
                end,
                granted + held,
                granted + held,
                token,
            ));
        }
    }
    rs.sort_by_key(|r| r.invoked);
    for (id, r) in rs.iter_mut().enumerate() {
        r.id = id;
    }
    rs
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn the_sweeps_find_what_every_pair_finds(acqs in proptest::collection::vec(acquisition(), 0..24)) {
        let records = history(&acqs);
        prop_assert_eq!(mutual_exclusion(&records), mutual_exclusion_by_pairs(&records));
        prop_assert_eq!(token_order(&records), token_order_by_pairs(&records));
    }
}

/// The generated histories reach every verdict: the comparison above is not of empty lists.
#[test]
fn random_histories_break_both_properties() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut overlaps, mut tokens) = (0, 0);
    for _ in 0..500 {
        let acqs = proptest::collection::vec(acquisition(), 0..24)
            .new_tree(&mut runner)
            .map(|t| t.current())
            .unwrap_or_default();
        let records = history(&acqs);
        overlaps += mutual_exclusion(&records).len();
        tokens += token_order(&records).len();
    }
    assert!(
        overlaps > 0 && tokens > 0,
        "{overlaps} overlaps, {tokens} token violations"
    );
}
