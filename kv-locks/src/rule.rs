//! Who holds a lock, decided from a view of its queue: a pure rule, one per lock kind.
//!
//! Every lock is a queue of entries ordered by ticket. The rule says, for one entry, whether
//! it holds now, and otherwise which entries it waits for. The acquisition loop
//! (`acquire.rs`) asks again on every change of the queue; it never knows what kind of lock
//! it runs. This is Curator's `getsTheLock` idea:
//! the read-write lock is just another rule.
//!
//! | kind | holds when | waits for |
//! | --- | --- | --- |
//! | exclusive (mutex, writer) | first in the queue | its predecessor |
//! | semaphore(n) | fewer than n entries ahead | the n entries just ahead |
//! | shared (reader) | no exclusive entry ahead | the nearest exclusive entry ahead |
//!
//! A waiter watches only what it waits for, so a release wakes one waiter (n for a
//! semaphore), never the whole queue. A waiter can hold only after one of the entries it
//! waits for left (entries ahead can only leave; none can appear), and when that entry left
//! by a holder's completed release, [`holds_after`] says whether that alone proves the waiter
//! holds; otherwise it reads the queue again.
//!
//! Writers are not starved: a reader that arrives after a waiting writer has that writer
//! ahead of it, so it waits too.

use kvtk_core::Revision;

/// How an entry takes part in its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Alone: a mutex holder or a writer of a read-write lock.
    Exclusive,
    /// Together with other shared entries: a reader.
    Shared,
    /// One of `n` permits.
    Permit(u32),
}

impl Kind {
    /// The tag stored in queue values.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Kind::Exclusive => "x",
            Kind::Shared => "s",
            Kind::Permit(_) => "p",
        }
    }
}

/// One entry of the queue, as the rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Queued {
    pub(crate) key: String,
    pub(crate) ticket: Revision,
    /// Whether the entry is shared (a reader); anything else excludes readers.
    pub(crate) shared: bool,
}

/// The rule's answer for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The entry holds the lock.
    Hold,
    /// The entry waits.
    Wait(Wait),
}

/// What a waiting entry waits for: the entries ahead of it whose departure may let it hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wait {
    pub(crate) blockers: Vec<Queued>,
}

/// Decides for the entry at `me` (an index into `queue`, which is sorted by ticket).
pub(crate) fn decide(queue: &[Queued], me: usize, kind: Kind) -> Decision {
    let ahead = &queue[..me.min(queue.len())];
    match kind {
        Kind::Exclusive => match ahead.last() {
            None => Decision::Hold,
            Some(pred) => Decision::Wait(Wait {
                blockers: vec![pred.clone()],
            }),
        },
        Kind::Shared => match ahead.iter().rfind(|q| !q.shared) {
            None => Decision::Hold,
            Some(w) => Decision::Wait(Wait {
                blockers: vec![w.clone()],
            }),
        },
        Kind::Permit(n) => {
            let n = n.max(1) as usize;
            if ahead.len() < n {
                return Decision::Hold;
            }
            // With n entries just ahead still there we cannot hold; once one of them left we
            // may, so these are all a waiter needs to watch.
            Decision::Wait(Wait {
                blockers: ahead[ahead.len() - n..].to_vec(),
            })
        }
    }
}

/// Whether a `kind` waiter holds once `blocker` — the one entry it waited for — left by a
/// completed release (its holder released it after holding).
///
/// An exclusive blocker held only when first in the queue, and no entry can enter ahead of
/// it later, so nothing is left ahead of the waiter behind it (nothing was between them:
/// the blocker was its predecessor) — and for a reader, only readers were between it and
/// its nearest writer. A shared blocker proves nothing about the readers beside it, and a
/// semaphore's permits free in any order: those waiters read the queue again.
pub(crate) fn holds_after(kind: Kind, blocker: &Queued) -> bool {
    match kind {
        Kind::Exclusive | Kind::Shared => !blocker.shared,
        Kind::Permit(_) => false,
    }
}

