//! A recorder for asserting metrics in tests: what the code under test emitted through the
//! [`metrics`] facade, read without resetting anything.
//!
//! ```
//! let recorder = kvtk_tests::metrics::TestRecorder::new();
//! // This thread's recorder until the guard drops: a current-thread runtime (the
//! // `#[tokio::test]` default) runs every task of the test on it.
//! let _installed = recorder.install_local();
//! // ... take a lock; here, the sample it would record ...
//! metrics::histogram!("kv_lock_wait_seconds", "bucket" => "locks").record(0.002);
//! assert_eq!(recorder.histogram("kv_lock_wait_seconds", &[("bucket", "locks")]).len(), 1);
//! ```

use std::sync::Arc;

use ::metrics::{
    Counter, Gauge, Histogram, Key, KeyName, LocalRecorderGuard, Metadata, Recorder, SharedString,
    Unit,
};
use metrics_util::registry::{AtomicStorage, Registry};

/// Keeps every counter, gauge and histogram sample it is given; reads never reset them
/// (unlike `metrics_util::debugging::DebuggingRecorder`, whose snapshots drain gauges too).
pub struct TestRecorder {
    registry: Registry<Key, AtomicStorage>,
}

impl std::fmt::Debug for TestRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRecorder").finish_non_exhaustive()
    }
}

impl Default for TestRecorder {
    fn default() -> Self {
        TestRecorder::new()
    }
}

fn matches(key: &Key, name: &str, labels: &[(&str, &str)]) -> bool {
    key.name() == name
        && labels
            .iter()
            .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
}

impl TestRecorder {
    /// An empty recorder.
    pub fn new() -> TestRecorder {
        TestRecorder {
            registry: Registry::atomic(),
        }
    }

    /// Makes this the recorder of the current thread until the guard is dropped
    /// (`metrics::set_default_local_recorder`). Only emissions on this thread are seen: run
    /// the test on a current-thread runtime.
    pub fn install_local(&self) -> LocalRecorderGuard<'_> {
        ::metrics::set_default_local_recorder(self)
    }

    /// The sum of the counters `name` whose labels include all of `labels`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let mut sum = 0;
        self.registry.visit_counters(|k, c| {
            if matches(k, name, labels) {
                sum += c.load(std::sync::atomic::Ordering::SeqCst);
            }
        });
        sum
    }

    /// The sum of the gauges `name` whose labels include all of `labels`; `None` when no
    /// such gauge was ever touched.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut sum = None;
        self.registry.visit_gauges(|k, g| {
            if matches(k, name, labels) {
                let v = f64::from_bits(g.load(std::sync::atomic::Ordering::SeqCst));
                *sum.get_or_insert(0.0) += v;
            }
        });
        sum
    }

    /// Every sample of the histograms `name` whose labels include all of `labels`.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        let mut out = Vec::new();
        self.registry.visit_histograms(|k, h| {
            if matches(k, name, labels) {
                out.extend(h.data());
            }
        });
        out
    }

    /// Every series seen, as `name{label=value,...}` lines (for failure messages).
    pub fn describe(&self) -> String {
        let mut lines = Vec::new();
        let show = |k: &Key| {
            let labels: Vec<String> = k
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            format!("{}{{{}}}", k.name(), labels.join(","))
        };
        self.registry.visit_counters(|k, _| lines.push(show(k)));
        self.registry.visit_gauges(|k, _| lines.push(show(k)));
        self.registry.visit_histograms(|k, _| lines.push(show(k)));
        lines.sort();
        lines.join("\n")
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.registry
            .get_or_create_counter(key, |c| Counter::from_arc(Arc::clone(c)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(Arc::clone(g)))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(Arc::clone(h)))
    }
}

/// The metric names in the table of a `# Metrics` document (the workspace's `docs/metrics.md`)
/// or of the `## Metrics` section of a README (its rows' first column), for checking a crate's
/// names against the one table that documents them.
pub fn documented(doc: &str) -> Vec<String> {
    let start = if doc.starts_with("# Metrics\n") {
        Some(0)
    } else {
        doc.find("\n## Metrics\n").map(|s| s + 1)
    };
    let Some(start) = start else {
        return Vec::new();
    };
    let section = &doc[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |e| e + 3);
    section[..end]
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

/// Checks that the names in the metrics table of the file `readme` (see [`documented`]) that
/// start with one of `prefixes` are exactly `names` (a crate's test keeps its constants and the
/// one table in step).
///
/// # Panics
/// When the file cannot be read or the two lists differ.
pub fn assert_documented(readme: &std::path::Path, prefixes: &[&str], names: &[&str]) {
    let text = std::fs::read_to_string(readme)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", readme.display()));
    let mut documented: Vec<String> = documented(&text)
        .into_iter()
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
        .collect();
    documented.sort();
    let mut ours: Vec<&str> = names.to_vec();
    ours.sort();
    assert_eq!(
        documented,
        ours,
        "metric names in {} and in the code",
        readme.display()
    );
}
