//! The checkers against hand-made histories: each bad history is reported, each good one passes.

use std::time::Duration;

use kvtk_tests::check::{self, Property};
use kvtk_tests::history::{History, Mode, Op, Outcome, Record};

/// The liveness bounds of the tests: leases of 2 s (grace 12 s), waiters 10 s, deliveries 5 s.
const BOUNDS: check::Bounds = check::Bounds::for_lease_ttl(Duration::from_secs(2));

/// The run tells its workloads to stop at `at` ms.
fn stop(h: &H, at: u64) {
    h.ok("runner", Op::Stop, (at, at), None);
}

/// A nemesis fault from `from` to `until` ms.
fn fault(h: &H, from: u64, until: u64) {
    let op = Op::Fault {
        what: "SIGKILL n1".into(),
    };
    h.ok("nemesis", op, (from, until), None);
}

/// Builds histories with explicit times (milliseconds) and outcomes.
struct H(History);

impl H {
    fn new() -> H {
        H(History::new())
    }

    fn op(
        &self,
        client: &str,
        op: Op,
        at: (u64, u64),
        outcome: Outcome,
        result: Option<u64>,
    ) -> &Self {
        self.0.push(Record {
            id: 0,
            client: client.into(),
            op,
            invoked: Duration::from_millis(at.0),
            completed: Some(Duration::from_millis(at.1)),
            outcome,
            result,
            note: String::new(),
        });
        self
    }

    fn ok(&self, client: &str, op: Op, at: (u64, u64), result: Option<u64>) -> &Self {
        self.op(client, op, at, Outcome::Ok, result)
    }

    fn acquire(&self, client: &str, lock: &str, mode: Mode, at: (u64, u64), token: u64) -> &Self {
        self.ok(
            client,
            Op::Acquire {
                lock: lock.into(),
                mode,
            },
            at,
            Some(token),
        )
    }

    fn release(&self, client: &str, lock: &str, at: u64, token: u64) -> &Self {
        self.ok(
            client,
            Op::Release {
                lock: lock.into(),
                token,
            },
            (at, at + 1),
            None,
        )
    }

    fn liveness(&self) -> Vec<check::Violation> {
        check::liveness(&self.0.records(), &BOUNDS)
    }

    fn liveness_properties(&self) -> Vec<Property> {
        self.liveness().iter().map(|v| v.property).collect()
    }

    fn properties(&self) -> Vec<Property> {
        check::all(&self.0.records())
            .iter()
            .map(|v| v.property)
            .collect()
    }
}

#[test]
fn mutex_overlap_of_believers_is_reported_and_names_both() {
    let h = H::new();
    h.acquire("a", "m", Mode::Mutex, (0, 10), 1)
        .acquire("b", "m", Mode::Mutex, (20, 30), 2)
        .release("a", "m", 40, 1)
        .release("b", "m", 50, 2);
    let v = check::mutual_exclusion(&h.0.records());
    assert_eq!(v.len(), 1, "{v:?}");
    let text = v[0].to_string();
    for part in [
        "a (token 1)",
        "b (token 2)",
        "acquire m (Mutex)",
        "invoked 0.020s",
        "completed 0.030s",
    ] {
        assert!(text.contains(part), "{part:?} missing from {text}");
    }
}

#[test]
fn sequential_mutex_holds_pass() {
    let h = H::new();
    h.acquire("a", "m", Mode::Mutex, (0, 10), 1)
        .release("a", "m", 20, 1)
        .acquire("b", "m", Mode::Mutex, (15, 25), 5)
        .release("b", "m", 30, 5);
    assert_eq!(h.properties(), vec![]);
}

#[test]
fn unknown_and_failed_acquisitions_are_not_believers() {
    let h = H::new();
    let acquire = || Op::Acquire {
        lock: "m".into(),
        mode: Mode::Mutex,
    };
    h.acquire("a", "m", Mode::Mutex, (0, 10), 1)
        .op("b", acquire(), (5, 50), Outcome::Unknown, None)
        .op("c", acquire(), (5, 50), Outcome::Fail, None);
    assert_eq!(h.properties(), vec![]);
}

#[test]
fn a_loss_ends_the_belief() {
    let h = H::new();
    h.acquire("a", "m", Mode::Mutex, (0, 10), 1)
        .ok(
            "a",
            Op::Lost {
                lock: "m".into(),
                token: 1,
            },
            (20, 20),
            None,
        )
        .acquire("b", "m", Mode::Mutex, (15, 25), 2);
    assert_eq!(h.properties(), vec![]);
}

