//! The line of candidates: who races for a free leader key first.
//!
//! Registrations `E.cand.<id>` are leases; their origins (the revisions that created them)
//! order the candidates. When the leader key is free, only the first in line races for it;
//! each further place waits one more grace period, so a dead or cut-off successor delays the
//! election by about one grace, not until its registration expires. Pure code: the campaign
//! loop feeds it watch events and asks it for our place; an operator's view (`kvtk ui`)
//! feeds it the same events and shows [`Line::order`].

use std::collections::HashMap;
use std::time::Duration;

use kvtk_core::{Entry, Revision};

use crate::record::Record;

/// The line of an election's candidates — the order in which they race for a free leader
/// key — as a watch of the election's keys (`E.cand.*` and `E.leader`) shows it.
///
/// Candidates stand in the order of their registrations' origins; a candidate that led
/// stands from the last leader-key revision it wrote (or its resignation), behind everyone
/// registered before it stepped down (while it leads its place is moot; a leader renewing
/// its lease moves back with each renewal). The line only paces the race (safety never depends on
/// it), so two watchers that began at different times may place a candidate that led
/// before both of them differently: the bucket keeps one revision of the leader key.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = kvtk_tests::NatsServer::start().await;
/// use std::future::IntoFuture as _;
/// use std::time::Duration;
/// use futures::StreamExt as _;
/// use kvtk_core::{Kv, WatchEvent};
/// use kvtk_leader::{Election, Line};
///
/// let kv = Kv::connect(&server.client_url()).await?;
/// let bucket = kv.create_or_open(Election::bucket_config("elections")).await?;
/// let election = Election::new(bucket.clone(), "scheduler", Duration::from_secs(5))?;
/// let leading = election.campaign("node-1").await?; // the key was free
/// let waiting = tokio::spawn(election.campaign("node-2").into_future()); // registers, waits
///
/// let mut watch = bucket.watch(["scheduler.>"]).await?;
/// let mut line = Line::default();
/// while line.order().len() < 2 {
///     if let Some(WatchEvent::Entry(e)) = watch.next().await.transpose()? {
///         line.observe("scheduler", &e);
///     }
/// }
/// // node-1 registered and led first; once it steps down it stands behind node-2.
/// assert_eq!(line.order(), ["node-1", "node-2"]);
/// waiting.abort();
/// # drop(leading);
/// # Ok(()) }
/// ```
#[derive(Debug, Default, Clone)]
pub struct Line {
    /// Candidate id → (registration origin, `None` once removed; latest revision seen).
    regs: HashMap<String, (Option<Revision>, Revision)>,
    /// Candidate id → the last revision of the leader key we saw it write. A candidate that
    /// led stands in line from there — behind everyone registered before it stepped down —
    /// whether it keeps its registration or makes a new one.
    led: HashMap<String, Revision>,
    /// Registration lease nonce → candidate id: a leader's lease carries its registration's
    /// nonce, so a leader-key tombstone names who left even to a watcher that never saw
    /// the leader's value.
    owners: HashMap<u128, String>,
    /// Who wrote the leader key's latest value, to name who left at its tombstone.
    last_leader: Option<String>,
}

impl Line {
    /// Takes one entry of election `election`'s watch (`<election>.cand.<id>` or
    /// `<election>.leader`; other keys are ignored), in revision order.
    pub fn observe(&mut self, election: &str, e: &Entry) {
        let Some(rest) = e.key().as_str().strip_prefix(election) else {
            return;
        };
        match rest.strip_prefix(".cand.") {
            Some(id) => self.registration(id, e),
            None if rest == ".leader" => {
                self.leader_key(e);
            }
            None => {}
        }
    }

    /// The live candidates, first in line first.
    pub fn order(&self) -> Vec<String> {
        let mut live: Vec<(Revision, &str)> = self
            .regs
            .iter()
            .filter_map(|(id, (o, _))| Some((self.place(id, (*o)?), id.as_str())))
            .collect();
        live.sort_unstable();
        live.into_iter().map(|(_, id)| id.to_string()).collect()
    }

