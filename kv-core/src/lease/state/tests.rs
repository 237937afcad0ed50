//! The renewal decisions of `state.rs` on paused time: a lease created at `t0` by a write
//! at revision `REV`, fed write and read-back results as the keeper would.

use super::*;
use crate::entry::{Op, Removal};
use crate::error::{Error, ErrorKind};
use std::sync::atomic::{AtomicUsize, Ordering};

const NONCE: u128 = 7;
const REV: u64 = 10;

fn rev(n: u64) -> Revision {
    Revision::new(n).unwrap()
}

/// TTL 3 s: renewed every second, trusted for 3 s − 300 ms after a send.
const EVERY: Duration = Duration::from_secs(1);
const VALIDITY: Duration = Duration::from_millis(2700);

const RETRY: AfterWrite = AfterWrite::Done(Step::Retry);
const WRITTEN: AfterWrite = AfterWrite::Done(Step::Written);

fn cfg() -> LeaseConfig {
    LeaseConfig::new(Duration::from_secs(3)).unwrap()
}

/// A lease created by a write sent now, at revision `REV`.
fn lease() -> Arc<State> {
    lease_in(None)
}

/// As [`lease`], bound to the session whose lease state is `parent` (if any).
fn lease_in(parent: Option<Arc<State>>) -> Arc<State> {
    let created = Created {
        key: Key::new("lease.k").unwrap(),
        nonce: NONCE,
        origin: rev(REV),
        rev: rev(REV),
        sent: Instant::now(),
        parent,
    };
    let labels = LeaseLabels::new("b", crate::metrics::RECIPE_LEASE);
    State::new(
        created,
        Bytes::from_static(b"v"),
        cfg(),
        (None, None),
        labels,
    )
}

/// A revision of the lease's key, written by lease `nonce` (or by no lease).
fn entry(n: u64, nonce: Option<u128>, op: Op, removal: Option<Removal>) -> Entry {
    Entry {
        bucket: "b".into(),
        key: Key::new("lease.k").unwrap(),
        value: Bytes::new(),
        revision: rev(n),
        created: time::OffsetDateTime::UNIX_EPOCH,
        delta: 0,
        op,
        removal,
        ttl: None,
        batch: None,
        lease: nonce.map(|nonce| {
            Box::new(LeaseTag {
                nonce,
                origin: rev(REV),
                completed: false,
            })
        }),
        expected: None,
        format: None,
    }
}

/// A value of ours at revision `n`.
fn ours(n: u64) -> Entry {
    entry(n, Some(NONCE), Op::Put, None)
}

fn err(kind: ErrorKind) -> Error {
    Error::new(kind, "test")
}

/// A write of the lease's key sent at `sent` failed with `kind`.
fn failed(st: &State, kind: ErrorKind, sent: Instant) -> AfterWrite {
    st.written(Err(err(kind)), sent)
}

/// After a conflict on a write that expected `REV`, the stream leader shows `found`.
fn leader_shows(st: &State, found: Option<Entry>, since: Instant) -> Step {
    st.read_back(Ok(found), since, rev(REV))
}

