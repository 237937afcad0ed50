//! The state of a running watch and its recovery (see "Recovery" in the `watch` module
//! docs): what it processed, where it resumes, and what each delivery makes of it.

use std::collections::HashSet;
use std::sync::Arc;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::stream;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

use crate::bucket::inner::Inner;
use crate::entry::{Entry, Op};
use crate::error::{Error, ErrorKind, Operation};
use crate::key::Key;
use crate::retry::{Backoff, Retrying};
use crate::revision::Revision;
use crate::watch::consumer::{Consumer, Delivery};
use crate::watch::event::{Include, WatchEvent};
use crate::watch::gap::GapCheck;

/// What a watch delivers of each entry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Delivered {
    /// Skip deletes, purges and expiry markers (they still advance the resume point).
    pub(super) ignore_deletes: bool,
    /// Entries without values.
    pub(super) meta_only: bool,
}

pub(super) struct State {
    inner: Arc<Inner>,
    subjects: Vec<String>,
    /// Resume must not compact: every revision is wanted.
    strict: bool,
    delivered: Delivered,
    /// Stream sequence of the last message processed (delivered or skipped).
    last_seq: u64,
    first_policy: DeliverPolicy,
    consumer: Option<Consumer>,
    initial_done: bool,
    marker_due: bool,
    /// Keys whose last processed revision was a live value.
    live: HashSet<Key>,
    /// During a resume snapshot: live keys seen again so far.
    relist_seen: Option<HashSet<Key>>,
    /// Failed attempts to re-create the consumer, and the pause each earns: jittered, so
    /// watchers of a restarted server do not return in lockstep.
    retry: Retrying,
    ended: bool,
    /// An error to report on the next poll.
    deferred: Option<Error>,
    /// Names of replaced consumers still to delete on the server.
    stale: Vec<String>,
    /// Strict modes: the keys proven gap-free since the last start or resume point.
    gap: Option<GapCheck>,
    /// Why the last consumer was dropped (the `reason` label of the resume it causes).
    interrupted: &'static str,
}

/// The check a strict watch makes before it starts or resumes at revision `want`: the
/// stream's front must not have passed it. Returns the per-key check for what follows.
async fn strict_check(inner: &Inner, want: u64, what: &str) -> Result<GapCheck, Error> {
    let info = stream_info(inner).await?;
    if info.state.messages > 0 && info.state.first_sequence > want {
        return Err(Error::new(
            ErrorKind::HistoryGone,
            format!(
                "cannot {what} at revision {want}: the bucket's oldest revision is {}",
                info.state.first_sequence
            ),
        )
        .with_op(Operation::Watch));
    }
    Ok(GapCheck::new(want, info.config.max_messages_per_subject))
}

async fn stream_info(inner: &Inner) -> Result<stream::Info, Error> {
    let info = inner.stream_info().await;
    info.map_err(|e| e.with_op(Operation::Watch))
}

/// Whether a failure to re-create the consumer ends the watch: retrying cannot help.
fn ends_watch(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::HistoryGone | ErrorKind::PermissionDenied
    )
}

impl State {
    pub(super) fn new(
        inner: Arc<Inner>,
        subjects: Vec<String>,
        strict: bool,
        delivered: Delivered,
    ) -> State {
        State {
            inner,
            subjects,
            strict,
            delivered,
            last_seq: 0,
            first_policy: DeliverPolicy::All,
            consumer: None,
            initial_done: false,
            marker_due: false,
            live: HashSet::new(),
            relist_seen: None,
            retry: Backoff::DEFAULT.start(),
            ended: false,
            deferred: None,
            stale: Vec::new(),
            gap: None,
            interrupted: "",
        }
    }

    /// Sets where the first consumer starts: at `from` (checked first in the strict modes),
    /// with the last value per key, with all history, or right after the stream's last
    /// message.
    pub(super) async fn start_at(
        &mut self,
        from: Option<Revision>,
        include: Include,
    ) -> Result<(), Error> {
        self.first_policy = match (from, include) {
            (Some(r), _) => {
                if self.strict {
                    self.gap = Some(strict_check(&self.inner, r.get(), "start").await?);
                }
                self.last_seq = r.get() - 1;
                DeliverPolicy::ByStartSequence {
                    start_sequence: r.get(),
                }
            }
            (None, Include::LastPerKey) => DeliverPolicy::LastPerSubject,
            (None, Include::AllHistory) => DeliverPolicy::All,
            (None, Include::UpdatesOnly) => {
                // Start right after the stream's last message: unlike DeliverPolicy::New,
                // this start point can be resumed from without a gap.
                let info = stream_info(&self.inner).await?;
                self.last_seq = info.state.last_sequence;
                self.marker_due = true;
                self.initial_done = true;
                DeliverPolicy::ByStartSequence {
                    start_sequence: info.state.last_sequence.saturating_add(1),
                }
            }
        };
        Ok(())
    }

