//! Leader election: candidates campaign, lead briefly, then resign or step down (a step-down
//! of a session-bound election hands over in one write); an observer follows the terms.

use std::time::Duration;

use futures::StreamExt;
use kvtk_leader::{Campaign, Election, Leadership, Observed};
use kvtk_tests::history::{History, Mode, Op};
use rand::Rng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{bounded, settle};

/// Starts one candidate per election handle (each on its own connection) and one observer per
/// observer handle.
pub(crate) fn start(
    tasks: &mut JoinSet<()>,
    candidates: Vec<Election>,
    observers: Vec<Election>,
    history: &History,
    stop: &CancellationToken,
) {
    for (i, election) in candidates.into_iter().enumerate() {
        let c = Candidate {
            election,
            id: format!("cand-{i}"),
            history: history.clone(),
            stop: stop.clone(),
        };
        tasks.spawn(c.run());
    }
    for (i, election) in observers.into_iter().enumerate() {
        tasks.spawn(observe(
            election,
            format!("observer-{i}"),
            history.clone(),
            stop.clone(),
        ));
    }
}

struct Candidate {
    election: Election,
    id: String,
    history: History,
    stop: CancellationToken,
}

impl Candidate {
    async fn run(self) {
        let name = self.election.name().to_string();
        let mut next = None;
        while !self.stop.is_cancelled() {
            let op = self.history.invoke(
                &self.id,
                Op::Acquire {
                    lock: name.clone(),
                    mode: Mode::Leader,
                },
            );
            let campaign = next
                .take()
                .unwrap_or_else(|| self.election.campaign(&self.id));
            let out = bounded(&self.stop, campaign).await;
            if let Some(leadership) = settle(op, out, |l: &Leadership| Some(l.term().get())) {
                next = self.lead(&name, leadership).await;
            }
        }
    }

    /// Leads for a while, then resigns or (one time in two) steps down, which returns the
    /// campaign to lead again.
    async fn lead(&self, name: &str, leadership: Leadership) -> Option<Campaign> {
        let term = leadership.term().get();
        let work = Duration::from_millis(rand::rng().random_range(20..200));
        let lost = tokio::select! {
            _ = leadership.lost() => true,
            () = tokio::time::sleep(work) => !leadership.is_leader(),
        };
        if lost {
            let what = Op::Lost {
                lock: name.to_string(),
                token: term,
            };
            self.history.instant(&self.id, what, None);
        }
        let what = Op::Release {
            lock: name.to_string(),
            token: term,
        };
        let op = self.history.invoke(&self.id, what);
        if rand::rng().random_bool(0.5) {
            // A step-down has no error: the leadership ended once it returns.
            let campaign = bounded(&self.stop, leadership.step_down()).await;
            let out = campaign.as_ref().map(|_| Ok::<(), kvtk_leader::Error>(()));
            settle(op, out, |_| None);
            return campaign;
        }
        settle(op, bounded(&self.stop, leadership.resign()).await, |_| None);
        None
    }
}

/// Follows the election, recording each leader seen; restarts when the observer ends.
async fn observe(election: Election, client: String, history: History, stop: CancellationToken) {
    let name = election.name().to_string();
    while !stop.is_cancelled() {
        history.instant(
            &client,
            Op::ObserveStart {
                election: name.clone(),
            },
            None,
        );
        let Some(Ok(mut observer)) = bounded(&stop, election.observe()).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        loop {
            let next = tokio::select! {
                next = observer.next() => next,
                () = stop.cancelled() => return,
            };
            match next {
                Some(Observed::Leader(l)) => {
                    history.instant(
                        &client,
                        Op::Observe {
                            election: name.clone(),
                        },
                        Some(l.term.get()),
                    );
                }
                Some(_) => {}
                None => break,
            }
        }
    }
}
