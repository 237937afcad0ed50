//! Watches: a stream of entries that never loses an update.
//!
//! ```no_run
//! # async fn demo(bucket: kvtk_core::Bucket) -> Result<(), kvtk_core::Error> {
//! use futures::StreamExt;
//! use kvtk_core::{Include, WatchEvent};
//! let mut watch = bucket.watch(["config.>"]).include(Include::LastPerKey).await?;
//! while let Some(event) = watch.next().await {
//!     match event? {
//!         WatchEvent::Entry(e) => println!("{} @ {}: {:?}", e.key(), e.revision(), e.value()),
//!         WatchEvent::InitialDone => println!("initial values delivered"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Recovery
//!
//! A watch remembers the revision (stream sequence) of the last message it processed. When
//! its consumer may have become unreliable — the client reconnected, heartbeats stopped (the
//! server restarted), the consumer sequence skipped (deliveries lost in transit), the server
//! deleted the consumer — the watch drops it, makes a new one and resumes after that revision:
//!
//! - **No duplicates**: anything at or below the last processed revision is dropped, so each
//!   revision is delivered at most once per watch.
//! - **No gaps** in [`Include::LastPerKey`] and [`Include::UpdatesOnly`] modes: the watch
//!   resumes with a last-value-per-key snapshot and then follows new writes, delivering every
//!   key whose latest revision is newer than what it had processed. Intermediate revisions of a
//!   key that the server has already replaced (history limits) are compacted away, as they
//!   would be for any new reader; the latest value of every changed key arrives.
//! - A key that vanished entirely while the watch was away — its TTL expired *and* its expiry
//!   marker expired too — leaves no trace on the server. The watch notices it (it tracks the
//!   keys it has seen alive) and yields an error of kind [`ErrorKind::HistoryGone`] naming the
//!   key, then goes on. Treat it as "re-read this key".
//! - In [`Include::AllHistory`] mode, or when started with
//!   [`from_revision`](WatchBuilder::from_revision) (the *strict* modes), every revision from
//!   the start or resume point on is wanted. When the server no longer holds one of them —
//!   the stream's front moved past it, or the key's history limit, a purge or an expiry
//!   removed it from the middle of the stream — the watch yields [`ErrorKind::HistoryGone`]
//!   naming the key and ends, instead of skipping silently. It proves each key's first
//!   revision after the start or resume point with one to three direct gets; where the
//!   server cannot tell which key a removed revision belonged to (another key's revision
//!   removed in between), it reports `HistoryGone` too, so a strict watch on a bucket with
//!   history 1 whose keys are rewritten while it is away will end. Use
//!   [`skip_compacted`](WatchBuilder::skip_compacted) to follow the latest state instead.
//! - Errors while re-creating the consumer (the server is still down) are retried with
//!   backoff without ending the stream; a failed attempt is logged at `warn` level. A
//!   refused permission ([`ErrorKind::PermissionDenied`]: creating the consumer, or
//!   subscribing to its delivery inbox) ends the watch, since retrying cannot help.
//!
//! Each consumer is created through the named create subject with its filter in it,
//! `$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>` (for a single filter subject), so a
//! user's publish permissions can confine which keys it may watch.
//!
//! # Pacing
//!
//! With a per-key history limit the server removes a key's older revision when a newer one
//! is written, so a consumer that falls behind the head of the stream skips revisions that
//! were replaced before it reached them. Server-side flow control makes a consumer wait for
//! the client to read, so a [`Include::LastPerKey`] or [`Include::UpdatesOnly`] watch read
//! late (an observer polled after a burst of terms, a busy application) would lose the
//! intermediate revisions it exists to see. These watches therefore run without flow
//! control: the server delivers each write as it stores it, and the client buffers up to its
//! subscription capacity (async-nats: 65,536 messages); past that the client drops
//! deliveries, the consumer sequence shows the gap and the watch resumes as above. Strict
//! watches, whose start point may lie far back in a large stream, are paced by flow control
//! and prove every key's revisions instead (a revision replaced before delivery ends them
//! with `HistoryGone`).
//!
//! Failure detection rests on the consumer's idle heartbeat (2 s): a watch idle across a
//! server restart notices within about two heartbeats (4 s) once polled. A consumer nobody
//! listens to any more (a dropped watch whose delete did not reach the server) is removed by
//! the server after 10 s.

