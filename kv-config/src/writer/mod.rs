//! The writer: validated compare-and-set updates, history and rollback.

mod prefix;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use kvtk_core::{Backoff, Bucket, Expect, Include, Revision, Watch, WatchEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tracing::Instrument as _;

use self::prefix::{Delete, Plan, Put};
use crate::error::{Error, ErrorKind, RejectKind, Rejection};
use crate::layer::{assemble_prefix, diff_paths, merge};
use crate::pipeline::{Pipeline, Validate};
use crate::source::Source;

/// Default bound on compare-and-set attempts of one write.
pub const DEFAULT_ATTEMPTS: usize = 16;

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Written {
    /// The revision that now holds the value: the new one, or the existing one when nothing
    /// had to be written. `None` only when the KV holds nothing and the value equals the
    /// defaults.
    pub revision: Option<Revision>,
    /// The field paths written (empty: the value was already there, nothing was written).
    pub changed: Vec<String>,
}

/// One revision of the configuration, as [`ConfigWriter::history`] returns it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Version<T> {
    /// The revision.
    pub revision: Revision,
    /// The configuration as of this revision (defaults applied), or why it is not a valid
    /// one (including [`RejectKind::Deleted`] for a deleted document).
    pub value: Result<T, Rejection>,
}

/// Entries of the configuration as read for a write: key → (live value or tombstone, rev).
struct State {
    entries: BTreeMap<String, (Option<Bytes>, Revision)>,
    last: Option<Revision>,
}

/// Writes a configuration with the same checks a reader applies: a value the validator
/// refuses is never written. Cheap to clone.
///
/// In prefix mode a change of several fields is one kvtk-core transaction (the bucket needs
/// `atomic_batches(true)`; a one-field change is a plain conditional write), so readers never
/// see half of it. Every write is conditional on the revisions it read, and retried on
/// conflict.
pub struct ConfigWriter<T> {
    bucket: Bucket,
    source: Source,
    pipeline: Arc<Pipeline<T>>,
    attempts: usize,
}

impl<T> Clone for ConfigWriter<T> {
    fn clone(&self) -> Self {
        ConfigWriter {
            bucket: self.bucket.clone(),
            source: self.source.clone(),
            pipeline: self.pipeline.clone(),
            attempts: self.attempts,
        }
    }
}

impl<T> fmt::Debug for ConfigWriter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigWriter")
            .field("bucket", &self.bucket.name())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

fn kv_err(context: &str) -> impl FnOnce(kvtk_core::Error) -> Error + '_ {
    move |e| Error::kv(context, e)
}

