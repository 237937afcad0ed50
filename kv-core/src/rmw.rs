//! Read-modify-write with compare-and-set retries, and an atomic counter on top.
//!
//! These replace the seed's `incrementCounter` and `conditionalUpdate`: the write is
//! conditional on the revision that was read, conflicts are retried after a jittered
//! exponential backoff, and the number of attempts is bounded.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::Instrument as _;

use crate::bucket::Bucket;
use crate::codec::{Codec, Utf8};
use crate::combine::{Apply, Combiner};
use crate::error::{Error, ErrorKind, Operation};
use crate::key::Key;
use crate::retry::Backoff;
use crate::revision::{Expect, Revision};

/// Default bound on attempts of a read-modify-write.
pub const DEFAULT_ATTEMPTS: usize = 64;

/// Attempts a counter makes before giving up: counters are contended by design, and the
/// jittered backoff (capped at 100 ms) keeps the retries cheap.
const COUNTER_ATTEMPTS: usize = 10_000;

/// A read-modify-write of one key. Build it with [`Bucket::rmw`].
#[must_use = "a read-modify-write does nothing until applied"]
#[derive(Debug)]
pub struct Rmw<'a, C> {
    bucket: &'a Bucket,
    key: Result<Key, Error>,
    codec: C,
    attempts: usize,
    ttl: Option<Duration>,
    backoff: Backoff,
}

/// What a read-modify-write did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<T> {
    /// The closure's value was written at this revision.
    Written(T, Revision),
    /// The closure returned `None`: nothing was written.
    Unchanged,
}

impl Bucket {
    /// Starts a read-modify-write of `key`, decoding and encoding values with `codec`.
    ///
    /// ```no_run
    /// # async fn demo(bucket: kvtk_core::Bucket) -> Result<(), kvtk_core::Error> {
    /// use kvtk_core::{Json, Outcome};
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Stock { items: u32 }
    /// let out = bucket.rmw("stock.apples", Json).apply(|cur: Option<Stock>| {
    ///     let mut s = cur.unwrap_or(Stock { items: 10 });
    ///     if s.items == 0 { return None } // sold out: stop without writing
    ///     s.items -= 1;
    ///     Some(s)
    /// }).await?;
    /// if let Outcome::Written(s, rev) = out { println!("{} left at {rev}", s.items) }
    /// # Ok(()) }
    /// ```
    pub fn rmw<C>(&self, key: impl AsRef<str>, codec: C) -> Rmw<'_, C> {
        Rmw {
            bucket: self,
            key: Key::new(key.as_ref()),
            codec,
            attempts: DEFAULT_ATTEMPTS,
            ttl: None,
            backoff: Backoff::read_modify_write(
                Duration::from_millis(1),
                Duration::from_millis(100),
            ),
        }
    }

    /// An atomic counter stored as a decimal string under `key`.
    pub fn counter(&self, key: impl AsRef<str>) -> Counter {
        Counter::new(self.clone(), key.as_ref().to_string())
    }
}

impl<'a, C> Rmw<'a, C> {
    /// Gives up after `n` attempts (≥ 1) with [`ErrorKind::TooManyAttempts`].
    pub fn max_attempts(mut self, n: usize) -> Self {
        self.attempts = n;
        self
    }
    /// Writes with a per-key TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
    /// Backoff bounds between attempts (jittered, exponential). Default 1 ms to 100 ms.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = Backoff::read_modify_write(min, max);
        self
    }

    /// Reads the key, calls `f` with its current value (`None` when absent) and writes what
    /// `f` returns, only if the key has not changed since the read; retries on conflict.
    /// `f` may run several times.
    ///
    /// # Cancel safety
    /// Not cancel safe: a write may take effect even if the future is dropped.
    pub async fn apply<T, F>(self, mut f: F) -> Result<Outcome<T>, Error>
    where
        C: Codec<T>,
        F: FnMut(Option<T>) -> Option<T>,
    {
        let Rmw {
            bucket,
            key,
            codec,
            attempts,
            ttl,
            backoff,
        } = self;
        let key = key.map_err(|e| e.with_op(Operation::ReadModifyWrite))?;
        if attempts == 0 {
            return Err(Error::invalid_argument("max_attempts must be at least 1")
                .with_op(Operation::ReadModifyWrite));
        }
        let span = tracing::debug_span!("kv.rmw", bucket = %bucket.name(), key = %key);
        async {
            let mut retry = backoff.start();
            for attempt in 1..=attempts {
                if let Some(out) = attempt_once(bucket, &key, &codec, ttl, &mut f).await? {
                    return Ok(out);
                }
                tracing::debug!(attempt, "conflict, retrying");
                retry.pause().await;
            }
            Err(Error::new(
                ErrorKind::TooManyAttempts,
                format!("gave up after {attempts} conflicting attempts"),
            )
            .with_key(key.as_str()))
        }
        .instrument(span)
        .await
        .map_err(|e| e.with_op(Operation::ReadModifyWrite))
    }
}

