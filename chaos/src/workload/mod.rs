//! The workloads: each drives one recipe through its public API and records a history.

pub(crate) mod config;
pub(crate) mod leader;
pub(crate) mod locks;
pub(crate) mod members;
pub(crate) mod multi;
pub(crate) mod watch;

use std::time::Duration;

use kvtk_tests::check::Bounds;
use kvtk_tests::history::Pending;
use tokio_util::sync::CancellationToken;

/// Lease TTL of every lock and leadership: longer than a stream-leader election (4–9 s), so
/// failovers need not cost holds.
pub(crate) const TTL: Duration = Duration::from_secs(12);

/// The liveness bounds of the run: a grace of a stream-leader election plus [`TTL`] (22 s)
/// after each fault, lock waiters granted within 10 s, terms and configurations delivered
/// within 5 s.
pub(crate) const LIVENESS: Bounds = Bounds::for_lease_ttl(TTL);

/// Bound on any single client call; past it the outcome is unknown.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `fut` under [`CALL_TIMEOUT`] and the stop signal; `None` when either cut it short.
pub(crate) async fn bounded<F: std::future::IntoFuture>(
    stop: &CancellationToken,
    fut: F,
) -> Option<F::Output> {
    tokio::select! {
        out = tokio::time::timeout(CALL_TIMEOUT, fut.into_future()) => out.ok(),
        () = stop.cancelled() => None,
    }
}

/// Completes `op` as ok with `result` or, for errors and timeouts, as unknown: the recipes do
/// not promise that a failed call did nothing, so the checkers must not assume it.
pub(crate) fn settle<T, E: std::error::Error>(
    op: Pending,
    out: Option<Result<T, E>>,
    result: impl FnOnce(&T) -> Option<u64>,
) -> Option<T> {
    match out {
        Some(Ok(v)) => {
            op.ok(result(&v));
            Some(v)
        }
        Some(Err(e)) => {
            op.unknown(causes(&e));
            None
        }
        None => {
            op.unknown("timed out or stopped");
            None
        }
    }
}

/// An error with its causes, outermost first (`a: b: c`): each layer prints only itself, and
/// the history should say what the server answered.
pub(crate) fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}
