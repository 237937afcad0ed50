//! The view of one lock's keys at one revision: its queue, its last revision, its permits.

use std::collections::HashMap;

use kvtk_core::lease::SessionId;
use kvtk_core::{Backoff, Entry, Expect, Revision};

use crate::error::Error;
use crate::names::LockName;
use crate::rule::{Kind, Queued};
use crate::shared::Shared;
use crate::stats::Stat;
use crate::value::QueueValue;

/// The ticket of a live queue entry: its lease origin (never above the entry's revision),
/// or its revision for an entry no lease wrote.
pub(crate) fn ticket_of(e: &Entry) -> Revision {
    e.lease().map_or(e.revision(), |t| t.origin())
}

/// A lock's keys at one revision.
#[derive(Debug)]
pub(crate) struct View {
    /// Live queue entries, lowest ticket first.
    pub(crate) queue: Vec<Queued>,
    /// The decoded values of `queue`, in the same order (for inspection).
    pub(crate) values: Vec<(Option<QueueValue>, Revision)>,
    /// The lock's last revision (over all its keys): the fast path's expectation.
    pub(crate) last: Option<Revision>,
    pub(crate) as_of: Option<Revision>,
    /// The permit count stored for the lock, if any.
    pub(crate) permits: Option<Entry>,
    /// The live entries of `queue` bound to a session, by key (waiters watch their
    /// sessions).
    pub(crate) bound: HashMap<String, Entry>,
}

impl View {
    pub(crate) fn expect_empty(&self) -> Expect {
        self.last.map_or(Expect::NoMessage, Expect::Revision)
    }

    /// Whether a live entry is of the other family than `kind`: semaphore permits never
    /// share a queue with mutex, reader or writer entries (the rule would let both hold).
    pub(crate) fn mixes_with(&self, kind: Kind) -> bool {
        let permit = matches!(kind, Kind::Permit(_));
        self.values.iter().any(|(v, _)| {
            v.as_ref()
                .is_some_and(|v| !v.kind.is_empty() && (v.kind == Kind::Permit(0).tag()) != permit)
        })
    }

    pub(crate) fn position(&self, key: &str, ticket: Revision) -> Option<usize> {
        self.queue
            .iter()
            .position(|q| q.key == key && q.ticket == ticket)
    }

    /// The view of a lock's keys, from the latest entry of each (tombstones included).
    /// A live entry or permit count of a format version this library does not know is
    /// refused ([`kvtk_core::ErrorKind::Codec`]): no rule can be applied to a queue holding
    /// it, so the caller writes nothing on its account.
    pub(crate) fn of<'a>(
        name: &LockName,
        entries: impl IntoIterator<Item = &'a Entry>,
        as_of: Option<Revision>,
    ) -> Result<View, kvtk_core::Error> {
        let prefix = name.queue_prefix();
        let permits_key = name.permits_key();
        let mut permits = None;
        let mut bound = HashMap::new();
        let mut last = None;
        let mut live: Vec<(Queued, Option<QueueValue>, Revision)> = Vec::new();
        for e in entries {
            last = last.max(Some(e.revision()));
            let key = e.key().as_str();
            if key == permits_key {
                kvtk_core::format::check_header(e, "semaphore permit count")?;
                permits = Some(e.clone());
                continue;
            }
            if !key.starts_with(&prefix) || !e.is_value() {
                continue;
            }
            let value = QueueValue::read(e)?;
            if SessionId::bound_by(e).is_some() {
                bound.insert(key.to_string(), e.clone());
            }
            let queued = Queued {
                key: key.to_string(),
                ticket: ticket_of(e),
                shared: value.as_ref().is_some_and(QueueValue::is_shared),
            };
            live.push((queued, value, e.revision()));
        }
        live.sort_by_key(|(q, _, _)| q.ticket);
        let (queue, values) = live.into_iter().map(|(q, v, r)| (q, (v, r))).unzip();
        Ok(View {
            queue,
            values,
            last,
            as_of,
            permits,
            bound,
        })
    }
}

/// How often a snapshot older than wanted is taken again before it is used anyway (a key
/// that vanished makes every snapshot look old: it must not make a waiter spin).
const STALE_RETRIES: usize = 8;

/// Takes a snapshot of the lock's keys, consistent at a revision ≥ `at_least` (a lagging
/// replica's older snapshot is retried), riding out transient failures.
pub(crate) async fn view(s: &Shared, at_least: Option<Revision>) -> Result<View, Error> {
    let mut retry = Backoff::DEFAULT.start();
    let mut stale = 0;
    loop {
        s.bump(Stat::Snapshot);
        let snap = match s.bucket.snapshot(s.name.all_filter()).await {
            Ok(snap) => snap,
            Err(e) if e.is_transient() => {
                retry.pause().await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let fresh = match (at_least, snap.as_of) {
            (None, _) => true,
            (Some(w), Some(a)) => a >= w,
            (Some(_), None) => false,
        };
        if fresh || stale == STALE_RETRIES {
            return Ok(View::of(&s.name, &snap.entries, snap.as_of)?);
        }
        stale += 1;
        tracing::debug!(lock = %s.name, "snapshot from a lagging replica, retrying");
        retry.pause().await;
    }
}
