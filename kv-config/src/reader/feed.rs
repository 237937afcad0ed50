//! The shared watch: one kvtk-core watch per bucket handle and configuration, however many
//! readers of it the process runs.
//!
//! A [`Feed`] owns one task that follows the watch and keeps the latest raw entry of every
//! key. After each *quiet point* of the watch (no more entries pending, see
//! [`Entry::delta`], and no transaction half-read) it publishes the whole state as one
//! immutable, numbered [`Raw`]. Each reader decodes, layers and validates every state itself,
//! in order, with its own type and validator ([`States`]). A reader more than [`BACKLOG`]
//! states behind skips straight to the newest one: it never applies an older state after a
//! newer one and never misses the latest.
//!
//! Readers built on clones of one bucket handle (read-only or not) share a feed per key filter (the
//! registry below holds only weak references); the feed's task stops when the last of them
//! drops its [`Feed`]. Readers with a [`Connector::Lazy`] connect on their own and get a
//! feed of their own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use kvtk_core::{Backoff, Entry, Include, ReadOnlyBucket, Revision, Watch, WatchEvent};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument as _;

use crate::error::{Error, ErrorKind};
use crate::format::Format;
use crate::source::{check_mirror, Connector, Opened, Source};

/// How many states a reader may fall behind before it skips to the newest.
pub(crate) const BACKLOG: usize = 64;

/// The raw state of a configuration's keys at a quiet point of the watch.
#[derive(Debug)]
pub(crate) struct Raw {
    /// Numbers the feed's states: a later state has a larger number.
    pub(crate) seq: u64,
    /// Latest live value of every key of the configuration.
    pub(crate) entries: BTreeMap<String, (Bytes, Revision)>,
    /// Document mode: the key's latest revision is a delete, purge or expiry (or the key
    /// vanished without a trace while the watch was away).
    pub(crate) deleted: Option<Revision>,
    /// Newest revision processed.
    pub(crate) last_rev: Option<Revision>,
    /// The bucket the state was read from (and the writable handle for acknowledgements).
    pub(crate) bucket: Opened,
    /// The document parsed once for all the readers of this state.
    parsed: ParseOnce,
}

impl Raw {
    /// The value of `key` parsed as `format`, shared by the readers of this state (each
    /// still decodes and validates it on its own); `None` when the key holds no live value.
    pub(crate) fn parsed(&self, key: &str, format: Format) -> Option<Parsed> {
        let (bytes, _) = self.entries.get(key)?;
        Some(self.parsed.get(key, format, bytes))
    }
}

/// A document parsed into a JSON tree, or why it could not be.
pub(crate) type Parsed = Result<Arc<Value>, String>;

/// One parse of a document, for the key and format the first reader asked for; a reader
/// asking for another (a different format of the same key) parses its own.
#[derive(Debug, Default)]
pub(crate) struct ParseOnce(OnceLock<(String, Format, Parsed)>);

impl ParseOnce {
    pub(crate) fn get(&self, key: &str, format: Format, bytes: &[u8]) -> Parsed {
        let parse = || format.parse(bytes).map(Arc::new);
        let (k, f, parsed) = self.0.get_or_init(|| (key.to_string(), format, parse()));
        if k == key && *f == format {
            parsed.clone()
        } else {
            parse()
        }
    }
}

/// One shared watch; readers hold it in an `Arc`, and the last one to drop it stops it.
pub(crate) struct Feed {
    /// The handle the feed was made for (shared feeds only).
    shared_on: Option<ReadOnlyBucket>,
    latest: watch::Receiver<Option<Arc<Raw>>>,
    updates: broadcast::Sender<Arc<Raw>>,
    last_error: Arc<Mutex<Option<String>>>,
    _task: AbortOnDropHandle<()>,
}

/// Shared feeds by (bucket name, key filter); several handles may open the same bucket.
type Registry = BTreeMap<(String, String), Vec<Weak<Feed>>>;

