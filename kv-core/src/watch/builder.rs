//! [`WatchBuilder`]: a watch's options, and the [`Watch`] stream it starts.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};

use crate::bucket::inner::Inner;
use crate::entry::Entry;
use crate::error::{Error, ErrorKind, Operation};
use crate::key::KeyFilter;
use crate::revision::Revision;
use crate::watch::event::{Include, WatchEvent};
use crate::watch::state::{Delivered, State};

/// Options of a watch; await it (or call [`start`](WatchBuilder::start)) to start.
#[must_use = "a watch does nothing until awaited"]
#[derive(Debug)]
pub struct WatchBuilder {
    inner: Arc<Inner>,
    filters: Result<Vec<KeyFilter>, Error>,
    include: Include,
    from_revision: Option<Revision>,
    ignore_deletes: bool,
    meta_only: bool,
    skip_compacted: bool,
}

impl WatchBuilder {
    pub(crate) fn new(inner: Arc<Inner>, filters: Result<Vec<KeyFilter>, Error>) -> Self {
        WatchBuilder {
            inner,
            filters,
            include: Include::LastPerKey,
            from_revision: None,
            ignore_deletes: false,
            meta_only: false,
            skip_compacted: false,
        }
    }

    /// Which entries to start with (default [`Include::LastPerKey`]).
    pub fn include(mut self, include: Include) -> Self {
        self.include = include;
        self
    }

    /// Starts at `revision` (inclusive): every matching revision from there on. Overrides
    /// `include`. Use the last revision you processed plus one to resume.
    pub fn from_revision(mut self, revision: Revision) -> Self {
        self.from_revision = Some(revision);
        self
    }

    /// Skips deletes, purges and expiry markers (they still advance the resume point).
    pub fn ignore_deletes(mut self) -> Self {
        self.ignore_deletes = true;
        self
    }

    /// Accepts that revisions the server already replaced (history limits) are skipped, at
    /// the start of a [`from_revision`](Self::from_revision) or [`Include::AllHistory`] watch
    /// and on resume, instead of reporting [`ErrorKind::HistoryGone`]. For watchers that
    /// follow the latest state of keys from a point on (lock waiters): it also saves the
    /// stream-info request a strict start makes. The latest revision of every changed key is
    /// still delivered.
    pub fn skip_compacted(mut self) -> Self {
        self.skip_compacted = true;
        self
    }

    /// Delivers entries without values (metadata only: key, revision, operation).
    pub fn meta_only(mut self) -> Self {
        self.meta_only = true;
        self
    }

    /// Starts the watch.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future leaves at most an idle ephemeral consumer that the
    /// server removes after 10 s.
    pub async fn start(self) -> Result<Watch, Error> {
        let bucket = self.inner.shared_name.clone();
        let res = self.open().await;
        crate::metrics::watch_result(&bucket, &res);
        res
    }

    async fn open(self) -> Result<Watch, Error> {
        let strict = !self.skip_compacted
            && (self.from_revision.is_some() || self.include == Include::AllHistory);
        let delivered = self.delivered();
        let filters = self.filters.map_err(|e| e.with_op(Operation::Watch))?;
        let subjects = subjects(&self.inner.read_prefix, &filters);
        let mut state = State::new(self.inner, subjects, strict, delivered);
        state.start_at(self.from_revision, self.include).await?;
        state.connect(true).await?;
        Ok(Watch {
            inner: state.into_stream(),
        })
    }

    /// What the watch delivers of each entry.
    fn delivered(&self) -> Delivered {
        Delivered {
            ignore_deletes: self.ignore_deletes,
            meta_only: self.meta_only,
        }
    }

    /// Collects entries until the initial values are delivered (used by history and keys).
    pub(crate) async fn snapshot(self) -> Result<Vec<Entry>, Error> {
        let mut watch = self.start().await?;
        let mut out = Vec::new();
        while let Some(ev) = watch.next().await {
            match ev? {
                WatchEvent::Entry(e) => out.push(e),
                WatchEvent::InitialDone => return Ok(out),
            }
        }
        Err(Error::new(ErrorKind::Connection, "watch ended early").with_op(Operation::Watch))
    }
}

impl IntoFuture for WatchBuilder {
    type Output = Result<Watch, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.start())
    }
}

/// A running watch: a `Stream` of [`WatchEvent`]s. See the [module docs](crate::watch) for
/// recovery.
///
/// Polling it is cancel safe: an event is never lost when a `next()` future is dropped.
/// Dropping the watch stops it; the server removes its consumer.
pub struct Watch {
    inner: BoxStream<'static, Result<WatchEvent, Error>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl Stream for Watch {
    type Item = Result<WatchEvent, Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

/// The subjects a watch of `filters` follows (an empty list: every key).
fn subjects(read_prefix: &str, filters: &[KeyFilter]) -> Vec<String> {
    if filters.is_empty() {
        return vec![format!("{read_prefix}>")];
    }
    filters
        .iter()
        .map(|f| format!("{read_prefix}{f}"))
        .collect()
}
