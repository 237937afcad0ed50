//! The reader's state machine and its background loop.
//!
//! One task per reader owns the KV watch. It keeps the latest raw entry of every key of the
//! configuration, and after each *quiet point* of the watch (no more entries pending, see
//! [`Entry::delta`]) it builds one candidate from all of them, runs it through the pipeline
//! to the side and swaps it in only when it is accepted *and* differs from the current value.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use kv_core::{Backoff, Bucket, Entry, Include, Revision, Watch, WatchEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::error::{Error, ErrorKind, RejectKind, Rejection};
use crate::fleet::{Ack, Applied};
use crate::layer::{assemble_prefix, diff_paths};
use crate::persist::{self, Persisted};
use crate::pipeline::Pipeline;
use crate::reader::Shared;
use crate::snapshot::{Change, ConfigEvent, Origin, Snapshot};
use crate::source::{Connector, Source};

/// An accepted candidate: value, normalized JSON, and the KV layer it came from.
pub(crate) type Accepted<T> = (T, Value, Option<Value>);

pub(crate) struct Core<T> {
    pub(crate) source: Source,
    pub(crate) pipeline: Arc<Pipeline<T>>,
    pub(crate) connector: Connector,
    pub(crate) bucket: Option<Bucket>,
    pub(crate) watch: Option<Watch>,
    /// Latest live value of every key of the configuration.
    pub(crate) entries: BTreeMap<String, (Bytes, Revision)>,
    /// Document mode: the key's latest revision is a delete, purge or expiry.
    pub(crate) deleted: Option<Revision>,
    /// Newest revision processed.
    pub(crate) last_rev: Option<Revision>,
    /// Whether a value from the KV (or a snapshot of one) has been in use: only then is a
    /// deleted document a rejection rather than "use the defaults".
    pub(crate) had_value: bool,
    /// Prefix mode: a transaction's first writes have arrived but not its commit entry.
    pub(crate) in_txn: bool,
    pub(crate) snapshot_file: Option<PathBuf>,
    pub(crate) persisted: Option<Option<Revision>>,
    pub(crate) ack: Option<Ack>,
}

/// What the loop waits on.
enum Wake {
    Cancelled,
    Heartbeat,
    Event(Option<Result<WatchEvent, kv_core::Error>>),
}

