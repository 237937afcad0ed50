//! The reader's state machine and its background loop.
//!
//! One task per reader follows its [`Feed`] (the watch it shares with the other readers of
//! the same configuration on the same bucket handle). For each raw state the feed publishes
//! it builds one candidate, runs it through the reader's own pipeline to the side and swaps
//! it in only when it is accepted *and* differs from the current value.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use kvtk_core::Revision;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::feed::{self, Feed, Raw, States};
use super::shared::Shared;
use crate::error::{RejectKind, Rejection};
use crate::fleet::{Ack, Applied};
use crate::layer::{assemble_prefix, diff_paths};
use crate::persist::{self, Persisted};
use crate::pipeline::Pipeline;
use crate::snapshot::{Change, ConfigEvent, Origin, Snapshot};
use crate::source::{Connector, Source};

/// An accepted candidate: value, normalized JSON, and the KV layer it came from.
pub(crate) type Accepted<T> = (T, Value, Option<Arc<Value>>);

pub(crate) struct Core<T> {
    pub(crate) source: Source,
    pub(crate) pipeline: Arc<Pipeline<T>>,
    /// Keeps the shared watch running while this reader lives.
    pub(crate) feed: Arc<Feed>,
    pub(crate) states: States,
    /// The state last evaluated; `None` until the feed first read the KV.
    pub(crate) raw: Option<Arc<Raw>>,
    /// Whether a value from the KV (or a snapshot of one) has been in use: only then is a
    /// deleted document a rejection rather than "use the defaults".
    pub(crate) had_value: bool,
    pub(crate) snapshot_file: Option<PathBuf>,
    pub(crate) persisted: Option<Option<Revision>>,
    pub(crate) ack: Option<Ack>,
}

/// What the loop waits on.
enum Wake {
    Cancelled,
    Heartbeat,
    /// The feed's next state (`None`: the feed is gone, which cannot happen while this
    /// reader holds it).
    State(Option<Arc<Raw>>),
}

/// Makes an accepted value current unless it equals the current one (a KV-synced value
/// replaces a stale or non-KV one all the same), and announces a change.
fn swap_in<T>(shared: &Shared<T>, rev: Option<Revision>, value: T, json: Value) {
    // Health and revision first: whoever the change wakes reads them.
    shared.synced(rev);
    let cur = shared.current.load_full();
    let changed = cur.json != json;
    if !changed && !cur.stale && cur.origin == Origin::Kv {
        tracing::debug!("config unchanged");
        return;
    }
    let snap = Arc::new(Snapshot {
        value,
        json,
        revision: rev,
        origin: Origin::Kv,
        stale: false,
        loaded_at: SystemTime::now(),
    });
    shared.current.store(snap.clone());
    shared.metrics.applied();
    if changed {
        shared.generation.send_modify(|g| *g += 1);
        announce(shared, cur, snap, rev);
    } else {
        tracing::info!("config confirmed against the kv");
    }
}

/// Tells the event subscribers and the log what changed. The changed paths cost two
/// flattened trees per reader and change (a thousand readers in a process pay it a thousand
/// times), so they are computed only when someone will read them.
fn announce<T>(
    shared: &Shared<T>,
    old: Arc<Snapshot<T>>,
    new: Arc<Snapshot<T>>,
    revision: Option<Revision>,
) {
    // A subscriber that arrives after this check missed nothing it was promised: events
    // run from the moment of subscribing, and this change was already current.
    let listened = shared.events.receiver_count() > 0;
    if !listened && !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    let paths = diff_paths(&old.json, &new.json);
    tracing::info!(changed = ?paths, "config applied");
    if listened {
        let _ = shared.events.send(ConfigEvent::Changed(Change {
            old,
            new,
            revision,
            paths,
        }));
    }
}

impl<T> Core<T> {
    /// The loop state of a reader of `source` through `connector`, on the feed it shares
    /// with the other readers of `source` on the same bucket handle.
    pub(crate) fn new(
        connector: &Connector,
        source: Source,
        pipeline: Arc<Pipeline<T>>,
        snapshot_file: Option<PathBuf>,
        ack: Option<Ack>,
    ) -> Core<T> {
        let feed = feed::subscribe(connector, &source);
        Core {
            source,
            pipeline,
            states: feed.states(),
            feed,
            raw: None,
            had_value: false,
            snapshot_file,
            persisted: None,
            ack,
        }
    }
}

