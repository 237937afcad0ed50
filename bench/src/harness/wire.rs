//! Counting writes on the wire: every JetStream publish to a KV bucket is also an ordinary NATS
//! message on `$KV.<bucket>.<key>`, so a plain subscriber sees every write a client sends,
//! failed compare-and-set attempts included, whatever the library under test counts itself.

use std::collections::HashMap;
use std::ops::{Add, Sub};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio_util::task::AbortOnDropHandle;

use crate::harness::BoxError;
use crate::systems::jetstream::EXPECTED_LAST_SUBJECT_SEQ;

/// Writes seen, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Writes {
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

type ByKey = Arc<Mutex<HashMap<String, Writes>>>;

/// Counts the writes to one bucket, per key, until dropped.
pub struct WriteCounter {
    by_key: ByKey,
    _task: AbortOnDropHandle<()>,
}

impl WriteCounter {
    /// Subscribes (and flushes, so that no write after this returns is missed).
    pub async fn start(
        client: &async_nats::Client,
        bucket: &str,
    ) -> Result<WriteCounter, BoxError> {
        let prefix = format!("$KV.{bucket}.");
        let mut sub = client.subscribe(format!("{prefix}>")).await?;
        client.flush().await?;
        let by_key = ByKey::default();
        let counts = by_key.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let key = m.subject.strip_prefix(prefix.as_str()).unwrap_or_default();
                let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
                c.entry(key.to_string())
                    .or_default()
                    .count(m.headers.as_ref());
            }
        });
        Ok(WriteCounter {
            by_key,
            _task: AbortOnDropHandle::new(task),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, Writes>> {
        self.by_key.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every write to the bucket so far.
    pub fn total(&self) -> Writes {
        self.counts()
            .values()
            .fold(Writes::default(), |a, &b| a + b)
    }

    /// The writes to one key so far.
    pub fn key(&self, key: &str) -> Writes {
        self.counts().get(key).copied().unwrap_or_default()
    }
}
