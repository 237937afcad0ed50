//! Waiting in the queue: read the lock's keys, ask the [rule](crate::rule) whether our entry
//! holds, and if not watch only the entries it waits for until one of them leaves. The lease
//! keeper renews our entry meanwhile; its loss ends the wait with
//! [`ErrorKind::QueueEntryLost`].

use std::collections::{HashMap, HashSet};
use std::future::{Future, IntoFuture as _};
use std::pin::Pin;

use futures::StreamExt;
use kvtk_core::lease::{
    remove_if_dead, sessions_of, Lease, LostReason, Reaped, SessionId, SessionState,
};
use kvtk_core::{Backoff, Entry, Include, Revision, Watch, WatchEvent};
use tokio::time::Instant;

use crate::checks::check_kind;
use crate::error::{Error, ErrorKind};
use crate::queue::{ticket_of, view, View};
use crate::rule::{decide, holds_after, Decision, Queued};
use crate::shared::Shared;
use crate::stats::Stat;

/// Waits in the queue until `lease`'s entry holds its lock: `Some` with the lock's last
/// revision when we were alone in it (if known), or `None` when a try found it busy.
/// `departed` is set to when a blocker was last seen leaving.
pub(crate) async fn turn(
    s: &Shared,
    lease: &Lease,
    try_only: bool,
    departed: &mut Option<Instant>,
) -> Result<Option<Option<Revision>>, Error> {
    loop {
        match wait_turn(s, lease, try_only, departed).await? {
            Turn::Held(alone) => return Ok(Some(alone)),
            Turn::NotNow => return Ok(None),
            Turn::Again => {}
        }
    }
}

pub(crate) fn entry_lost(why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::QueueEntryLost,
        format!("our queue entry was lost while waiting: {why}"),
    )
}

/// What one watch of the queue ended with.
enum Turn {
    /// We hold; with the lock's last revision when we were alone in it.
    Held(Option<Revision>),
    /// A try found the lock busy.
    NotNow,
    /// The watch broke: open another.
    Again,
}

/// One round of waiting: reads the queue; if the rule says we wait, watches only the
/// entries we wait for until one of them leaves.
///
/// On a replicated bucket the read is a consumer's last-per-key delivery read up to our own
/// entry (see [`queue_now`]): a direct-get snapshot, served by any replica, can show a
/// lagging replica's state without saying so — chaos runs on R3 buckets found overlapping
/// holders that way. A
/// blocker that left by a completed release may settle it without another read (see
/// [`holds_after`]); anything else reads again. The lease keeper renews our entry meanwhile.
/// `departed` is set to when a blocker was last seen leaving.
async fn wait_turn(
    s: &Shared,
    lease: &Lease,
    try_only: bool,
    departed: &mut Option<Instant>,
) -> Result<Turn, Error> {
    let v = queue_now(s, lease).await?;
    check_kind(s, &v)?;
    let Some(me) = v.position(s.own_key().as_str(), lease.origin()) else {
        return Err(entry_lost(
            "it is no longer in the queue (expired or removed)",
        ));
    };
    if !lease.is_held() {
        return Err(entry_lost("its lease ran out"));
    }
    match decide(&v.queue, me, s.kind) {
        Decision::Hold => {
            let alone = (v.queue.len() == 1 && !s.replicated)
                .then_some(v.last)
                .flatten();
            Ok(Turn::Held(alone))
        }
        Decision::Wait(w) if try_only => Ok(match reap_all(s, &v, &w.blockers).await? {
            Some(_) => Turn::Again,
            None => Turn::NotNow,
        }),
        Decision::Wait(w) => {
            tracing::trace!(lock = %s.name, ticket = lease.origin().get(), blockers = w.blockers.len(), "waiting");
            let bound = bound_of(&v, &w.blockers);
            let left = blocker_left(s, lease, &w.blockers, &bound).await?;
            if !matches!(left, Left::Broken) {
                *departed = Some(Instant::now());
            }
            Ok(match left {
                Left::Completed(b) if holds_after(s.kind, &b) => Turn::Held(None),
                _ => Turn::Again,
            })
        }
    }
}

