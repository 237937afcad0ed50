//! Following the sessions members are bound to: judging from the stream leader the sessions
//! an observer has not seen, and removing what ended sessions left (any observer with a
//! writable handle may; a compare-and-set delete makes it safe).

use kvtk_core::lease::{remove_if_dead, Reaped, SessionId, SessionState, SESSION_PREFIX};
use kvtk_core::{Bucket, Include, ReadOnlyBucket, Revision, Watch};

use crate::error::Error;
use crate::names;
use crate::roster::{MembershipEvent, Observed, Roster};

/// The filter of every session key of a bucket.
pub(crate) fn session_filter() -> String {
    format!("{SESSION_PREFIX}*")
}

/// Judges from the stream leader (never a replica, which may lag) the sessions that current
/// members are bound to and the roster knows nothing of; members of those that ended leave.
///
/// # Cancel safety
/// Cancel safe: it only reads (what was judged before the cancellation is kept).
pub(crate) async fn judge_unknown(
    bucket: &ReadOnlyBucket,
    roster: &mut Roster,
) -> Result<Vec<MembershipEvent>, Error> {
    let mut events = Vec::new();
    for id in roster.unknown_sessions() {
        events.extend(judge(bucket, roster, id).await?);
    }
    Ok(events)
}

/// Judges session `id` from the stream leader (a session key with no message there counts
/// as ended — its marker expired — once a snapshot as recent as the member entries bound to
/// it confirms it: [`SessionState::read_after`]) and applies the verdict; members of an
/// ended session leave.
///
/// # Cancel safety
/// Cancel safe: it only reads.
pub(crate) async fn judge(
    bucket: &ReadOnlyBucket,
    roster: &mut Roster,
    id: SessionId,
) -> Result<Vec<MembershipEvent>, Error> {
    let state = match roster.seen_of(id) {
        Some(seen) => SessionState::read_after(bucket, id, seen).await,
        None => SessionState::read(bucket, id).await,
    }
    .map_err(|e| Error::kv("could not read a member's session", e))?;
    Ok(roster.apply(Observed::Session {
        id,
        state,
        revision: None,
    }))
}

/// Before applying `obs`: a tombstone with a bound member's session mark that is not a
/// completed `leave()` is a dropped member's release or the removal of an ended session's
/// entry; the stream leader says which (recorded in the roster, with the events of an
/// ended session). A failed read is only logged: the tombstone then counts as the member's
/// own leave.
///
/// # Cancel safety
/// Cancel safe: it only reads.
pub(crate) async fn judge_removal(
    bucket: &ReadOnlyBucket,
    roster: &mut Roster,
    obs: &Observed,
) -> Vec<MembershipEvent> {
    let Observed::Removed {
        id,
        nonce,
        completed: false,
        ..
    } = obs
    else {
        return vec![];
    };
    let Some(member) = roster.member(id) else {
        return vec![];
    };
    let Some(session) = member.session().filter(|s| *nonce == Some(s.get())) else {
        return vec![];
    };
    if roster.session_known(session) == Some(false) {
        return vec![];
    }
    match judge(bucket, roster, session).await {
        Ok(events) => events,
        Err(e) => {
            tracing::debug!(session = %session, error = %e, "could not read a leaving member's session");
            vec![]
        }
    }
}

/// Before session `id`'s end at revision `end` is applied (it comes from the session watch,
/// which runs beside the members' watch, ahead of it or behind): the members bound to it
/// whose own removal precedes `end` — not yet through the members' watch — leave now, from
/// a snapshot of `group`'s keys as of `end` or later, so that they leave (`Left`) instead of
/// ending with the session (`Expired`).
///
/// # Cancel safety
/// Cancel safe: it only reads (what was applied before the cancellation is kept).
pub(crate) async fn left_before_end(
    bucket: &ReadOnlyBucket,
    roster: &mut Roster,
    group: &str,
    id: SessionId,
    end: Revision,
) -> Result<Vec<MembershipEvent>, Error> {
    if roster.seen_of(id).is_none() {
        return Ok(vec![]);
    }
    let snap = bucket
        .snapshot_since(names::group_filter(group), end)
        .await
        .map_err(|e| Error::kv("could not read the members of an ended session", e))?;
    let mut events = Vec::new();
    for e in snap
        .entries
        .iter()
        .filter(|e| !e.is_value() && e.revision() < end)
    {
        let Ok(Some(obs)) = Observed::from_entry(group, e) else {
            continue;
        };
        if let Observed::Removed { id: member, .. } = &obs {
            if roster
                .member(member)
                .is_some_and(|m| m.session() == Some(id))
            {
                events.extend(roster.apply(obs));
            }
        }
    }
    Ok(events)
}

/// Removes the entries of ended sessions the roster met, if `reaper` may write: each by
/// [`remove_if_dead`] (the stream leader judges again; of concurrent removers one succeeds).
/// Failures are only logged: the next observer, or the member's rejoin, removes the entry.
///
/// # Cancel safety
/// Not cancel safe: a removal may be applied although the future was dropped (harmless:
/// the entry was dead).
pub(crate) async fn reap(reaper: Option<&Bucket>, roster: &mut Roster) {
    let entries = roster.take_reapable();
    let Some(bucket) = reaper else {
        return;
    };
    for e in entries {
        match remove_if_dead(bucket, &e).await {
            Ok(Reaped::Removed { tombstone }) => {
                tracing::debug!(key = %e.key(), tombstone = tombstone.get(), "removed the member of an ended session");
            }
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(key = %e.key(), error = %err, "could not remove the member of an ended session");
            }
        }
    }
}

/// Opens the watch of the bucket's session keys (each key's last write, then every write).
///
/// # Cancel safety
/// Cancel safe: dropping the future leaves at most an idle consumer that the server
/// removes.
pub(crate) async fn watch_sessions(bucket: &ReadOnlyBucket) -> Result<Watch, Error> {
    bucket
        .watch([session_filter()])
        .include(Include::LastPerKey)
        .await
        .map_err(|e| Error::kv("could not watch the members' sessions", e))
}
