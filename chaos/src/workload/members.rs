//! Membership: members join a group under a fresh id, stay briefly and leave; watchers follow
//! the group and must see every join and leave (a liveness check while fault-free).

use std::time::Duration;

use futures::StreamExt;
use kvtk_membership::{Group, Member, MembershipEvent};
use kvtk_tests::history::{History, Op};
use rand::Rng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{bounded, settle, TTL};

/// The group every member joins.
pub(crate) const GROUP: &str = "chaos";

/// Starts one member worker per group handle in `members` and one watcher per handle in
/// `watchers` (each handle on its own connection).
pub(crate) fn start(
    tasks: &mut JoinSet<()>,
    members: Vec<Group>,
    watchers: Vec<Group>,
    history: &History,
    stop: &CancellationToken,
) {
    for (i, group) in members.into_iter().enumerate() {
        let client = format!("member-{i}");
        tasks.spawn(churn(group, client, history.clone(), stop.clone()));
    }
    for (i, group) in watchers.into_iter().enumerate() {
        let client = format!("members-watcher-{i}");
        tasks.spawn(watch(group, client, history.clone(), stop.clone()));
    }
}

/// Joins under a new id, stays 100–500 ms, leaves; again until stopped.
async fn churn(group: Group, client: String, history: History, stop: CancellationToken) {
    let mut n = 0u64;
    while !stop.is_cancelled() {
        let member = format!("{client}-{n}");
        n += 1;
        let join = Op::Join {
            group: GROUP.into(),
            member: member.clone(),
        };
        let op = history.invoke(&client, join);
        let out = bounded(&stop, group.join(member.as_str(), "up").ttl(TTL)).await;
        let Some(me) = settle(op, out, |m: &Member| Some(m.joined_at().get())) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let stay = Duration::from_millis(rand::rng().random_range(100..500));
        tokio::select! {
            _ = me.lost() => {}
            () = tokio::time::sleep(stay) => {}
        }
        let leave = Op::Leave {
            group: GROUP.into(),
            member,
        };
        let op = history.invoke(&client, leave);
        settle(op, bounded(&stop, me.leave()).await, |_| None);
    }
}

/// Follows the group, recording every member seen present, joined or gone; restarts (a new
/// segment) when the watch ends or fails.
async fn watch(group: Group, client: String, history: History, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let start = Op::MembersWatch {
            group: GROUP.into(),
        };
        history.instant(&client, start, None);
        let Some(Ok(mut events)) = bounded(&stop, group.watch()).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        loop {
            let next = tokio::select! {
                next = events.next() => next,
                () = stop.cancelled() => return,
            };
            let (member, joined) = match next {
                Some(Ok(MembershipEvent::Present(m) | MembershipEvent::Joined(m))) => (m, true),
                Some(Ok(MembershipEvent::Left { member, .. })) => (member, false),
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    tracing::debug!("{client}: membership watch error {e}");
                    break;
                }
                None => break,
            };
            let seen = Op::MemberSeen {
                group: GROUP.into(),
                member: member.id().to_string(),
                joined,
            };
            history.instant(&client, seen, Some(member.revision().get()));
        }
    }
}
