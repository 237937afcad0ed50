//! The client side of a server-side lease, as pure code (no I/O, no clock of its own).
//!
//! A lease is a key written with a per-key TTL. The **server** expires it on its own clock
//! when it is not rewritten within the TTL. The **client** must stop believing it holds the
//! lease strictly before that can happen, without ever comparing its clock with the server's:
//!
//! ```text
//! deadline = send time of the last successful write + TTL − margin     (monotonic clock)
//! ```
//!
//! The server starts the TTL when it *stores* the write, which is after we *sent* it, so
//! counting from the send time is conservative by the request's one-way latency. The margin
//! covers clock-rate drift between the two machines and the time the holder needs to notice
//! and stop its work.
//!
//! [`LeaseClock`] holds that arithmetic; the [`Keeper`](super::Keeper) that drives it only
//! feeds it send times and asks it what to do next. It takes `tokio::time::Instant`, so its
//! tests run on paused time.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, ErrorKind};
use crate::retry::{Backoff, Retrying};
use crate::revision::Ttl;

/// Timing of a lease: TTL, renewal interval and safety margin.
///
/// ```
/// use std::time::Duration;
/// use kvtk_core::lease::LeaseConfig;
/// let cfg = LeaseConfig::new(Duration::from_secs(10)).unwrap();
/// assert_eq!(cfg.renew_every(), Duration::from_millis(3333));
/// assert_eq!(cfg.margin(), Duration::from_secs(1));
/// assert!(LeaseConfig::new(Duration::from_millis(500)).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    ttl: Ttl,
    renew_every: Duration,
    margin: Duration,
}

/// How long a replicated stream may be without a leader after losing one, with room to
/// spare: the server's Raft election timeout is randomised in the 4–9 s range, and killing a
/// stream leader stopped writes for 5.8–9.7 s here (nats-server 2.15.1). No renewal lands
/// meanwhile.
pub const STREAM_LEADER_ELECTION: Duration = Duration::from_secs(10);

/// The default TTL of leases on replicated buckets: the shortest whole ten seconds with
/// which a healthy holder keeps its lease through a stream-leader election at the default
/// renewal interval and margin (see [`LeaseConfig::rides_through_election`]).
pub const REPLICATED_TTL: Duration = Duration::from_secs(30);

/// The default margin: a tenth of the TTL, at least 100 ms and at most 2 s.
fn default_margin(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(2))
}

impl LeaseConfig {
    /// A lease of `ttl` (whole seconds, ≥ 1 s), renewed every TTL/3, with the default margin
    /// (TTL/10, clamped to 100 ms..=2 s).
    pub fn new(ttl: Duration) -> Result<LeaseConfig, Error> {
        let ttl = Ttl::new(ttl)?;
        let d = ttl.as_duration();
        LeaseConfig {
            ttl,
            // Whole milliseconds keep logs and tests readable.
            renew_every: Duration::from_millis((d.as_millis() / 3) as u64),
            margin: default_margin(d),
        }
        .validated()
    }

    /// Renews every `every` instead of TTL/3. Must leave time to retry before the deadline:
    /// `every < TTL − margin`.
    pub fn with_renew_every(mut self, every: Duration) -> Result<LeaseConfig, Error> {
        self.renew_every = every;
        self.validated()
    }

    /// Uses another safety margin (`0 < margin < TTL`).
    pub fn with_margin(mut self, margin: Duration) -> Result<LeaseConfig, Error> {
        self.margin = margin;
        self.validated()
    }

    fn validated(self) -> Result<LeaseConfig, Error> {
        let ttl = self.ttl.as_duration();
        if self.margin.is_zero() || self.margin >= ttl {
            return Err(invalid(format!(
                "lease margin {:?} must be above zero and below the ttl {:?}",
                self.margin, ttl
            )));
        }
        if self.renew_every.is_zero() || self.renew_every >= ttl - self.margin {
            return Err(invalid(format!(
                "renew interval {:?} must be above zero and below ttl − margin ({:?})",
                self.renew_every,
                ttl - self.margin
            )));
        }
        Ok(self)
    }

