//! The pure election rule: from what the leader key holds and where we stand in line,
//! whether to race for the key now, later, or not at all. Table-tested.

use std::time::Duration;

use kvtk_core::{Entry, Expect};

use crate::line::Pace;
use crate::record::Record;

/// What a candidate does about the leader key it sees.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// Race for it with this expectation.
    Take(Expect),
    /// Someone leads (or a transfer to someone else is pending): wait for a change.
    Wait,
    /// The key is free but candidates before us go first: decide again after this long (or
    /// at the next change).
    Later(Duration),
}

/// Where a candidate stands while the key is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Turn {
    /// How many live candidates are before us in line.
    pub(crate) rank: usize,
    /// How long we have seen the key free.
    pub(crate) waited: Duration,
}

/// What the leader key holds, as far as the election rule cares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum KeyView {
    /// No message at all (never written, or a marker that expired).
    Absent,
    /// A tombstone, purge or expiry marker at this revision.
    Removed(kvtk_core::Revision),
    /// A live value at this revision (`None`: undecodable).
    Live(kvtk_core::Revision, Option<Record>),
}

impl KeyView {
    /// The view of the leader key's latest entry; an error for a value of a format version
    /// this library does not know (nothing may be decided from it).
    pub(crate) fn of(e: Option<&Entry>) -> Result<KeyView, kvtk_core::Error> {
        Ok(match e {
            None => KeyView::Absent,
            Some(e) if !e.is_value() => KeyView::Removed(e.revision()),
            Some(e) => KeyView::Live(e.revision(), Record::from_entry(e)?),
        })
    }
}

/// The pure election rule: a free key is raced for once our turn is due (at once for the
/// first in line, one grace later per place behind it); a live value is only taken when it
/// is a hand-over to us, at once. (Our own write whose acknowledgement was lost is recognised
/// by the lease creation itself, from its nonce.)
pub(crate) fn decide(view: &KeyView, id: &str, turn: Turn, pace: Pace) -> Decision {
    let free = match view {
        KeyView::Absent => Expect::NoMessage,
        KeyView::Removed(rev) => Expect::Revision(*rev),
        KeyView::Live(rev, Some(r)) if r.transfer_to.as_deref() == Some(id) => {
            return Decision::Take(Expect::Revision(*rev))
        }
        KeyView::Live(..) => return Decision::Wait,
    };
    match pace.due(turn.rank).checked_sub(turn.waited) {
        Some(left) if !left.is_zero() => Decision::Later(left),
        _ => Decision::Take(free),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvtk_core::Revision;

    fn rev(n: u64) -> Revision {
        Revision::new(n).unwrap()
    }

    fn rec(id: &str, transfer_to: Option<&str>) -> Option<Record> {
        Some(Record {
            registration: None,
            id: id.into(),
            value: String::new(),
            transfer_to: transfer_to.map(Into::into),
        })
    }

    const PACE: Pace = Pace {
        grace: Duration::from_millis(200),
        last_resort: Duration::from_secs(2),
    };

    fn turn(rank: usize, waited_ms: u64) -> Turn {
        Turn {
            rank,
            waited: Duration::from_millis(waited_ms),
        }
    }

    fn take(view: &KeyView, t: Turn) -> Decision {
        decide(view, "a", t, PACE)
    }

    #[test]
    fn the_first_in_line_races_for_a_free_key_at_once_with_the_exact_expectation() {
        assert_eq!(
            take(&KeyView::Absent, turn(0, 0)),
            Decision::Take(Expect::NoMessage)
        );
        assert_eq!(
            take(&KeyView::Removed(rev(9)), turn(0, 0)),
            Decision::Take(Expect::Revision(rev(9)))
        );
    }

    #[test]
    fn later_places_wait_their_turn_then_race() {
        let free = KeyView::Removed(rev(9));
        let ms = Duration::from_millis;
        let cases = [
            (turn(1, 0), Decision::Later(ms(200))),
            (turn(1, 150), Decision::Later(ms(50))),
            (turn(1, 200), Decision::Take(Expect::Revision(rev(9)))),
            (turn(3, 450), Decision::Later(ms(150))),
            (turn(3, 600), Decision::Take(Expect::Revision(rev(9)))),
            // The last resort: everyone races once a TTL has passed.
            (turn(40, 1999), Decision::Later(ms(1))),
            (turn(40, 2000), Decision::Take(Expect::Revision(rev(9)))),
        ];
        for (t, want) in cases {
            assert_eq!(take(&free, t), want, "{t:?}");
        }
    }

    #[test]
    fn live_keys_wait_unless_handed_to_us() {
        for t in [turn(0, 0), turn(5, 5000)] {
            let other = KeyView::Live(rev(5), rec("b", None));
            assert_eq!(take(&other, t), Decision::Wait);
            let to_c = KeyView::Live(rev(5), rec("b", Some("c")));
            assert_eq!(take(&to_c, t), Decision::Wait);
            // A hand-over to us is taken at once, whatever our place in line.
            let to_us = KeyView::Live(rev(5), rec("b", Some("a")));
            assert_eq!(take(&to_us, t), Decision::Take(Expect::Revision(rev(5))));
            // Our own identity on a live key (an earlier incarnation, or our own write whose
            // acknowledgement was lost) is not taken over: the lease recognises its own write.
            let ours = KeyView::Live(rev(5), rec("a", None));
            assert_eq!(take(&ours, t), Decision::Wait);
            assert_eq!(take(&KeyView::Live(rev(5), None), t), Decision::Wait);
        }
    }
}
