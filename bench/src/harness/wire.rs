//! Counting writes on the wire: every JetStream publish to a KV bucket is also an ordinary NATS
//! message on `$KV.<bucket>.<key>`, so a plain subscriber sees every write a client sends,
//! failed compare-and-set attempts included, whatever the library under test counts itself.

use std::collections::HashMap;
use std::ops::{Add, Sub};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio_util::task::AbortOnDropHandle;

use crate::harness::BoxError;
use crate::systems::jetstream::EXPECTED_LAST_SUBJECT_SEQ;

/// Writes seen, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Writes {
    pub all: u64,
    /// Conditional writes that are not removals: creates, updates, renewals, CAS attempts.
    pub cas: u64,
    /// Deletes and purges (conditional or not).
    pub removals: u64,
}

impl Add for Writes {
    type Output = Writes;
    fn add(self, o: Writes) -> Writes {
        Writes {
            all: self.all + o.all,
            cas: self.cas + o.cas,
            removals: self.removals + o.removals,
        }
    }
}

impl Sub for Writes {
    type Output = Writes;
    fn sub(self, o: Writes) -> Writes {
        Writes {
            all: self.all.saturating_sub(o.all),
            cas: self.cas.saturating_sub(o.cas),
            removals: self.removals.saturating_sub(o.removals),
        }
    }
}

impl Writes {
    fn count(&mut self, headers: Option<&async_nats::HeaderMap>) {
        self.all += 1;
        let Some(h) = headers else { return };
        let is_removal = h
            .get("KV-Operation")
            .is_some_and(|v| v.as_str() == "DEL" || v.as_str() == "PURGE");
        if is_removal {
            self.removals += 1;
        } else if h.get(EXPECTED_LAST_SUBJECT_SEQ).is_some() {
            self.cas += 1;
        }
    }
}

/// Writes per key.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counts(HashMap<String, Writes>);

impl Counts {
    /// Every write to the bucket.
    pub(crate) fn total(&self) -> Writes {
        self.0.values().fold(Writes::default(), |a, &b| a + b)
    }

    /// The writes to one key.
    pub(crate) fn key(&self, key: &str) -> Writes {
        self.0.get(key).copied().unwrap_or_default()
    }
}

/// The key of the markers [`WriteCounter::mark`] publishes (not a valid kvtk-core key, so no
/// library under test ever writes it).
const MARK_KEY: &str = "_bench_mark";

/// Counts the writes to one bucket, per key, until dropped.
pub(crate) struct WriteCounter {
    client: async_nats::Client,
    subject: String,
    counts: Arc<Mutex<Counts>>,
    marks: tokio::sync::watch::Receiver<(u64, Counts)>,
    next_mark: AtomicU64,
    _task: AbortOnDropHandle<()>,
}

impl WriteCounter {
    /// Subscribes (and flushes, so that no write after this returns is missed).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled start leaves no task behind.
    pub(crate) async fn start(
        client: &async_nats::Client,
        bucket: &str,
    ) -> Result<WriteCounter, BoxError> {
        let prefix = format!("$KV.{bucket}.");
        let mut sub = client.subscribe(format!("{prefix}>")).await?;
        client.flush().await?;
        let counts = Arc::new(Mutex::new(Counts::default()));
        let (marked, marks) = tokio::sync::watch::channel((0, Counts::default()));
        let c = counts.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let key = m.subject.strip_prefix(prefix.as_str()).unwrap_or_default();
                let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
                if key == MARK_KEY {
                    let n = std::str::from_utf8(&m.payload)
                        .ok()
                        .and_then(|n| n.parse().ok());
                    let _ = marked.send((n.unwrap_or(0), c.clone()));
                    continue;
                }
                c.0.entry(key.to_string())
                    .or_default()
                    .count(m.headers.as_ref());
            }
        });
        Ok(WriteCounter {
            client: client.clone(),
            subject: format!("$KV.{bucket}.{MARK_KEY}"),
            counts,
            marks,
            next_mark: AtomicU64::new(1),
            _task: AbortOnDropHandle::new(task),
        })
    }

    /// The counts so far, as far as the subscriber got (it may lag behind the writes).
    pub(crate) fn now(&self) -> Counts {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The counts of every write the server received before this call: publishes a marker on
    /// the bucket's subjects (stored in the bucket under a key no client uses) and waits for
    /// the subscriber to reach it, since the server delivers to one subscription in order.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled mark leaves only its marker message behind.
    pub(crate) async fn mark(&self) -> Result<Counts, BoxError> {
        let n = self.next_mark.fetch_add(1, Ordering::Relaxed);
        self.client
            .publish(self.subject.clone(), n.to_string().into())
            .await?;
        self.client.flush().await?;
        let mut marks = self.marks.clone();
        let seen = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            marks.wait_for(|(m, _)| *m >= n),
        )
        .await
        .map_err(|_| "write counter: marker not seen within 10 s")??;
        Ok(seen.1.clone())
    }
}