/// The queue at or after our entry's creation, with our entry in it unless it was lost.
///
/// On a replicated bucket the read is a consumer's last-per-key delivery, and the server
/// places a consumer on any replica of the stream: one that may not have applied our own
/// acknowledged write yet (a quorum acknowledged it, not every replica). The delivery up to
/// its initial-values mark is the replica's state at one point; if our key is not at or
/// after our entry's origin there, the replica lags and we read again from a new consumer.
/// (Reading on past the mark until our entry shows is not safe: a revision the history
/// limit replaced before the consumer reached it — an entry ahead of ours, renewed since —
/// arrives only with its replacement, after ours; chaos under a partition: two holders.)
/// If our key's revision there is not our entry, the entry is really gone.
async fn queue_now(s: &Shared, lease: &Lease) -> Result<View, Error> {
    if !s.replicated {
        // One server: its snapshot is the truth.
        return view(s, Some(lease.origin())).await;
    }
    let filter = [s.name.all_filter()];
    let mut lagging = Backoff::DEFAULT.start();
    loop {
        let mut watch = open_watch(s, lease, &filter).await?;
        if let Some(v) = whole_delivery(s, lease, &mut watch).await? {
            return Ok(v);
        }
        lagging.pause().await;
    }
}

/// Reads one consumer's last-per-key delivery up to its initial-values mark: the queue, if
/// that whole delivery holds our own entry (see [`queue_now`]); `None` when the replica lags
/// or the read broke, to read again from a new consumer.
async fn whole_delivery(
    s: &Shared,
    lease: &Lease,
    watch: &mut EntryWatch,
) -> Result<Option<View>, Error> {
    let mut keys: HashMap<String, Entry> = HashMap::new();
    loop {
        match watch.next().await? {
            Some(Ok(WatchEvent::Entry(e))) => {
                keys.insert(e.key().as_str().to_string(), e);
            }
            Some(Ok(WatchEvent::InitialDone)) if reached(keys.get(s.own_key().as_str()), lease) => {
                return Ok(Some(View::of(&s.name, keys.values(), None)?));
            }
            Some(Ok(WatchEvent::InitialDone)) => return Ok(None),
            Some(Err(e)) if !e.is_transient() => return Err(e.into()),
            Some(Err(e)) => {
                tracing::debug!(lock = %s.name, error = %e, "queue read broke, reading again");
                return Ok(None);
            }
            None => return Ok(None),
        }
    }
}

/// Whether a read has reached our entry: our key at or after the entry's creation.
fn reached(own: Option<&Entry>, lease: &Lease) -> bool {
    own.is_some_and(|e| e.revision() >= lease.origin())
}

/// The entries of `blockers` bound to a session, as `v` holds them.
fn bound_of(v: &View, blockers: &[Queued]) -> Vec<Entry> {
    let bound = blockers.iter().filter_map(|b| v.bound.get(&b.key));
    bound.cloned().collect()
}

/// A try that found the lock busy: removes the blockers whose session ended (judged from the
/// stream leader). `Some` when one was removed (or moved meanwhile): read the queue again.
pub(crate) async fn reap_all(
    s: &Shared,
    v: &View,
    blockers: &[Queued],
) -> Result<Option<Left>, Error> {
    let bound = bound_of(v, blockers);
    for id in sessions_of(&bound) {
        if let Some(left) = reap(s, &bound, id).await? {
            return Ok(Some(left));
        }
    }
    Ok(None)
}

/// Removes the entries of `bound` that belong to session `id` if it ended (the stream
/// leader judges, see [`remove_if_dead`]). `Some(Otherwise)` when one left (read the queue
/// again), `Some(Broken)` when the removal could not be done now (read and watch again),
/// `None` when the session lives.
async fn reap(s: &Shared, bound: &[Entry], id: SessionId) -> Result<Option<Left>, Error> {
    for e in bound.iter().filter(|e| SessionId::bound_by(e) == Some(id)) {
        match remove_if_dead(&s.bucket, e).await {
            Ok(r @ (Reaped::Removed { .. } | Reaped::Moved)) => {
                if matches!(r, Reaped::Removed { .. }) {
                    s.bump(Stat::Reaped);
                }
                tracing::debug!(lock = %s.name, key = %e.key(), session = %id, "removed the entry of an ended session");
                return Ok(Some(Left::Otherwise));
            }
            Ok(_) => {}
            Err(err) if err.kind() == kvtk_core::ErrorKind::Codec => return Err(err.into()),
            Err(err) => {
                tracing::debug!(lock = %s.name, error = %err, "could not remove an ended session's entry yet");
                return Ok(Some(Left::Broken));
            }
        }
    }
    Ok(None)
}

/// How the wait for a blocker ended.
pub(crate) enum Left {
    /// It left by a completed release.
    Completed(Queued),
    /// It left otherwise (gave up its place, expired, was removed).
    Otherwise,
    /// The watch broke.
    Broken,
}

