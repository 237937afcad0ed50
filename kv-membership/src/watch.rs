//! [`MembershipWatch`]: a group's events on top of kvtk-core's gap-free watch.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};
use kvtk_core::{ErrorKind as CoreKind, ReadOnlyBucket, Watch, WatchEvent};

use crate::error::Error;
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
    watch: Watch,
    roster: Roster,
    initial_done: bool,
    pending: VecDeque<MembershipEvent>,
    /// Met a member of an unknown format version: the watch has ended.
    refused: bool,
}

impl MembershipWatch {
    pub(crate) async fn start(
        bucket: &ReadOnlyBucket,
        group: Arc<str>,
    ) -> Result<MembershipWatch, Error> {
        let watch = bucket
            .watch([names::group_filter(&group)])
            .await
            .map_err(|e| Error::kv("could not start the membership watch", e))?;
        let state = State {
            group,
            watch,
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
            match self.watch.next().await? {
                Ok(WatchEvent::Entry(e)) => match Observed::from_entry(&self.group, &e) {
                    Ok(Some(obs)) => self.observe(obs),
                    Ok(None) => {}
                    // A member this library cannot read: the watch ends rather than report
                    // a roster without it.
                    Err(e) => {
                        self.refused = true;
                        return Some(Err(Error::kv("refusing a member", e)));
                    }
                },
                Ok(WatchEvent::InitialDone) => self.initial_done(),
                Err(e) if e.kind() == CoreKind::HistoryGone => {
                    // A key that vanished while we were away: its member is gone.
                    match e.key().and_then(|k| names::instance_of(&self.group, k)) {
                        Some(id) => self.observe(Observed::Vanished { id: id.to_string() }),
                        None => {
                            return Some(Err(Error::kv("the membership watch lost history", e)))
                        }
                    }
                }
                Err(e) => return Some(Err(Error::kv("the membership watch failed", e))),
            }
        }
    }

    fn observe(&mut self, obs: Observed) {
        let events = self.roster.apply(obs);
        // Before the initial values are complete, only the roster is built.
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