#[test]
fn semaphore_admits_n_believers_not_more() {
    let h = H::new();
    h.acquire("a", "s", Mode::Semaphore(2), (0, 10), 1).acquire(
        "b",
        "s",
        Mode::Semaphore(2),
        (0, 11),
        2,
    );
    assert_eq!(h.properties(), vec![]);
    h.acquire("c", "s", Mode::Semaphore(2), (0, 12), 3);
    assert_eq!(h.properties(), vec![Property::MutualExclusion]);
}

#[test]
fn readers_share_and_a_writer_excludes_all() {
    let h = H::new();
    h.acquire("r1", "rw", Mode::Read, (0, 10), 1)
        .acquire("r2", "rw", Mode::Read, (0, 11), 2);
    assert_eq!(h.properties(), vec![]);
    h.acquire("w", "rw", Mode::Write, (0, 12), 3);
    let v = check::mutual_exclusion(&h.0.records());
    assert_eq!(v.len(), 1);
    assert!(
        v[0].summary
            .contains("3 believers while 1 of them hold exclusively"),
        "{}",
        v[0]
    );
}

#[test]
fn tokens_must_be_unique_and_increase_in_real_time() {
    let h = H::new();
    h.acquire("a", "m", Mode::Mutex, (0, 10), 7)
        .release("a", "m", 20, 7)
        .acquire("b", "m", Mode::Mutex, (30, 40), 5);
    assert_eq!(h.properties(), vec![Property::TokenOrder]);
    let h = H::new();
    h.acquire("a", "m", Mode::Mutex, (0, 10), 7)
        .release("a", "m", 20, 7)
        .acquire("b", "m", Mode::Mutex, (30, 40), 7);
    assert_eq!(h.properties(), vec![Property::TokenOrder]);
}

#[test]
fn a_stale_fenced_write_accepted_after_a_newer_one_is_reported() {
    let write = |t| Op::FencedWrite {
        resource: "res".into(),
        token: t,
    };
    let h = H::new();
    h.ok("b", write(9), (0, 10), None)
        .ok("a", write(3), (5, 8), None) // concurrent with the newer write: no order known
        .op("a", write(3), (20, 30), Outcome::Fail, None); // rejected: fine
    assert_eq!(h.properties(), vec![]);
    h.ok("a", write(3), (40, 50), None);
    let v = check::fencing(&h.0.records());
    assert_eq!(v.len(), 1);
    assert!(
        v[0].summary.contains("token 3 accepted after token 9"),
        "{}",
        v[0]
    );
}

#[test]
fn two_leaders_at_once_break_uniqueness() {
    let h = H::new();
    h.acquire("a", "e", Mode::Leader, (0, 10), 4)
        .acquire("b", "e", Mode::Leader, (20, 30), 6);
    assert_eq!(h.properties(), vec![Property::MutualExclusion]);
}

fn observe(h: &H, client: &str, at: u64, term: u64) {
    h.ok(
        client,
        Op::Observe {
            election: "e".into(),
        },
        (at, at),
        Some(term),
    );
}

#[test]
fn observers_must_see_every_term_in_order() {
    let start = Op::ObserveStart {
        election: "e".into(),
    };
    let h = H::new();
    h.ok("o", start.clone(), (0, 1), None)
        .acquire("a", "e", Mode::Leader, (10, 20), 4)
        .release("a", "e", 30, 4)
        .acquire("b", "e", Mode::Leader, (40, 50), 9)
        .release("b", "e", 60, 9)
        .acquire("c", "e", Mode::Leader, (70, 80), 12);
    observe(&h, "o", 21, 4);
    observe(&h, "o", 51, 9);
    observe(&h, "o", 81, 12);
    assert_eq!(h.properties(), vec![]);

    let missed = H::new();
    missed
        .ok("o", start.clone(), (0, 1), None)
        .acquire("a", "e", Mode::Leader, (10, 20), 4)
        .release("a", "e", 30, 4)
        .acquire("b", "e", Mode::Leader, (40, 50), 9);
    observe(&missed, "o", 51, 9);
    stop(&missed, 10_000);
    assert_eq!(
        missed.properties(),
        vec![],
        "a missed term is not a safety violation"
    );
    let v = missed.liveness();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].property, Property::MissedTerm);
    assert!(v[0].summary.contains("o missed term 4"), "{}", v[0]);

    let backwards = H::new();
    backwards.ok("o", start, (0, 1), None);
    observe(&backwards, "o", 10, 9);
    observe(&backwards, "o", 20, 4);
    assert_eq!(backwards.properties(), vec![Property::Observer]);
}

