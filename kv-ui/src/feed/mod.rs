//! Feeds: one task per bucket, each following its bucket with one kvtk-core watch (the latest
//! value of every key, then every change) and turning what changed into view items through
//! the recipes' public reads.
//!
//! A feed never reads per tab: tabs only follow the [`Hub`]. The watch tells a feed *which*
//! lock, election, group or document changed; the feed then asks the recipe (`inspect`,
//! `leader`, `members`, `history`), at most [`MAX_READS`] at a time and never twice at once
//! for one item. Renewals of leases change nothing but a deadline and cost no read.
//!
//! The runner waits for a bucket that does not exist yet (the view says so), and starts
//! again — new watch, fresh state — after the watch ends or fails. It stops when the
//! server's cancellation token fires; dropping it drops the watch and every read in flight
//! (all cancel safe: they only read).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use kvtk_core::{Backoff, Bucket, Entry, ErrorKind, Include, Kv, WatchEvent};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, View};

pub(crate) mod buckets;
pub(crate) mod config;
pub(crate) mod elections;
pub(crate) mod locks;
pub(crate) mod members;

/// Reads in flight per feed at most.
pub(crate) const MAX_READS: usize = 16;

/// How often a feed's `tick` runs (lease deadlines, retries of stale reads).
const TICK: Duration = Duration::from_millis(500);

/// What every feed gets: the connection, the hub, and the token that stops it.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) kv: Kv,
    pub(crate) hub: Arc<Hub>,
    pub(crate) cancel: CancellationToken,
}

/// A read started by a feed, and what it brings back.
pub(crate) type Read<D> = BoxFuture<'static, D>;

/// What a watched entry means for its item.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Something that changes what the item shows: read it.
    Changed(String),
    /// Only a lease deadline moved: published at the next tick, without a read.
    Renewed(String),
}

/// The per-bucket logic of one view. The runner owns the scheduling ([`Book`]: one read
/// per item at a time, retries at the next tick, renewals gathered per tick); a feed only
/// says what an entry changed, how to read an item, and what a read showed.
pub(crate) trait Feed: Send + 'static {
    /// What a finished read brings back.
    type Done: Send + 'static;

    /// The view this feed fills.
    fn view(&self) -> View;

    /// Gets ready for a new watch on `bucket`. Fails with a message for the view's status
    /// line (the bucket is not fit for this view).
    fn open(&mut self, bucket: Bucket) -> BoxFuture<'_, Result<(), String>>;

    /// One watched entry: the items it changed.
    fn entry(&mut self, e: &Entry) -> Vec<Change>;

    /// The watch delivered every entry that existed when it started: the items it showed
    /// (each is read; the view keeps only them).
    fn initial(&mut self) -> Vec<String>;

    /// A read of item `id`, or none when the feed cannot read now.
    fn fetch(&mut self, id: &str) -> Option<Read<Self::Done>>;

    /// A read finished: its item, and whether to read it again at the next tick (the
    /// answer was stale, or the read failed in a way that may pass).
    fn done(&mut self, d: Self::Done) -> (String, bool);

    /// Only lease deadlines of item `id` moved since it was last published.
    fn renewed(&mut self, id: &str);
}

/// Runs `feed` on bucket `name` until `ctx.cancel` fires.
///
/// # Cancel safety
/// Cancel safe: it only reads; dropping it drops the watch and the reads in flight.
pub(crate) async fn run<F: Feed>(ctx: Ctx, name: String, mut feed: F) {
    let view = feed.view();
    let mut retry = Backoff::new(Duration::from_millis(250), Duration::from_secs(5))
        .unwrap_or_default()
        .start();
    loop {
        let outcome = tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => return,
            o = session(&ctx, &name, &mut feed) => o,
        };
        let missing = matches!(outcome, Outcome::Missing);
        let status = match outcome {
            Outcome::Missing => {
                json!({"bucket": name, "state": "missing", "message": format!("bucket {name} not found (yet): nothing to show")})
            }
            Outcome::Failed(msg) => {
                tracing::warn!(bucket = %name, view = view.as_str(), "{msg}");
                json!({"bucket": name, "state": "error", "message": msg})
            }
        };
        ctx.hub.status(view, status);
        if missing {
            ctx.hub.retain(view, &|_| false);
        }
        tokio::select! {
            () = ctx.cancel.cancelled() => return,
            () = retry.pause() => {}
        }
        if retry.failures() > 8 {
            retry.reset();
        }
    }
}