    /// The watch's events, one [`next_event`](State::next_event) at a time.
    pub(super) fn into_stream(self) -> BoxStream<'static, Result<WatchEvent, Error>> {
        futures::stream::unfold(self, |mut s| async move {
            let item = s.next_event().await?;
            crate::metrics::watch_result(&s.inner.shared_name, &item);
            Some((item, s))
        })
        .boxed()
    }

    /// Makes a consumer: the first one with the starting policy, later ones resuming after
    /// `last_seq`.
    pub(super) async fn connect(&mut self, first: bool) -> Result<(), Error> {
        let policy = if first || (self.last_seq == 0 && !self.strict) {
            // Nothing processed yet: starting over with the first policy cannot duplicate.
            self.first_policy
        } else if self.strict {
            let want = self.last_seq.saturating_add(1);
            self.gap = Some(strict_check(&self.inner, want, "resume").await?);
            DeliverPolicy::ByStartSequence {
                start_sequence: want,
            }
        } else {
            // Resume with a fresh last-value-per-key snapshot, keeping only what is newer
            // than what we processed: no gap, no duplicate.
            self.relist_seen = Some(HashSet::new());
            DeliverPolicy::LastPerSubject
        };
        let meta_only = self.delivered.meta_only;
        // Only strict watches are paced by flow control: see "Pacing" in the `watch` module
        // docs.
        let consumer =
            Consumer::create(&self.inner, &self.subjects, policy, meta_only, self.strict).await?;
        let pending = consumer.num_pending;
        if pending == 0 {
            self.finish_snapshot();
            // An empty resume snapshot: every key we knew alive has vanished.
            if let Some(e) = self.vanished_keys() {
                self.deferred = Some(e);
            }
        }
        self.consumer = Some(consumer);
        tracing::debug!(bucket = %self.inner.name, ?policy, pending, "watch consumer ready");
        Ok(())
    }

    /// The (initial or resume) snapshot has been delivered.
    fn finish_snapshot(&mut self) {
        if !self.initial_done {
            self.initial_done = true;
            self.marker_due = true;
        }
    }

    /// Keys alive before a resume that the resume snapshot did not show: they vanished
    /// without a trace (value and marker both expired).
    fn vanished_keys(&mut self) -> Option<Error> {
        let seen = self.relist_seen.take()?;
        let gone: Vec<Key> = self.live.difference(&seen).cloned().collect();
        let first = gone.first()?;
        for k in &gone {
            self.live.remove(k);
        }
        let names: Vec<&str> = gone.iter().map(Key::as_str).take(10).collect();
        Some(
            Error::new(
                ErrorKind::HistoryGone,
                format!(
                    "{} key(s) vanished while the watch was away, with no marker left: {}",
                    gone.len(),
                    names.join(", ")
                ),
            )
            .with_key(first.as_str())
            .with_op(Operation::Watch),
        )
    }

    /// Replaces the consumer on the next poll, resuming after the last processed revision.
    fn drop_consumer(&mut self, reason: &'static str) {
        tracing::info!(bucket = %self.inner.name, reason, last = self.last_seq, "watch consumer interrupted, resuming");
        self.interrupted = reason;
        // Deleted right after the resume succeeds (the connection may be down now).
        if let Some(mut old) = self.consumer.take() {
            self.stale.push(std::mem::take(&mut old.name));
        }
    }

    /// Strict modes: proves no revision of `key` before `seq` was removed since the last
    /// start or resume point (see `gap`).
    async fn verify_gap(&mut self, key: &Key, seq: u64, op: Op) -> Result<(), Error> {
        match self.gap.as_mut() {
            Some(gap) => gap.verify(&self.inner, key, seq, op == Op::Purge).await,
            None => Ok(()),
        }
    }

    async fn next_event(&mut self) -> Option<Result<WatchEvent, Error>> {
        loop {
            if let Some(e) = self.deferred.take() {
                return Some(Err(e));
            }
            if self.ended {
                return None;
            }
            if self.marker_due {
                self.marker_due = false;
                return Some(Ok(WatchEvent::InitialDone));
            }
            let Some(consumer) = self.consumer.as_mut() else {
                if let Err(e) = self.resume().await {
                    self.ended = true;
                    return Some(Err(e));
                }
                continue;
            };
            match consumer.next().await {
                Ok(d) => {
                    if let Some(event) = self.deliver(d).await {
                        return Some(event);
                    }
                }
                Err(reason) => self.drop_consumer(reason),
            }
        }
    }

    /// Re-creates the consumer after an interruption, pausing (with backoff) after a failed
    /// attempt while the server is away. Fails only with what ends the watch.
    async fn resume(&mut self) -> Result<(), Error> {
        match self.connect(false).await {
            Ok(()) => {
                self.retry.reset();
                crate::metrics::watch_resumed(&self.inner.shared_name, self.interrupted);
                self.delete_stale().await;
                Ok(())
            }
            Err(e) if ends_watch(&e) => Err(e),
            Err(e) => {
                tracing::warn!(bucket = %self.inner.name, error = %e, "watch resume failed, retrying");
                self.retry.pause().await;
                Ok(())
            }
        }
    }

    /// Deletes the replaced consumers, which would otherwise linger until their inactivity
    /// threshold: reconnect storms leave nothing behind.
    async fn delete_stale(&mut self) {
        for name in std::mem::take(&mut self.stale) {
            let subject = format!("CONSUMER.DELETE.{}.{}", self.inner.stream, name);
            let _ = self
                .inner
                .js
                .api::<serde_json::Value>(&subject, Bytes::new())
                .await;
        }
    }

    /// Processes one delivery: the event it makes, if any.
    async fn deliver(&mut self, d: Delivery) -> Option<Result<WatchEvent, Error>> {
        let key = Key::from_subject(d.message.subject.as_str());
        let snapshot_over = d.pending == 0;
        if let (Some(seen), Some(k)) = (self.relist_seen.as_mut(), key.as_ref()) {
            seen.insert(k.clone());
        }
        let mut out = None;
        if d.stream_seq > self.last_seq {
            match self.accept(key, d).await {
                Ok(entry) => out = entry,
                Err(e) if e.kind() == ErrorKind::HistoryGone => {
                    self.ended = true;
                    return Some(Err(e));
                }
                Err(_) => {
                    self.drop_consumer("cannot check for gaps");
                    return None;
                }
            }
        }
        let vanished = if snapshot_over {
            self.finish_snapshot();
            self.vanished_keys()
        } else {
            None
        };
        match (out, vanished) {
            (Some(entry), Some(e)) => {
                // Deliver the entry first; the error follows on the next poll.
                self.deferred = Some(e);
                Some(Ok(WatchEvent::Entry(entry)))
            }
            (None, Some(e)) => Some(Err(e)),
            (Some(entry), None) => Some(Ok(WatchEvent::Entry(entry))),
            (None, None) => None,
        }
    }

    /// A revision newer than the last processed one: proves it left no gap (strict modes),
    /// records it as processed and the key as alive or gone, and returns its entry unless
    /// deletes are ignored.
    async fn accept(&mut self, key: Option<Key>, d: Delivery) -> Result<Option<Entry>, Error> {
        let seq = d.stream_seq;
        let entry = match (key, Revision::new(seq)) {
            (Some(key), Some(revision)) => Some(self.entry(key, revision, d)),
            _ => None,
        };
        if let Some(e) = &entry {
            self.verify_gap(&e.key, seq, e.op).await?;
        }
        self.last_seq = seq;
        let Some(entry) = entry else {
            return Ok(None);
        };
        self.track_live(&entry.key, entry.op);
        let skipped = self.delivered.ignore_deletes && entry.op != Op::Put;
        Ok((!skipped).then_some(entry))
    }

    /// The entry a delivery of `key` at `revision` makes.
    fn entry(&self, key: Key, revision: Revision, d: Delivery) -> Entry {
        let m = d.message;
        let value = if self.delivered.meta_only {
            Bytes::new()
        } else {
            m.payload
        };
        let name = self.inner.shared_name.clone();
        let headers = m.headers.as_ref();
        let mut entry = Entry::from_stored(name, key, revision, d.published, headers, value);
        entry.delta = d.pending;
        entry
    }

    /// Remembers whether `key`'s last processed revision was a live value.
    fn track_live(&mut self, key: &Key, op: Op) {
        if op != Op::Put {
            self.live.remove(key);
        } else if !self.live.contains(key) {
            self.live.insert(key.clone());
        }
    }
}