#[test]
fn a_term_during_a_fault_need_not_be_observed() {
    let h = H::new();
    h.ok(
        "o",
        Op::ObserveStart {
            election: "e".into(),
        },
        (0, 1),
        None,
    )
    .ok(
        "nemesis",
        Op::Fault {
            what: "kill n1".into(),
        },
        (5, 15),
        None,
    )
    .acquire("a", "e", Mode::Leader, (10, 20), 4)
    .release("a", "e", 30, 4);
    observe(&h, "o", 40_000, 9);
    stop(&h, 60_000);
    assert_eq!(h.properties(), vec![]);
    assert_eq!(h.liveness_properties(), vec![]);
}

fn write(h: &H, key: &str, value: &str, at: u64, outcome: Outcome, rev: Option<u64>) {
    let op = Op::Write {
        key: key.into(),
        value: value.into(),
    };
    h.op("w", op, (at, at + 1), outcome, rev);
}

fn deliver(h: &H, key: &str, value: &str, rev: u64) {
    h.ok(
        "watcher",
        Op::Deliver {
            key: key.into(),
            value: value.into(),
        },
        (100, 100),
        Some(rev),
    );
}

fn watch_history() -> H {
    let h = H::new();
    h.ok(
        "watcher",
        Op::WatchStart {
            key: "k.>".into(),
            after: 0,
        },
        (0, 1),
        None,
    );
    write(&h, "k.a", "v1", 2, Outcome::Ok, Some(1));
    write(&h, "k.b", "v2", 3, Outcome::Unknown, None);
    write(&h, "k.a", "v3", 4, Outcome::Ok, Some(3));
    write(&h, "other", "v4", 5, Outcome::Ok, Some(4));
    h
}

#[test]
fn a_watch_delivering_everything_once_passes() {
    let h = watch_history();
    deliver(&h, "k.a", "v1", 1);
    deliver(&h, "k.b", "v2", 2); // the unknown write happened: fine
    deliver(&h, "k.a", "v3", 3);
    assert_eq!(h.properties(), vec![]);
}

#[test]
fn a_skipped_revision_is_reported() {
    let h = watch_history();
    deliver(&h, "k.a", "v3", 3);
    let v = check::watches(&h.0.records());
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].summary.contains("skipped revision 1 of k.a"),
        "{}",
        v[0]
    );
}

#[test]
fn duplicates_reordering_and_wrong_values_are_reported() {
    let dup = watch_history();
    deliver(&dup, "k.a", "v1", 1);
    deliver(&dup, "k.a", "v1", 1);
    assert_eq!(dup.properties(), vec![Property::Watch]);

    let wrong = watch_history();
    deliver(&wrong, "k.a", "v1", 3);
    let v = check::watches(&wrong.0.records());
    assert!(
        v.iter()
            .any(|v| v.summary.contains("written at revision 1")),
        "{v:?}"
    );

    let phantom = watch_history();
    deliver(&phantom, "k.a", "never", 1);
    let v = check::watches(&phantom.0.records());
    assert!(
        v.iter().any(|v| v.summary.contains("which nobody wrote")),
        "{v:?}"
    );
}

#[test]
fn a_restart_after_history_gone_starts_a_new_segment() {
    let h = watch_history();
    deliver(&h, "k.a", "v1", 1);
    h.ok(
        "watcher",
        Op::HistoryGone { key: "k.>".into() },
        (50, 50),
        Some(1),
    )
    .ok(
        "watcher",
        Op::WatchStart {
            key: "k.>".into(),
            after: 2,
        },
        (60, 61),
        None,
    );
    deliver(&h, "k.a", "v3", 3);
    assert_eq!(h.properties(), vec![]);
}

fn config_write(h: &H, value: &str, valid: bool, at: u64, rev: u64) {
    let op = Op::ConfigWrite {
        value: value.into(),
        valid,
    };
    h.ok("writer", op, (at, at + 1), Some(rev));
}

fn apply(h: &H, value: &str, rev: u64) {
    h.ok(
        "reader",
        Op::ConfigApply {
            value: value.into(),
        },
        (90, 90),
        Some(rev),
    );
}

#[test]
fn config_readers_apply_only_whole_valid_writes() {
    let h = H::new();
    config_write(&h, "a=1,b=1", true, 0, 2);
    config_write(&h, "a=-1,b=-1", false, 10, 4);
    config_write(&h, "a=2,b=2", true, 20, 6);
    apply(&h, "a=1,b=1", 2);
    apply(&h, "a=2,b=2", 6);
    assert_eq!(h.properties(), vec![]);

    apply(&h, "a=-1,b=-1", 7);
    apply(&h, "a=3,b=2", 8);
    apply(&h, "a=1,b=1", 2);
    let v = check::configs(&h.0.records());
    let summaries: Vec<&str> = v.iter().map(|v| v.summary.as_str()).collect();
    assert_eq!(v.len(), 3, "{summaries:?}");
    assert!(summaries[0].contains("applied the invalid configuration a=-1,b=-1"));
    assert!(summaries[1].contains("which no write produced (torn?)"));
    assert!(summaries[2].contains("applied revision 2 after revision Some(8)"));
}