/// Why a session ended.
enum Outcome {
    /// The bucket does not exist.
    Missing,
    /// Something failed; the message says what.
    Failed(String),
}

/// One watch of the bucket, from its start until it ends.
async fn session<F: Feed>(ctx: &Ctx, name: &str, feed: &mut F) -> Outcome {
    let view = feed.view();
    let bucket = match ctx.kv.open(name).await {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::BucketNotFound => return Outcome::Missing,
        Err(e) => return Outcome::Failed(format!("cannot open bucket {name}: {e}")),
    };
    if let Err(msg) = feed.open(bucket.clone()).await {
        return Outcome::Failed(msg);
    }
    let mut watch = match bucket.watch_all().include(Include::LastPerKey).await {
        Ok(w) => w,
        Err(e) => return Outcome::Failed(format!("cannot watch bucket {name}: {e}")),
    };
    ctx.hub.status(
        view,
        json!({"bucket": name, "state": "loading", "message": format!("reading bucket {name}")}),
    );
    let mut sched = Sched::default();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            ev = watch.next() => match ev {
                Some(Ok(WatchEvent::Entry(e))) => sched.entry(feed, &e),
                Some(Ok(WatchEvent::InitialDone)) => {
                    sched.initial(feed, &ctx.hub);
                    ctx.hub.status(view, json!({"bucket": name, "state": "live", "message": format!("live: bucket {name}")}));
                }
                // A key that vanished while the watch was away: the watch goes on; the
                // feed's next read of that item shows what is there now.
                Some(Err(e)) if e.kind() == ErrorKind::HistoryGone => {
                    tracing::debug!(bucket = %name, "watch: {e}");
                }
                Some(Err(e)) => return Outcome::Failed(format!("watch of bucket {name} failed: {e}")),
                None => return Outcome::Failed(format!("watch of bucket {name} ended")),
            },
            Some(d) = sched.reads.next(), if !sched.reads.is_empty() => sched.done(feed, d),
            _ = tick.tick() => sched.tick(feed),
        }
    }
}

/// One watch's scheduling: the [`Book`] and the reads in flight.
struct Sched<D> {
    book: Book,
    reads: Reads<D>,
}

impl<D> Default for Sched<D> {
    fn default() -> Self {
        Sched {
            book: Book::default(),
            reads: Reads::default(),
        }
    }
}

impl<D: Send + 'static> Sched<D> {
    /// Starts a read of `id` unless one is running (then one more follows it).
    fn read<F: Feed<Done = D>>(&mut self, feed: &mut F, id: &str) {
        if !self.book.start(id) {
            return;
        }
        match feed.fetch(id) {
            Some(r) => self.reads.add(Some(r)),
            None => self.book.cancel(id),
        }
    }

    fn entry<F: Feed<Done = D>>(&mut self, feed: &mut F, e: &Entry) {
        for change in feed.entry(e) {
            match change {
                Change::Renewed(id) => {
                    self.book.renewed.insert(id);
                }
                Change::Changed(id) if self.book.ready => self.read(feed, &id),
                Change::Changed(_) => {}
            }
        }
    }

    fn initial<F: Feed<Done = D>>(&mut self, feed: &mut F, hub: &Hub) {
        let ids = feed.initial();
        self.book.initial(hub, feed.view(), &ids);
        for id in ids {
            self.read(feed, &id);
        }
    }

    fn done<F: Feed<Done = D>>(&mut self, feed: &mut F, d: D) {
        let (id, again) = feed.done(d);
        if again {
            self.book.retry.insert(id.clone());
        }
        if self.book.finish(&id) {
            self.reads.add(feed.fetch(&id));
        }
    }

    fn tick<F: Feed<Done = D>>(&mut self, feed: &mut F) {
        let (renewed, retry) = self.book.take();
        for id in renewed {
            feed.renewed(&id);
        }
        for id in retry {
            self.read(feed, &id);
        }
    }
}