static FEEDS: Mutex<Registry> = Mutex::new(BTreeMap::new());

fn registry() -> MutexGuard<'static, Registry> {
    // A panic while holding the lock leaves at worst a dead weak reference behind.
    FEEDS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The feed for `source` through `connector`: the running one for this bucket handle, or a
/// new one.
pub(crate) fn subscribe(connector: &Connector, source: &Source) -> Arc<Feed> {
    let Some(bucket) = connector.opened() else {
        return Arc::new(Feed::start(connector.clone(), source, None));
    };
    let mut feeds = registry();
    feeds.retain(|_, v| {
        v.retain(|w| w.strong_count() > 0);
        !v.is_empty()
    });
    let slot = feeds
        .entry((bucket.name().to_string(), source.filter()))
        .or_default();
    let running = slot
        .iter()
        .filter_map(Weak::upgrade)
        .find(|f| f.shared_on.as_ref().is_some_and(|b| b.same_handle(&bucket)));
    if let Some(feed) = running {
        return feed;
    }
    let feed = Arc::new(Feed::start(connector.clone(), source, Some(bucket)));
    slot.push(Arc::downgrade(&feed));
    feed
}

impl Feed {
    fn start(connector: Connector, source: &Source, shared_on: Option<ReadOnlyBucket>) -> Feed {
        let (latest_tx, latest) = watch::channel(None);
        let updates = broadcast::channel(BACKLOG).0;
        let last_error = Arc::new(Mutex::new(None));
        let tracker = Tracker {
            connector,
            filter: source.filter(),
            source: source.clone(),
            document: matches!(source, Source::Document { .. }),
            bucket: None,
            watch: None,
            entries: BTreeMap::new(),
            deleted: None,
            last_rev: None,
            in_txn: false,
            seq: 0,
            latest: latest_tx,
            updates: updates.clone(),
            last_error: last_error.clone(),
        };
        let span = tracing::info_span!("kvtk_config.feed", config = %source.name());
        Feed {
            shared_on,
            latest,
            updates,
            last_error,
            _task: AbortOnDropHandle::new(tokio::spawn(tracker.run().instrument(span))),
        }
    }

    /// The states from now on.
    pub(crate) fn states(&self) -> States {
        States {
            latest: self.latest.clone(),
            updates: self.updates.subscribe(),
            seen: 0,
        }
    }

    /// Why the feed has not read the configuration yet, if it tried and failed.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A reader's subscription to a feed: every state in order, or the newest one after the
/// reader fell more than [`BACKLOG`] states behind; never one older than a state it had.
pub(crate) struct States {
    latest: watch::Receiver<Option<Arc<Raw>>>,
    updates: broadcast::Receiver<Arc<Raw>>,
    /// The number of the newest state returned.
    seen: u64,
}

impl States {
    /// Waits up to `timeout` for a state of the feed that is at least as new as what the
    /// server holds under `filter` now, and returns it. A feed other readers started may not
    /// have seen yet a write acknowledged just before this call: one read of the newest
    /// revisions under the filter (no consumer) tells how far it must get. When it cannot
    /// get there in time (that revision vanished), the newest state is returned anyway;
    /// `None` when the feed has not read the KV at all.
    pub(crate) async fn first(&mut self, timeout: Duration, filter: &str) -> Option<Arc<Raw>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut latest = self.latest.clone();
        let bucket = tokio::time::timeout_at(deadline, latest.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(|r| {
                r.ok()
                    .and_then(|raw| raw.as_ref().map(|raw| raw.bucket.read.clone()))
            })?;
        let newest = tokio::time::timeout_at(deadline, bucket.snapshot(filter)).await;
        if let Some(want) = newest
            .ok()
            .and_then(Result::ok)
            .and_then(|s| s.last_revision())
        {
            let caught_up =
                |r: &Option<Arc<Raw>>| r.as_ref().is_some_and(|r| r.last_rev >= Some(want));
            let _ = tokio::time::timeout_at(deadline, latest.wait_for(caught_up)).await;
        }
        self.newest()
    }

