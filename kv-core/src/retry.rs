//! One retry policy for every loop of the toolkit: which errors are worth retrying
//! ([`Error::is_transient`], [`Error::outcome_unknown`]) and how long to wait between attempts
//! ([`Backoff`]).
//!
//! Every loop that rides out failures — watch resume, lock acquisition, lease renewal,
//! campaigns, configuration readers and writers — asks the error whether to retry and the
//! backoff how long to wait. The delays are jittered so that a fleet that lost its server at
//! the same moment does not come back in lockstep.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::error::{Error, ErrorKind};

/// An exponential backoff with jitter: the n-th retry waits about `min · 2ⁿ`, at most
/// `max`, with up to half of it drawn at random.
///
/// ```
/// use std::time::Duration;
/// use kvtk_core::Backoff;
/// let b = Backoff::new(Duration::from_millis(50), Duration::from_secs(1)).unwrap();
/// for n in 0..10 {
///     let d = b.delay(n);
///     assert!(d >= Duration::from_millis(25) && d <= Duration::from_secs(1));
/// }
/// assert!(Backoff::new(Duration::ZERO, Duration::from_secs(1)).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: Jitter,
}

/// How each delay is drawn from the exponential one, `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Jitter {
    /// Exactly `d`.
    None,
    /// Between `d / 2` and `d`, so that `max` stays a bound: every public backoff.
    Below,
    /// Between `d` and `2 · d` (backon's jitter): the delays of a read-modify-write, which has
    /// always waited so (see [`Backoff::read_modify_write`]).
    Above,
}

impl Jitter {
    fn spread(self, d: Duration) -> Duration {
        match self {
            Jitter::None => d,
            Jitter::Below => {
                let half = d / 2;
                half + half.mul_f64(fastrand_fraction())
            }
            Jitter::Above => d + d.mul_f64(fastrand_fraction()),
        }
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::DEFAULT
    }
}

impl Backoff {
    /// 50 ms doubling up to 1 s, jittered: the toolkit's default for every loop.
    pub const DEFAULT: Backoff = Backoff {
        min: Duration::from_millis(50),
        max: Duration::from_secs(1),
        jitter: Jitter::Below,
    };

    /// A jittered backoff from `min` doubling up to `max` (`0 < min ≤ max`).
    pub fn new(min: Duration, max: Duration) -> Result<Backoff, Error> {
        if min.is_zero() || max < min {
            return Err(Error::invalid_argument(format!(
                "backoff needs 0 < min ≤ max, got min {min:?} and max {max:?}"
            )));
        }
        Ok(Backoff {
            min,
            max,
            jitter: Jitter::Below,
        })
    }