async fn advance_ms(ms: u64) {
    tokio::time::advance(Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn renews_at_the_interval_after_the_last_acknowledged_send() {
    let st = lease();
    let t0 = Instant::now();
    assert_eq!(st.next(t0), Some(Next::RenewAt(t0 + EVERY)));
    // One timer per lease: asked again before it fired, the keeper gets nothing.
    assert_eq!(st.next(t0), None);
    advance_ms(1000).await;
    assert!(st.begin_renewal());
    let sent = Instant::now();
    advance_ms(200).await; // the acknowledgement takes 200 ms
    assert_eq!(st.written(Ok(rev(11)), sent), WRITTEN);
    st.renewal_done(Some(Step::Written));
    assert_eq!(st.revision(), rev(11));
    assert_eq!(st.deadline(), sent + VALIDITY);
    assert_eq!(st.next(Instant::now()), Some(Next::RenewAt(sent + EVERY)));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_is_the_last_acknowledged_send_plus_ttl_minus_margin() {
    let st = lease();
    let t0 = Instant::now();
    assert_eq!(st.deadline(), t0 + VALIDITY);
    // Renewals time out: each counts a failure, none moves the deadline.
    for _ in 0..3 {
        advance_ms(500).await;
        assert_eq!(failed(&st, ErrorKind::Timeout, Instant::now()), RETRY);
    }
    assert_eq!(st.deadline(), t0 + VALIDITY);
    advance_ms(1199).await;
    assert!(st.is_valid());
    advance_ms(1).await;
    assert!(!st.is_valid());
    assert_eq!(st.next(Instant::now()), Some(Next::Lost));
}

#[tokio::test(start_paused = true)]
async fn lost_fires_at_the_deadline_without_any_keeper() {
    let st = lease();
    let t0 = Instant::now();
    let reason = tokio::spawn(st.clone().ended()).await.unwrap();
    assert_eq!(reason, LostReason::Deadline);
    assert_eq!(Instant::now(), t0 + VALIDITY);
    assert_eq!(st.reason(), Some(LostReason::Deadline));
}

#[tokio::test(start_paused = true)]
async fn a_renewal_past_the_deadline_demotes_instead_of_writing() {
    let st = lease();
    // The keeper's timer fires late: the runtime stalled past the deadline.
    advance_ms(2700).await;
    assert!(!st.begin_renewal());
    assert_eq!(st.reason(), Some(LostReason::Deadline));
    assert_eq!(st.next(Instant::now()), None);
    // A renewal cut off by the deadline (its ack never came) ends the lease too.
    let st = lease();
    assert!(st.begin_renewal());
    st.renewal_done(None);
    assert_eq!(st.reason(), Some(LostReason::Deadline));
}

#[tokio::test(start_paused = true)]
async fn an_acknowledgement_seen_after_the_deadline_never_revives_the_lease() {
    // The renewal was sent in time, but the runtime stalled past the deadline before its
    // acknowledgement was processed: meanwhile the lease was invalid for everyone.
    let st = lease();
    let t0 = Instant::now();
    advance_ms(1000).await;
    assert!(st.begin_renewal());
    let sent = Instant::now();
    advance_ms(1700).await;
    assert!(!st.is_valid());
    let gone = AfterWrite::Done(Step::Gone(LostReason::Deadline));
    assert_eq!(st.written(Ok(rev(11)), sent), gone);
    st.renewal_done(Some(Step::Gone(LostReason::Deadline)));
    assert_eq!(st.reason(), Some(LostReason::Deadline));
    assert_eq!(st.deadline(), t0 + VALIDITY);
    // The key's revision is known all the same: a release can still remove it.
    assert_eq!(st.revision(), rev(11));
    // Nor does a lost acknowledgement found on the leader after the deadline.
    let st = lease();
    let t1 = Instant::now();
    assert_eq!(failed(&st, ErrorKind::Timeout, t1), RETRY);
    advance_ms(2700).await;
    let conflict = failed(&st, ErrorKind::Conflict, Instant::now());
    assert_eq!(conflict, AfterWrite::AskLeader { since: t1 });
    let step = leader_shows(&st, Some(ours(12)), t1);
    assert_eq!(step, Step::Gone(LostReason::Deadline));
    assert_eq!(st.deadline(), t1 + VALIDITY);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_retry_with_backoff_and_success_resets_it() {
    let st = lease();
    advance_ms(1000).await;
    let now = Instant::now();
    assert_eq!(failed(&st, ErrorKind::Unavailable, now), RETRY);
    st.renewal_done(Some(Step::Retry));
    let Some(Next::RenewAt(at)) = st.next(now) else {
        panic!("a transient failure keeps the lease")
    };
    // Backoff::DEFAULT's first delay: 50 ms, jittered down to no less than half.
    assert!(at >= now + Duration::from_millis(25) && at <= now + Duration::from_millis(50));
    assert!(st.begin_renewal());
    assert_eq!(st.written(Ok(rev(11)), now), WRITTEN);
    st.renewal_done(Some(Step::Written));
    let again = st.next(now);
    assert_eq!(
        again,
        Some(Next::RenewAt(now + EVERY)),
        "a success resets the backoff"
    );
}

#[tokio::test(start_paused = true)]
async fn a_conflict_asks_the_leader_from_the_first_ambiguous_send() {
    let st = lease();
    let t0 = Instant::now();
    // Without a pending write of ours: from this send.
    let ask_from = |since| AfterWrite::AskLeader { since };
    assert_eq!(failed(&st, ErrorKind::Conflict, t0), ask_from(t0));
    // A timeout (outcome unknown), then a conflict: our timed-out write may be what
    // moved the key, so the earlier send is the one that may count.
    assert_eq!(failed(&st, ErrorKind::Timeout, t0), RETRY);
    advance_ms(300).await;
    assert_eq!(
        failed(&st, ErrorKind::Conflict, Instant::now()),
        ask_from(t0)
    );
    // A failure that was surely not applied does not start an ambiguity.
    let st = lease();
    assert_eq!(failed(&st, ErrorKind::Unavailable, t0), RETRY);
    advance_ms(300).await;
    let now = Instant::now();
    assert_eq!(failed(&st, ErrorKind::Conflict, now), ask_from(now));
}

#[tokio::test(start_paused = true)]
async fn a_refused_permission_ends_the_lease_at_once() {
    let st = lease();
    let refused = failed(&st, ErrorKind::PermissionDenied, Instant::now());
    assert_eq!(
        refused,
        AfterWrite::Done(Step::Gone(LostReason::Permission))
    );
    assert!(st.begin_renewal());
    st.renewal_done(Some(Step::Gone(LostReason::Permission)));
    assert_eq!(st.reason(), Some(LostReason::Permission));
    assert!(!st.is_valid());
}

#[tokio::test(start_paused = true)]
async fn our_write_newer_than_expected_is_adopted_from_its_send_time() {
    let st = lease();
    advance_ms(1000).await;
    let t1 = Instant::now();
    assert_eq!(failed(&st, ErrorKind::Timeout, t1), RETRY);
    advance_ms(500).await;
    let conflict = failed(&st, ErrorKind::Conflict, Instant::now());
    assert_eq!(conflict, AfterWrite::AskLeader { since: t1 });
    assert_eq!(leader_shows(&st, Some(ours(12)), t1), Step::Written);
    assert_eq!(st.revision(), rev(12));
    // From the timed-out write's send time: it is the one the server stored.
    assert_eq!(st.deadline(), t1 + VALIDITY);
    // Adopted, so no write is ambiguous any more: the next conflict counts from its own
    // send.
    let now = Instant::now();
    let conflict = failed(&st, ErrorKind::Conflict, now);
    assert_eq!(conflict, AfterWrite::AskLeader { since: now });
}

#[tokio::test(start_paused = true)]
async fn a_stale_or_spurious_read_retries_without_extending_the_deadline() {
    let st = lease();
    let t0 = Instant::now();
    advance_ms(1000).await;
    let since = Instant::now();
    // Our own write at the revision we expected: the conflict was spurious.
    assert_eq!(leader_shows(&st, Some(ours(REV)), since), Step::Retry);
    // An outdated leader answers with an older write of ours.
    assert_eq!(leader_shows(&st, Some(ours(REV - 1)), since), Step::Retry);
    assert_eq!(st.deadline(), t0 + VALIDITY);
    assert_eq!(st.revision(), rev(REV));
    // The leader could not be read: retry as well, soon.
    let unread = Err(err(ErrorKind::Timeout));
    assert_eq!(st.read_back(unread, since, rev(REV)), Step::Retry);
    let next = st.next(since);
    assert!(
        matches!(next, Some(Next::RenewAt(at)) if at < since + EVERY),
        "{next:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_key_that_moved_away_ends_the_lease_with_the_right_reason() {
    let st = lease();
    let now = Instant::now();
    let cases = [
        (
            Some(entry(11, None, Op::Purge, Some(Removal::Expired))),
            LostReason::Expired,
        ),
        (
            Some(entry(11, None, Op::Delete, Some(Removal::Deleted))),
            LostReason::Taken,
        ),
        (
            Some(entry(11, Some(NONCE + 1), Op::Put, None)),
            LostReason::Taken,
        ),
        // Our own tombstone, newer than expected, is not a renewal either.
        (
            Some(entry(11, Some(NONCE), Op::Delete, Some(Removal::Deleted))),
            LostReason::Taken,
        ),
        (None, LostReason::Taken),
    ];
    for (found, why) in cases {
        let step = leader_shows(&st, found.clone(), now);
        assert_eq!(step, Step::Gone(why), "{found:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn one_write_at_a_time_and_the_keeper_skips_a_busy_lease() {
    let st = lease();
    let slot = st.claim().await; // a value change writes
    advance_ms(1000).await;
    assert!(
        !st.begin_renewal(),
        "the renewal waits for the value change"
    );
    let (held, hold) = tokio::sync::oneshot::channel::<()>();
    let waiter = tokio::spawn({
        let st = st.clone();
        async move {
            let _slot = st.claim().await;
            hold.await.ok();
        }
    });
    advance_ms(100).await;
    assert!(!waiter.is_finished());
    drop(slot);
    tokio::task::yield_now().await;
    assert!(!st.begin_renewal(), "the slot went to the waiter");
    // A writer cancelled mid-write gives the slot back: the renewals go on.
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    drop(held);
    assert!(
        st.begin_renewal(),
        "the slot came back from the cancelled writer"
    );
}

#[tokio::test(start_paused = true)]
async fn a_guarded_write_waits_for_a_renewal_in_flight() {
    let st = lease();
    // No renewal in flight: the conflict was not ours.
    assert!(!st.renewed_past(rev(REV)).await);
    // A renewal in flight lands after 100 ms: the guarded write may try again.
    assert!(st.begin_renewal());
    let renewal = tokio::spawn({
        let st = st.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let written = st.written(Ok(rev(11)), Instant::now());
            st.renewal_done(Some(Step::Written));
            written
        }
    });
    assert!(st.renewed_past(rev(REV)).await);
    assert_eq!(renewal.await.unwrap(), WRITTEN);
    // A renewal that never settles: it gives up after RENEWAL_WAIT.
    assert!(st.begin_renewal());
    let t = Instant::now();
    assert!(!st.renewed_past(rev(11)).await);
    assert_eq!(Instant::now() - t, RENEWAL_WAIT);
}

#[tokio::test(start_paused = true)]
async fn a_lease_ends_once_and_runs_its_hooks_once() {
    let st = lease();
    let runs = Arc::new(AtomicUsize::new(0));
    let seen = runs.clone();
    st.on_end(move |why| {
        assert_eq!(why, LostReason::Taken);
        seen.fetch_add(1, Ordering::SeqCst);
    });
    let token = st.token();
    st.lose(LostReason::Taken);
    st.lose(LostReason::Deadline);
    assert_eq!(st.reason(), Some(LostReason::Taken));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(token.is_cancelled());
    assert_eq!(st.clone().ended().await, LostReason::Taken);
    // A hook added after the end runs at once.
    let late = runs.clone();
    st.on_end(move |_| {
        late.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // An ended lease is never scheduled again.
    assert_eq!(st.next(Instant::now()), None);
}

#[tokio::test(start_paused = true)]
async fn a_stopped_lease_is_not_renewed() {
    let st = lease();
    st.stop();
    assert!(st.is_stopped());
    assert_eq!(st.next(Instant::now()), None);
    advance_ms(1000).await;
    assert!(!st.begin_renewal());
    let why = st.reason();
    assert!(
        why.is_none(),
        "stopping is not an end, the release ends it: {why:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_bound_lease_lives_on_its_sessions_clock_and_ends_with_it() {
    let session = lease();
    let bound = lease_in(Some(session.clone()));
    // Never renewed by itself: the keeper gets no timer for it.
    assert_eq!(bound.next(Instant::now()), None);
    assert_eq!(bound.due(Instant::now()), None);
    assert_eq!(bound.ttl(), None);
    // The session's renewal moves the bound lease's deadline too.
    advance_ms(1000).await;
    assert!(session.begin_renewal());
    let sent = Instant::now();
    assert_eq!(session.written(Ok(rev(11)), sent), WRITTEN);
    session.renewal_done(Some(Step::Written));
    assert_eq!(bound.deadline(), sent + VALIDITY);
    assert!(bound.is_valid());
    // A second bound lease released before the session's end leaves its list.
    let released = lease_in(Some(session.clone()));
    released.lose(LostReason::Released);
    let hook = Arc::new(std::sync::Mutex::new(None));
    let seen = hook.clone();
    bound.on_end(move |r| *seen.lock().unwrap() = Some(r));
    session.lose(LostReason::Expired);
    assert_eq!(*hook.lock().unwrap(), Some(LostReason::Expired));
    assert_eq!(bound.clone().ended().await, LostReason::Expired);
    assert_eq!(released.reason(), Some(LostReason::Released));
    // Bound to a session that already ended: lost at once.
    let late = lease_in(Some(session));
    assert_eq!(late.reason(), Some(LostReason::Expired));
}

#[tokio::test(start_paused = true)]
async fn a_bound_lease_notices_its_sessions_deadline_without_any_keeper() {
    let session = lease();
    let bound = lease_in(Some(session.clone()));
    let t0 = Instant::now();
    assert_eq!(bound.clone().ended().await, LostReason::Deadline);
    assert_eq!(Instant::now(), t0 + VALIDITY);
    assert!(!session.is_valid());
}

#[tokio::test(start_paused = true)]
async fn a_session_that_bound_and_released_ten_thousand_leases_keeps_none() {
    let session = lease();
    let held: Vec<_> = (0..10_000)
        .map(|_| lease_in(Some(session.clone())))
        .collect();
    assert_eq!(session.bound_count(), 10_000);
    // Released (ended), or dropped without ever ending: either way out of the set.
    for (i, st) in held.into_iter().enumerate() {
        if i % 2 == 0 {
            st.lose(LostReason::Released);
        }
    }
    assert_eq!(session.bound_count(), 0);
    // Freed slots are taken again, and the session's end still reaches a lease bound now.
    let again = lease_in(Some(session.clone()));
    assert_eq!(session.bound_count(), 1);
    session.lose(LostReason::Taken);
    assert_eq!(again.reason(), Some(LostReason::Taken));
    assert_eq!(session.bound_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_bound_lease_takes_its_identity_and_timing_from_its_session_and_keeps_no_value() {
    let session = lease();
    let bound = lease_in(Some(session.clone()));
    assert_eq!(bound.nonce(), session.nonce());
    assert_eq!(bound.config(), session.config());
    assert!(bound.is_ours(&ours(REV)));
    // The creation's value is not kept: only a value change writes one, and brings it.
    assert_eq!(bound.to_write(None), (rev(REV), Bytes::new()));
    let v = Bytes::from_static(b"new");
    assert_eq!(bound.to_write(Some(v.clone())), (rev(REV), v));
    assert_eq!(bound.to_write(None).1, Bytes::new());
    // A value change's outcome moves its revision, never a clock of its own.
    let sent = Instant::now();
    assert_eq!(bound.written(Ok(rev(12)), sent), WRITTEN);
    assert_eq!(bound.revision(), rev(12));
    assert_eq!(bound.deadline(), session.deadline());
    assert!(!bound.begin_renewal());
}

#[tokio::test(start_paused = true)]
async fn a_value_the_server_refuses_for_good_is_not_what_renewals_carry() {
    let st = lease();
    let kept = st.kept_value();
    assert_eq!(kept.as_deref(), Some(&b"v"[..]));
    let huge = Bytes::from(vec![b'x'; 64]);
    assert_eq!(st.to_write(Some(huge.clone())), (rev(REV), huge));
    let too_large = Error::new(ErrorKind::ValueTooLarge, "message size exceeds maximum");
    assert!(refused_for_good(&too_large));
    st.refused(kept, &too_large);
    assert_eq!(st.to_write(None), (rev(REV), Bytes::from_static(b"v")));
    // A renewal refused for good is retried like a failed one: the lease is still held.
    st.refused(None, &too_large);
    assert!(st.is_valid());
    // Whatever may pass is retried, never taken for a refusal.
    for kind in [
        ErrorKind::Timeout,
        ErrorKind::Connection,
        ErrorKind::Unavailable,
        ErrorKind::Conflict,
        ErrorKind::OutcomeUnknown,
        ErrorKind::Server,
    ] {
        assert!(!refused_for_good(&Error::new(kind, "")), "{kind:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_sessions_close_waits_for_the_releases_of_its_bound_leases_under_way() {
    let session = lease();
    let _held = lease_in(Some(session.clone()));
    let dropped = lease_in(Some(session.clone()));
    dropped.stop(); // dropped: its release is under way, the other one is still held
    let start = Instant::now();
    let close = tokio::spawn({
        let session = session.clone();
        async move { session.bound_released().await }
    });
    advance_ms(100).await;
    assert!(!close.is_finished(), "the close waits for the release");
    let slot = dropped.claim().await;
    dropped.lose(LostReason::Released);
    drop(slot);
    close.await.unwrap();
    assert!(
        start.elapsed() < RENEWAL_WAIT,
        "woken by the release, not the bound"
    );
    // A release that never runs is waited for up to the bound only.
    let stuck = lease_in(Some(session.clone()));
    stuck.stop();
    let start = Instant::now();
    session.bound_released().await;
    assert_eq!(start.elapsed(), RENEWAL_WAIT);
}
