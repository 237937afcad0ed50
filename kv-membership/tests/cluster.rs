//! Membership on a 3-node cluster with an R3 bucket and no fault: members on every node join,
//! update and leave in a loop without a failure, and a watcher on every node follows them in
//! order: every member it saw join it sees leave, by itself; members that stay never leave,
//! and every node lists the same members. Each handle talks to one node, so two of them read
//! from stream followers. (The scenario is `common::churn_on_r3`; sessions.rs runs it with
//! members bound to sessions.)

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_churn_and_every_watcher_follows_them_on_r3() {
    common::churn_on_r3(false).await;
}