    /// Takes one revision of candidate `id`'s registration key.
    pub(crate) fn registration(&mut self, id: &str, e: &Entry) {
        let origin = e
            .is_value()
            .then(|| e.lease().map_or(e.revision(), |t| t.origin()));
        if let Some(t) = e.lease().filter(|_| e.is_value()) {
            self.owner(t.nonce(), id);
        }
        self.apply(id, e.revision(), origin);
    }

    /// Takes one revision of the leader key; returns who led until that revision, if known
    /// (the writer of a value, or the leader that left at a tombstone or marker).
    pub(crate) fn leader_key(&mut self, e: &Entry) -> Option<(String, Revision)> {
        // A value of a format this library does not know names nobody (the campaign
        // refuses it on its own).
        let id = match Record::from_entry(e).ok().flatten() {
            Some(r) => {
                // A hand-over: the leader it replaces led until here.
                if let Some(prev) = self.last_leader.replace(r.id.clone()) {
                    if prev != r.id {
                        self.led(&prev, e.revision());
                    }
                }
                r.id
            }
            None if !e.is_value() => {
                let named = e
                    .lease()
                    .and_then(|t| self.owner_of(t.nonce()).map(str::to_string));
                self.last_leader.take().or(named)?
            }
            None => return None,
        };
        self.led(&id, e.revision());
        Some((id, e.revision()))
    }

    /// A line that already knows who led when (from earlier campaigns of the same handle).
    pub(crate) fn with_led(led: HashMap<String, Revision>) -> Line {
        Line {
            led,
            ..Line::default()
        }
    }

    /// Records that the registration lease with `nonce` is `id`'s.
    fn owner(&mut self, nonce: u128, id: &str) {
        self.owners.insert(nonce, id.to_string());
    }

    /// The candidate whose registration lease has `nonce`.
    fn owner_of(&self, nonce: u128) -> Option<&str> {
        self.owners.get(&nonce).map(String::as_str)
    }

    /// Applies one revision of `id`'s registration: `origin` of a live value, `None` for a
    /// removal. Revisions older than what we have are ignored.
    fn apply(&mut self, id: &str, revision: Revision, origin: Option<Revision>) {
        if self.regs.get(id).is_some_and(|(_, seen)| *seen >= revision) {
            return;
        }
        self.regs.insert(id.to_string(), (origin, revision));
    }

    /// Takes candidate `id` out of line as of `revision` (its session ended), unless a
    /// later revision of its registration was seen.
    pub(crate) fn gone(&mut self, id: &str, revision: Revision) {
        if let Some(reg) = self.regs.get_mut(id).filter(|(_, seen)| *seen <= revision) {
            *reg = (None, revision);
        }
    }

    /// Who wrote the leader key's latest value, as far as this line saw.
    pub(crate) fn last_leader(&self) -> Option<&str> {
        self.last_leader.as_deref()
    }

    /// Records that `id` wrote the leader key at `revision`.
    pub(crate) fn led(&mut self, id: &str, revision: Revision) {
        let last = self.led.entry(id.to_string()).or_insert(revision);
        *last = (*last).max(revision);
    }

    /// Where a registration made at `origin` stands.
    fn place(&self, id: &str, origin: Revision) -> Revision {
        self.led.get(id).map_or(origin, |l| origin.max(*l))
    }

    /// How many live candidates stand before us (`origin`: our registration's; `None` when
    /// we are not registered, which puts us last).
    pub(crate) fn rank(&self, me: &str, origin: Option<Revision>) -> usize {
        let mine = origin.map(|o| self.place(me, o));
        self.regs
            .iter()
            .filter(|(id, _)| id.as_str() != me)
            .filter_map(|(id, (o, _))| Some((id, self.place(id, (*o)?))))
            .filter(|(id, o)| mine.is_none_or(|m| (*o, id.as_str()) < (m, me)))
            .count()
    }
}

/// How long a free leader key waits for earlier candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pace {
    /// Per place in line.
    pub(crate) grace: Duration,
    /// After this everyone races: every registration that was dead when the key became free
    /// has expired by then (one lease TTL).
    pub(crate) last_resort: Duration,
}

