//! The chaos report: markdown with the numbers and violations, and an SVG timeline of who held
//! what, with fault periods shaded.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use kvtk_tests::check::{self, Violation};
use kvtk_tests::history::{end, fault_windows, Mode, Op, Record};

use crate::workload::LIVENESS;

/// Figures the runner adds to what the history shows.
#[derive(Debug, Default)]
pub(crate) struct Extra {
    /// Command line to replay the run.
    pub replay: String,
    /// The printed schedule.
    pub schedule: String,
    /// Faults injected.
    pub faults: usize,
    /// Releases answered `AlreadyLost` although the holder saw no loss before releasing.
    pub already_lost: u64,
    /// Releases answered `Released`.
    pub released: u64,
    /// Queue entries of ended sessions the lock clients removed.
    pub reaped: u64,
    /// Fast-path entries that bet on a quiet bucket (R1 buckets only).
    pub quiet_bets: u64,
    /// Of those, the ones that won (landed right after the bettor's last tombstone).
    pub quiet_bets_won: u64,
    /// Watch re-creations by the workload.
    pub watch_restarts: u64,
    /// `HistoryGone` reports.
    pub history_gone: u64,
    /// Whether every watcher delivered the last acknowledged write before the end.
    pub watchers_caught_up: bool,
    /// Run time.
    pub elapsed: Duration,
}

fn count(records: &[Record], f: impl Fn(&Record) -> bool) -> usize {
    records.iter().filter(|r| f(r)).count()
}

/// The markdown report.
pub(crate) fn markdown(records: &[Record], violations: &[Violation], extra: &Extra) -> String {
    let holds = check::holds(records);
    let held = |m: fn(&Mode) -> bool| holds.iter().filter(|h| m(&h.mode)).count();
    let ok = |f: fn(&Op) -> bool| count(records, |r| r.is_ok() && f(&r.op));
    let unknown =
        |f: fn(&Op) -> bool| count(records, |r| !r.is_ok() && r.may_have_happened() && f(&r.op));
    let by_property = |p| violations.iter().filter(|v| v.property == p).count();
    let mut s = String::new();
    let _ = writeln!(s, "# Chaos run\n");
    let _ = writeln!(
        s,
        "Replay: `{}`  \nRun time: {:.0} s, {} faults injected, {} history records.\n",
        extra.replay,
        extra.elapsed.as_secs_f64(),
        extra.faults,
        records.len()
    );
    let _ = writeln!(s, "**Violations: {}**\n", violations.len());
    s.push_str(&per_workload(records, violations));
    let _ = writeln!(s, "| workload | figure | value |\n| --- | --- | ---: |");
    let mut row = |w: &str, what: &str, v: String| {
        let _ = writeln!(s, "| {w} | {what} | {v} |");
    };
    row(
        "locks",
        "mutex acquisitions (believed; multi-lock holds included)",
        held(|m| *m == Mode::Mutex).to_string(),
    );
    row(
        "locks",
        "semaphore acquisitions (believed)",
        held(|m| matches!(m, Mode::Semaphore(_))).to_string(),
    );
    row(
        "locks",
        "read-write acquisitions (believed)",
        held(|m| matches!(m, Mode::Read | Mode::Write)).to_string(),
    );
    row(
        "locks",
        "acquisitions with unknown outcome",
        unknown(|o| matches!(o, Op::Acquire { mode, .. } if *mode != Mode::Leader)).to_string(),
    );
    row(
        "locks",
        "losses signalled to holders",
        ok(|o| matches!(o, Op::Lost { .. })).to_string(),
    );
    row(
        "locks",
        "fenced writes accepted",
        ok(|o| matches!(o, Op::FencedWrite { .. })).to_string(),
    );
    row(
        "locks",
        "overlapping believers",
        by_property(check::Property::MutualExclusion).to_string(),
    );
    row(
        "locks",
        "stale fenced writes accepted",
        by_property(check::Property::Fencing).to_string(),
    );
    row(
        "locks",
        "releases `Released` / `AlreadyLost` without a prior loss signal",
        format!("{} / {}", extra.released, extra.already_lost),
    );
    row(
        "locks",
        "queue entries of ended sessions removed by other clients",
        extra.reaped.to_string(),
    );
    row(
        "locks",
        "quiet-bucket bets placed / won (R1 buckets only)",
        format!("{} / {}", extra.quiet_bets, extra.quiet_bets_won),
    );
    row(
        "leader",
        "terms (believed leaderships)",
        held(|m| *m == Mode::Leader).to_string(),
    );
    row(
        "leader",
        "leaders observed",
        ok(|o| matches!(o, Op::Observe { .. })).to_string(),
    );
    row(
        "leader",
        "observers that saw terms go backwards",
        by_property(check::Property::Observer).to_string(),
    );
    row(
        "all",
        "token or term order violations",
        by_property(check::Property::TokenOrder).to_string(),
    );
    row(
        "watch",
        "writes acknowledged / unknown",
        format!(
            "{} / {}",
            ok(|o| matches!(o, Op::Write { .. })),
            unknown(|o| matches!(o, Op::Write { .. }))
        ),
    );
    row(
        "watch",
        "deliveries",
        ok(|o| matches!(o, Op::Deliver { .. })).to_string(),
    );
    row(
        "watch",
        "watch restarts / HistoryGone reports",
        format!("{} / {}", extra.watch_restarts, extra.history_gone),
    );
    row(
        "watch",
        "watchers caught up at the end",
        extra.watchers_caught_up.to_string(),
    );
    row(
        "watch",
        "revisions lost, duplicated or altered",
        by_property(check::Property::Watch).to_string(),
    );
    row(
        "config",
        "updates valid / invalid",
        format!(
            "{} / {}",
            ok(|o| matches!(o, Op::ConfigWrite { valid: true, .. })),
            ok(|o| matches!(o, Op::ConfigWrite { valid: false, .. }))
        ),
    );
    row(
        "config",
        "applied by readers",
        ok(|o| matches!(o, Op::ConfigApply { .. })).to_string(),
    );
    row(
        "config",
        "invalid or torn applied",
        by_property(check::Property::Config).to_string(),
    );
    let _ = writeln!(
        s,
        "\nTimeline: `timeline.svg` (holds per client; faults dark grey, their grace light grey; liveness violations red).\n"
    );
    if !violations.is_empty() {
        let _ = writeln!(s, "## Violations (first 50)\n\n```");
        for v in violations.iter().take(50) {
            let _ = writeln!(s, "{v}");
        }
        let _ = writeln!(s, "```\n");
    }
    let _ = writeln!(s, "## Faults\n\n```");
    for r in records.iter().filter(|r| matches!(r.op, Op::Fault { .. })) {
        let _ = writeln!(s, "{r}");
    }
    let _ = writeln!(s, "```\n\n## Schedule\n\n```\n{}\n```", extra.schedule);
    s
}