use std::collections::HashSet;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::stream;
use async_nats::{StatusCode, Subscriber};
use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use tokio::time::Instant;

use crate::bucket::Inner;
use crate::entry::{batch_of, classify, expected_of, lease_of, Entry, Op};
use crate::error::{Error, ErrorKind, Operation};
use crate::key::{Key, KeyFilter};
use crate::revision::Revision;

mod gap;
use gap::GapCheck;

/// Which entries a watch starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Include {
    /// The latest revision of each matching key, then every update (the default).
    #[default]
    LastPerKey,
    /// Every revision the bucket holds, then every update.
    AllHistory,
    /// Only updates made after the watch started.
    UpdatesOnly,
}

/// An item of a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// A revision of a key.
    Entry(Entry),
    /// Every entry that existed when the watch started has been delivered (sent once, also
    /// when nothing matched, and at once for [`Include::UpdatesOnly`]).
    InitialDone,
}

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
        let filters = self.filters.map_err(|e| e.with_op(Operation::Watch))?;
        let subjects: Vec<String> = if filters.is_empty() {
            vec![format!("{}>", self.inner.read_prefix)]
        } else {
            filters
                .iter()
                .map(|f| format!("{}{}", self.inner.read_prefix, f))
                .collect()
        };
        let mut state = State {
            inner: self.inner,
            subjects,
            strict: !self.skip_compacted
                && (self.from_revision.is_some() || self.include == Include::AllHistory),
            ignore_deletes: self.ignore_deletes,
            meta_only: self.meta_only,
            last_seq: 0,
            first_policy: DeliverPolicy::All,
            consumer: None,
            initial_done: false,
            marker_due: false,
            live: HashSet::new(),
            relist_seen: None,
            failures: 0,
            ended: false,
            deferred: None,
            stale: Vec::new(),
            gap: None,
            interrupted: "",
        };
        state.first_policy = match (self.from_revision, self.include) {
            (Some(r), _) => {
                if state.strict {
                    state.gap = Some(strict_check(&state.inner, r.get(), "start").await?);
                }
                state.last_seq = r.get() - 1;
                DeliverPolicy::ByStartSequence {
                    start_sequence: r.get(),
                }
            }
            (None, Include::LastPerKey) => DeliverPolicy::LastPerSubject,
            (None, Include::AllHistory) => DeliverPolicy::All,
            (None, Include::UpdatesOnly) => {
                // Start right after the stream's last message: unlike DeliverPolicy::New,
                // this start point can be resumed from without a gap.
                let info = stream_info(&state.inner).await?;
                state.last_seq = info.state.last_sequence;
                state.marker_due = true;
                state.initial_done = true;
                DeliverPolicy::ByStartSequence {
                    start_sequence: info.state.last_sequence + 1,
                }
            }
        };
        state.connect(true).await?;
        let stream = futures::stream::unfold(state, |mut s| async move {
            let item = s.next_event().await?;
            crate::metrics::watch_result(&s.inner.shared_name, &item);
            Some((item, s))
        });
        Ok(Watch {
            inner: stream.boxed(),
        })
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

/// A running watch: a `Stream` of [`WatchEvent`]s. See the [module docs](self) for recovery.
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

struct State {
    inner: Arc<Inner>,
    subjects: Vec<String>,
    /// Resume must not compact: every revision is wanted.
    strict: bool,
    ignore_deletes: bool,
    meta_only: bool,
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
    failures: u32,
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
    inner
        .js
        .api(&format!("STREAM.INFO.{}", inner.stream), Bytes::new())
        .await
        .map_err(|e| e.with_op(Operation::Watch))
}