impl<T> Core<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// The newest revision of the state last evaluated.
    pub(crate) fn last_rev(&self) -> Option<Revision> {
        self.raw.as_ref().and_then(|r| r.last_rev)
    }

    /// Builds and checks the candidate from the state, to the side.
    pub(crate) fn evaluate(&self) -> Result<Accepted<T>, Rejection> {
        let kv = match &self.raw {
            Some(raw) => self.kv_layer(raw)?,
            None => None,
        };
        let (value, json) = self.pipeline.candidate(kv.as_deref())?;
        Ok((value, json, kv))
    }

    /// The KV layer of the candidate: the document, or the fields under the prefix.
    fn kv_layer(&self, raw: &Raw) -> Result<Option<Arc<Value>>, Rejection> {
        match &self.source {
            Source::Document { key, format } => match raw.parsed(key, *format) {
                Some(parsed) => parsed
                    .map(Some)
                    .map_err(|m| Rejection::new(RejectKind::Malformed, m)),
                None if raw.deleted.is_some() && self.had_value => Err(Rejection::new(
                    RejectKind::Deleted,
                    format!("config key {key:?} was deleted"),
                )),
                None => Ok(None),
            },
            Source::Prefix { .. } if raw.entries.is_empty() => Ok(None),
            Source::Prefix { prefix } => assemble_prefix(
                prefix,
                raw.entries
                    .iter()
                    .map(|(k, (v, _))| (k.as_str(), v.as_ref())),
            )
            .map(|v| Some(Arc::new(v)))
            .map_err(|(k, m)| Rejection::new(RejectKind::Malformed, format!("{k}: {m}"))),
        }
    }

    /// Evaluates the current entries and applies the result (or records the rejection).
    pub(crate) async fn apply(&mut self, shared: &Shared<T>) {
        let rev = self.last_rev();
        let span = tracing::info_span!(
            "kvtk_config.apply",
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
                    swap_in(shared, rev, value, json);
                    self.persist(rev, kv).await;
                }
            }
            // Only the first sync changes it: later ones would wake nobody at some cost.
            shared.ready.send_if_modified(|ready| !std::mem::replace(ready, true));
            self.publish_ack(shared, false).await;
        }
        .instrument(span)
        .await
    }

    pub(crate) async fn persist(&mut self, rev: Option<Revision>, kv: Option<Arc<Value>>) {
        let Some(path) = self.snapshot_file.clone() else {
            return;
        };
        if self.persisted == Some(rev) {
            return;
        }
        let p = Persisted::new(rev, kv.map(Arc::unwrap_or_clone));
        match tokio::task::spawn_blocking(move || persist::write(&path, &p)).await {
            Ok(Ok(())) => self.persisted = Some(rev),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot persist the config snapshot"),
            Err(e) => tracing::warn!(error = %e, "snapshot writer failed"),
        }
    }

    /// Publishes this instance's acknowledgement if it changed (`force`: also make sure it
    /// is still there).
    pub(crate) async fn publish_ack(&mut self, shared: &Shared<T>, force: bool) {
        let writable = self.raw.as_ref().and_then(|r| r.bucket.write.as_ref());
        let (Some(ack), Some(bucket)) = (self.ack.as_mut(), writable) else {
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

    /// The background loop: apply every state the feed publishes, renew the
    /// acknowledgement.
    pub(crate) async fn run(mut self, shared: Arc<Shared<T>>, cancel: CancellationToken) {
        let mut heartbeat = self.ack.as_ref().map(|a| {
            let period = a.heartbeat();
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            let hb = async {
                match heartbeat.as_mut() {
                    Some(i) => {
                        i.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let wake = tokio::select! {
                _ = cancel.cancelled() => Wake::Cancelled,
                _ = hb => Wake::Heartbeat,
                r = self.states.next() => Wake::State(r),
            };
            match wake {
                Wake::Cancelled | Wake::State(None) => return,
                Wake::Heartbeat => self.publish_ack(&shared, true).await,
                Wake::State(raw) => {
                    self.raw = raw;
                    self.apply(&shared).await;
                }
            }
        }
    }
}