    /// The delays of a read-modify-write ([`crate::Rmw::backoff`]): from `min` doubling up to
    /// `max`, each plus up to as much again (so up to twice `max`). Not validated: `Rmw` has
    /// always taken any bounds (zero waits zero; `min` above `max` waits `min`, then `max`).
    pub(crate) const fn read_modify_write(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            jitter: Jitter::Above,
        }
    }

    /// The same delays without jitter (deterministic, for tests and for single clients).
    pub fn without_jitter(mut self) -> Backoff {
        self.jitter = Jitter::None;
        self
    }

    /// The shortest delay.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The longest delay.
    pub const fn max(&self) -> Duration {
        self.max
    }

    /// The delays of successive retries, without end.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + 'static {
        let builder = ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .without_max_times();
        let jitter = self.jitter;
        // backon's own jitter adds up to the exponential delay again; we want "up to half of
        // it less" so that `max` stays a bound: halve, then jitter (see `Jitter`).
        builder.build().map(move |d| jitter.spread(d))
    }

    /// The delay before retry number `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        // The exponential part stops growing at `max` long before retry 64.
        self.delays()
            .nth(attempt.min(64) as usize)
            .unwrap_or(self.max)
    }

    /// Runs `op` until it succeeds or fails with an error that is not
    /// [transient](Error::is_transient), sleeping between attempts. Callers bound the whole
    /// loop with their own timeout.
    ///
    /// # Cancel safety
    /// Cancel safe if `op`'s futures are.
    pub async fn retry<T, E, F, Fut>(&self, mut op: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Transient,
    {
        let mut state = self.start();
        loop {
            match op().await {
                Err(e) if e.is_transient() => state.pause().await,
                other => return other,
            }
        }
    }

    /// Like [`retry`](Backoff::retry), for at most `wait`: a transient failure whose pause
    /// would end past `wait` is returned as it is (each attempt is bounded by its own request
    /// timeout, so the whole call lasts about `wait` plus one attempt).
    ///
    /// # Cancel safety
    /// Cancel safe if `op`'s futures are.
    pub async fn retry_for<T, E, F, Fut>(&self, wait: Duration, mut op: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Transient,
    {
        let deadline = tokio::time::Instant::now() + wait;
        let mut state = self.start();
        loop {
            match op().await {
                Err(e) if e.is_transient() => {
                    let next = state.next_attempt();
                    if next > deadline {
                        return Err(e);
                    }
                    tokio::time::sleep_until(next).await;
                }
                other => return other,
            }
        }
    }

    /// A retry state for a loop that decides itself what to retry: it counts the failures
    /// in a row and hands out the delay before the next attempt.
    pub fn start(&self) -> Retrying {
        Retrying {
            backoff: *self,
            failures: 0,
        }
    }
}

/// The state of one retrying loop: failures in a row and the delay each one earns. The one
/// driver behind every loop that waits between attempts — [`Backoff::retry`] runs it for
/// "retry while transient"; loops that retry on their own terms (a lagging replica, a
/// campaign's timers) hold one and call [`pause`](Retrying::pause) or
/// [`next_attempt`](Retrying::next_attempt) on failure and [`reset`](Retrying::reset) on
/// success.
///
/// ```
/// use std::time::Duration;
/// use kvtk_core::Backoff;
/// let b = Backoff::new(Duration::from_millis(10), Duration::from_millis(40)).unwrap();
/// let mut r = b.without_jitter().start();
/// assert_eq!(r.failed(), Duration::from_millis(10));
/// assert_eq!(r.failed(), Duration::from_millis(20));
/// assert_eq!(r.failures(), 2);
/// r.reset();
/// assert_eq!(r.failed(), Duration::from_millis(10));
/// ```
// Copy, so that the pure lease clock that holds one (`lease::LeaseClock`, public and Copy)
// stays Copy.
#[derive(Debug, Clone, Copy)]
pub struct Retrying {
    backoff: Backoff,
    failures: u32,
}

impl Retrying {
    /// Counts one more failure and returns the delay it earns.
    pub fn failed(&mut self) -> Duration {
        let d = self.backoff.delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        d
    }

    /// Counts one more failure and sleeps the delay it earns.
    ///
    /// # Cancel safety
    /// Cancel safe: the failure is counted before the sleep.
    pub async fn pause(&mut self) {
        let d = self.failed();
        tracing::debug!(
            delay_ms = d.as_millis() as u64,
            failures = self.failures,
            "retrying after a pause"
        );
        tokio::time::sleep(d).await;
    }

    /// Counts one more failure and returns when the next attempt is due, for loops that
    /// wait on several timers at once.
    pub fn next_attempt(&mut self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.failed()
    }

    /// Failures in a row since the start or the last [`reset`](Retrying::reset).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// An attempt succeeded: the next failure waits the shortest delay again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A uniform fraction in `[0, 1)` from a thread-local generator (no seeding needed: jitter
/// only has to differ between processes).
fn fastrand_fraction() -> f64 {
    use rand::Rng as _;
    rand::rng().random::<f64>()
}

/// Errors that can say whether retrying is worthwhile. Implemented by every crate's error
/// so that [`Backoff::retry`] serves them all.
pub trait Transient {
    /// Whether the failure is expected to pass by itself (no connection, timeout, no stream
    /// leader during a failover).
    fn is_transient(&self) -> bool;
}

impl Transient for Error {
    fn is_transient(&self) -> bool {
        Error::is_transient(self)
    }
}

impl Error {
    /// Whether the failure is expected to pass by itself: the server did not answer in time,
    /// the connection is down, or nobody answered for the bucket (a replicated stream
    /// between leaders). Retry these with a [`Backoff`]; everything else is final.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Timeout | ErrorKind::Connection | ErrorKind::Unavailable
        )
    }

    /// Whether a write that failed this way may nevertheless have been applied: the request
    /// was (or may have been) sent and no answer came back. A retry of such a write must be
    /// conditional, or recognise its own earlier write.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Timeout | ErrorKind::Connection | ErrorKind::OutcomeUnknown
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_bounds() {
        let b = Backoff::new(Duration::from_millis(10), Duration::from_millis(200)).unwrap();
        let plain = b.without_jitter();
        let d: Vec<_> = plain.delays().take(8).collect();
        assert_eq!(d[0], Duration::from_millis(10));
        assert_eq!(d[1], Duration::from_millis(20));
        assert_eq!(d[7], Duration::from_millis(200));
        for n in 0..100 {
            let j = b.delay(n);
            let p = plain.delay(n);
            assert!(j <= p && j >= p / 2, "attempt {n}: {j:?} vs {p:?}");
        }
    }

    #[test]
    fn read_modify_write_delays_jitter_upwards() {
        let b = Backoff::read_modify_write(Duration::from_millis(1), Duration::from_millis(100));
        for n in 0..100 {
            let plain = Duration::from_millis(1 << n.min(7)).min(Duration::from_millis(100));
            let d = b.delay(n);
            assert!(
                d >= plain && d < plain * 2,
                "attempt {n}: {d:?} vs {plain:?}"
            );
        }
        let zero = Backoff::read_modify_write(Duration::ZERO, Duration::from_millis(100));
        assert_eq!(zero.delay(5), Duration::ZERO);
    }

    #[test]
    fn jitter_spreads_a_fleet() {
        let b = Backoff::default();
        let first: std::collections::HashSet<_> = (0..50).map(|_| b.delay(3)).collect();
        assert!(first.len() > 10, "jittered delays should differ: {first:?}");
    }

    #[test]
    fn validation() {
        assert!(Backoff::new(Duration::ZERO, Duration::from_secs(1)).is_err());
        assert!(Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).is_err());
        assert!(Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn transient_and_unknown_kinds() {
        let e = |k| Error::new(k, "x");
        assert!(e(ErrorKind::Timeout).is_transient() && e(ErrorKind::Timeout).outcome_unknown());
        assert!(e(ErrorKind::Unavailable).is_transient());
        assert!(!e(ErrorKind::Unavailable).outcome_unknown());
        assert!(
            !e(ErrorKind::Conflict).is_transient() && !e(ErrorKind::Conflict).outcome_unknown()
        );
        assert!(!e(ErrorKind::InvalidKey).is_transient());
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_state_pauses_longer_until_reset() {
        let b = Backoff::new(Duration::from_millis(10), Duration::from_millis(25))
            .unwrap()
            .without_jitter();
        let mut r = b.start();
        let t0 = tokio::time::Instant::now();
        r.pause().await;
        r.pause().await;
        r.pause().await;
        assert_eq!(t0.elapsed(), Duration::from_millis(10 + 20 + 25));
        assert_eq!(r.failures(), 3);
        r.reset();
        assert_eq!(
            r.next_attempt() - tokio::time::Instant::now(),
            Duration::from_millis(10)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_at_the_first_final_answer() {
        let b = Backoff::default();
        let mut calls = 0;
        let r: Result<u32, Error> = b
            .retry(|| {
                calls += 1;
                let n = calls;
                async move {
                    match n {
                        1 | 2 => Err(Error::new(ErrorKind::Timeout, "t")),
                        _ => Err(Error::new(ErrorKind::Conflict, "c")),
                    }
                }
            })
            .await;
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Conflict);
        assert_eq!(calls, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_for_returns_the_last_transient_failure_once_the_wait_is_spent() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_millis(100))
            .unwrap()
            .without_jitter();
        let t0 = tokio::time::Instant::now();
        let mut calls = 0;
        let r: Result<u32, Error> = b
            .retry_for(Duration::from_millis(350), || {
                calls += 1;
                async { Err(Error::new(ErrorKind::Unavailable, "u")) }
            })
            .await;
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Unavailable);
        assert_eq!(calls, 4, "attempts at 0, 100, 200 and 300 ms");
        assert_eq!(t0.elapsed(), Duration::from_millis(300));
        let mut calls = 0;
        let r: Result<u32, Error> = b
            .retry_for(Duration::from_secs(5), || {
                calls += 1;
                let n = calls;
                async move {
                    match n {
                        1 => Err(Error::new(ErrorKind::Timeout, "t")),
                        _ => Ok(7),
                    }
                }
            })
            .await;
        assert_eq!(r.unwrap(), 7);
    }
}