impl Pace {
    /// How long after the key became free the candidate `rank` places back may race.
    pub(crate) fn due(&self, rank: usize) -> Duration {
        let rank = u32::try_from(rank).unwrap_or(u32::MAX);
        self.grace
            .checked_mul(rank)
            .map_or(self.last_resort, |d| d.min(self.last_resort))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(n: u64) -> Revision {
        Revision::new(n).unwrap()
    }

    fn line(regs: &[(&str, u64)]) -> Line {
        let mut l = Line::default();
        for (id, o) in regs {
            l.apply(id, rev(*o), Some(rev(*o)));
        }
        l
    }

    #[test]
    fn rank_is_the_number_of_older_live_registrations() {
        let l = line(&[("a", 3), ("b", 5), ("c", 8)]);
        // (me, our origin, who led at which revision, rank)
        type Case<'a> = (&'a str, Option<u64>, Option<(&'a str, u64)>, usize);
        let cases: &[Case<'_>] = &[
            ("a", Some(3), None, 0),
            ("b", Some(5), None, 1),
            ("c", Some(8), None, 2),
            // Not registered (yet, or lost): last.
            ("d", None, None, 3),
            // Our own registration not yet seen by the watch: placed by our lease's origin.
            ("d", Some(9), None, 3),
            // A leader that stepped down stands behind those registered before it left...
            ("b", Some(5), Some(("a", 20)), 0),
            ("c", Some(8), Some(("a", 20)), 1),
            // ...but not behind those registered later.
            ("c", Some(8), Some(("a", 2)), 2),
            // The leader itself, with its old registration or a new one, queues at the back.
            ("a", Some(3), Some(("a", 20)), 2),
            ("a", Some(30), Some(("a", 20)), 2),
        ];
        for (me, origin, led, want) in cases {
            let mut l = l.clone();
            if let Some((id, r)) = led {
                l.led(id, rev(*r));
            }
            assert_eq!(
                l.rank(me, origin.map(rev)),
                *want,
                "{me} {origin:?} {led:?}"
            );
        }
    }

    #[test]
    fn removals_and_renewals_move_the_line() {
        let mut l = line(&[("a", 3), ("b", 5), ("c", 8)]);
        // A renewal keeps the origin.
        l.apply("a", rev(10), Some(rev(3)));
        assert_eq!(l.rank("c", Some(rev(8))), 2);
        // The successor's registration expires (watched): the next is first.
        l.apply("a", rev(11), None);
        assert_eq!(l.rank("b", Some(rev(5))), 0);
        // A late, older revision does not bring it back.
        l.apply("a", rev(10), Some(rev(3)));
        assert_eq!(l.rank("b", Some(rev(5))), 0);
        // Re-registering puts it at the back.
        l.apply("a", rev(12), Some(rev(12)));
        assert_eq!(l.rank("a", Some(rev(12))), 2);
    }

    #[test]
    fn the_order_lists_each_live_candidate_at_its_rank() {
        let mut l = line(&[("a", 3), ("b", 5), ("c", 8)]);
        l.led("a", rev(20));
        l.apply("b", rev(21), None);
        let order = l.order();
        assert_eq!(order, ["c", "a"]);
        for (place, (id, origin)) in [("c", 8), ("a", 3)].into_iter().enumerate() {
            assert_eq!(order[place], id);
            assert_eq!(l.rank(id, Some(rev(origin))), place);
        }
    }

    #[test]
    fn ties_are_broken_by_id() {
        let mut l = Line::default();
        l.apply("x", rev(4), Some(rev(4)));
        l.apply("y", rev(4), Some(rev(4)));
        assert_eq!(l.rank("x", Some(rev(4))), 0);
        assert_eq!(l.rank("y", Some(rev(4))), 1);
    }

    #[test]
    fn each_place_waits_one_more_grace_until_the_last_resort() {
        let pace = Pace {
            grace: Duration::from_millis(200),
            last_resort: Duration::from_secs(2),
        };
        let ms = Duration::from_millis;
        for (rank, want) in [
            (0, ms(0)),
            (1, ms(200)),
            (2, ms(400)),
            (9, ms(1800)),
            (10, ms(2000)),
            (49, ms(2000)),
            (usize::MAX, ms(2000)),
        ] {
            assert_eq!(pace.due(rank), want, "rank {rank}");
        }
    }
}