impl<T> ConfigWriter<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// A writer of the configuration at `source` in `bucket`.
    pub fn new(bucket: Bucket, source: Source) -> Self {
        ConfigWriter {
            bucket,
            source,
            pipeline: Arc::new(Pipeline::default()),
            attempts: DEFAULT_ATTEMPTS,
        }
    }

    fn pipeline_mut(&mut self) -> &mut Pipeline<T> {
        Arc::make_mut(&mut self.pipeline)
    }

    /// Code defaults, merged under the stored value (use the readers' defaults).
    pub fn defaults(mut self, defaults: T) -> Self {
        if let Ok(v) = serde_json::to_value(&defaults) {
            self.pipeline_mut().defaults = v;
        }
        self
    }

    /// The validator: a value it refuses is never written.
    pub fn validate<F>(mut self, f: F) -> Self
    where
        F: Fn(&T) -> Result<(), String> + Send + Sync + 'static,
    {
        self.pipeline_mut().validator = Some(Arc::new(f));
        self
    }

    /// Validates with the type's [`Validate`] implementation.
    pub fn validated(self) -> Self
    where
        T: Validate,
    {
        self.validate(|t: &T| t.validate())
    }

    /// Strict mode for reading the stored value (unknown fields are refused).
    pub fn strict(mut self, strict: bool) -> Self {
        self.pipeline_mut().strict = strict;
        self
    }

    /// Gives up after `n` conflicting attempts (default [`DEFAULT_ATTEMPTS`]).
    pub fn max_attempts(mut self, n: usize) -> Self {
        self.attempts = n.max(1);
        self
    }

    /// The bucket.
    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// The stored state. `from_leader`: read the document from the stream leader — after a
    /// conflict, since a direct get may be served by a replica that lags (on R3 a writer on a
    /// lagging node kept reading the revision it had just lost to and gave up).
    async fn read_state(&self, from_leader: bool) -> Result<State, Error> {
        let mut entries = BTreeMap::new();
        let mut last = None;
        match &self.source {
            Source::Document { key, .. } => {
                let read = if from_leader {
                    self.bucket.get_from_leader(key).await
                } else {
                    self.bucket.entry(key).await
                };
                if let Some(e) = read.map_err(kv_err("cannot read the config"))? {
                    last = Some(e.revision());
                    let v = e.is_value().then(|| e.value().clone());
                    entries.insert(key.clone(), (v, e.revision()));
                }
            }
            Source::Prefix { .. } => {
                let mut w = self
                    .watch(Include::LastPerKey, "cannot read the config")
                    .await?;
                while let Some(ev) = w.next().await {
                    match ev.map_err(kv_err("cannot read the config"))? {
                        WatchEvent::Entry(e) => {
                            last = last.max(Some(e.revision()));
                            let v = e.is_value().then(|| e.value().clone());
                            entries.insert(e.key().as_str().to_string(), (v, e.revision()));
                        }
                        WatchEvent::InitialDone => break,
                    }
                }
            }
        }
        Ok(State { entries, last })
    }

    /// A watch of the configuration's keys from `include`; `context` says what failed.
    async fn watch(&self, include: Include, context: &str) -> Result<Watch, Error> {
        self.bucket
            .watch([self.source.filter()])
            .include(include)
            .await
            .map_err(kv_err(context))
    }

    /// The KV layer of `entries` (live values only).
    fn kv_layer(
        &self,
        entries: &BTreeMap<String, (Option<Bytes>, Revision)>,
    ) -> Result<Option<Value>, Rejection> {
        match &self.source {
            Source::Document { key, format } => match entries.get(key) {
                Some((Some(b), _)) => format
                    .parse(b)
                    .map(Some)
                    .map_err(|m| Rejection::new(RejectKind::Malformed, m)),
                _ => Ok(None),
            },
            Source::Prefix { prefix } => {
                let live: Vec<(&str, &[u8])> = entries
                    .iter()
                    .filter_map(|(k, (v, _))| v.as_ref().map(|v| (k.as_str(), v.as_ref())))
                    .collect();
                if live.is_empty() {
                    return Ok(None);
                }
                assemble_prefix(prefix, live)
                    .map(Some)
                    .map_err(|(k, m)| Rejection::new(RejectKind::Malformed, format!("{k}: {m}")))
            }
        }
    }

    /// The current stored value, decoded and validated (defaults applied), and the newest
    /// revision of its keys.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn get(&self) -> Result<(T, Option<Revision>), Error> {
        let st = self.read_state(false).await?;
        let kv = self.kv_layer(&st.entries).map_err(|r| r.at(st.last))?;
        let (t, _) = self
            .pipeline
            .candidate(kv.as_ref())
            .map_err(|r| r.at(st.last))?;
        Ok((t, st.last))
    }

    /// Reads the current value, lets `f` change it, validates the result and writes it,
    /// conditional on what was read; retries on conflict (`f` may run several times).
    /// Nothing is written when `f` leaves the value as it was.
    ///
    /// Fails with [`ErrorKind::Rejected`] when the new value is refused (or the stored
    /// one cannot be decoded), [`ErrorKind::Conflict`] after too many conflicts.
    ///
    /// # Cancel safety
    /// Not cancel safe: a write may take effect even if the future is dropped.
    pub async fn update<F>(&self, mut f: F) -> Result<Written, Error>
    where
        F: FnMut(&mut T),
    {
        self.write_with(|cur| {
            let mut t = cur?;
            f(&mut t);
            Ok(t)
        })
        .await
    }

    /// Validates `value` and writes it (conditional on the revision it replaces, retried on
    /// conflict). Works also when the stored value is broken.
    ///
    /// # Cancel safety
    /// Not cancel safe: a write may take effect even if the future is dropped.
    pub async fn set(&self, value: &T) -> Result<Written, Error> {
        let json = serde_json::to_value(value)
            .map_err(|e| Error::new(ErrorKind::Encode, format!("value does not serialize: {e}")))?;
        self.write_json(json).await
    }

    async fn write_json(&self, json: Value) -> Result<Written, Error> {
        self.write_with(move |_| {
            serde_json::from_value::<T>(json.clone())
                .map_err(|e| Rejection::new(RejectKind::WrongType, e.to_string()).into())
        })
        .await
    }

    async fn write_with<F>(&self, mut f: F) -> Result<Written, Error>
    where
        F: FnMut(Result<T, Rejection>) -> Result<T, Error>,
    {
        let span = tracing::info_span!("kvtk_config.write", config = %self.source.name());
        async {
            let mut retry = conflict_backoff().start();
            for attempt in 1..=self.attempts {
                let st = self.read_state(attempt > 1).await?;
                let kv = self.kv_layer(&st.entries).map_err(|r| r.at(st.last));
                let mut old_doc = self.pipeline.defaults.clone();
                if let Ok(Some(kv)) = &kv {
                    merge(&mut old_doc, kv.clone());
                }
                let current = kv.and_then(|kv| {
                    self.pipeline
                        .candidate(kv.as_ref())
                        .map(|(t, _)| t)
                        .map_err(|r| r.at(st.last))
                });
                let next = f(current)?;
                let (_, new_json) = self.pipeline.check(next).map_err(|r| {
                    tracing::debug!(reason = %r.message(), "refusing to write an invalid config");
                    Error::from(r)
                })?;
                match self.write_diff(&st, &old_doc, &new_json).await {
                    Ok(w) => {
                        if !w.changed.is_empty() {
                            tracing::info!(revision = w.revision.map(Revision::get), changed = ?w.changed, "config written");
                        }
                        return Ok(w);
                    }
                    Err(e) if e.kind() == ErrorKind::Conflict => {
                        tracing::debug!(attempt, "config write conflict, retrying");
                        retry.pause().await;
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(Error::new(
                ErrorKind::Conflict,
                format!("gave up after {} conflicting attempts", self.attempts),
            ))
        }
        .instrument(span)
        .await
    }

    /// Writes the difference between what is stored and `new`, conditionally.
    async fn write_diff(&self, st: &State, old_doc: &Value, new: &Value) -> Result<Written, Error> {
        match &self.source {
            Source::Document { key, format } => {
                let live = matches!(st.entries.get(key), Some((Some(_), _)));
                let changed = diff_paths(old_doc, new);
                if live && changed.is_empty() {
                    return Ok(Written {
                        revision: st.last,
                        changed,
                    });
                }
                let bytes = format
                    .encode(new)
                    .map_err(|m| Error::new(ErrorKind::Encode, m))?;
                let expect = match st.entries.get(key) {
                    Some((_, rev)) => Expect::Revision(*rev),
                    None => Expect::NoMessage,
                };
                let rev = self
                    .bucket
                    .put(key, bytes)
                    .expect(expect)
                    .await
                    .map_err(kv_err("cannot write the config"))?;
                Ok(Written {
                    revision: Some(rev),
                    changed,
                })
            }
            Source::Prefix { prefix } => self.write_prefix(prefix, st, old_doc, new).await,
        }
    }

    /// Writes a prefix-mode value: one key per field, several changed fields as one
    /// transaction.
    async fn write_prefix(
        &self,
        prefix: &str,
        st: &State,
        old_doc: &Value,
        new: &Value,
    ) -> Result<Written, Error> {
        if !new.is_object() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "prefix mode needs a type that serializes to an object",
            ));
        }
        let plan = Plan::of(prefix, &st.entries, old_doc, new)?;
        let revision = match plan.writes() {
            0 => {
                return Ok(Written {
                    revision: st.last,
                    changed: Vec::new(),
                })
            }
            1 => self.write_one(plan.puts, plan.deletes).await?,
            _ => self.write_txn(plan.puts, plan.deletes).await?,
        };
        Ok(Written {
            revision,
            changed: plan.changed,
        })
    }

    /// One field's write: a conditional put or delete.
    async fn write_one(
        &self,
        mut puts: Vec<Put>,
        mut deletes: Vec<Delete>,
    ) -> Result<Option<Revision>, Error> {
        let rev = if let Some((key, bytes, expect)) = puts.pop() {
            self.bucket.put(&key, bytes).expect(expect).await
        } else if let Some((key, rev)) = deletes.pop() {
            self.bucket.delete(&key).revision(rev).await
        } else {
            return Ok(None);
        };
        let rev = rev.map_err(kv_err("cannot write the config"))?;
        Ok(Some(rev))
    }

    /// Several fields' writes as one atomic batch: readers apply on its commit entry (see
    /// reader/core.rs).
    async fn write_txn(
        &self,
        puts: Vec<Put>,
        deletes: Vec<Delete>,
    ) -> Result<Option<Revision>, Error> {
        let mut txn = self.bucket.txn();
        for (key, bytes, expect) in puts {
            txn = match expect {
                Expect::Revision(r) => txn.update(&key, bytes, r),
                Expect::NoMessage => txn.create(&key, bytes),
            };
        }
        for (key, rev) in deletes {
            txn = txn.delete_if(&key, rev);
        }
        let committed = txn
            .commit()
            .await
            .map_err(kv_err("cannot write the config transaction"))?;
        Ok(committed.last_revision())
    }

    /// Every revision of the configuration the bucket still holds, oldest first (as many as
    /// the bucket's history keeps). In prefix mode there is one version per written key, so
    /// the revisions inside one transaction show partial states; use the last revision of a
    /// transaction ([`Written::revision`]).
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn history(&self) -> Result<Vec<Version<T>>, Error> {
        let mut w = self
            .watch(Include::AllHistory, "cannot read the config history")
            .await?;
        let mut entries: BTreeMap<String, (Option<Bytes>, Revision)> = BTreeMap::new();
        let mut out = Vec::new();
        while let Some(ev) = w.next().await {
            let e = match ev.map_err(kv_err("cannot read the config history"))? {
                WatchEvent::Entry(e) => e,
                WatchEvent::InitialDone => break,
            };
            let rev = e.revision();
            let v = e.is_value().then(|| e.value().clone());
            entries.insert(e.key().as_str().to_string(), (v, rev));
            let value = match &self.source {
                Source::Document { .. } if !e.is_value() => Err(Rejection::new(
                    RejectKind::Deleted,
                    "the config key was deleted",
                )),
                _ => self
                    .kv_layer(&entries)
                    .and_then(|kv| self.pipeline.candidate(kv.as_ref()).map(|(t, _)| t)),
            };
            out.push(Version {
                revision: rev,
                value: value.map_err(|r| r.at(Some(rev))),
            });
        }
        Ok(out)
    }

    /// Writes the configuration as it was at revision `to` (validated again, conditional on
    /// the current revisions). Fails with [`ErrorKind::NotFound`] when the bucket no
    /// longer holds that revision.
    ///
    /// # Cancel safety
    /// Not cancel safe: the write may take effect even if the future is dropped.
    pub async fn rollback(&self, to: Revision) -> Result<Written, Error> {
        let history = self.history().await?;
        let Some(v) = history.into_iter().find(|v| v.revision == to) else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "revision {to} is not in the history of {:?}",
                    self.source.name()
                ),
            ));
        };
        let t = v.value?;
        let (_, json) = self.pipeline.check(t)?;
        self.write_json(json).await
    }

    /// Waits until at least `count` reader instances (see
    /// [`ConfigBuilder::instance`](crate::ConfigBuilder::instance)) report having applied
    /// `revision` or a later one; returns their names. Watches the acknowledgement keys, no
    /// polling; bound it with `tokio::time::timeout`. An acknowledgement bound to a session
    /// that ended ([`ConfigBuilder::bind_ack_to_session`](crate::ConfigBuilder::bind_ack_to_session))
    /// does not count, and the wait removes it (a delete conditional on its revision, so an
    /// instance that acknowledged again keeps its new one): instances that never return leave
    /// no keys behind.
    ///
    /// # Cancel safety
    /// Cancel safe: besides reading it only removes acknowledgements of ended sessions,
    /// which count for nothing whether or not a removal dropped midway was applied.
    pub async fn wait_applied(
        &self,
        revision: Revision,
        count: usize,
    ) -> Result<Vec<String>, Error> {
        crate::fleet::wait_applied(&self.bucket, &self.source, revision, count).await
    }
}

/// A short, jittered exponential backoff between conflicting attempts: a conflict means
/// another writer just succeeded, so the next attempt can come soon.
fn conflict_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(2), Duration::from_millis(128)).unwrap_or_default()
}