/// Reads in flight (at most [`MAX_READS`]) and those waiting for a place.
struct Reads<D> {
    running: FuturesUnordered<Read<D>>,
    queued: std::collections::VecDeque<Read<D>>,
}

impl<D> Default for Reads<D> {
    fn default() -> Self {
        Reads {
            running: FuturesUnordered::new(),
            queued: std::collections::VecDeque::new(),
        }
    }
}

impl<D> Reads<D> {
    fn add(&mut self, reads: impl IntoIterator<Item = Read<D>>) {
        self.queued.extend(reads);
        self.fill();
    }

    fn fill(&mut self) {
        while self.running.len() < MAX_READS {
            let Some(r) = self.queued.pop_front() else {
                break;
            };
            self.running.push(r);
        }
    }

    fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    async fn next(&mut self) -> Option<D> {
        let d = self.running.next().await;
        self.fill();
        d
    }
}

/// What a feed keeps besides its items: which items have a read in flight and which
/// changed again meanwhile (one read per item at a time, one more after it when something
/// changed during it), whether the initial entries are in, whose leases moved since the
/// last tick, and which reads to try again then.
#[derive(Default)]
struct Book {
    running: HashSet<String>,
    again: HashSet<String>,
    /// The watch delivered its initial entries: reads may start.
    ready: bool,
    /// Items whose lease deadlines moved since the last tick.
    renewed: HashSet<String>,
    /// Items whose last read was stale or failed.
    retry: HashSet<String>,
}

impl Book {
    /// Whether a read of `id` should start now (else it is remembered for after the
    /// running one).
    fn start(&mut self, id: &str) -> bool {
        if self.running.contains(id) {
            self.again.insert(id.to_string());
            false
        } else {
            self.running.insert(id.to_string());
            true
        }
    }

    /// The read of `id` finished; whether another should start.
    fn finish(&mut self, id: &str) -> bool {
        if self.again.remove(id) {
            true
        } else {
            self.running.remove(id);
            false
        }
    }

    /// No read of `id` could start after all: it is not running.
    fn cancel(&mut self, id: &str) {
        self.running.remove(id);
        self.again.remove(id);
    }

    /// The initial entries are in: `ids` are the items the watch showed; `view` keeps only
    /// them.
    fn initial(&mut self, hub: &Hub, view: View, ids: &[String]) {
        self.ready = true;
        let live: HashSet<&str> = ids.iter().map(String::as_str).collect();
        hub.retain(view, &|id| live.contains(id));
    }

    /// At a tick: the items whose leases moved, and those to read again.
    fn take(&mut self) -> (HashSet<String>, Vec<String>) {
        let retry = self.retry.drain().collect();
        (std::mem::take(&mut self.renewed), retry)
    }
}

/// Milliseconds since the Unix epoch of an entry's server timestamp.
pub(crate) fn created_ms(e: &Entry) -> u64 {
    let ns = e.created().unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ns).unwrap_or(0)
}

/// When an entry's lease runs out if nobody renews it (server timestamp + TTL), in ms.
pub(crate) fn expires_ms(e: &Entry) -> Option<u64> {
    let ttl = e.ttl()?;
    Some(created_ms(e).saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_read_per_item_at_a_time_and_one_more_after_a_change() {
        let mut p = Book::default();
        assert!(p.start("a"));
        assert!(!p.start("a"));
        assert!(!p.start("a"));
        assert!(p.finish("a"), "changed while read: read again");
        assert!(!p.finish("a"));
        assert!(p.start("a"));
        assert!(!p.start("a"));
        p.cancel("a");
        assert!(
            p.start("a"),
            "a read that could not start leaves nothing behind"
        );
    }
}