    /// The server-side TTL.
    pub fn ttl(&self) -> Ttl {
        self.ttl
    }
    /// The renewal interval.
    pub fn renew_every(&self) -> Duration {
        self.renew_every
    }
    /// The safety margin.
    pub fn margin(&self) -> Duration {
        self.margin
    }
    /// How long a confirmed write keeps the lease valid locally: TTL − margin.
    pub fn validity(&self) -> Duration {
        self.ttl.as_duration() - self.margin
    }

    /// Whether a healthy holder keeps the lease through a stream-leader election on a
    /// replicated bucket: a renewal due just after the leader is lost still lands, after the
    /// election and one retry, before the local deadline —
    /// `renew_every + STREAM_LEADER_ELECTION + the longest retry delay ≤ TTL − margin`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kvtk_core::lease::{LeaseConfig, REPLICATED_TTL};
    /// assert!(!LeaseConfig::new(Duration::from_secs(10)).unwrap().rides_through_election());
    /// assert!(LeaseConfig::new(REPLICATED_TTL).unwrap().rides_through_election());
    /// // A shorter TTL rides through too when it renews often enough.
    /// let fast = LeaseConfig::new(Duration::from_secs(15)).unwrap()
    ///     .with_renew_every(Duration::from_secs(2)).unwrap();
    /// assert!(fast.rides_through_election());
    /// ```
    pub fn rides_through_election(&self) -> bool {
        self.renew_every + STREAM_LEADER_ELECTION + Backoff::DEFAULT.max() <= self.validity()
    }

    /// The default lease for a bucket with `replicas` replicas: `ttl` on one server, and
    /// at least [`REPLICATED_TTL`] on a replicated bucket, so that a stream-leader election
    /// does not cost healthy holders their leases. Failover after a crash then takes up to
    /// that TTL.
    ///
    /// Every recipe takes its default lease from here (kvtk-locks, kvtk-leader's candidates
    /// and leaderships, kvtk-membership's members, kvtk-config's fleet acknowledgements), or
    /// through [`LeaseConfig::for_bucket`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use kvtk_core::lease::{LeaseConfig, REPLICATED_TTL};
    /// let ten = Duration::from_secs(10);
    /// assert_eq!(LeaseConfig::default_for(1, ten).unwrap().ttl().as_duration(), ten);
    /// let r3 = LeaseConfig::default_for(3, ten).unwrap();
    /// assert_eq!(r3.ttl().as_duration(), REPLICATED_TTL);
    /// assert!(r3.rides_through_election());
    /// ```
    pub fn default_for(replicas: usize, ttl: Duration) -> Result<LeaseConfig, Error> {
        if replicas > 1 {
            LeaseConfig::new(ttl.max(REPLICATED_TTL))
        } else {
            LeaseConfig::new(ttl)
        }
    }

    /// The lease a recipe uses on a bucket with `replicas` replicas: the application's
    /// `configured` lease when it chose one (checked with
    /// [`warn_unless_rides_through`](LeaseConfig::warn_unless_rides_through)), else
    /// [`default_for`](LeaseConfig::default_for)`(replicas, default_ttl)`. `bucket` and
    /// `recipe` name the warning's context.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kvtk_core::lease::{LeaseConfig, REPLICATED_TTL};
    /// let five = Duration::from_secs(5);
    /// let default = LeaseConfig::for_bucket(None, 3, five, "b", "leader").unwrap();
    /// assert_eq!(default.ttl().as_duration(), REPLICATED_TTL);
    /// let chosen = LeaseConfig::new(five).unwrap();
    /// assert_eq!(LeaseConfig::for_bucket(Some(chosen), 3, five, "b", "leader").unwrap(), chosen);
    /// ```
    pub fn for_bucket(
        configured: Option<LeaseConfig>,
        replicas: usize,
        default_ttl: Duration,
        bucket: &str,
        recipe: &str,
    ) -> Result<LeaseConfig, Error> {
        match configured {
            Some(lease) => {
                lease.warn_unless_rides_through(replicas, bucket, recipe);
                Ok(lease)
            }
            None => LeaseConfig::default_for(replicas, default_ttl),
        }
    }