impl State {
    /// Makes a consumer: the first one with the starting policy, later ones resuming after
    /// `last_seq`.
    async fn connect(&mut self, first: bool) -> Result<(), Error> {
        let policy = if first || (self.last_seq == 0 && !self.strict) {
            // Nothing processed yet: starting over with the first policy cannot duplicate.
            self.first_policy
        } else if self.strict {
            let want = self.last_seq + 1;
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
        let consumer = Consumer::create(
            &self.inner,
            &self.subjects,
            policy,
            self.meta_only,
            self.strict,
        )
        .await?;
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
        if gone.is_empty() {
            return None;
        }
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
            .with_key(gone[0].as_str())
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
    async fn verify_gap(&mut self, key: Option<&Key>, seq: u64, op: Op) -> Result<(), Error> {
        match (self.gap.as_mut(), key) {
            (Some(gap), Some(key)) => gap.verify(&self.inner, key, seq, op == Op::Purge).await,
            _ => Ok(()),
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
                // Re-create the consumer, with backoff while the server is away.
                if self.failures > 0 {
                    // Jittered, so watchers of a restarted server do not return in lockstep.
                    let pause = crate::retry::Backoff::DEFAULT.delay(self.failures - 1);
                    tokio::time::sleep(pause).await;
                }
                match self.connect(false).await {
                    Ok(()) => {
                        self.failures = 0;
                        crate::metrics::watch_resumed(&self.inner.shared_name, self.interrupted);
                        // The replaced consumers would linger until their inactivity
                        // threshold: remove them now, so reconnect storms leave nothing behind.
                        for name in std::mem::take(&mut self.stale) {
                            let subject = format!("CONSUMER.DELETE.{}.{}", self.inner.stream, name);
                            let _ = self
                                .inner
                                .js
                                .api::<serde_json::Value>(&subject, Bytes::new())
                                .await;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::HistoryGone | ErrorKind::PermissionDenied
                        ) =>
                    {
                        self.ended = true;
                        return Some(Err(e));
                    }
                    Err(e) => {
                        self.failures += 1;
                        tracing::warn!(bucket = %self.inner.name, error = %e, "watch resume failed, retrying");
                    }
                }
                continue;
            };
            let d = match consumer.next().await {
                Ok(d) => d,
                Err(reason) => {
                    self.drop_consumer(reason);
                    continue;
                }
            };
            let (seq, pending, published) = (d.stream_seq, d.pending, d.published);
            let m = d.message;
            let key = crate::bucket::key_of_subject(m.subject.as_str()).map(Key::from_server);
            let snapshot_over = pending == 0;
            if let (Some(seen), Some(k)) = (self.relist_seen.as_mut(), key.as_ref()) {
                seen.insert(k.clone());
            }
            let mut out = None;
            if seq > self.last_seq {
                let (op, removal, ttl) = classify(m.headers.as_ref());
                if let Err(e) = self.verify_gap(key.as_ref(), seq, op).await {
                    if e.kind() == ErrorKind::HistoryGone {
                        self.ended = true;
                        return Some(Err(e));
                    }
                    self.drop_consumer("cannot check for gaps");
                    continue;
                }
                self.last_seq = seq;
                if let (Some(key), Some(revision)) = (key, Revision::new(seq)) {
                    if op == Op::Put {
                        if !self.live.contains(&key) {
                            self.live.insert(key.clone());
                        }
                    } else {
                        self.live.remove(&key);
                    }
                    if !(self.ignore_deletes && op != Op::Put) {
                        out = Some(Entry {
                            bucket: self.inner.shared_name.clone(),
                            key,
                            value: if self.meta_only {
                                Bytes::new()
                            } else {
                                m.payload
                            },
                            revision,
                            created: published,
                            delta: pending,
                            op,
                            removal,
                            ttl,
                            batch: batch_of(m.headers.as_ref()),
                            lease: lease_of(m.headers.as_ref(), revision),
                            expected: expected_of(m.headers.as_ref()),
                        });
                    }
                }
            }
            let mut vanished = None;
            if snapshot_over {
                self.finish_snapshot();
                vanished = self.vanished_keys();
            }
            if let Some(e) = vanished {
                if let Some(entry) = out {
                    // Deliver the entry first; the error follows on the next poll.
                    self.deferred = Some(e);
                    return Some(Ok(WatchEvent::Entry(entry)));
                }
                return Some(Err(e));
            }
            if let Some(entry) = out {
                return Some(Ok(WatchEvent::Entry(entry)));
            }
        }
    }
}

/// How long without any message or heartbeat before a consumer is presumed dead.
const HEARTBEAT: Duration = Duration::from_secs(2);

/// One delivered message with its JetStream metadata.
struct Delivery {
    message: async_nats::Message,
    stream_seq: u64,
    pending: u64,
    published: time::OffsetDateTime,
}

/// A push consumer managed by hand, so that every disruption is visible: a skipped consumer
/// sequence (deliveries lost while disconnected), missing heartbeats (server restarted, consumer
/// gone) or a closed subscription all end it, and the watch re-creates it from its own resume
/// point. (async-nats' ordered consumer re-creates itself silently from its own idea of the
/// resume point, which hides gaps.)
struct Consumer {
    client: async_nats::Client,
    sub: Subscriber,
    /// The server's name for it, to delete it when we replace or drop it.
    name: String,
    js: crate::js::Js,
    stream: String,
    num_pending: u64,
    last_cseq: u64,
    deadline: Instant,
    /// The client's connection count when the consumer was made: a reconnect since means
    /// the consumer may have skipped what the server removed meanwhile, so we re-check.
    connects: u64,
}

impl Consumer {
    async fn create(
        inner: &Inner,
        subjects: &[String],
        policy: DeliverPolicy,
        meta_only: bool,
        paced: bool,
    ) -> Result<Consumer, Error> {
        let client = inner.js.client.clone();
        inner.js.ensure_janitor();
        let connects = client.statistics().connects.load(Ordering::Relaxed);
        let inbox = client.new_inbox();
        let since = std::time::Instant::now();
        // Subscribe first: the consumer starts pushing as soon as it exists.
        let sub = client.subscribe(inbox.clone()).await.map_err(|e| {
            Error::new(ErrorKind::Connection, "cannot subscribe")
                .with_source(e)
                .with_op(Operation::Watch)
        })?;
        let mut config = serde_json::json!({
            "deliver_subject": inbox,
            "ack_policy": "none",
            "max_deliver": 1,
            // See "Pacing" in the module docs.
            "flow_control": paced,
            "idle_heartbeat": HEARTBEAT.as_nanos() as u64,
            "headers_only": meta_only,
            "mem_storage": true,
            "num_replicas": 1,
            // Only counts while nobody listens: a live watch always does.
            "inactive_threshold": Duration::from_secs(10).as_nanos() as u64,
            "replay_policy": "instant",
        });
        let policy_json = serde_json::to_value(policy).unwrap_or_default();
        if let (Some(c), Some(p)) = (config.as_object_mut(), policy_json.as_object()) {
            for (k, v) in p {
                c.insert(k.clone(), v.clone());
            }
            if subjects.len() == 1 {
                c.insert("filter_subject".into(), subjects[0].clone().into());
            } else {
                c.insert("filter_subjects".into(), subjects.to_vec().into());
            }
        }
        // Named, with the filter in the subject (`CONSUMER.CREATE.<stream>.<name>.<filter>`),
        // so a user's publish permissions can confine which keys it may watch.
        let name = format!("kvw_{}", uuid::Uuid::new_v4().simple());
        let create = match subjects {
            [one] => format!("CONSUMER.CREATE.{}.{name}.{one}", inner.stream),
            _ => format!("CONSUMER.CREATE.{}.{name}", inner.stream),
        };
        if let Some(c) = config.as_object_mut() {
            c.insert("name".into(), name.clone().into());
        }
        let body = serde_json::json!({ "stream_name": inner.stream, "config": config });
        #[derive(serde::Deserialize)]
        struct Created {
            #[serde(default)]
            name: String,
            #[serde(default)]
            num_pending: u64,
        }
        let created: Created = inner
            .js
            .api(&create, Bytes::from(body.to_string()))
            .await
            .map_err(|e| e.with_op(Operation::Watch))?;
        // The server answers a refused subscription before it handles the create request
        // sent after it on the same connection, so the refusal is known by now.
        if let Some(e) = inner.js.refused_subscription(&inbox, since) {
            inner.js.delete_consumer_later(&inner.stream, &name);
            return Err(e.with_op(Operation::Watch));
        }
        Ok(Consumer {
            client,
            sub,
            js: inner.js.clone(),
            stream: inner.stream.clone(),
            name: created.name,
            num_pending: created.num_pending,
            last_cseq: 0,
            deadline: Instant::now() + HEARTBEAT * 2,
            connects,
        })
    }

    /// The next data message, answering flow control on the way. An `Err` names why the
    /// consumer can no longer be trusted.
    async fn next(&mut self) -> Result<Delivery, &'static str> {
        loop {
            let msg = match tokio::time::timeout_at(self.deadline, self.sub.next()).await {
                Err(_) => return Err("missed heartbeats"),
                Ok(None) => return Err("subscription closed"),
                Ok(Some(m)) => m,
            };
            self.deadline = Instant::now() + HEARTBEAT * 2;
            if self.client.statistics().connects.load(Ordering::Relaxed) != self.connects {
                return Err("client reconnected");
            }
            if msg.status == Some(StatusCode::IDLE_HEARTBEAT) {
                if let Some(reply) = msg.reply.clone() {
                    // Flow control: the server waits for this before sending more.
                    if self.client.publish(reply, Bytes::new()).await.is_err() {
                        return Err("cannot answer flow control");
                    }
                }
                let last = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Last-Consumer"))
                    .and_then(|v| v.as_str().parse::<u64>().ok());
                if last.is_some_and(|l| l > self.last_cseq) {
                    return Err("heartbeat shows deliveries we never got");
                }
                continue;
            }
            if msg.status.is_some() {
                // 409 consumer deleted and friends.
                return Err("consumer ended by the server");
            }
            let Some(reply) = msg.reply.as_ref() else {
                continue;
            };
            let Some(meta) = parse_ack_subject(reply.as_str()) else {
                continue;
            };
            if meta.cseq != self.last_cseq + 1 {
                return Err("consumer sequence skipped");
            }
            self.last_cseq = meta.cseq;
            return Ok(Delivery {
                message: msg,
                stream_seq: meta.sseq,
                pending: meta.pending,
                published: meta.published,
            });
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Without this, every dropped watch would leave its consumer on the server until the
        // inactivity threshold: thousands of them for a busy lock, up to the server's limit.
        if !self.name.is_empty() {
            self.js.delete_consumer_later(&self.stream, &self.name);
        }
    }
}

struct AckMeta {
    sseq: u64,
    cseq: u64,
    pending: u64,
    published: time::OffsetDateTime,
}

/// Parses `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>` (v1) or the
/// v2 form with domain and account hash before the stream (and an optional trailing token).
fn parse_ack_subject(s: &str) -> Option<AckMeta> {
    // Called for every delivered message: tokens on the stack, no allocation.
    let mut t: [&str; 12] = [""; 12];
    let mut len = 0;
    for tok in s.split('.') {
        if len == t.len() {
            return None;
        }
        t[len] = tok;
        len += 1;
    }
    if len < 9 || t[0] != "$JS" || t[1] != "ACK" {
        return None;
    }
    // v1 has exactly 9 tokens; v2 has at least 11, numbers start at index 6 (v2: after
    // domain, hash, stream, consumer).
    let base = if len == 9 { 4 } else { 6 };
    let n = |i: usize| {
        t.get(base + i)
            .filter(|_| base + i < len)
            .and_then(|x| x.parse::<u64>().ok())
    };
    let ts = i128::from(n(3)?);
    Some(AckMeta {
        sseq: n(1)?,
        cseq: n(2)?,
        pending: n(4)?,
        published: time::OffsetDateTime::from_unix_timestamp_nanos(ts)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn ack_subjects_never_panic(s in "[$A-Za-z0-9.]{0,80}") {
            let _ = parse_ack_subject(&s);
        }

        #[test]
        fn ack_subjects_round_trip(sseq: u64, cseq: u64, pending: u64, ts in 0i64..4_000_000_000_000_000_000, v2: bool) {
            let head = if v2 { "$JS.ACK.dom.hash.KV_b.cons" } else { "$JS.ACK.KV_b.cons" };
            let m = parse_ack_subject(&format!("{head}.1.{sseq}.{cseq}.{ts}.{pending}")).unwrap();
            proptest::prop_assert_eq!((m.sseq, m.cseq, m.pending), (sseq, cseq, pending));
            proptest::prop_assert_eq!(m.published.unix_timestamp_nanos(), i128::from(ts));
        }
    }

    #[test]
    fn ack_subjects() {
        let m = parse_ack_subject("$JS.ACK.KV_b.cons.1.42.7.1700000000000000000.3").unwrap();
        assert_eq!((m.sseq, m.cseq, m.pending), (42, 7, 3));
        let m = parse_ack_subject("$JS.ACK.dom.hash.KV_b.cons.1.42.7.1700000000000000000.3.tok")
            .unwrap();
        assert_eq!((m.sseq, m.cseq, m.pending), (42, 7, 3));
        assert!(parse_ack_subject("$JS.ACK.x").is_none());
        assert!(parse_ack_subject("foo.bar.a.b.c.d.e.f.g").is_none());
    }
}
