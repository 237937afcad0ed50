//! The least-privilege permissions of each recipe, as data: what the permission table of the
//! workspace's docs/deployment.md shows and what the permission tests run the recipes with, so the
//! two cannot drift.
//!
//! Every set assumes the default JetStream API prefix (`$JS.API`) and inbox prefix
//! (`_INBOX`), and a bucket that already exists (creating buckets is an administrator's job:
//! `$JS.API.STREAM.CREATE.KV_<bucket>`).

use crate::auth::Permissions;

/// Opening a bucket and reading its status.
fn open(bucket: &str) -> Permissions {
    Permissions::new()
        .publish_allow([format!("$JS.API.STREAM.INFO.KV_{bucket}")])
        .subscribe_allow(["_INBOX.>"])
}

/// Reading and watching the keys matching `filter` (a key filter, e.g. `app` or `jobs.*.*`):
/// direct gets by key, and watches whose consumer filter is within `filter` (created through
/// the named, filtered create subject; deleted by name; flow control answered).
fn read(bucket: &str, filter: &str) -> Permissions {
    Permissions::new().publish_allow([
        format!("$JS.API.DIRECT.GET.KV_{bucket}.$KV.{bucket}.{filter}"),
        format!("$JS.API.CONSUMER.CREATE.KV_{bucket}.*.$KV.{bucket}.{filter}"),
        format!("$JS.API.CONSUMER.DELETE.KV_{bucket}.*"),
        format!("$JS.FC.KV_{bucket}.>"),
    ])
}

/// Writing the keys matching `filter` (put, create, update, delete: one subject per key).
fn write(bucket: &str, filter: &str) -> Permissions {
    Permissions::new().publish_allow([format!("$KV.{bucket}.{filter}")])
}

/// Reading from the stream leader (`STREAM.MSG.GET`, whose subject names no key: it can read
/// any key of the bucket): leases that lost an acknowledgement, observers that lost track.
fn leader_get(bucket: &str) -> Permissions {
    Permissions::new().publish_allow([format!("$JS.API.STREAM.MSG.GET.KV_{bucket}")])
}

/// Snapshots by direct get batch (`DIRECT.GET.KV_<bucket>` with the filter in the body: it
/// can read any key of the bucket): lock waiters, inspection, listings.
fn batch_get(bucket: &str) -> Permissions {
    Permissions::new().publish_allow([format!("$JS.API.DIRECT.GET.KV_{bucket}")])
}

/// Watches of several filters at once (`CONSUMER.CREATE.KV_<bucket>.<name>`, no filter in the
/// subject: any key of the bucket): election candidates watch the leader and candidate keys,
/// semaphore waiters the entries just ahead of them.
fn watch_many(bucket: &str) -> Permissions {
    Permissions::new().publish_allow([format!("$JS.API.CONSUMER.CREATE.KV_{bucket}.*")])
}

fn union(sets: impl IntoIterator<Item = Permissions>) -> Permissions {
    sets.into_iter().fold(Permissions::new(), |acc, p| {
        acc.publish_allow(p.publish.allow)
            .subscribe_allow(p.subscribe.allow)
    })
}

/// A kvtk-locks user of the mutex, semaphore or read-write lock `lock` (and nothing else) in
/// `bucket`: its keys are `<lock>._q.<handle>` and `<lock>._s.permits`. A semaphore waiter
/// watches the n entries just ahead of it at once (`watch_many`).
pub fn lock_user(bucket: &str, lock: &str) -> Permissions {
    let keys = format!("{lock}.*.*");
    union([
        open(bucket),
        read(bucket, &keys),
        write(bucket, &keys),
        leader_get(bucket),
        batch_get(bucket),
        watch_many(bucket),
    ])
}

