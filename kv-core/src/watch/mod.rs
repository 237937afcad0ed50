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
//!
//! [`ErrorKind::HistoryGone`]: crate::ErrorKind::HistoryGone
//! [`ErrorKind::PermissionDenied`]: crate::ErrorKind::PermissionDenied

// By role: `builder.rs` holds `WatchBuilder` (the options) and `Watch` (the stream it
// starts); `event.rs` `Include` and `WatchEvent`; `state.rs` the recovery logic above, one
// delivery at a time; `consumer.rs` the hand-managed push consumer and what makes it
// untrustworthy; `gap.rs` the per-key proof that a strict watch lost nothing.

mod builder;
mod consumer;
mod event;
mod gap;
mod state;

pub use builder::{Watch, WatchBuilder};
pub use event::{Include, WatchEvent};
