//! [`MembershipWatch`]: a group's events on top of kvtk-core's gap-free watch.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};
use kvtk_core::lease::SessionId;
use kvtk_core::{Bucket, Entry, ErrorKind as CoreKind, ReadOnlyBucket, Watch, WatchEvent};

use crate::error::Error;
use crate::follow;
use crate::names;
use crate::roster::{MembershipEvent, Observed, Roster};

/// A running watch of a group: a `Stream` of [`MembershipEvent`]s.
///
/// # Recovery
///
/// It rides on kvtk-core's watch, which resumes after the last revision it delivered across
/// reconnects and server restarts, without gaps or duplicates. What happened while it was
/// away arrives as events when it resumes: a member that left and came back shows as
/// `Left { reason: Unobserved }` followed by `Joined`; a member whose key vanished without
/// a trace (its tombstone or expiry marker expired too) as `Left { reason: Unobserved }`.
/// Other errors (e.g. while the server is down) are yielded as `Err` items and the stream
/// goes on.
///
/// # Members bound to sessions
///
/// Once the group holds a member bound to a session
/// ([`Membership::bind_to_session`](crate::Membership::bind_to_session)), the watch also
/// follows the bucket's session keys (`_session.*`, a second consumer). A bound member is
/// present while its session lives; when the session ends (its key expired on the server's
/// clock, or closed) its members leave with [`LeaveReason::Expired`](crate::LeaveReason::Expired)
/// unless they left first. A session the watch has not seen is judged from the stream leader
/// (never a replica, which may lag). A watch on a writable handle (a [`Group`](crate::Group)'s)
/// removes an ended session's member keys by compare-and-set. A watch that may not follow
/// the session keys (a user without the session set of docs/deployment.md) yields that
/// error ([`core_kind`](crate::Error::core_kind) `PermissionDenied`) and ends after the
/// events it had queued: without them it would list a dead session's members forever.
pub struct MembershipWatch {
    inner: BoxStream<'static, Result<MembershipEvent, Error>>,
}

impl std::fmt::Debug for MembershipWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembershipWatch").finish_non_exhaustive()
    }
}

struct State {
    group: Arc<str>,
    bucket: ReadOnlyBucket,
    /// A writable handle: ended sessions' member keys are removed through it.
    reaper: Option<Bucket>,
    watch: Watch,
    /// The watch of the session keys, once a member bound to a session was seen.
    sessions: Option<Watch>,
    roster: Roster,
    initial_done: bool,
    pending: VecDeque<MembershipEvent>,
    /// Met a member of an unknown format version, or was refused the session keys: the
    /// watch has ended.
    refused: bool,
}

/// Where a watch event came from.
enum Source {
    Group(Option<Result<WatchEvent, kvtk_core::Error>>),
    Sessions(Option<Result<WatchEvent, kvtk_core::Error>>),
}

impl MembershipWatch {
    pub(crate) async fn start(
        bucket: &ReadOnlyBucket,
        reaper: Option<Bucket>,
        group: Arc<str>,
    ) -> Result<MembershipWatch, Error> {
        let watch = bucket
            .watch([names::group_filter(&group)])
            .await
            .map_err(|e| Error::kv("could not start the membership watch", e))?;
        let state = State {
            group,
            bucket: bucket.clone(),
            reaper,
            watch,
            sessions: None,
            roster: Roster::default(),
            initial_done: false,
            pending: VecDeque::new(),
            refused: false,
        };
        let stream = futures::stream::unfold(state, |mut s| async move {
            let item = s.next_event().await?;
            Some((item, s))
        });
        Ok(MembershipWatch {
            inner: stream.boxed(),
        })
    }
}