    /// The toolkit's one check of a configured lease: on a replicated bucket
    /// (`replicas > 1`) a lease that does not [ride through](LeaseConfig::rides_through_election)
    /// a stream-leader election is **warned about** (`tracing::warn!` naming the bucket, the
    /// recipe and the TTL), not refused: a shorter lease is a legitimate trade — faster
    /// failover after a crash against healthy holders demoting themselves (safely) during a
    /// routine leader change — and single-server buckets have no such election. The doctor
    /// reports the same lease as `lease-ttl-below-election`. Returns whether it warned.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kvtk_core::lease::{LeaseConfig, REPLICATED_TTL};
    /// let short = LeaseConfig::new(Duration::from_secs(5)).unwrap();
    /// assert!(short.warn_unless_rides_through(3, "app", "membership"));
    /// assert!(!short.warn_unless_rides_through(1, "app", "membership"));
    /// let default = LeaseConfig::new(REPLICATED_TTL).unwrap();
    /// assert!(!default.warn_unless_rides_through(3, "app", "membership"));
    /// ```
    pub fn warn_unless_rides_through(&self, replicas: usize, bucket: &str, recipe: &str) -> bool {
        if replicas < 2 || self.rides_through_election() {
            return false;
        }
        tracing::warn!(
            bucket,
            recipe,
            replicas,
            ttl = ?self.ttl.as_duration(),
            renew_every = ?self.renew_every,
            "this lease does not ride through a stream-leader election on a replicated bucket: \
             healthy holders, leaders or members lose their lease when a server fails \
             (use kvtk_core::lease::REPLICATED_TTL, the default, or see \
             LeaseConfig::rides_through_election)"
        );
        true
    }
}

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidArgument, msg)
}

/// What the renewal task should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Renew at this instant.
    RenewAt(Instant),
    /// The lease can no longer be trusted: report loss now.
    Lost,
}

/// The local view of one held lease.
///
/// ```
/// use std::time::Duration;
/// use kvtk_core::lease::{LeaseClock, LeaseConfig};
/// use tokio::time::Instant;
/// let cfg = LeaseConfig::new(Duration::from_secs(3)).unwrap();
/// let sent = Instant::now();
/// let clock = LeaseClock::new(cfg, sent);
/// assert_eq!(clock.deadline(), sent + Duration::from_millis(2700));
/// assert!(clock.is_valid(sent + Duration::from_secs(2)));
/// assert!(!clock.is_valid(sent + Duration::from_millis(2700)));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LeaseClock {
    cfg: LeaseConfig,
    confirmed_sent_at: Instant,
    /// Failed renewals in a row, and the delay the last one earned before the next attempt.
    retrying: Retrying,
    retry_in: Duration,
}

