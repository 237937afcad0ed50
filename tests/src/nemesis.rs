//! A nemesis: faults on a [`NatsCluster`] and its client links, following a schedule generated
//! from a seed, so a failing run replays from its seed.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::history::{History, Op};
use crate::{FaultProxy, NatsCluster, CLUSTER_SIZE};

/// How long the nemesis waits for the cluster to recover (stream leaders back) after a fault.
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The kinds of fault a schedule draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Close every client connection through one node's client proxy.
    ClientCut,
    /// Drop all bytes of one node's client proxy.
    ClientBlackhole,
    /// Delay one node's client proxy.
    ClientLatency,
    /// SIGKILL a node, then restart it.
    Kill,
    /// SIGSTOP a node, then SIGCONT it.
    Pause,
    /// Cut the route links between two nodes.
    Partition,
    /// SIGKILL the leader of a bucket's stream, then restart it.
    KillStreamLeader,
    /// Stop a node gracefully and start it again.
    Restart,
    /// Drop all bytes of one node's client proxy for longer than a lease ([`STALL_MS`]): its
    /// clients' sessions and leases expire on the server's clock, as a client process paused
    /// (SIGSTOP) or cut off for that long would see.
    ClientStall,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 9] = [
        FaultKind::ClientCut,
        FaultKind::ClientBlackhole,
        FaultKind::ClientLatency,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::KillStreamLeader,
        FaultKind::Restart,
        FaultKind::ClientStall,
    ];
}

/// One concrete fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Cut node `0`'s client proxy.
    ClientCut(usize),
    /// Blackhole node `0`'s client proxy.
    ClientBlackhole(usize),
    /// Delay node `0`'s client proxy by `1`.
    ClientLatency(usize, Duration),
    /// SIGKILL node `0`, restart after the hold.
    Kill(usize),
    /// SIGSTOP node `0`, SIGCONT after the hold.
    Pause(usize),
    /// Partition nodes `0` and `1`.
    Partition(usize, usize),
    /// SIGKILL the stream leader of the `0`th stream given to the nemesis, restart after the hold.
    KillStreamLeader(usize),
    /// Restart node `0` gracefully.
    Restart(usize),
    /// Blackhole node `0`'s client proxy for longer than a lease.
    ClientStall(usize),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::ClientCut(n) => write!(f, "cut clients of n{n}"),
            Fault::ClientBlackhole(n) => write!(f, "blackhole clients of n{n}"),
            Fault::ClientLatency(n, d) => write!(f, "latency {d:?} on clients of n{n}"),
            Fault::Kill(n) => write!(f, "SIGKILL n{n}"),
            Fault::Pause(n) => write!(f, "SIGSTOP n{n}"),
            Fault::Partition(a, b) => write!(f, "partition n{a} | n{b}"),
            Fault::KillStreamLeader(s) => write!(f, "SIGKILL leader of stream #{s}"),
            Fault::Restart(n) => write!(f, "restart n{n}"),
            Fault::ClientStall(n) => write!(f, "stall clients of n{n} past their leases"),
        }
    }
}

/// One step of a schedule: wait `gap`, inject `fault`, keep it for `hold`, heal, recover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Quiet time before the fault.
    pub gap: Duration,
    /// The fault.
    pub fault: Fault,
    /// How long the fault lasts.
    pub hold: Duration,
}

/// Every `CALM_EVERY`-th step waits [`CALM_GAP_MS`] before its fault: a calm long enough to
/// outlast a liveness grace (a stream-leader election plus a lease, about 22 s), so that a
/// run has fault-free windows in which every operation must succeed, not only a fault-free
/// start and end.
pub const CALM_EVERY: usize = 8;
/// How long a [`FaultKind::ClientStall`] lasts, in milliseconds: past leases and sessions of
/// TTL ≤ 12 s (the chaos workloads' lease), so that they expire on the server.
pub const STALL_MS: std::ops::Range<u64> = 13_000..18_000;

/// The gap before every [`CALM_EVERY`]-th fault, in milliseconds.
pub const CALM_GAP_MS: std::ops::Range<u64> = 40_000..60_000;