/// Watches `blockers` until one of them leaves. Unless it left by a completed release, the
/// caller reads the queue again. The consumer may sit on a lagging replica: a blocker's key
/// at a revision before the blocker's entry is that replica's past, not a departure.
///
/// The session keys of the `bound` blockers are watched too: a session that ended (an
/// expiry marker or tombstone, or no message at all in the initial delivery) makes us
/// remove its entries ([`reap`]), which the stream leader decides.
async fn blocker_left(
    s: &Shared,
    lease: &Lease,
    blockers: &[Queued],
    bound: &[Entry],
) -> Result<Left, Error> {
    let sessions = sessions_of(bound);
    let mut keys: Vec<String> = blockers.iter().map(|b| b.key.clone()).collect();
    keys.extend(sessions.iter().map(|id| id.key()));
    let mut watch = open_watch(s, lease, &keys).await?;
    let mut present: HashSet<&str> = HashSet::new();
    let mut lagging: HashSet<&str> = HashSet::new();
    let mut unseen: HashSet<SessionId> = sessions.iter().copied().collect();
    loop {
        match watch.next().await? {
            Some(Ok(WatchEvent::Entry(e))) => {
                let left = match SessionId::from_key(e.key().as_str()) {
                    Some(id) => session_event(s, bound, &e, id, &mut unseen).await?,
                    None => blocker_event(blockers, &e, &mut present, &mut lagging),
                };
                if let Some(left) = left {
                    return Ok(left);
                }
            }
            // A blocker whose key the replica does not hold at all: removed before we
            // looked (or never replicated here yet); read the queue again.
            Some(Ok(WatchEvent::InitialDone))
                if present.union(&lagging).count() < blockers.len() =>
            {
                return Ok(Left::Otherwise)
            }
            Some(Ok(WatchEvent::InitialDone)) => {
                for id in std::mem::take(&mut unseen) {
                    if let Some(left) = reap(s, bound, id).await? {
                        return Ok(left);
                    }
                }
            }
            Some(Err(e)) => {
                tracing::debug!(lock = %s.name, error = %e, "blocker watch broke, reading the queue again");
                return Ok(Left::Broken);
            }
            None => return Ok(Left::Broken),
        }
    }
}

/// A write `e` of a blocker's key: `Some` when the blocker left. A revision before the
/// blocker's entry is a lagging replica's past (`lagging`), the entry itself is `present`.
fn blocker_event<'a>(
    blockers: &'a [Queued],
    e: &Entry,
    present: &mut HashSet<&'a str>,
    lagging: &mut HashSet<&'a str>,
) -> Option<Left> {
    let b = blockers.iter().find(|b| b.key == e.key().as_str())?;
    if e.revision() < b.ticket {
        lagging.insert(&b.key);
        return None;
    }
    if e.is_value() && ticket_of(e) == b.ticket {
        present.insert(&b.key);
        return None;
    }
    let completed = e
        .lease()
        .is_some_and(|t| !e.is_value() && t.completed() && t.origin() == b.ticket);
    Some(if completed {
        Left::Completed(b.clone())
    } else {
        Left::Otherwise
    })
}

/// A write `e` of session `id`'s key (a blocker's session): if it shows the session ended,
/// its entries are removed ([`reap`]).
async fn session_event(
    s: &Shared,
    bound: &[Entry],
    e: &Entry,
    id: SessionId,
    unseen: &mut HashSet<SessionId>,
) -> Result<Option<Left>, Error> {
    unseen.remove(&id);
    if SessionState::judge(id, Some(e))?.is_alive() {
        return Ok(None);
    }
    reap(s, bound, id).await
}

/// A watch of queue keys that ends the wait as soon as our entry's lease is lost.
struct EntryWatch {
    watch: Watch,
    lost: Pin<Box<dyn Future<Output = LostReason> + Send>>,
}

impl EntryWatch {
    /// The watch's next event, unless our entry is lost first
    /// ([`ErrorKind::QueueEntryLost`]).
    async fn next(&mut self) -> Result<Option<Result<WatchEvent, kvtk_core::Error>>, Error> {
        tokio::select! {
            biased;
            why = &mut self.lost => Err(entry_lost(why)),
            ev = self.watch.next() => Ok(ev),
        }
    }
}

/// Opens a watch of `filters` (last value per key, then every write), riding out a
/// stream-leader failover while our entry lives.
async fn open_watch(s: &Shared, lease: &Lease, filters: &[String]) -> Result<EntryWatch, Error> {
    s.bump(Stat::Watch);
    let start = || {
        s.bucket
            .watch(filters.iter().map(String::as_str))
            .include(Include::LastPerKey)
            .into_future()
    };
    let mut lost = Box::pin(lease.lost());
    let watch = tokio::select! {
        why = &mut lost => return Err(entry_lost(why)),
        w = Backoff::DEFAULT.retry(start) => w?,
    };
    Ok(EntryWatch { watch, lost })
}
