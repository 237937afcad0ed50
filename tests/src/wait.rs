//! Waiting on events under one timeout: tests wait for what they expect, never sleep for it,
//! and fail with the name of what never came.

use std::future::{Future, IntoFuture};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};

/// The upper bound for any wait on an event in a test. Generous: it only decides how long a
/// broken test takes to fail, never whether a working one passes.
pub const T: Duration = Duration::from_secs(30);

/// How often [`until`] checks again.
pub const POLL: Duration = Duration::from_millis(20);

/// Awaits `f` for at most [`T`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let answer = kvtk_tests::within("the answer", async { 42 }).await;
/// assert_eq!(answer, 42);
/// # }
/// ```
///
/// # Panics
///
/// When `f` does not finish within [`T`]; the message names `what`.
///
/// # Cancel safety
///
/// As cancel safe as `f`.
pub async fn within<F: IntoFuture>(what: &str, f: F) -> F::Output {
    within_for(what, T, f).await
}

/// Awaits `f` for at most `bound`: for a wait whose bound is what the test asserts (a
/// failover within its lease) or that outlasts [`T`] by design (a workload that runs for
/// minutes). Every other wait uses [`within`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
///
/// let answer = kvtk_tests::within_for("the answer", Duration::from_secs(60), async { 42 }).await;
/// assert_eq!(answer, 42);
/// # }
/// ```
///
/// # Panics
///
/// When `f` does not finish within `bound`; the message names `what`.
///
/// # Cancel safety
///
/// As cancel safe as `f`.
pub async fn within_for<F: IntoFuture>(what: &str, bound: Duration, f: F) -> F::Output {
    match tokio::time::timeout(bound, f.into_future()).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {bound:?} waiting for {what}"),
    }
}

/// The next item of `stream`, within [`T`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut numbers = futures::stream::iter([1, 2]);
/// assert_eq!(kvtk_tests::next("a number", &mut numbers).await, 1);
/// # }
/// ```
///
/// # Panics
///
/// When no item comes within [`T`], or the stream ends; the message names `what`.
///
/// # Cancel safety
///
/// As cancel safe as the stream's `next`.
pub async fn next<S: Stream + Unpin>(what: &str, stream: &mut S) -> S::Item {
    match within(what, stream.next()).await {
        Some(item) => item,
        None => panic!("the stream ended while waiting for {what}"),
    }
}

/// Every item `stream` yields during `span` from now (fewer if it ends): what happened in a
/// window of time, for counting what must not happen more than so often (a renewal per
/// interval, say) — the one place a test watches a stream for a fixed time.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut numbers = futures::stream::iter([1, 2]);
/// let seen = kvtk_tests::collect_for(std::time::Duration::from_millis(10), &mut numbers).await;
/// assert_eq!(seen, [1, 2]);
/// # }
/// ```
///
/// # Cancel safety
///
/// Not cancel safe: the items taken so far are lost with the future.
pub async fn collect_for<S: Stream + Unpin>(span: Duration, stream: &mut S) -> Vec<S::Item> {
    let end = tokio::time::Instant::now() + span;
    let mut items = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout_at(end, stream.next()).await {
        items.push(item);
    }
    items
}

/// Checks `check` every [`POLL`] until it returns true, for at most [`T`]: for state the
/// server reports only when asked (stream info, a reconnected link answering again).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut tries = 0;
/// kvtk_tests::until("the third try", || {
///     tries += 1;
///     std::future::ready(tries == 3)
/// })
/// .await;
/// assert_eq!(tries, 3);
/// # }
/// ```
///
/// # Panics
///
/// When `check` is still false after [`T`]; the message names `what`.
///
/// # Cancel safety
///
/// As cancel safe as the futures `check` returns.
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let checked = poll_until(Instant::now() + T, POLL, || {
        let done = check();
        async move {
            if done.await {
                Ok(())
            } else {
                Err(())
            }
        }
    });
    // Bounded as a whole as well: a check that never returns fails the wait at `T` too.
    if within(what, checked).await.is_err() {
        panic!("timed out after {T:?} waiting for {what}");
    }
}

/// The kit's one polling loop: runs `probe` every `every` until it answers `Ok`, and gives
/// up once `deadline` passed with `probe`'s last error. `probe` runs at least once, and once
/// more after the last pause; for state a server reports only when asked.
///
/// # Cancel safety
///
/// As cancel safe as the futures `probe` returns.
pub(crate) async fn poll_until<V, E, F, Fut>(
    deadline: Instant,
    every: Duration,
    mut probe: F,
) -> Result<V, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    loop {
        match probe().await {
            Ok(found) => return Ok(found),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}
