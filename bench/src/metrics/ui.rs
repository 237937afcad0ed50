//! Metric `ui`: the operator's console, `kvtk ui`, in a real browser. What a tab sees is
//! measured where the console's browser harness lives, in kvtk's `ui` bench
//! (`kv-cli/benches/ui.rs`): 1,000 held locks on the page plus one with 64 waiters taking
//! turns, each hand-off timed from just before the release to the moment a MutationObserver
//! in headless chromium sees the new holder's token in the DOM; then the consumers on the
//! locks stream with one and with ten open tabs. `scripts/bench.sh` builds that bench and
//! passes its path in `KV_BENCH_UI`; this metric runs it as a child process (its own
//! nats-server through the kit, default sync, and `kvtk ui` as a process of its own), reads
//! the JSON it prints last and reports it like every other metric.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::stats::{Lat, Report, Row};
use crate::harness::{BoxError, Env};

const METRIC: &str = "ui_update";
const SYSTEM: &str = "kvtk ui (headless chromium)";

/// The goal of `ui_update_p99_ms` (issue 21).
const P99_GOAL_MS: f64 = 250.0;

/// How long the whole child run may take (its build is scripts/bench.sh's).
const LIMIT: Duration = Duration::from_secs(600);

pub(crate) async fn run(env: &Env, report: &mut Report) -> Result<(), BoxError> {
    let Some(bin) = std::env::var_os("KV_BENCH_UI").filter(|v| !v.is_empty()) else {
        report.missing("metric ui: KV_BENCH_UI is not set (scripts/bench.sh builds kvtk's ui bench and sets it)");
        return Ok(());
    };
    env.progress("metric ui: kvtk ui in headless chromium, 1,001 locks, 64 waiters");
    let run = tokio::process::Command::new(&bin)
        .arg("--bench")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(LIMIT, run)
        .await
        .map_err(|_| format!("kvtk's ui bench did not finish within {LIMIT:?}"))??;
    if !out.status.success() {
        return Err(format!("kvtk's ui bench failed: {}", out.status).into());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let r: Value = serde_json::from_str(line)
        .map_err(|e| format!("kvtk's ui bench printed {line:?} ({e})"))?;
    report.push(row(&r)?);
    Ok(())
}

/// The row: hand-off → page latencies, and the consumers and the load as extras.
fn row(r: &Value) -> Result<Row, BoxError> {
    let samples = r["samples_ms"]
        .as_array()
        .ok_or("kvtk's ui bench printed no samples")?;
    let mut lat = Lat::new();
    for ms in samples.iter().filter_map(Value::as_f64) {
        lat.record_us((ms.max(0.0) * 1000.0) as u64);
    }
    let config = json!({
        "server": "nats-server (its own, through the kit)",
        "fsync": "default",
        "locks": r["locks_shown"],
        "waiters": r["waiters"],
    });
    let extra = json!({
        "consumers_1_tab": r["ui_consumers_1_tab"],
        "consumers_10_tabs": r["ui_consumers_10_tabs"],
        "loadavg": r["loadavg"],
    });
    Ok(Row::new(METRIC, SYSTEM, &lat, config).extra(extra))
}

pub(crate) fn ratios(report: &mut Report) {
    let row = report.find(METRIC, SYSTEM);
    let p99_ms = row.map(|r| r.p99_us / 1000.0);
    let consumers = |k: &str| row.and_then(|r| r.extra[k].as_f64());
    let (one, ten) = (consumers("consumers_1_tab"), consumers("consumers_10_tabs"));
    report.ratio(
        "ui_update_p99_ms",
        p99_ms,
        "<=",
        P99_GOAL_MS,
        "kvtk ui: a lock hand-off (just before the release) → the new holder's token in the page's DOM, seen by a MutationObserver in headless chromium; 1,001 locks shown, 64 waiters on the one handed off; p99 (ms)",
    );
    report.ratio(
        "ui_consumers_1_tab",
        one,
        ">=",
        0.0,
        "the reference of ui_consumers_10_tabs (no goal of its own): consumers on the locks bucket's stream (STREAM.INFO) with one tab open: the console's one watch and the 64 waiters' own",
    );
    report.ratio(
        "ui_consumers_10_tabs",
        one.and(ten),
        "<=",
        one.unwrap_or(0.0),
        "goal ui_consumers_1_tab of the same run: consumers on the locks bucket's stream with ten tabs open (a tab costs no consumer)",
    );
}