    /// The newest state, if newer than what was returned before.
    fn newest(&mut self) -> Option<Arc<Raw>> {
        let raw = self.latest.borrow().clone()?;
        self.newer(raw)
    }

    fn newer(&mut self, raw: Arc<Raw>) -> Option<Arc<Raw>> {
        (raw.seq > self.seen).then(|| {
            self.seen = raw.seq;
            raw
        })
    }

    /// The next state newer than every one returned before; `None` once the feed is gone.
    ///
    /// Cancel safe (a broadcast receive).
    pub(crate) async fn next(&mut self) -> Option<Arc<Raw>> {
        loop {
            let next = match self.updates.recv().await {
                Ok(raw) => self.newer(raw),
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        missed,
                        "reader fell behind its shared watch; skipping to the newest state"
                    );
                    self.newest()
                }
                Err(RecvError::Closed) => return None,
            };
            if next.is_some() {
                return next;
            }
        }
    }
}

/// The feed's task: the watch and the raw state it folds.
struct Tracker {
    connector: Connector,
    filter: String,
    source: Source,
    document: bool,
    bucket: Option<Opened>,
    watch: Option<Watch>,
    entries: BTreeMap<String, (Bytes, Revision)>,
    deleted: Option<Revision>,
    last_rev: Option<Revision>,
    /// A transaction's first writes have arrived but not its commit entry.
    in_txn: bool,
    seq: u64,
    latest: watch::Sender<Option<Arc<Raw>>>,
    updates: broadcast::Sender<Arc<Raw>>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl Tracker {
    fn record(&mut self, e: &Entry) {
        self.last_rev = self.last_rev.max(Some(e.revision()));
        // A transaction's entries arrive with contiguous revisions; the last carries `commit`.
        self.in_txn = e.batch().is_some_and(|b| !b.commit);
        let key = e.key().as_str().to_string();
        if e.is_value() {
            self.entries.insert(key, (e.value().clone(), e.revision()));
            if self.document {
                self.deleted = None;
            }
        } else {
            self.entries.remove(&key);
            if self.document {
                self.deleted = Some(e.revision());
            }
        }
    }

    async fn bucket(&mut self) -> Result<ReadOnlyBucket, Error> {
        if let Some(b) = &self.bucket {
            return Ok(b.read.clone());
        }
        let b = self
            .connector
            .open()
            .await
            .map_err(|e| Error::kv("cannot open the config bucket", e))?;
        check_mirror(&b.read, &self.source)?;
        self.bucket = Some(b.clone());
        Ok(b.read)
    }

    /// (Re)opens the watch and reads the current state of every key: a full re-read.
    async fn sync(&mut self) -> Result<(), Error> {
        self.watch = None;
        let mut watch = self
            .bucket()
            .await?
            .watch([self.filter.as_str()])
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
        while !initial_done || self.in_txn {
            match watch.next().await {
                Some(Ok(WatchEvent::Entry(e))) => self.record(&e),
                Some(Ok(WatchEvent::InitialDone)) => initial_done = true,
                Some(Err(e)) if e.kind() == kvtk_core::ErrorKind::HistoryGone => {}
                Some(Err(e)) => return Err(Error::kv("config watch failed", e)),
                None => {
                    return Err(Error::new(
                        ErrorKind::Kv,
                        "config watch ended during the initial read",
                    ))
                }
            }
        }
        // A document seen before that is now gone without a trace (its TTL and its expiry
        // marker both ran out while we were away) counts as deleted, not as "never
        // configured"; readers that never used a value from the KV ignore it.
        if self.document && self.entries.is_empty() && self.deleted.is_none() {
            self.deleted = known_rev;
        }
        self.watch = Some(watch);
        Ok(())
    }

    /// Hands the current state to the readers.
    fn publish(&mut self) {
        let Some(bucket) = self.bucket.clone() else {
            return;
        };
        self.seq += 1;
        let raw = Arc::new(Raw {
            seq: self.seq,
            entries: self.entries.clone(),
            deleted: self.deleted,
            last_rev: self.last_rev,
            bucket,
            parsed: ParseOnce::default(),
        });
        // The newest state first: a reader that lags when the broadcast overflows reads it.
        self.latest.send_replace(Some(raw.clone()));
        // No receiver (no reader yet) is fine: the next reader starts from `latest`.
        let _ = self.updates.send(raw);
    }

    /// Re-reads until it succeeds, with backoff, then publishes.
    async fn resync(&mut self) {
        let mut retry = Backoff::new(Duration::from_millis(100), Duration::from_secs(2))
            .unwrap_or_default()
            .start();
        loop {
            match self.sync().await {
                Ok(()) => {
                    *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    return self.publish();
                }
                Err(e) => {
                    let pause = retry.failed();
                    tracing::warn!(error = %e, retry_in = ?pause, "cannot read the config from the kv");
                    *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(e.to_string());
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Follows the watch, publishes at quiet points, re-reads when needed. Ends when the
    /// [`Feed`] that owns it is dropped (the task is aborted at an await point).
    async fn run(mut self) {
        loop {
            let Some(watch) = self.watch.as_mut() else {
                self.resync().await;
                continue;
            };
            match watch.next().await {
                None => {
                    tracing::info!("config watch ended; re-reading");
                    self.watch = None;
                }
                Some(Err(e)) if e.kind() == kvtk_core::ErrorKind::HistoryGone => {
                    // Keys vanished while we were away: the watch cannot say what they held,
                    // so re-read everything; readers apply at most one change.
                    tracing::info!(error = %e, "config watch lost history; re-reading");
                    self.watch = None;
                }
                Some(Err(e)) => tracing::warn!(error = %e, "config watch error"),
                Some(Ok(WatchEvent::InitialDone)) => {}
                Some(Ok(WatchEvent::Entry(e))) => {
                    self.record(&e);
                    // Entries of one transaction arrive together: wait for the quiet point and
                    // for the transaction's commit entry (the watch's pending count alone can
                    // read 0 between two messages of one atomic batch), so no reader ever
                    // applies half of a multi-key update.
                    if e.delta() == 0 && !self.in_txn {
                        self.publish();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_parsed_once_for_its_key_and_format() {
        let once = ParseOnce::default();
        let a = once.get("app", Format::Json, br#"{"pool":1}"#).unwrap();
        let b = once.get("app", Format::Json, br#"{"pool":1}"#).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(*a, serde_json::json!({"pool": 1}));
        // Another key is parsed on its own, from its own bytes.
        let c = once.get("other", Format::Json, br#"{"pool":2}"#).unwrap();
        assert_eq!(*c, serde_json::json!({"pool": 2}));
        assert!(!Arc::ptr_eq(
            &a,
            &once.get("other", Format::Json, b"{}").unwrap()
        ));
    }

    #[test]
    fn a_malformed_document_fails_every_reader_alike() {
        let once = ParseOnce::default();
        let first = once.get("app", Format::Json, b"{not json").unwrap_err();
        assert!(first.starts_with("invalid json"), "{first}");
        assert_eq!(once.get("app", Format::Json, b"{not json"), Err(first));
    }

    #[cfg(feature = "toml")]
    #[test]
    fn another_format_of_the_same_key_parses_its_own() {
        let once = ParseOnce::default();
        let json = once.get("app", Format::Json, br#"{"pool":1}"#);
        assert!(json.is_ok());
        let toml = once.get("app", Format::Toml, br#"{"pool":1}"#);
        assert!(
            toml.is_err(),
            "a JSON object is not a TOML document: {toml:?}"
        );
    }
}
