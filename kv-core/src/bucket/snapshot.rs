//! [`Snapshot`]: the latest revision of every key under a filter, read in one request when
//! the server can answer it in one.

use tracing::Instrument as _;

use crate::bucket::read::ReadOnlyBucket;
use crate::entry::Entry;
use crate::error::{Error, Operation};
use crate::js::{StoredMsg, TOO_MANY_RESULTS};
use crate::key::KeyFilter;
use crate::retry::Backoff;
use crate::revision::Revision;
use crate::watch::{Include, WatchBuilder};

/// The latest revision of each key under a filter, as of one point in the bucket's history.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The latest entry of each matching key (values, tombstones and markers), by revision.
    pub entries: Vec<Entry>,
    /// The bucket's last revision when the snapshot was taken: nothing written up to it is
    /// missing. Set also when no key matches; `None` only for a bucket that was never
    /// written to.
    pub as_of: Option<Revision>,
}

impl Snapshot {
    /// Every key with its latest revision (values, tombstones and markers), sorted by key:
    /// two snapshots compare equal when nothing under the filter was written in between.
    pub fn key_revisions(&self) -> Vec<(String, Revision)> {
        let mut all: Vec<_> = self
            .entries
            .iter()
            .map(|e| (e.key().as_str().to_string(), e.revision()))
            .collect();
        all.sort();
        all
    }

    /// The highest revision among the entries: the last revision under the filter.
    pub fn last_revision(&self) -> Option<Revision> {
        self.entries.iter().map(Entry::revision).max()
    }
}

impl ReadOnlyBucket {
    /// The latest revision of every key matching `filter` — values, tombstones and markers —
    /// in one request (direct get batch, nats-server ≥ 2.11), and the revision the snapshot
    /// is consistent at.
    ///
    /// Like [`get`](Self::get) it may be answered by a lagging replica on replicated buckets:
    /// the snapshot is consistent, but possibly older than the latest write.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn snapshot(&self, filter: impl AsRef<str>) -> Result<Snapshot, Error> {
        let filter = KeyFilter::new(filter.as_ref()).map_err(|e| e.with_op(Operation::Get))?;
        let span = tracing::debug_span!("kv.snapshot", bucket = %self.inner.name, filter = %filter);
        async {
            let subject = format!("{}{}", self.inner.read_prefix, filter);
            let (msgs, as_of) = match self.snapshot_msgs(&subject).await {
                Err(e) if e.server_code() == Some(u64::from(TOO_MANY_RESULTS)) => {
                    return self.snapshot_by_watch(filter).await;
                }
                other => other.map_err(|e| e.with_op(Operation::Get))?,
            };
            let entries = msgs
                .into_iter()
                .filter_map(|m| self.inner.entry_from(m))
                .collect();
            Ok(Snapshot { entries, as_of })
        }
        .instrument(span)
        .await
    }

    /// As [`snapshot`](Self::snapshot), consistent as of `at_least` or later: while the
    /// replica that answers has not reached it, it asks again, with [`Backoff::DEFAULT`]
    /// between attempts (transient failures too; bound it with a timeout). For a reader that
    /// saw `at_least` (a watch event, say) and must judge the keys from a state that
    /// includes it.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn snapshot_since(
        &self,
        filter: impl AsRef<str>,
        at_least: Revision,
    ) -> Result<Snapshot, Error> {
        let filter = filter.as_ref();
        let mut retrying = Backoff::DEFAULT.start();
        loop {
            let snap = Backoff::DEFAULT.retry(|| self.snapshot(filter)).await?;
            if snap.as_of.is_some_and(|r| r >= at_least) {
                return Ok(snap);
            }
            tracing::debug!(filter, at_least = at_least.get(), as_of = ?snap.as_of.map(Revision::get), "a snapshot older than asked; reading again");
            retrying.pause().await;
        }
    }

    /// A snapshot too large for one direct-get answer (more than 1,024 keys match): the last
    /// value per key from a consumer instead, consistent at least as of the stream's last
    /// revision read before it started.
    async fn snapshot_by_watch(&self, filter: KeyFilter) -> Result<Snapshot, Error> {
        let info = self.inner.stream_info().await;
        let info = info.map_err(|e| e.with_op(Operation::Get))?;
        let entries = WatchBuilder::new(self.inner.clone(), Ok(vec![filter]))
            .include(Include::LastPerKey)
            .snapshot()
            .await?;
        Ok(Snapshot {
            entries,
            as_of: Revision::new(info.state.last_sequence),
        })
    }

    /// The last message of every subject matching `subject`, and the revision that is
    /// consistent at. When nothing matches, the answer carries no revision: then the stream's
    /// last sequence is read and the question asked again up to it, so the resume point
    /// covers writes that landed in between.
    async fn snapshot_msgs(
        &self,
        subject: &str,
    ) -> Result<(Vec<StoredMsg>, Option<Revision>), Error> {
        let js = &self.inner.js;
        let first = js
            .direct_multi_last(&self.inner.stream, subject, None)
            .await?;
        if first.1.is_some() {
            return Ok(first);
        }
        let info = self.inner.stream_info().await?;
        let Some(last) = Revision::new(info.state.last_sequence) else {
            return Ok((Vec::new(), None));
        };
        let (msgs, as_of) = js
            .direct_multi_last(&self.inner.stream, subject, Some(last))
            .await?;
        Ok((msgs, as_of.or(Some(last))))
    }
}