/// A fault schedule, generated from a seed: the same seed gives the same schedule; faults
/// come 1–4 s apart, with a calm of 40–60 s before every eighth.
///
/// ```
/// use std::time::Duration;
/// use kvtk_tests::nemesis::{FaultKind, Schedule};
///
/// let a = Schedule::generate(7, Duration::from_secs(300), &FaultKind::ALL, 1);
/// let b = Schedule::generate(7, Duration::from_secs(300), &FaultKind::ALL, 1);
/// assert_eq!(a, b);
/// let calm = |s: &&kvtk_tests::nemesis::Step| s.gap >= Duration::from_secs(40);
/// assert!(a.steps.iter().skip(7).step_by(8).all(|s| calm(&s)));
/// assert_eq!(a.steps.iter().filter(calm).count(), a.steps.len() / 8);
/// println!("{a}"); // one line per step, headed by the seed
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The seed it was generated from.
    pub seed: u64,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

impl Schedule {
    /// Draws steps from `kinds` until their gaps and holds fill `total`; `streams` is the number
    /// of streams whose leader [`FaultKind::KillStreamLeader`] may target.
    pub fn generate(seed: u64, total: Duration, kinds: &[FaultKind], streams: usize) -> Schedule {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut steps = Vec::new();
        let mut planned = Duration::ZERO;
        while planned < total && !kinds.is_empty() {
            let kind = kinds[rng.random_range(0..kinds.len())];
            let gap_ms = if steps.len() % CALM_EVERY == CALM_EVERY - 1 {
                rng.random_range(CALM_GAP_MS)
            } else {
                rng.random_range(1_000..4_000)
            };
            let fault = draw(&mut rng, kind, streams.max(1));
            let hold_ms = match fault {
                Fault::ClientStall(_) => rng.random_range(STALL_MS),
                _ => rng.random_range(500..6_000),
            };
            let step = Step {
                gap: Duration::from_millis(gap_ms),
                fault,
                hold: Duration::from_millis(hold_ms),
            };
            planned += step.gap + step.hold;
            steps.push(step);
        }
        Schedule { seed, steps }
    }
}

fn draw(rng: &mut StdRng, kind: FaultKind, streams: usize) -> Fault {
    let node = rng.random_range(0..CLUSTER_SIZE);
    match kind {
        FaultKind::ClientCut => Fault::ClientCut(node),
        FaultKind::ClientBlackhole => Fault::ClientBlackhole(node),
        FaultKind::ClientLatency => {
            Fault::ClientLatency(node, Duration::from_millis(rng.random_range(5..200)))
        }
        FaultKind::Kill => Fault::Kill(node),
        FaultKind::Pause => Fault::Pause(node),
        FaultKind::Partition => Fault::Partition(
            node,
            (node + rng.random_range(1..CLUSTER_SIZE)) % CLUSTER_SIZE,
        ),
        FaultKind::KillStreamLeader => Fault::KillStreamLeader(rng.random_range(0..streams)),
        FaultKind::Restart => Fault::Restart(node),
        FaultKind::ClientStall => Fault::ClientStall(node),
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nemesis schedule, seed {}:", self.seed)?;
        for (i, s) in self.steps.iter().enumerate() {
            write!(
                f,
                "\n  {i:3}: after {:.1}s {} for {:.1}s",
                s.gap.as_secs_f64(),
                s.fault,
                s.hold.as_secs_f64()
            )?;
        }
        Ok(())
    }
}

/// Runs a [`Schedule`] against a cluster and the client proxies in front of its nodes
/// (`client_proxies[i]` forwards to node `i`), recording each fault in a [`History`] as an
/// [`Op::Fault`] from injection until healed and recovered.
#[derive(Debug)]
pub struct Nemesis<'a> {
    cluster: &'a mut NatsCluster,
    client_proxies: &'a [FaultProxy],
    streams: Vec<String>,
    history: History,
}

