//! The chaos report: markdown with the numbers and violations, and an SVG timeline of who held
//! what, with fault periods shaded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use kvtk_tests::check::{self, Violation};
use kvtk_tests::history::{Mode, Op, Record};

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
    let _ = writeln!(s, "| workload | figure | value |\n| --- | --- | ---: |");
    let mut row = |w: &str, what: &str, v: String| {
        let _ = writeln!(s, "| {w} | {what} | {v} |");
    };
    row(
        "locks",
        "mutex acquisitions (believed)",
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
        "observer violations (missed or backwards terms)",
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
        "\nTimeline: `timeline.svg` (holds per client, faults shaded).\n"
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

const LANE: f64 = 14.0;
const LEFT: f64 = 90.0;
const WIDTH: f64 = 1600.0;

/// The SVG timeline: one lane per client that held something, a bar per believed hold
/// (coloured by lock), fault periods shaded grey over all lanes.
pub(crate) fn timeline(records: &[Record]) -> String {
    let holds = check::holds(records);
    let end = records
        .iter()
        .filter_map(|r| r.completed.or(Some(r.invoked)))
        .max()
        .unwrap_or_default()
        .as_secs_f64()
        .max(1.0);
    let x = |d: Duration| LEFT + d.as_secs_f64() / end * (WIDTH - LEFT - 10.0);
    let lanes: BTreeMap<&str, usize> = {
        let mut names: Vec<&str> = holds.iter().map(|h| h.acquire.client.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names.into_iter().enumerate().map(|(i, n)| (n, i)).collect()
    };
    let locks: BTreeMap<&str, usize> = {
        let mut names: Vec<&str> = holds.iter().map(|h| h.lock.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names.into_iter().enumerate().map(|(i, n)| (n, i)).collect()
    };
    let height = 30.0 + LANE * lanes.len() as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" font-family=\"monospace\" font-size=\"10\">\n"
    );
    for r in records.iter().filter(|r| matches!(r.op, Op::Fault { .. })) {
        let (a, b) = (x(r.invoked), x(r.completed.unwrap_or(r.invoked)));
        let title = xml(&r.op.to_string());
        let _ = writeln!(s, "<rect x=\"{a:.1}\" y=\"0\" width=\"{:.1}\" height=\"{height}\" fill=\"#ddd\"><title>{title}</title></rect>", (b - a).max(1.0));
    }
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
        "<text x=\"{LEFT}\" y=\"10\">0 s … {end:.0} s; grey: faults</text>\n</svg>"
    );
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
