//! Campaigning: wait on the leader key's watch until it is free and it is our turn, then race
//! one conditional write for it — the creation of the leader lease.
//!
//! The same watch follows the candidate registrations `E.cand.*`, whose lease origins form
//! the line ([`Line`]): the first in line races at once, each further place one grace period
//! later, so a failover costs one write instead of one per candidate.

mod candidate;
mod rule;

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;

use kvtk_core::lease::{Lease, SessionId};
use kvtk_core::Revision;

use self::candidate::Candidate;
use crate::error::{Error, ErrorKind};
use crate::leadership::Leadership;
use crate::lost::LostReason;
use crate::names::validate_name;
use crate::record::Record;
use crate::shared::Shared;

/// How long a leader stepping down waits for its campaign's watch to show the line.
const CATCH_UP: std::time::Duration = std::time::Duration::from_millis(500);

/// A campaign being configured; await it to wait until elected.
///
/// ```no_run
/// # async fn demo(election: kvtk_leader::Election) -> Result<(), kvtk_leader::Error> {
/// let leadership = election.campaign("node-1").value("10.0.0.1:8080").await?;
/// # drop(leadership);
/// # Ok(()) }
/// ```
///
/// # Cancel safety
/// Dropping a waiting campaign stops it; its registration is no longer renewed and expires
/// within one TTL. If the campaign is dropped while its winning write is in flight, that
/// write may take the leader key with nobody to renew it: nobody acts as leader, and the key
/// expires within one TTL as after a crash.
#[must_use = "a campaign does nothing until awaited"]
#[derive(Debug)]
pub struct Campaign {
    shared: Arc<Shared>,
    id: String,
    value: String,
    /// A campaign prepared by a leader stepping down: its registration and a watch opened
    /// before the resignation.
    prepared: Option<Box<Candidate>>,
}

impl Campaign {
    pub(crate) fn new(shared: Arc<Shared>, id: String) -> Campaign {
        Campaign {
            shared,
            id,
            value: String::new(),
            prepared: None,
        }
    }

    /// The campaign of a leader about to step down, keeping its `registration`. Its watch
    /// opens now, before the resignation, so it sees every term that follows (a watch opened
    /// later shows only the latest, and the line would misplace whoever led in between).
    pub(crate) async fn before_step_down(
        shared: Arc<Shared>,
        id: String,
        value: String,
        registration: Option<Lease>,
    ) -> Campaign {
        let mut c = Candidate::new(shared.clone(), id.clone(), value.clone(), registration);
        if let Err(e) = c.start_watch().await {
            // The campaign opens it again when it runs.
            tracing::debug!(error = %e, "watch before stepping down failed");
        }
        Campaign {
            shared,
            id,
            value,
            prepared: Some(Box::new(c)),
        }
    }

    /// With registrations bound to sessions, whom a leader stepping down hands over to (see
    /// [`Candidate::successor`]), once the campaign's watch delivered the election's state
    /// (waiting at most [`CATCH_UP`] for it; without it, the step-down resigns).
    async fn successor(&mut self) -> Option<(Record, SessionId)> {
        let c = self.prepared.as_mut().filter(|_| self.shared.bind)?;
        c.catch_up(CATCH_UP).await;
        c.successor()
    }

    /// Records that we led until `revision` (our resignation's tombstone).
    pub(crate) fn stepped_down(mut self, revision: Revision) -> Campaign {
        if let Some(c) = self.prepared.as_mut() {
            c.stepped_down(revision);
        }
        self
    }

    /// The value to publish while leading (an address, metadata as JSON, ...).
    pub fn value(mut self, value: impl Into<String>) -> Self {
        self.value = value.into();
        self
    }

    async fn run(self) -> Result<Leadership, Error> {
        validate_name("candidate id", &self.id)?;
        let shared = self.shared;
        if shared.closing.is_cancelled() {
            return Err(Error::new(ErrorKind::Closed, "the election was shut down"));
        }
        shared.check_bucket().await?;
        let mut c = match self.prepared {
            Some(c) => *c,
            None => Candidate::new(shared, self.id, self.value, None),
        };
        c.run().await
    }
}

impl IntoFuture for Campaign {
    type Output = Result<Leadership, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// Stepping down is the start of a campaign, so it lives here: the leadership handle knows
/// nothing of campaigns (and the campaign's win is a leadership).
impl Leadership {
    /// Steps down and returns the campaign to lead again, keeping our candidate
    /// registration: the cheapest graceful failover. We stand in line behind every
    /// candidate that registered before we stepped down, so leadership rotates through the
    /// waiting candidates in order.
    ///
    /// It costs one write either way: the resignation, after which the next in line takes
    /// the key with a write of its own; or, with registrations bound to sessions
    /// ([`ElectionBuilder::bind_to_session`](crate::ElectionBuilder::bind_to_session)), a
    /// **hand-over**: the leader key written for the first live candidate in line, bound
    /// to its session, which that candidate takes over without writing (its term is the
    /// hand-over's revision). If the successor left meanwhile, the next in line removes the
    /// hand-over and takes the key.
    ///
    /// ```no_run
    /// # async fn demo(leadership: kvtk_leader::Leadership) -> Result<(), kvtk_leader::Error> {
    /// // Rotate: let the next candidate lead, and queue to lead again.
    /// let again = leadership.step_down().await.await?;
    /// # drop(again);
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// As [`resign`](Leadership::resign); if the future is dropped after the resignation,
    /// the registration is dropped with it and expires within one TTL.
    pub async fn step_down(self) -> Campaign {
        let held = self.held();
        let mut campaign = Campaign::before_step_down(
            self.shared(),
            held.id().to_string(),
            held.value(),
            held.take_registration(),
        )
        .await;
        let led_until = held.lease().revision();
        let left = match campaign.successor().await {
            Some((to, session)) => held.hand_over_bound(to, session).await,
            None => held.resign(LostReason::Resigned).await,
        };
        campaign.stepped_down(left.unwrap_or(led_until))
    }
}