impl<'a> Nemesis<'a> {
    /// A nemesis over `cluster`; `streams` are the streams (`KV_<bucket>`) whose leaders may be
    /// killed and which must have a leader again before the next step.
    pub fn new(
        cluster: &'a mut NatsCluster,
        client_proxies: &'a [FaultProxy],
        streams: Vec<String>,
        history: History,
    ) -> Nemesis<'a> {
        Nemesis {
            cluster,
            client_proxies,
            streams,
            history,
        }
    }

    /// Runs the steps of `schedule` one at a time until they are done or `run_for` has passed;
    /// returns the number of faults injected. Every fault is healed before it returns.
    ///
    /// # Panics
    ///
    /// When a restarted node does not rejoin in time (see [`NatsCluster::restart_node`]).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: cancelling may leave a fault in place (a paused node, a cut link).
    pub async fn run(&mut self, schedule: &Schedule, run_for: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + run_for;
        let mut injected = 0;
        for step in &schedule.steps {
            if tokio::time::Instant::now() + step.gap >= deadline {
                break;
            }
            tokio::time::sleep(step.gap).await;
            let hold = step
                .hold
                .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            self.inject(step.fault, hold).await;
            injected += 1;
        }
        injected
    }

    async fn inject(&mut self, fault: Fault, hold: Duration) {
        let op = self.history.invoke(
            "nemesis",
            Op::Fault {
                what: fault.to_string(),
            },
        );
        tracing::info!(%fault, ?hold, "nemesis: inject");
        let outcome = self.apply(fault, hold).await;
        let recovered = self.recover().await;
        match (outcome, recovered) {
            (Ok(()), true) => op.ok(None),
            (Err(why), _) => op.fail(why),
            (Ok(()), false) => op.unknown("cluster did not recover in time"),
        }
    }

    async fn apply(&mut self, fault: Fault, hold: Duration) -> Result<(), String> {
        match fault {
            Fault::ClientCut(n) => self.with_proxy(n, hold, FaultProxy::cut).await,
            Fault::ClientBlackhole(n) | Fault::ClientStall(n) => {
                self.with_proxy(n, hold, FaultProxy::blackhole).await
            }
            Fault::ClientLatency(n, d) => self.with_proxy(n, hold, |p| p.set_latency(d)).await,
            Fault::Kill(n) => self.kill_restart(n, hold).await,
            Fault::Pause(n) => {
                self.cluster.pause_node(n);
                tokio::time::sleep(hold).await;
                self.cluster.resume_node(n);
                Ok(())
            }
            Fault::Partition(a, b) => {
                if !self.cluster.is_partitionable() {
                    return Err("cluster not started with start_partitionable".into());
                }
                self.cluster.partition(a, b);
                tokio::time::sleep(hold).await;
                self.cluster.heal_partition(a, b);
                Ok(())
            }
            Fault::KillStreamLeader(s) => {
                let stream = self.streams.get(s).ok_or("no such stream")?;
                let leader = self.cluster.stream_leader(stream).await;
                let n = leader.ok_or_else(|| format!("{stream} has no leader"))?;
                self.kill_restart(n, hold).await
            }
            Fault::Restart(n) => {
                self.cluster.restart_node(n).await;
                Ok(())
            }
        }
    }

    async fn with_proxy(
        &self,
        n: usize,
        hold: Duration,
        fault: impl Fn(&FaultProxy),
    ) -> Result<(), String> {
        let proxy = self
            .client_proxies
            .get(n)
            .ok_or_else(|| format!("no client proxy for n{n}"))?;
        fault(proxy);
        tokio::time::sleep(hold).await;
        proxy.heal();
        Ok(())
    }

    async fn kill_restart(&mut self, n: usize, hold: Duration) -> Result<(), String> {
        self.cluster.kill_node(n);
        tokio::time::sleep(hold).await;
        self.cluster.restart_node(n).await;
        Ok(())
    }

    /// Waits until every stream has a leader on a running node.
    async fn recover(&self) -> bool {
        for stream in &self.streams {
            if self
                .cluster
                .wait_stream_leader(stream, RECOVERY_TIMEOUT)
                .await
                .is_none()
            {
                return false;
            }
        }
        true
    }
}