/// The entries that hold the lock now, in ticket order: a prefix of the queue for
/// exclusive and permit locks, the leading readers (or one writer) for read-write locks.
pub(crate) fn holders(queue: &[Queued], permits: Option<u32>) -> usize {
    match permits {
        Some(n) => queue.len().min(n.max(1) as usize),
        None => match queue.first() {
            None => 0,
            Some(first) if !first.shared => 1,
            Some(_) => queue.iter().take_while(|q| q.shared).count(),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn q(spec: &str) -> Vec<Queued> {
        // "r w r" → readers and writers with tickets 1, 2, 3
        spec.split_whitespace()
            .enumerate()
            .map(|(i, k)| Queued {
                key: format!("k{}", i + 1),
                ticket: Revision::new(i as u64 + 1).unwrap(),
                shared: k == "r",
            })
            .collect()
    }

    /// Waiting for the entries of `queue` with these tickets.
    fn wait(queue: &[Queued], tickets: &[u64]) -> Decision {
        Decision::Wait(Wait {
            blockers: tickets
                .iter()
                .map(|&t| queue[t as usize - 1].clone())
                .collect(),
        })
    }

    #[test]
    fn exclusive_entries_hold_first_and_wait_for_their_predecessor() {
        let queue = q("w w w");
        assert_eq!(decide(&queue, 0, Kind::Exclusive), Decision::Hold);
        assert_eq!(decide(&queue, 1, Kind::Exclusive), wait(&queue, &[1]));
        assert_eq!(decide(&queue, 2, Kind::Exclusive), wait(&queue, &[2]));
        // a writer waits for readers ahead too
        let readers = q("r r w");
        assert_eq!(decide(&readers, 2, Kind::Exclusive), wait(&readers, &[2]));
    }

    #[test]
    fn readers_share_until_a_writer_is_ahead() {
        let queue = q("r r r w r w r");
        for me in 0..3 {
            assert_eq!(
                decide(&queue, me, Kind::Shared),
                Decision::Hold,
                "reader {me}"
            );
        }
        // the reader behind the first writer waits for it and holds when it goes
        assert_eq!(decide(&queue, 4, Kind::Shared), wait(&queue, &[4]));
        // behind two writers: wait for the nearest, then look again
        assert_eq!(decide(&queue, 6, Kind::Shared), wait(&queue, &[6]));
        assert_eq!(holders(&queue, None), 3);
        assert_eq!(holders(&q("w r r"), None), 1);
        assert_eq!(holders(&[], None), 0);
    }

    #[test]
    fn permits_count_the_entries_ahead() {
        let queue = q("w w w w w");
        for me in 0..3 {
            assert_eq!(decide(&queue, me, Kind::Permit(3)), Decision::Hold);
        }
        assert_eq!(decide(&queue, 3, Kind::Permit(3)), wait(&queue, &[1, 2, 3]));
        assert_eq!(decide(&queue, 4, Kind::Permit(3)), wait(&queue, &[2, 3, 4]));
        assert_eq!(holders(&queue, Some(3)), 3);
        // a zero permit count is treated as one, never as "nobody may hold"
        assert_eq!(decide(&queue, 0, Kind::Permit(0)), Decision::Hold);
    }

    #[test]
    fn an_index_past_the_queue_is_treated_as_last() {
        let queue = q("w");
        assert_eq!(decide(&queue, 5, Kind::Exclusive), wait(&queue, &[1]));
    }

    /// Every queue of up to 6 readers and writers, and every kind the entry at `me` may be.
    fn cases() -> Vec<(Vec<Queued>, usize, Kind)> {
        let mut out = Vec::new();
        for len in 1..=6u32 {
            for bits in 0..(1u32 << len) {
                let spec: Vec<&str> = (0..len)
                    .map(|i| if bits >> i & 1 == 1 { "r" } else { "w" })
                    .collect();
                let queue = q(&spec.join(" "));
                for me in 0..queue.len() {
                    let kinds = if queue[me].shared {
                        vec![Kind::Shared]
                    } else {
                        vec![
                            Kind::Exclusive,
                            Kind::Permit(1),
                            Kind::Permit(2),
                            Kind::Permit(3),
                        ]
                    };
                    for kind in kinds {
                        out.push((queue.clone(), me, kind));
                    }
                }
            }
        }
        out
    }

    /// `queue` without the entries ahead of `me` whose bit is set in `gone`, and where `me`
    /// is then.
    fn without(queue: &[Queued], me: usize, gone: u32) -> (Vec<Queued>, usize) {
        let left: Vec<Queued> = queue
            .iter()
            .enumerate()
            .filter(|(i, _)| *i >= me || gone >> i & 1 == 0)
            .map(|(_, e)| e.clone())
            .collect();
        let at = left.iter().position(|e| e == &queue[me]).unwrap();
        (left, at)
    }

    fn kind_of(e: &Queued, waiter: Kind) -> Kind {
        match waiter {
            Kind::Permit(n) => Kind::Permit(n),
            _ if e.shared => Kind::Shared,
            _ => Kind::Exclusive,
        }
    }

    #[test]
    fn a_waiter_cannot_come_to_hold_while_its_blockers_are_all_still_there() {
        for (queue, me, kind) in cases() {
            let Decision::Wait(w) = decide(&queue, me, kind) else {
                continue;
            };
            for gone in 0..(1u32 << me) {
                let (left, at) = without(&queue, me, gone);
                if w.blockers.iter().all(|b| left.contains(b)) {
                    assert!(
                        decide(&left, at, kind) != Decision::Hold,
                        "{queue:?} me={me} {kind:?}: holds after departures it did not watch"
                    );
                }
            }
        }
    }

    #[test]
    fn a_completed_release_of_the_blocker_proves_what_holds_after_says() {
        for (queue, me, kind) in cases() {
            let Decision::Wait(w) = decide(&queue, me, kind) else {
                continue;
            };
            let [b] = w.blockers.as_slice() else {
                assert!(matches!(kind, Kind::Permit(_)), "{queue:?} me={me}");
                continue;
            };
            if !holds_after(kind, b) {
                continue;
            }
            let bi = queue.iter().position(|e| e == b).unwrap();
            // Every state in which the blocker held, then the blocker gone as well.
            for gone in 0..(1u32 << bi) {
                let (left, at) = without(&queue, bi, gone);
                if decide(&left, at, kind_of(b, kind)) != Decision::Hold {
                    continue;
                }
                let (after, me_at) = without(&queue, me, gone | 1 << bi);
                assert_eq!(
                    decide(&after, me_at, kind),
                    Decision::Hold,
                    "{queue:?} me={me}: blocker {b:?} held and left, yet the waiter does not hold"
                );
            }
        }
    }
}
