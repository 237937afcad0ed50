//! Latency histograms, result rows and the hand-off tracker shared by the metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

/// A latency histogram in microseconds (1 µs to 10 min, 3 significant figures).
#[derive(Debug, Clone)]
pub(crate) struct Lat(Histogram<u64>);

impl Default for Lat {
    fn default() -> Self {
        Lat::new()
    }
}

impl Lat {
    pub(crate) fn new() -> Lat {
        // Bounds are constants that hdrhistogram accepts; failure would be a programming error.
        #[allow(clippy::unwrap_used)]
        Lat(Histogram::new_with_bounds(1, 600_000_000, 3).unwrap())
    }

    pub(crate) fn record(&mut self, d: Duration) {
        self.record_us(d.as_micros() as u64);
    }

    pub(crate) fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.max(1));
    }

    pub(crate) fn add(&mut self, other: &Lat) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub(crate) fn n(&self) -> u64 {
        self.0.len()
    }

    pub(crate) fn q(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64
    }

    pub(crate) fn max(&self) -> f64 {
        self.0.max() as f64
    }

    pub(crate) fn min(&self) -> f64 {
        self.0.min() as f64
    }

    /// The recorded values as `[[µs, count], ...]`: how a child process hands its histogram
    /// to the parent ([`from_json`](Self::from_json)).
    pub(crate) fn to_json(&self) -> Value {
        self.0
            .iter_recorded()
            .map(|v| serde_json::json!([v.value_iterated_to(), v.count_at_value()]))
            .collect()
    }

    /// The histogram [`to_json`](Self::to_json) wrote (pairs it cannot read are skipped).
    pub(crate) fn from_json(v: &Value) -> Lat {
        let mut lat = Lat::new();
        for pair in v.as_array().into_iter().flatten() {
            if let (Some(us), Some(n)) = (pair[0].as_u64(), pair[1].as_u64()) {
                // Within the bounds: it came from a histogram with the same ones.
                let _ = lat.0.record_n(us.max(1), n);
            }
        }
        lat
    }
}

/// One row of `report.json`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub metric: String,
    pub system: String,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub n: u64,
    pub config: Value,
    /// Metric-specific numbers (throughput, CAS attempts, fairness, ...).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub extra: Value,
    /// Kept for the chart.
    #[serde(skip)]
    pub hist: Option<Lat>,
}

impl Row {
    pub(crate) fn new(metric: &str, system: &str, lat: &Lat, config: Value) -> Row {
        Row {
            metric: metric.to_string(),
            system: system.to_string(),
            p50_us: lat.q(0.5),
            p99_us: lat.q(0.99),
            max_us: lat.max(),
            n: lat.n(),
            config,
            extra: Value::Null,
            hist: Some(lat.clone()),
        }
    }

    pub(crate) fn extra(mut self, extra: Value) -> Row {
        self.extra = extra;
        self
    }
}

/// A headline comparison: the number goes in `ratios`, the rest in `ratio_details`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Ratio {
    pub value: Option<f64>,
    /// `"<="` or `">="`.
    pub direction: &'static str,
    pub goal: f64,
    pub met: Option<bool>,
    /// Which systems and durability settings are compared, and how.
    pub pairing: String,
}

/// Everything the run measured.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub rows: Vec<Row>,
    pub ratios: BTreeMap<String, Ratio>,
    /// Metrics or systems that were not measured, with the reason.
    pub not_measured: Vec<String>,
    pub meta: BTreeMap<String, Value>,
}

impl Report {
    pub(crate) fn push(&mut self, row: Row) {
        eprintln!(
            "    {:<28} {:<34} n={:<6} p50={:>9.0}µs p99={:>9.0}µs max={:>9.0}µs",
            row.metric, row.system, row.n, row.p50_us, row.p99_us, row.max_us
        );
        self.rows.push(row);
    }

    pub(crate) fn find(&self, metric: &str, system: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.metric == metric && r.system == system)
    }

    pub(crate) fn ratio(
        &mut self,
        name: &str,
        value: Option<f64>,
        direction: &'static str,
        goal: f64,
        pairing: impl Into<String>,
    ) {
        let met = value.map(|v| match direction {
            "<=" => v <= goal,
            _ => v >= goal,
        });
        let r = Ratio {
            value,
            direction,
            goal,
            met,
            pairing: pairing.into(),
        };
        eprintln!(
            "    ratio {name} = {} (goal {direction} {goal}: {})",
            value.map_or("n/a".into(), |v| format!("{v:.3}")),
            match met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            }
        );
        self.ratios.insert(name.to_string(), r);
    }

    pub(crate) fn missing(&mut self, what: impl Into<String>) {
        let what = what.into();
        eprintln!("    not measured: {what}");
        self.not_measured.push(what);
    }
}