const WORKLOADS: [&str; 6] = ["locks", "multi", "leader", "watch", "config", "members"];

/// The workload an operation belongs to; `elections` names the leader workload's locks.
fn workload_of(op: &Op, elections: &BTreeSet<&str>) -> &'static str {
    let lock = match op {
        Op::Acquire { lock, .. } | Op::Release { lock, .. } | Op::Lost { lock, .. } => lock,
        Op::FencedWrite { resource, .. } => resource,
        Op::ObserveStart { .. } | Op::Observe { .. } => return "leader",
        Op::Write { .. } | Op::WatchStart { .. } | Op::Deliver { .. } | Op::HistoryGone { .. } => {
            return "watch"
        }
        Op::ConfigWrite { .. } | Op::ConfigApply { .. } => return "config",
        Op::Join { .. } | Op::Leave { .. } | Op::MembersWatch { .. } | Op::MemberSeen { .. } => {
            return "members"
        }
        Op::Fault { .. } | Op::Stop => return "runner",
    };
    if elections.contains(lock.as_str()) {
        "leader"
    } else if lock.starts_with("multi.") {
        "multi"
    } else {
        "locks"
    }
}

/// Safety and liveness violations per workload, the multi-lock figures, and how much of the
/// run was fault-free (and so checked for liveness).
fn per_workload(records: &[Record], violations: &[Violation]) -> String {
    let elections: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| match &r.op {
            Op::Acquire {
                lock,
                mode: Mode::Leader,
            } => Some(lock.as_str()),
            _ => None,
        })
        .collect();
    let mut s = String::from(
        "| workload | safety violations | liveness violations (fault-free) |\n| --- | ---: | ---: |\n",
    );
    for w in WORKLOADS {
        let (live, safe): (Vec<&Violation>, Vec<&Violation>) = violations
            .iter()
            .filter(|v| v.ops.first().map(|r| workload_of(&r.op, &elections)) == Some(w))
            .partition(|v| v.property.is_liveness());
        let _ = writeln!(s, "| {w} | {} | {} |", safe.len(), live.len());
    }
    let multi = check::holds(records)
        .iter()
        .filter(|h| h.lock.starts_with("multi."))
        .count();
    let ok = |f: fn(&Op) -> bool| count(records, |r| r.is_ok() && f(&r.op));
    let (checked, total) = fault_free_time(records);
    let _ = writeln!(
        s,
        "\nMulti-lock holds (believed, one per lock of a set): {multi}. Members joined / left / seen by watchers: {} / {} / {}. Fault-free time checked for liveness (outside faults and {:.0} s after each): {:.0} s of {:.0} s.\n",
        ok(|o| matches!(o, Op::Join { .. })),
        ok(|o| matches!(o, Op::Leave { .. })),
        ok(|o| matches!(o, Op::MemberSeen { .. })),
        LIVENESS.grace.as_secs_f64(),
        checked.as_secs_f64(),
        total.as_secs_f64()
    );
    s
}

