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
//! | semaphore(n) | fewer than n entries ahead | enough of the entries ahead to leave |
//! | shared (reader) | no exclusive entry ahead | the nearest exclusive entry ahead |
//!
//! Writers are not starved: a reader that arrives after a waiting writer has that writer
//! ahead of it, so it waits too.

use kv_core::Revision;

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

/// What a waiting entry waits for: the entries whose departure matters, with their tickets
/// (for tracing; the loop decides again on every change of the queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wait {
    pub(crate) blockers: Vec<(String, Revision)>,
}

/// Decides for the entry at `me` (an index into `queue`, which is sorted by ticket).
pub(crate) fn decide(queue: &[Queued], me: usize, kind: Kind) -> Decision {
    let ahead = &queue[..me.min(queue.len())];
    match kind {
        Kind::Exclusive => match ahead.last() {
            None => Decision::Hold,
            Some(pred) => Decision::Wait(Wait {
                blockers: vec![(pred.key.clone(), pred.ticket)],
            }),
        },
        Kind::Shared => {
            let writers: Vec<&Queued> = ahead.iter().filter(|q| !q.shared).collect();
            match writers.last() {
                None => Decision::Hold,
                Some(w) => Decision::Wait(Wait {
                    blockers: vec![(w.key.clone(), w.ticket)],
                }),
            }
        }
        Kind::Permit(n) => {
            let n = n.max(1) as usize;
            if ahead.len() < n {
                return Decision::Hold;
            }
            Decision::Wait(Wait {
                blockers: ahead.iter().map(|q| (q.key.clone(), q.ticket)).collect(),
            })
        }
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

    fn wait(blockers: &[u64]) -> Decision {
        Decision::Wait(Wait {
            blockers: blockers
                .iter()
                .map(|&t| (format!("k{t}"), Revision::new(t).unwrap()))
                .collect(),
        })
    }

    #[test]
    fn exclusive_entries_hold_first_and_wait_for_their_predecessor() {
        let queue = q("w w w");
        assert_eq!(decide(&queue, 0, Kind::Exclusive), Decision::Hold);
        assert_eq!(decide(&queue, 1, Kind::Exclusive), wait(&[1]));
        assert_eq!(decide(&queue, 2, Kind::Exclusive), wait(&[2]));
        // a writer waits for readers ahead too
        assert_eq!(decide(&q("r r w"), 2, Kind::Exclusive), wait(&[2]));
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
        assert_eq!(decide(&queue, 4, Kind::Shared), wait(&[4]));
        // behind two writers: wait for the nearest, then look again
        assert_eq!(decide(&queue, 6, Kind::Shared), wait(&[6]));
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
        assert_eq!(decide(&queue, 3, Kind::Permit(3)), wait(&[1, 2, 3]));
        assert_eq!(decide(&queue, 4, Kind::Permit(3)), wait(&[1, 2, 3, 4]));
        assert_eq!(holders(&queue, Some(3)), 3);
        // a zero permit count is treated as one, never as "nobody may hold"
        assert_eq!(decide(&queue, 0, Kind::Permit(0)), Decision::Hold);
    }

    #[test]
    fn an_index_past_the_queue_is_treated_as_last() {
        assert_eq!(decide(&q("w"), 5, Kind::Exclusive), wait(&[1]));
    }
}
