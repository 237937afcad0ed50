//! The console's numbers (not a timed test): `cargo bench -p kvtk --bench ui`.
//!
//! - `ui_update_p99_ms`: a lock hand-off → the new holder visible in the page, measured in
//!   the browser (a MutationObserver stamps the moment the holder's token changes in the
//!   DOM, against the wall-clock time taken just before the release), with 1,000 held locks
//!   shown and 64 waiters queued on one of them; `kvtk ui` is a separate process, as
//!   operators run it.
//! - `ui_consumers_1_tab`, `ui_consumers_10_tabs`: the consumers on the locks bucket's
//!   stream (stream info) with one and with ten open tabs.
//!
//! Writes `target/ui/bench.json` and prints it as its last line (with every sample and the
//! machine's load average), which is how `scripts/bench.sh` (kv-bench's metric `ui`) takes
//! the figures into the benchmark's report.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark harness: panics and prints by design

#[path = "../tests/browser/mod.rs"]
mod browser;
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use browser::{Browser, Console};
use common::Kvtk;
use kvtk_core::Kv;
use kvtk_locks::{Guard, Locks};
use kvtk_tests::{until, within, NatsServer};
use serde_json::json;

const LOCKS: usize = 1000;
const WAITERS: usize = 64;
const HANDOFFS: usize = 200;

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Stamps every change of the hot lock's holder token in the page.
const OBSERVE: &str = r#"
window.__seen = [];
let last = null;
const look = () => {
  const h = document.querySelector('tr[data-lock="hot"] [data-role=holder]');
  const t = h ? Number(h.dataset.token) : null;
  if (t !== last) { last = t; window.__seen.push([t, Date.now()]); }
};
new MutationObserver(look).observe(document.getElementById('locks'), { childList: true, subtree: true });
look();
return true;
"#;

/// Resolves with the page's time stamp of holder `arguments[0]`, as soon as the observer
/// above has seen it (at once when it already has).
const SEEN: &str = r#"
const [token, done] = arguments;
const hit = () => window.__seen.find(s => s[0] === token);
const now = hit();
if (now) { done(now[1]); return; }
const obs = new MutationObserver(() => {
  const h = hit();
  if (h) { obs.disconnect(); done(h[1]); }
});
obs.observe(document.getElementById('locks'), { childList: true, subtree: true });
"#;

async fn consumers(kv: &Kv) -> usize {
    kv.stream_info("locks").await.unwrap().state.consumer_count
}

/// The waiters on the hot lock: each sends its guard once it holds, and queues again.
struct Hot {
    rx: tokio::sync::mpsc::UnboundedReceiver<Guard>,
    waiters: tokio::task::JoinSet<()>,
}

/// [`LOCKS`] held locks, and the hot lock: its first holder and [`WAITERS`] waiters.
async fn hold(locks: &Locks) -> (Vec<Guard>, Guard, Hot) {
    let mut held = Vec::with_capacity(LOCKS);
    for i in 0..LOCKS {
        let m = locks.mutex(&format!("lock-{i:04}")).unwrap();
        held.push(m.lock().await.unwrap());
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Guard>();
    let first = locks.mutex("hot").unwrap().lock().await.unwrap();
    let mut waiters = tokio::task::JoinSet::new();
    for _ in 0..WAITERS {
        let (locks, tx) = (locks.clone(), tx.clone());
        waiters.spawn(async move {
            loop {
                let g = locks.mutex("hot").unwrap().lock().await.unwrap();
                if tx.send(g).is_err() {
                    return;
                }
            }
        });
    }
    until("64 waiters queued", || async {
        locks.inspect("hot").await.unwrap().waiters.len() == WAITERS
    })
    .await;
    (held, first, Hot { rx, waiters })
}

/// Waits until the current tab shows every lock.
async fn all_shown(b: &Browser, what: &str) {
    let expr = format!(
        "document.querySelectorAll('tr[data-lock]').length === {}",
        LOCKS + 1
    );
    b.until(what, &expr).await;
}

/// [`HANDOFFS`] hand-offs of the hot lock: release → the new holder's token in the page's
/// DOM, in ms, sorted.
async fn handoffs(b: &Browser, hot: &mut Hot, mut current: Guard) -> (Vec<f64>, Guard) {
    let mut lat = Vec::with_capacity(HANDOFFS);
    for _ in 0..HANDOFFS {
        let t0 = now_ms();
        current.release().await.unwrap();
        current = within("the next holder", hot.rx.recv()).await.unwrap();
        let token = json!(current.token().get());
        let seen = within(
            "the page to show the next holder",
            b.client.execute_async(SEEN, vec![token]),
        )
        .await
        .unwrap();
        lat.push(seen.as_f64().unwrap() - t0);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    (lat, current)
}

/// Opens nine more tabs on the console; the consumers on the locks stream then.
async fn ten_tabs(b: &Browser, base: &str, kv: &Kv) -> usize {
    for _ in 1..10 {
        let w = b.client.new_window(true).await.unwrap();
        b.client.switch_to_window(w.handle).await.unwrap();
        b.client.goto(base).await.unwrap();
    }
    all_shown(b, "the tenth tab").await;
    consumers(kv).await
}

fn report(lat: &[f64], one_tab: usize, ten_tabs: usize) -> serde_json::Value {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "ui_update_p50_ms": percentile(lat, 0.50),
        "ui_update_p99_ms": percentile(lat, 0.99),
        "ui_update_max_ms": lat.last(),
        "handoffs": HANDOFFS,
        "locks_shown": LOCKS + 1,
        "waiters": WAITERS,
        "ui_consumers_1_tab": one_tab,
        "ui_consumers_10_tabs": ten_tabs,
        "samples_ms": lat,
        "loadavg": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    })
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs benchmarks without `--bench`: nothing to measure then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let server = NatsServer::start().await;
    let kv = Kv::connect(&server.client_url()).await.unwrap();
    let locks = Locks::open(&kv, "locks").await.unwrap();
    let (held, first, mut hot) = hold(&locks).await;
    let kvtk = Kvtk::new(server.client_url());
    let c = Console::start(kvtk.spawn(["ui", "--listen", "127.0.0.1:0"])).await;
    let b = Browser::start().await;
    b.client.goto(&c.base).await.unwrap();
    all_shown(&b, "1,001 locks on the page").await;
    assert_eq!(locks.inspect("hot").await.unwrap().waiters.len(), WAITERS);
    b.client.execute(OBSERVE, vec![]).await.unwrap();
    let one_tab = consumers(&kv).await;
    let (lat, current) = handoffs(&b, &mut hot, first).await;
    let ten = ten_tabs(&b, &c.base, &kv).await;

    let report = report(&lat, one_tab, ten);
    let path = browser::shots_dir().join("bench.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    // One line, the last: kv-bench's metric `ui` reads it (scripts/bench.sh).
    println!("{report}");
    b.shot("bench-1000-locks").await;
    b.close().await;
    hot.waiters.shutdown().await;
    drop((current, held));
}
