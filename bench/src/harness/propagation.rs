//! Measuring propagation: versioned payloads sent one at a time, and readers that report
//! each version they see; shared by the toolkit's, raw JetStream's and etcd's runs of
//! metric 5.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::harness::stats::Lat;
use crate::harness::{BoxError, Env};

/// Readers share this many connections (as processes would share a host's connection pool).
pub(crate) const CONNECTIONS: usize = 10;

pub(crate) fn puts(env: &Env) -> usize {
    env.size.pick(150, 1000)
}

pub(crate) fn payload(i: usize) -> Bytes {
    Bytes::from(format!(
        "{{\"version\":{i},\"pool_size\":{},\"timeout_ms\":250,\"feature_flags\":[\"a\",\"b\"],\"endpoint\":\"https://svc.internal/v1\"}}",
        10 + i % 7
    ))
}

/// Collects "reader saw version i" reports until all `readers` saw `i`; returns the last time.
pub(crate) async fn all_seen(
    rx: &mut mpsc::UnboundedReceiver<(usize, Instant)>,
    i: usize,
    readers: usize,
) -> Option<Instant> {
    let mut seen = 0;
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen < readers {
        let left = deadline.saturating_duration_since(Instant::now());
        let (v, t) = tokio::time::timeout(left, rx.recv()).await.ok()??;
        if v == i {
            seen += 1;
            last = Some(t);
        }
    }
    last
}

/// Puts counted as warm-up before the samples.
pub(crate) const WARM: usize = 10;

/// One change sent to readers that report back: when it was sent, when the send returned
/// (a put: acknowledged), and when the last reader reported it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub sent: Instant,
    pub returned: Instant,
    pub last: Instant,
}

impl Sample {
    /// Send → the last reader's report.
    pub(crate) fn since_send(&self) -> Duration {
        self.last.saturating_duration_since(self.sent)
    }

    /// The send returned (a put was acknowledged) → the last reader's report; 0 when the
    /// last reader reported before the acknowledgement arrived.
    pub(crate) fn since_return(&self) -> Duration {
        self.last.saturating_duration_since(self.returned)
    }
}

/// Lets the watches settle before the first put, and drops what they reported so far.
pub(crate) async fn settle(rx: &mut mpsc::UnboundedReceiver<(usize, Instant)>) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    while rx.try_recv().is_ok() {}
}

/// Sends version `i` through `put` and waits until all `readers` reported it.
pub(crate) async fn sample<Fut>(
    rx: &mut mpsc::UnboundedReceiver<(usize, Instant)>,
    i: usize,
    readers: usize,
    put: Fut,
) -> Result<Sample, BoxError>
where
    Fut: std::future::Future<Output = Result<(), BoxError>>,
{
    let sent = Instant::now();
    put.await?;
    let returned = Instant::now();
    let Some(last) = all_seen(rx, i, readers).await else {
        return Err(format!("version {i} did not reach all {readers} readers in 10 s").into());
    };
    Ok(Sample {
        sent,
        returned,
        last,
    })
}

/// Writes versions 1..=n (after a warm-up of [`WARM`]) one at a time and times each from
/// the put's send until all readers have it.
pub(crate) async fn drive<F, Fut>(
    env: &Env,
    rx: &mut mpsc::UnboundedReceiver<(usize, Instant)>,
    readers: usize,
    mut put: F,
) -> Result<Lat, BoxError>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), BoxError>>,
{
    let mut lat = Lat::new();
    settle(rx).await;
    for i in 1..=WARM + puts(env) {
        let s = sample(rx, i, readers, put(i)).await?;
        if i > WARM {
            lat.record(s.since_send());
        }
        // Puts do not overlap: each sample measures one change alone.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(lat)
}

/// The `version` field of a payload.
pub(crate) fn version_of(b: &[u8]) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_slice(b).ok()?;
    v.get("version")?.as_u64().map(|v| v as usize)
}