impl LeaseClock {
    /// A lease whose acquiring write was sent at `sent_at` and acknowledged.
    pub fn new(cfg: LeaseConfig, sent_at: Instant) -> LeaseClock {
        LeaseClock {
            cfg,
            confirmed_sent_at: sent_at,
            retrying: Backoff::DEFAULT.start(),
            retry_in: Duration::ZERO,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    /// The instant after which the lease must be considered lost.
    pub fn deadline(&self) -> Instant {
        self.confirmed_sent_at + self.cfg.validity()
    }

    /// Whether the lease is still trustworthy at `now`.
    pub fn is_valid(&self, now: Instant) -> bool {
        now < self.deadline()
    }

    /// Time left before the deadline (zero when past it): the lease slack.
    pub fn slack(&self, now: Instant) -> Duration {
        self.deadline().saturating_duration_since(now)
    }

    /// A renewal sent at `sent_at` was acknowledged. Out-of-order acknowledgements of older
    /// sends never move the deadline back.
    pub fn renewed(&mut self, sent_at: Instant) {
        if sent_at > self.confirmed_sent_at {
            self.confirmed_sent_at = sent_at;
        }
        self.retrying.reset();
    }

    /// A renewal attempt failed in a way that may be transient (timeout, no connection):
    /// the next one comes after the delay this failure earns ([`Backoff::DEFAULT`]).
    pub fn renewal_failed(&mut self) {
        self.retry_in = self.retrying.failed();
    }

    /// Consecutive failed renewals.
    pub fn failures(&self) -> u32 {
        self.retrying.failures()
    }

    /// What to do at `now`: renew at the regular interval, or sooner with backoff after
    /// failures, or report loss once the deadline has passed. A runtime stalled past the
    /// deadline gets `Lost` here, never a late renewal.
    pub fn next(&self, now: Instant) -> Next {
        if !self.is_valid(now) {
            return Next::Lost;
        }
        let at = if self.retrying.failures() == 0 {
            self.confirmed_sent_at + self.cfg.renew_every
        } else {
            now + self.retry_in
        };
        Next::RenewAt(at.min(self.deadline()).max(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ttl: u64) -> LeaseConfig {
        LeaseConfig::new(Duration::from_secs(ttl)).unwrap()
    }

    #[test]
    fn defaults_and_validation() {
        let c = cfg(1);
        assert_eq!(c.margin(), Duration::from_millis(100));
        assert_eq!(c.renew_every(), Duration::from_millis(333));
        let c = cfg(60);
        assert_eq!(c.margin(), Duration::from_secs(2));
        assert!(LeaseConfig::new(Duration::ZERO).is_err());
        assert!(LeaseConfig::new(Duration::from_millis(1500)).is_err());
        assert!(cfg(3).with_margin(Duration::ZERO).is_err());
        assert!(cfg(3).with_margin(Duration::from_secs(3)).is_err());
        assert!(cfg(3).with_renew_every(Duration::from_secs(3)).is_err());
        assert!(cfg(3).with_renew_every(Duration::from_secs(1)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_counts_from_send_time_not_ack_time() {
        let c = cfg(3);
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(400)).await; // slow ack
        let clock = LeaseClock::new(c, sent);
        assert_eq!(clock.deadline(), sent + Duration::from_millis(2700));
        assert_eq!(clock.slack(Instant::now()), Duration::from_millis(2300));
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_extend_and_old_acks_do_not_shrink() {
        let c = cfg(3);
        let t0 = Instant::now();
        let mut clock = LeaseClock::new(c, t0);
        assert_eq!(clock.next(t0), Next::RenewAt(t0 + Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        let t1 = Instant::now();
        clock.renewed(t1);
        assert_eq!(clock.deadline(), t1 + Duration::from_millis(2700));
        clock.renewed(t0); // a late ack of an older send
        assert_eq!(clock.deadline(), t1 + Duration::from_millis(2700));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_retry_fast_then_lose_at_deadline() {
        let c = cfg(3);
        let t0 = Instant::now();
        let mut clock = LeaseClock::new(c, t0);
        tokio::time::advance(Duration::from_secs(1)).await;
        clock.renewal_failed();
        let now = Instant::now();
        let Next::RenewAt(at) = clock.next(now) else {
            panic!("still valid")
        };
        assert!(at >= now + Duration::from_millis(25) && at <= now + Duration::from_millis(50));
        for _ in 0..10 {
            clock.renewal_failed();
        }
        // backoff is capped at 1 s and never past the deadline
        let Next::RenewAt(at) = clock.next(Instant::now()) else {
            panic!("still valid")
        };
        assert!(at <= clock.deadline());
        tokio::time::advance(Duration::from_millis(1700)).await;
        assert_eq!(clock.next(Instant::now()), Next::Lost);
        assert_eq!(clock.slack(Instant::now()), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_runtime_sees_loss_not_a_late_renewal() {
        let c = cfg(2);
        let t0 = Instant::now();
        let clock = LeaseClock::new(c, t0);
        // The renewal was due at t0 + 666 ms, but the task only wakes at t0 + 5 s.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.next(Instant::now()), Next::Lost);
    }

    #[tokio::test(start_paused = true)]
    async fn outage_shorter_than_validity_keeps_the_lease() {
        let c = cfg(3);
        let t0 = Instant::now();
        let mut clock = LeaseClock::new(c, t0);
        // renewals fail for 2 s, then one succeeds (its send time is what counts); the retry
        // delays are jittered, so the outage ends at 2 s, not at a retry that may fall later
        let outage_end = t0 + Duration::from_secs(2);
        let mut now = t0 + c.renew_every();
        while now < outage_end {
            clock.renewal_failed();
            match clock.next(now) {
                Next::RenewAt(at) => now = at.min(outage_end),
                Next::Lost => panic!("lost too early"),
            }
        }
        assert!(clock.is_valid(now));
        clock.renewed(now);
        assert!(clock.is_valid(now + Duration::from_secs(2)));
    }
}