impl State {
    async fn next_event(&mut self) -> Option<Result<MembershipEvent, Error>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(Ok(ev));
            }
            if self.refused {
                return None;
            }
            let from = match self.sessions.as_mut() {
                Some(sessions) => tokio::select! {
                    ev = self.watch.next() => Source::Group(ev),
                    ev = sessions.next() => Source::Sessions(ev),
                },
                None => Source::Group(self.watch.next().await),
            };
            let step = match from {
                Source::Group(ev) => self.group_event(ev?).await,
                Source::Sessions(ev) => self.session_event(ev).await,
            };
            if let Err(e) = step {
                return Some(Err(e));
            }
            follow::reap(self.reaper.as_ref(), &mut self.roster).await;
        }
    }

    async fn group_event(&mut self, ev: Result<WatchEvent, kvtk_core::Error>) -> Result<(), Error> {
        match ev {
            Ok(WatchEvent::Entry(e)) => self.member_entry(&e).await,
            // The snapshot is complete: the sessions of its bound members not known from the
            // session watch are judged by the stream leader. It is delivered even when that
            // failed (an error item follows it; such members count as present until their
            // session is seen ended).
            Ok(WatchEvent::InitialDone) => {
                let opened = self.follow_sessions().await;
                let judged = follow::judge_unknown(&self.bucket, &mut self.roster).await;
                self.initial_done();
                opened.and(judged.map(drop))
            }
            Err(e) if e.kind() == CoreKind::HistoryGone => {
                // A key that vanished while we were away: its member is gone.
                match e.key().and_then(|k| names::instance_of(&self.group, k)) {
                    Some(id) => {
                        self.observe(Observed::Vanished { id: id.to_string() });
                        Ok(())
                    }
                    None => Err(Error::kv("the membership watch lost history", e)),
                }
            }
            Err(e) => Err(Error::kv("the membership watch failed", e)),
        }
    }

    async fn member_entry(&mut self, e: &Entry) -> Result<(), Error> {
        let obs = match Observed::from_entry(&self.group, e) {
            Ok(Some(obs)) => obs,
            Ok(None) => return Ok(()),
            // A member this library cannot read: the watch ends rather than report a
            // roster without it.
            Err(e) => {
                self.refused = true;
                return Err(Error::kv("refusing a member", e));
            }
        };
        let events = follow::judge_removal(&self.bucket, &mut self.roster, &obs).await;
        self.emit(events);
        self.observe(obs);
        if self.initial_done {
            self.follow_sessions().await?;
        }
        Ok(())
    }

    async fn session_event(
        &mut self,
        ev: Option<Result<WatchEvent, kvtk_core::Error>>,
    ) -> Result<(), Error> {
        match ev {
            Some(Ok(WatchEvent::Entry(e))) => match Observed::from_session_entry(&e) {
                Ok(Some(obs)) => {
                    if !e.is_value() {
                        let (group, id) = (&self.group, SessionId::from_key(e.key().as_str()));
                        if let Some(id) = id {
                            let left = follow::left_before_end(
                                &self.bucket,
                                &mut self.roster,
                                group,
                                id,
                                e.revision(),
                            );
                            let events = left.await?;
                            self.emit(events);
                        }
                    }
                    self.observe(obs);
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(err) => Err(Error::kv("refusing a member's session", err)),
            },
            // Sessions the watch did not deliver (no message on its replica): the leader
            // judges them.
            Some(Ok(WatchEvent::InitialDone)) => {
                let events = follow::judge_unknown(&self.bucket, &mut self.roster).await?;
                self.emit(events);
                Ok(())
            }
            // A session key that vanished while the watch was away (its marker expired):
            // the leader judges it.
            Some(Err(e)) if e.kind() == CoreKind::HistoryGone => {
                match e.key().and_then(SessionId::from_key) {
                    Some(id) => {
                        let events = follow::judge(&self.bucket, &mut self.roster, id).await?;
                        self.emit(events);
                        Ok(())
                    }
                    None => Err(Error::kv(
                        "the watch of the members' sessions lost history",
                        e,
                    )),
                }
            }
            Some(Err(e)) => Err(Error::kv("the watch of the members' sessions failed", e)),
            None => {
                self.sessions = None;
                Ok(())
            }
        }
    }

    /// Opens the watch of the session keys once the group holds a bound member. Refused it
    /// (no permission to watch `_session.*`), the watch ends: it would never see a bound
    /// member leave when its session ends.
    async fn follow_sessions(&mut self) -> Result<(), Error> {
        if self.sessions.is_none() && self.roster.has_bound() {
            let opened = follow::watch_sessions(&self.bucket).await;
            self.refused |= opened
                .as_ref()
                .is_err_and(|e| e.core_kind() == Some(CoreKind::PermissionDenied));
            self.sessions = Some(opened?);
        }
        Ok(())
    }

    fn observe(&mut self, obs: Observed) {
        let events = self.roster.apply(obs);
        self.emit(events);
    }

    /// Queues `events`; before the initial values are complete, only the roster is built.
    fn emit(&mut self, events: Vec<MembershipEvent>) {
        if self.initial_done {
            for ev in &events {
                tracing::debug!(group = %self.group, event = ?ev, "membership event");
            }
            self.pending.extend(events);
        }
    }

    fn initial_done(&mut self) {
        self.initial_done = true;
        let present = self.roster.current();
        tracing::debug!(group = %self.group, members = present.len(), "membership snapshot");
        self.pending
            .extend(present.into_iter().map(MembershipEvent::Present));
        self.pending.push_back(MembershipEvent::InitialDone);
    }
}

impl Stream for MembershipWatch {
    type Item = Result<MembershipEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}