/// (time outside every fault and its grace, time until the stop).
fn fault_free_time(records: &[Record]) -> (Duration, Duration) {
    let end = end(records);
    let mut covered = Duration::ZERO;
    let mut reach = Duration::ZERO;
    for f in fault_windows(records) {
        let until = f.until.map_or(end, |u| u + LIVENESS.grace).min(end);
        let from = f.from.max(reach);
        covered += until.saturating_sub(from);
        reach = reach.max(until);
    }
    (end.saturating_sub(covered), end)
}

const LANE: f64 = 14.0;
const LEFT: f64 = 90.0;
const WIDTH: f64 = 1600.0;

/// The SVG timeline: one lane per client that held something, a bar per believed hold
/// (coloured by lock), fault periods shaded grey over all lanes (their grace lighter), and a
/// red line where each liveness violation's first operation was invoked.
pub(crate) fn timeline(records: &[Record], violations: &[Violation]) -> String {
    let holds = check::holds(records);
    let end = records
        .iter()
        .filter_map(|r| r.completed.or(Some(r.invoked)))
        .max()
        .unwrap_or_default()
        .as_secs_f64()
        .max(1.0);
    let x = |d: Duration| LEFT + d.as_secs_f64() / end * (WIDTH - LEFT - 10.0);
    let lanes = index(holds.iter().map(|h| h.acquire.client.as_str()));
    let locks = index(holds.iter().map(|h| h.lock.as_str()));
    let height = 30.0 + LANE * lanes.len() as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" font-family=\"monospace\" font-size=\"10\">\n"
    );
    marks(&mut s, records, violations, &x, height);
    for (name, i) in &lanes {
        let _ = writeln!(
            s,
            "<text x=\"2\" y=\"{:.1}\">{}</text>",
            24.0 + LANE * *i as f64,
            xml(name)
        );
    }
    for h in &holds {
        let lane = lanes.get(h.acquire.client.as_str()).copied().unwrap_or(0);
        let hue = locks.get(h.lock.as_str()).copied().unwrap_or(0) * 67 % 360;
        let (a, b) = (
            x(h.from),
            x(h.until.unwrap_or(Duration::from_secs_f64(end))),
        );
        let title = xml(&format!(
            "{} token {} {:.3}s",
            h.lock,
            h.token,
            h.from.as_secs_f64()
        ));
        let _ = writeln!(s, "<rect x=\"{a:.1}\" y=\"{:.1}\" width=\"{:.2}\" height=\"{:.1}\" fill=\"hsl({hue},70%,45%)\"><title>{title}</title></rect>", 15.0 + LANE * lane as f64, (b - a).max(0.5), LANE - 3.0);
    }
    let _ = writeln!(
        s,
        "<text x=\"{LEFT}\" y=\"10\">0 s … {end:.0} s; grey: faults (light: grace); red: liveness violations</text>\n</svg>"
    );
    s
}

/// Each distinct name's position in sorted order.
fn index<'a>(names: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut names: Vec<&str> = names.collect();
    names.sort_unstable();
    names.dedup();
    names.into_iter().enumerate().map(|(i, n)| (n, i)).collect()
}

/// Fault windows (dark grey) and their grace (light grey) over all lanes, and a red line at
/// each liveness violation.
fn marks(
    s: &mut String,
    records: &[Record],
    violations: &[Violation],
    x: &dyn Fn(Duration) -> f64,
    height: f64,
) {
    let end = end(records);
    for f in fault_windows(records) {
        let healed = f.until.unwrap_or(end);
        let (a, b, c) = (x(f.from), x(healed), x(healed + LIVENESS.grace));
        let title = xml(&f.what);
        let _ = writeln!(s, "<rect x=\"{b:.1}\" y=\"0\" width=\"{:.1}\" height=\"{height}\" fill=\"#f0f0f0\"><title>grace after {title}</title></rect>", (c - b).max(1.0));
        let _ = writeln!(s, "<rect x=\"{a:.1}\" y=\"0\" width=\"{:.1}\" height=\"{height}\" fill=\"#ccc\"><title>{title}</title></rect>", (b - a).max(1.0));
    }
    for v in violations.iter().filter(|v| v.property.is_liveness()) {
        let Some(first) = v.ops.first() else { continue };
        let a = x(first.invoked);
        let title = xml(&v.to_string());
        let _ = writeln!(s, "<line x1=\"{a:.1}\" y1=\"0\" x2=\"{a:.1}\" y2=\"{height}\" stroke=\"red\"><title>{title}</title></line>");
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