#[test]
fn the_recorder_is_shared_by_clones_and_marks_abandoned_ops_unknown() {
    let history = History::new();
    let clone = history.clone();
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let h = clone.clone();
            std::thread::spawn(move || {
                h.invoke(format!("c{i}"), Op::Fault { what: "x".into() })
                    .ok(None);
            })
        })
        .collect();
    for t in tasks {
        t.join().expect("thread");
    }
    drop(history.invoke("c9", Op::Fault { what: "y".into() }));
    let records = history.records();
    assert_eq!(records.len(), 5);
    assert_eq!(records[4].outcome, Outcome::Unknown);
    assert!(records.iter().all(|r| r.completed >= Some(r.invoked)));
}

fn mutex() -> Op {
    Op::Acquire {
        lock: "m".into(),
        mode: Mode::Mutex,
    }
}

#[test]
fn a_failure_without_a_fault_is_a_liveness_violation() {
    let h = H::new();
    h.op("a", mutex(), (100, 200), Outcome::Fail, None);
    stop(&h, 60_000);
    assert_eq!(h.properties(), vec![], "not a safety violation");
    let v = h.liveness();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].property, Property::Unavailable);
    assert!(
        v[0].summary.contains("a failed without a fault"),
        "{}",
        v[0]
    );
}

#[test]
fn failures_during_a_fault_or_its_grace_or_cut_by_the_stop_are_not_violations() {
    let h = H::new();
    fault(&h, 1_000, 3_000);
    h.op("a", mutex(), (2_000, 2_500), Outcome::Unknown, None) // during the fault
        .op("b", mutex(), (3_000 + 11_000, 14_500), Outcome::Fail, None) // in its grace
        .op("c", mutex(), (50_000, 61_000), Outcome::Unknown, None); // cut short by the stop
    stop(&h, 60_000);
    assert_eq!(h.liveness_properties(), vec![]);

    h.op(
        "d",
        mutex(),
        (3_000 + 12_500, 16_000),
        Outcome::Unknown,
        None,
    ); // after the grace
    let v = h.liveness();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].summary.starts_with("d failed"), "{}", v[0]);
}

#[test]
fn a_hold_lost_without_a_fault_is_a_liveness_violation() {
    let h = H::new();
    h.acquire("a", "m", Mode::Mutex, (0, 10), 3).ok(
        "a",
        Op::Lost {
            lock: "m".into(),
            token: 3,
        },
        (500, 500),
        None,
    );
    stop(&h, 60_000);
    assert_eq!(h.properties(), vec![]);
    let v = h.liveness();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].summary.contains("a lost its hold"), "{}", v[0]);
}

#[test]
fn a_lock_waiter_must_be_granted_within_the_bound_while_fault_free() {
    let good = H::new();
    good.acquire("a", "m", Mode::Mutex, (0, 9_000), 1)
        // a waiter whose wait met a fault may wait longer
        .acquire("b", "m", Mode::Mutex, (20_000, 45_000), 2);
    fault(&good, 25_000, 26_000);
    // a waiter still waiting when the run stops, invoked less than the bound before
    good.0.push(Record {
        id: 0,
        client: "c".into(),
        op: mutex(),
        invoked: Duration::from_millis(55_000),
        completed: None,
        outcome: Outcome::Pending,
        result: None,
        note: String::new(),
    });
    stop(&good, 60_000);
    assert_eq!(good.liveness_properties(), vec![]);

    let bad = H::new();
    bad.acquire("a", "m", Mode::Mutex, (0, 12_000), 1);
    bad.op("b", mutex(), (1_000, 21_000), Outcome::Unknown, None); // timed out
    bad.0.push(Record {
        id: 0,
        client: "c".into(),
        op: mutex(),
        invoked: Duration::from_millis(30_000),
        completed: None,
        outcome: Outcome::Pending,
        result: None,
        note: String::new(),
    });
    stop(&bad, 60_000);
    assert_eq!(bad.properties(), vec![]);
    let v = bad.liveness();
    let who: Vec<&str> = v.iter().map(|v| v.ops[0].client.as_str()).collect();
    assert_eq!(who, vec!["a", "b", "c"], "{v:?}");
    assert!(
        v.iter().all(|v| v.property == Property::SlowWaiter),
        "{v:?}"
    );
}