impl<T> Core<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn record(&mut self, e: &Entry) {
        self.last_rev = self.last_rev.max(Some(e.revision()));
        // A transaction's entries arrive with contiguous revisions; the last carries `commit`.
        self.in_txn = e.batch().is_some_and(|b| !b.commit);
        let key = e.key().as_str().to_string();
        if e.is_value() {
            self.entries.insert(key, (e.value().clone(), e.revision()));
            if matches!(self.source, Source::Document { .. }) {
                self.deleted = None;
            }
        } else {
            self.entries.remove(&key);
            if matches!(self.source, Source::Document { .. }) {
                self.deleted = Some(e.revision());
            }
        }
    }

    /// (Re)opens the watch and reads the current state of every key: a full re-read.
    pub(crate) async fn sync(&mut self) -> Result<(), Error> {
        self.watch = None;
        let bucket = match &self.bucket {
            Some(b) => b.clone(),
            None => {
                let b = self
                    .connector
                    .bucket()
                    .await
                    .map_err(|e| Error::kv("cannot open the config bucket", e))?;
                self.bucket = Some(b.clone());
                b
            }
        };
        let mut watch = bucket
            .watch(self.source.reader_filters())
            .include(Include::LastPerKey)
            .await
            .map_err(|e| Error::kv("cannot watch the config", e))?;
        let known_rev = self.last_rev;
        self.entries.clear();
        self.deleted = None;
        self.last_rev = None;
        self.in_txn = false;
        let mut initial_done = false;
        // Read the initial state, and past its end until no transaction is half-read.
        while !initial_done || self.txn_open() {
            match watch.next().await {
                Some(Ok(WatchEvent::Entry(e))) => self.record(&e),
                Some(Ok(WatchEvent::InitialDone)) => initial_done = true,
                Some(Err(e)) if e.kind() == kv_core::ErrorKind::HistoryGone => {}
                Some(Err(e)) => return Err(Error::kv("config watch failed", e)),
                None => {
                    return Err(Error::new(
                        ErrorKind::Kv,
                        "config watch ended during the initial read",
                    ))
                }
            }
        }
        // A document we had that is now gone without a trace (its TTL and its expiry marker
        // both ran out while we were away) counts as deleted, not as "never configured".
        if let Source::Document { key, .. } = &self.source {
            if self.had_value && !self.entries.contains_key(key) && self.deleted.is_none() {
                self.deleted = known_rev;
            }
        }
        self.watch = Some(watch);
        Ok(())
    }

    /// Whether a transaction's first writes have been seen but not its commit.
    fn txn_open(&self) -> bool {
        self.in_txn
    }

    /// Builds and checks the candidate from the entries, to the side.
    pub(crate) fn evaluate(&self) -> Result<Accepted<T>, Rejection> {
        let kv = match &self.source {
            Source::Document { key, format } => match self.entries.get(key) {
                Some((bytes, _)) => Some(
                    format
                        .parse(bytes)
                        .map_err(|m| Rejection::new(RejectKind::Malformed, m))?,
                ),
                None if self.deleted.is_some() && self.had_value => {
                    return Err(Rejection::new(
                        RejectKind::Deleted,
                        format!("config key {key:?} was deleted"),
                    ))
                }
                None => None,
            },
            Source::Prefix { prefix } if self.entries.is_empty() => {
                let _ = prefix;
                None
            }
            Source::Prefix { prefix } => Some(
                assemble_prefix(
                    prefix,
                    self.entries
                        .iter()
                        .map(|(k, (v, _))| (k.as_str(), v.as_ref())),
                )
                .map_err(|(k, m)| Rejection::new(RejectKind::Malformed, format!("{k}: {m}")))?,
            ),
        };
        let (value, json) = self.pipeline.candidate(kv.as_ref())?;
        Ok((value, json, kv))
    }

    /// Evaluates the current entries and applies the result (or records the rejection).
    pub(crate) async fn apply(&mut self, shared: &Shared<T>) {
        let rev = self.last_rev;
        let span = tracing::info_span!(
            "kv_config.apply",
            config = %self.source.name(),
            revision = rev.map(Revision::get),
        );
        async {
            match self.evaluate() {
                Err(rej) => {
                    let rej = rej.at(rev);
                    if shared.reject(rej.clone()) {
                        tracing::warn!(kind = %rej.kind(), reason = %rej.message(), "config rejected; keeping the last good value");
                    }
                }
                Ok((value, json, kv)) => {
                    if kv.is_some() {
                        self.had_value = true;
                    }
                    // Health and revision first: whoever the change wakes reads them.
                    shared.synced(rev);
                    let cur = shared.current.load_full();
                    let changed = cur.json != json;
                    if changed || cur.stale || cur.origin != Origin::Kv {
                        let snap = Arc::new(Snapshot {
                            value,
                            json,
                            revision: rev,
                            origin: Origin::Kv,
                            stale: false,
                            loaded_at: SystemTime::now(),
                        });
                        shared.current.store(snap.clone());
                        if changed {
                            let paths = diff_paths(&cur.json, &snap.json);
                            tracing::info!(changed = ?paths, "config applied");
                            shared.generation.send_modify(|g| *g += 1);
                            let _ = shared.events.send(ConfigEvent::Changed(Change {
                                old: cur,
                                new: snap,
                                revision: rev,
                                paths,
                            }));
                        } else {
                            tracing::info!("config confirmed against the kv");
                        }
                    } else {
                        tracing::debug!("config unchanged");
                    }
                    self.persist(rev, kv).await;
                }
            }
            shared.ready.send_replace(true);
            self.publish_ack(shared, false).await;
        }
        .instrument(span)
        .await
    }

    pub(crate) async fn persist(&mut self, rev: Option<Revision>, kv: Option<Value>) {
        let Some(path) = self.snapshot_file.clone() else {
            return;
        };
        if self.persisted == Some(rev) {
            return;
        }
        let p = Persisted::new(rev, kv);
        match tokio::task::spawn_blocking(move || persist::write(&path, &p)).await {
            Ok(Ok(())) => self.persisted = Some(rev),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot persist the config snapshot"),
            Err(e) => tracing::warn!(error = %e, "snapshot writer failed"),
        }
    }

    /// Publishes this instance's acknowledgement if it changed (`force`: also make sure it
    /// is still there).
    pub(crate) async fn publish_ack(&mut self, shared: &Shared<T>, force: bool) {
        let (Some(ack), Some(bucket)) = (self.ack.as_mut(), self.bucket.as_ref()) else {
            return;
        };
        let h = shared.health();
        let rec = Applied {
            applied: h.applied.map(Revision::get),
            rejected: h.rejected.and_then(|r| r.revision).map(Revision::get),
            stale: h.stale,
        };
        ack.publish(bucket, rec, force).await;
    }

    /// The background loop: follow the watch, apply at quiet points, resync when needed.
    pub(crate) async fn run(mut self, shared: Arc<Shared<T>>, cancel: CancellationToken) {
        let retry =
            Backoff::new(Duration::from_millis(100), Duration::from_secs(2)).unwrap_or_default();
        let mut delays = retry.delays();
        let mut heartbeat = self.ack.as_ref().map(|a| {
            let period = (a.ttl() / 2).max(Duration::from_millis(500));
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            if self.watch.is_none() {
                let span = tracing::info_span!("kv_config.load", config = %self.source.name());
                let res = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = self.sync().instrument(span) => r,
                };
                match res {
                    Ok(()) => {
                        delays = retry.delays();
                        self.apply(&shared).await;
                    }
                    Err(e) => {
                        let pause = delays.next().unwrap_or(retry.max());
                        tracing::warn!(error = %e, retry_in = ?pause, "cannot read the config from the kv");
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                }
                continue;
            }
            let wake = {
                let Some(watch) = self.watch.as_mut() else {
                    continue;
                };
                let hb = async {
                    match heartbeat.as_mut() {
                        Some(i) => {
                            i.tick().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = cancel.cancelled() => Wake::Cancelled,
                    _ = hb => Wake::Heartbeat,
                    ev = watch.next() => Wake::Event(ev),
                }
            };
            match wake {
                Wake::Cancelled => return,
                Wake::Heartbeat => self.publish_ack(&shared, true).await,
                Wake::Event(None) => {
                    tracing::info!("config watch ended; re-reading");
                    self.watch = None;
                }
                Wake::Event(Some(Err(e))) if e.kind() == kv_core::ErrorKind::HistoryGone => {
                    // Keys vanished while we were away: the watch cannot say what they held,
                    // so re-read everything and apply at most one change.
                    tracing::info!(error = %e, "config watch lost history; re-reading");
                    self.watch = None;
                }
                Wake::Event(Some(Err(e))) => {
                    tracing::warn!(error = %e, "config watch error");
                }
                Wake::Event(Some(Ok(WatchEvent::InitialDone))) => {}
                Wake::Event(Some(Ok(WatchEvent::Entry(e)))) => {
                    self.record(&e);
                    // Entries of one transaction arrive together: wait for the quiet point and
                    // for the transaction's commit entry (the watch's pending count alone can
                    // read 0 between two messages of one atomic batch), so a reader never
                    // applies half of a multi-key update.
                    if e.delta() == 0 && !self.txn_open() {
                        self.apply(&shared).await;
                    }
                }
            }
        }
    }
}