/// One attempt: reads `key`, asks `f` and writes what it returns conditional on the read.
/// `None` when the write conflicted.
async fn attempt_once<T, C: Codec<T>>(
    bucket: &Bucket,
    key: &Key,
    codec: &C,
    ttl: Option<Duration>,
    f: &mut impl FnMut(Option<T>) -> Option<T>,
) -> Result<Option<Outcome<T>>, Error> {
    let entry = bucket.entry(key).await?;
    let (current, expect) = match &entry {
        Some(e) if e.is_value() => (Some(e.decode(codec)?), Expect::Revision(e.revision())),
        Some(e) => (None, Expect::Revision(e.revision())),
        None => (None, Expect::NoMessage),
    };
    let Some(next) = f(current) else {
        return Ok(Some(Outcome::Unchanged));
    };
    let bytes: Bytes = codec.encode(&next).map_err(|e| e.with_key(key.as_str()))?;
    let mut w = bucket.put(key, bytes).expect(expect);
    if let Some(t) = ttl {
        w = w.ttl(t);
    }
    match w.await {
        Ok(rev) => Ok(Some(Outcome::Written(next, rev))),
        Err(e) if e.is_conflict() => Ok(None),
        Err(e) => Err(e),
    }
}

/// An atomic counter: a decimal `i64` under one key, changed by read-modify-write.
///
/// Concurrent [`add`](Counter::add) calls on clones of one `Counter` are **combined**: a single
/// worker takes every increment queued while its previous write was in flight and applies
/// their sum with one compare-and-set, so contention inside a process costs one write per
/// batch instead of a storm of conflicting retries. Across processes it is an ordinary CAS
/// loop with backoff. The worker is owned by the counter's clones and stops with the last one.
#[derive(Debug, Clone)]
pub struct Counter {
    shared: Arc<CounterShared>,
}

#[derive(Debug)]
struct CounterShared {
    bucket: Bucket,
    key: String,
    combiner: Combiner,
}

impl Counter {
    fn new(bucket: Bucket, key: String) -> Counter {
        let apply: Apply = {
            let (bucket, key) = (bucket.clone(), key.clone());
            Arc::new(move |sum| {
                let (bucket, key) = (bucket.clone(), key.clone());
                Box::pin(async move { apply_sum(&bucket, &key, sum).await })
            })
        };
        Counter {
            shared: Arc::new(CounterShared {
                bucket,
                key,
                combiner: Combiner::new(apply),
            }),
        }
    }

    /// Adds `delta` and returns the new value (including increments combined with it). A
    /// missing key counts as 0.
    ///
    /// # Cancel safety
    /// Not cancel safe: once queued, the increment is applied even if the future is dropped.
    pub async fn add(&self, delta: i64) -> Result<i64, Error> {
        self.shared.combiner.add(delta).await
    }

    /// The current value (0 when absent).
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn get(&self) -> Result<i64, Error> {
        let key = &self.shared.key;
        match self.shared.bucket.get(key).await? {
            None => Ok(0),
            Some(e) => {
                let s: String = e.decode(&Utf8)?;
                s.trim()
                    .parse()
                    .map_err(|_| Error::codec(format!("value under {key:?} is not an integer")))
            }
        }
    }
}

/// Adds `sum` to the decimal counter under `key` by read-modify-write.
async fn apply_sum(bucket: &Bucket, key: &str, sum: i64) -> Result<i64, Error> {
    let mut overflow = false;
    let out = bucket
        .rmw(key, Utf8)
        .max_attempts(COUNTER_ATTEMPTS)
        .apply(|cur: Option<String>| {
            let n = match cur.as_deref().map(str::trim).map(str::parse::<i64>) {
                None => 0,
                Some(Ok(n)) => n,
                // Not a number: leave it alone and report below.
                Some(Err(_)) => return None,
            };
            match n.checked_add(sum) {
                Some(v) => Some(v.to_string()),
                None => {
                    overflow = true;
                    None
                }
            }
        })
        .await?;
    match out {
        Outcome::Written(v, _) => v.parse().map_err(|_| Error::codec("counter value".into())),
        Outcome::Unchanged if overflow => {
            Err(Error::invalid_argument("counter would overflow").with_key(key))
        }
        Outcome::Unchanged => {
            Err(Error::codec(format!("value under {key:?} is not an integer")).with_key(key))
        }
    }
}