#[test]
fn config_readers_must_converge_on_the_last_write_while_fault_free() {
    let reader_at = |h: &H, value: &str, at: u64, rev: u64| {
        let op = Op::ConfigApply {
            value: value.into(),
        };
        h.ok("reader", op, (at, at), Some(rev));
    };
    let good = H::new();
    config_write(&good, "a=1,b=1", true, 0, 1);
    reader_at(&good, "a=1,b=1", 10, 1);
    config_write(&good, "a=2,b=2", true, 1_000, 3);
    config_write(&good, "a=-3,b=-3", false, 2_000, 5); // invalid: never applied
    reader_at(&good, "a=2,b=2", 1_500, 3);
    stop(&good, 60_000);
    assert_eq!(good.liveness_properties(), vec![]);
    assert_eq!(good.properties(), vec![]);

    let stuck = H::new();
    config_write(&stuck, "a=1,b=1", true, 0, 1);
    reader_at(&stuck, "a=1,b=1", 10, 1);
    config_write(&stuck, "a=2,b=2", true, 1_000, 3);
    config_write(&stuck, "a=3,b=3", true, 2_000, 5);
    stop(&stuck, 60_000);
    let v = stuck.liveness();
    assert_eq!(v.len(), 1, "one lag, reported once: {v:?}");
    assert_eq!(v[0].property, Property::Divergence);
    assert!(v[0].summary.contains("not 3"), "{}", v[0]);

    // the same lag while a fault is in place is not a violation
    fault(&stuck, 500, 3_000);
    assert_eq!(stuck.liveness_properties(), vec![]);
}

#[test]
fn fault_windows_are_queryable() {
    let h = H::new();
    fault(&h, 1_000, 3_000);
    let windows = kvtk_tests::history::fault_windows(&h.0.records());
    assert_eq!(windows.len(), 1);
    let s = Duration::from_secs;
    assert!(windows[0].touches(s(2), s(2), s(0)));
    assert!(windows[0].touches(s(4), s(5), s(2)), "in the grace");
    assert!(!windows[0].touches(s(6), s(7), s(2)), "after the grace");
    assert!(!kvtk_tests::history::fault_free(&windows, s(0), s(1), s(0)));
    assert!(kvtk_tests::history::fault_free(&windows, s(0), s(0), s(0)));
}

fn member_op(h: &H, client: &str, op: Op, at: (u64, u64)) {
    h.ok(client, op, at, None);
}

fn join(member: &str) -> Op {
    Op::Join {
        group: "g".into(),
        member: member.into(),
    }
}

fn leave(member: &str) -> Op {
    Op::Leave {
        group: "g".into(),
        member: member.into(),
    }
}

fn seen(member: &str, joined: bool) -> Op {
    Op::MemberSeen {
        group: "g".into(),
        member: member.into(),
        joined,
    }
}

#[test]
fn a_membership_watcher_must_see_every_join_and_leave_while_fault_free() {
    let start = Op::MembersWatch { group: "g".into() };
    let good = H::new();
    member_op(&good, "w", start.clone(), (0, 10));
    member_op(&good, "m", join("a"), (100, 110));
    member_op(&good, "w", seen("a", true), (200, 200));
    member_op(&good, "m", leave("a"), (1_000, 1_010));
    member_op(&good, "w", seen("a", false), (1_100, 1_100));
    stop(&good, 60_000);
    assert_eq!(good.liveness_properties(), vec![]);
    assert_eq!(good.properties(), vec![]);

    let bad = H::new();
    member_op(&bad, "w", start, (0, 10));
    member_op(&bad, "m", join("a"), (100, 110));
    member_op(&bad, "w", seen("a", true), (200, 200));
    member_op(&bad, "m", leave("a"), (1_000, 1_010));
    member_op(&bad, "m", join("b"), (2_000, 2_010));
    member_op(&bad, "w", seen("b", true), (9_000, 9_000)); // later than the bound
    stop(&bad, 60_000);
    let v = bad.liveness();
    let summaries: Vec<&str> = v.iter().map(|v| v.summary.as_str()).collect();
    assert_eq!(v.len(), 2, "{summaries:?}");
    assert!(v.iter().all(|v| v.property == Property::MissedMember));
    assert!(
        summaries[0].contains("w did not see leave g/a"),
        "{summaries:?}"
    );
    assert!(
        summaries[1].contains("w did not see join g/b"),
        "{summaries:?}"
    );

    // during a fault (and its grace) a watcher may lag
    fault(&bad, 500, 1_500);
    assert_eq!(bad.liveness_properties(), vec![]);
}