/// A kvtk-locks user of lock `lock` in `bucket` that may write only its own queue entry,
/// `<lock>._q.<owner>` (its `Locks` made with [`owner(owner)`](https://docs.rs/kvtk-locks)),
/// and a semaphore's permit count: it can wait for and take the lock, but not remove or
/// overwrite anyone else's place in the queue.
pub fn lock_owner(bucket: &str, lock: &str, owner: &str) -> Permissions {
    union([
        open(bucket),
        read(bucket, &format!("{lock}.*.*")),
        write(bucket, &format!("{lock}._q.{owner}")),
        write(bucket, &format!("{lock}._s.permits")),
        leader_get(bucket),
        batch_get(bucket),
        watch_many(bucket),
    ])
}

/// A kvtk-leader candidate (campaigns, leads, resigns, observes) in election `election`.
pub fn election_candidate(bucket: &str, election: &str) -> Permissions {
    let keys = format!("{election}.>");
    union([
        open(bucket),
        read(bucket, &keys),
        write(bucket, &keys),
        leader_get(bucket),
        watch_many(bucket),
    ])
}

/// A kvtk-leader observer of election `election`: watches the leader key, writes nothing.
pub fn election_observer(bucket: &str, election: &str) -> Permissions {
    let key = format!("{election}.leader");
    union([open(bucket), read(bucket, &key), leader_get(bucket)])
}

/// A kvtk-config writer of the document `key` (single-document mode).
pub fn config_writer(bucket: &str, key: &str) -> Permissions {
    union([open(bucket), read(bucket, key), write(bucket, key)])
}

/// A read-only kvtk-config reader of the document `key` (single-document mode, no fleet acks).
pub fn config_reader(bucket: &str, key: &str) -> Permissions {
    union([open(bucket), read(bucket, key)])
}

/// A kvtk-membership member of group `group`: its own key and the group's listing and watch.
pub fn member(bucket: &str, group: &str) -> Permissions {
    let keys = format!("{group}.*");
    union([
        open(bucket),
        read(bucket, &keys),
        write(bucket, &keys),
        leader_get(bucket),
        batch_get(bucket),
    ])
}

/// What a recipe bound to sessions (`Locks::bind_to_session`,
/// `ElectionBuilder::bind_to_session`, `Membership::bind_to_session`) needs besides its own set: the session keys
/// `_session.*` of the bucket, read, watched and written (its own session's creation,
/// renewals and close; confirming another session's end before removing its entries).
pub fn session_owner(bucket: &str) -> Permissions {
    let keys = "_session.*";
    union([
        open(bucket),
        read(bucket, keys),
        write(bucket, keys),
        leader_get(bucket),
    ])
}

/// `recipe`'s set with [`session_owner`]'s added: the recipe bound to sessions.
pub fn bound(recipe: Permissions, bucket: &str) -> Permissions {
    union([recipe, session_owner(bucket)])
}

/// Every recipe with the name docs/deployment.md's table gives it, for bucket `b` and the names
/// `L` (lock), `E` (election), `doc` (config document), `G` (group).
pub fn table() -> Vec<(&'static str, Permissions)> {
    vec![
        ("lock user of lock `L`", lock_user("b", "L")),
        ("lock owner `o` of lock `L`", lock_owner("b", "L", "o")),
        ("election candidate in `E`", election_candidate("b", "E")),
        ("election observer of `E`", election_observer("b", "E")),
        ("config writer of `doc`", config_writer("b", "doc")),
        (
            "read-only config reader of `doc`",
            config_reader("b", "doc"),
        ),
        ("membership member of group `G`", member("b", "G")),
        (
            "session owner (added to a recipe bound to sessions)",
            session_owner("b"),
        ),
    ]
}

/// The docs/deployment.md table: one row per recipe, publish and subscribe allow lists.
pub fn markdown_table() -> String {
    let mut out =
        String::from("| recipe | publish allow | subscribe allow |\n| --- | --- | --- |\n");
    for (name, p) in table() {
        let list = |v: &[String]| {
            v.iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        out.push_str(&format!(
            "| {name} | {} | {} |\n",
            list(&p.publish.allow),
            list(&p.subscribe.allow)
        ));
    }
    out
}