/// Hand-off latency: from the holder's release being acknowledged to the next holder's
/// acquisition returning. The next holder may learn of the release *before* the releaser sees
/// its acknowledgement; such a hand-off counts as 0 (recorded as 1 µs).
#[derive(Debug, Default)]
pub(crate) struct Handoff {
    st: Mutex<HandoffState>,
    /// Notified after every counted hand-off.
    counted: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct HandoffState {
    release_in_flight: bool,
    release_acked: Option<Instant>,
    acquired_early: Option<Instant>,
    lat: Lat,
    handoffs: u64,
}

impl Handoff {
    fn lock(&self) -> std::sync::MutexGuard<'_, HandoffState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The caller now holds the lock. Returns the number of hand-offs so far.
    pub(crate) fn acquired(&self, at: Instant) -> u64 {
        let mut s = self.lock();
        if let Some(t1) = s.release_acked.take() {
            s.lat.record(at.saturating_duration_since(t1));
            s.handoffs += 1;
            self.counted.notify_waiters();
        } else if s.release_in_flight {
            s.acquired_early = Some(at);
        }
        s.handoffs
    }

    /// The holder is about to send its release.
    pub(crate) fn releasing(&self) {
        self.lock().release_in_flight = true;
    }

    /// The holder's release was acknowledged at `at`.
    pub(crate) fn released(&self, at: Instant) {
        let mut s = self.lock();
        s.release_in_flight = false;
        if s.acquired_early.take().is_some() {
            s.lat.record_us(1);
            s.handoffs += 1;
            self.counted.notify_waiters();
        } else {
            s.release_acked = Some(at);
        }
    }

    pub(crate) fn handoffs(&self) -> u64 {
        self.lock().handoffs
    }

    /// Waits until at least `target` hand-offs were counted, or `deadline`, or `stop()` is
    /// true at a hand-off.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub(crate) async fn wait_for(
        &self,
        target: u64,
        deadline: tokio::time::Instant,
        stop: impl Fn() -> bool,
    ) {
        loop {
            let counted = self.counted.notified();
            tokio::pin!(counted);
            // Registered before the check, so a hand-off right after it still wakes us.
            counted.as_mut().enable();
            if self.handoffs() >= target || stop() {
                return;
            }
            if tokio::time::timeout_at(deadline, counted).await.is_err() {
                return;
            }
        }
    }

    pub(crate) fn lat(&self) -> Lat {
        self.lock().lat.clone()
    }
}

/// max/min acquisitions per client; `None` when some client never acquired.
pub(crate) fn fairness(counts: &[u64]) -> (u64, u64, Option<f64>) {
    let max = counts.iter().copied().max().unwrap_or(0);
    let min = counts.iter().copied().min().unwrap_or(0);
    let ratio = (min > 0).then(|| max as f64 / min as f64);
    (max, min, ratio)
}

/// Geometric mean of positive numbers.
pub(crate) fn geomean(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() || xs.iter().any(|x| *x <= 0.0) {
        return None;
    }
    Some((xs.iter().map(|x| x.ln()).sum::<f64>() / xs.len() as f64).exp())
}

pub(crate) fn median(xs: &mut [f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::Handoff;

    fn handoff(h: &Handoff, gap: Duration) {
        h.releasing();
        let acked = Instant::now();
        h.released(acked);
        h.acquired(acked + gap);
    }

    #[test]
    fn a_hand_off_is_release_acked_to_next_acquired() {
        let h = Handoff::default();
        handoff(&h, Duration::from_micros(250));
        assert_eq!(h.handoffs(), 1);
        assert_eq!(h.lat().q(0.5), 250.0);
    }

    #[test]
    fn an_acquisition_before_the_release_ack_counts_as_zero() {
        let h = Handoff::default();
        h.releasing();
        h.acquired(Instant::now());
        assert_eq!(
            h.handoffs(),
            0,
            "counted only once the release is acknowledged"
        );
        h.released(Instant::now());
        assert_eq!(h.handoffs(), 1);
        assert_eq!(h.lat().q(0.5), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_gives_up_at_the_deadline() {
        let h = Handoff::default();
        let t0 = tokio::time::Instant::now();
        h.wait_for(1, t0 + Duration::from_secs(3), || false).await;
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_returns_at_the_target_hand_off() {
        let h = Arc::new(Handoff::default());
        let t0 = tokio::time::Instant::now();
        let h2 = h.clone();
        let _driver = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                handoff(&h2, Duration::ZERO);
            }
        }));
        h.wait_for(2, t0 + Duration::from_secs(60), || false).await;
        assert_eq!(h.handoffs(), 2);
        assert_eq!(t0.elapsed(), Duration::from_millis(200));
    }
}
