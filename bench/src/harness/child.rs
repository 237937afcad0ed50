//! Child processes of this binary (`kv-bench child <role> <args>...`): leaders that get
//! SIGKILLed in crash failovers, for every system alike, runs that need a process of their
//! own (the memory of held locks), and fleets of processes that run until the parent is done
//! with them (config fan-out). Children die with their handle (`kill_on_drop`).

use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinSet;

use crate::harness::BoxError;

/// The first argument that makes this binary a child.
pub(crate) const ARG: &str = "child";
/// What a child prints once it is ready (a leader: once elected).
pub(crate) const READY: &str = "READY";

fn command(role: &str, args: &[String]) -> Result<Command, BoxError> {
    let mut c = Command::new(std::env::current_exe()?);
    c.arg(ARG)
        .arg(role)
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    Ok(c)
}

/// The last line a child printed, as JSON.
fn last_json(role: &str, stdout: &str) -> Result<serde_json::Value, String> {
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| format!("child {role} printed {stdout:?} ({e})"))
}

/// A child that has printed [`READY`] and runs until it is killed or [`finish`]ed.
///
/// [`finish`]: Running::finish
pub(crate) struct Running {
    role: String,
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Running {
    /// Starts a child and waits up to `limit` for it to print [`READY`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the child is killed when the call is dropped.
    pub(crate) async fn start(
        role: &str,
        args: &[String],
        limit: Duration,
    ) -> Result<Running, BoxError> {
        // The child's stdin stays open while this handle lives: closing it is the child's
        // signal to finish (see [`ready_until_stdin_closed`]).
        let mut child = command(role, args)?.stdin(Stdio::piped()).spawn()?;
        let out = child.stdout.take().ok_or("no child stdout")?;
        let mut lines = BufReader::new(out).lines();
        let line = tokio::time::timeout(limit, lines.next_line())
            .await
            .map_err(|_| format!("child {role} not ready within {limit:?}"))??;
        if line.as_deref() != Some(READY) {
            return Err(format!("child {role} did not get ready: {line:?}").into());
        }
        Ok(Running {
            role: role.to_string(),
            child,
            lines,
        })
    }

    /// SIGKILLs the child and waits for it to die.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the kill is sent before the first await; dropping the call only skips
    /// waiting for the child to exit.
    pub(crate) async fn kill(mut self) -> Result<(), BoxError> {
        self.child.start_kill()?;
        let _ = self.child.wait().await;
        Ok(())
    }

    /// Closes the child's stdin, waits up to `limit` for it to exit, and parses the last
    /// line it printed as JSON.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the child is killed when the call is dropped.
    pub(crate) async fn finish(mut self, limit: Duration) -> Result<serde_json::Value, BoxError> {
        drop(self.child.stdin.take());
        let role = self.role.clone();
        let rest = async {
            let mut text = String::new();
            while let Some(line) = self.lines.next_line().await? {
                text.push_str(&line);
                text.push('\n');
            }
            let status = self.child.wait().await?;
            Ok::<_, std::io::Error>((text, status))
        };
        let (text, status) = tokio::time::timeout(limit, rest)
            .await
            .map_err(|_| format!("child {role} did not finish within {limit:?}"))??;
        Ok(last_json(&role, &text).map_err(|e| format!("{e}, {status}"))?)
    }
}

/// Runs a child to its end, for at most `limit`, and parses the last line it printed as JSON.
///
/// # Cancel safety
///
/// Cancel safe: the child is killed when the call is dropped.
pub(crate) async fn run_json(
    role: &str,
    args: &[String],
    limit: Duration,
) -> Result<serde_json::Value, BoxError> {
    let mut c = command(role, args)?;
    c.stderr(Stdio::piped());
    let out = tokio::time::timeout(limit, c.output())
        .await
        .map_err(|_| format!("child {role} did not finish within {limit:?}"))??;
    let text = String::from_utf8_lossy(&out.stdout);
    last_json(role, &text).map_err(|e| {
        format!(
            "{e}, {}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into()
    })
}

/// In a child: tells the parent it is ready, then waits to be killed.
///
/// # Cancel safety
///
/// Cancel safe: it only waits.
pub(crate) async fn ready_until_killed() -> Result<(), BoxError> {
    println!("{READY}");
    std::future::pending().await
}

/// In a child: tells the parent it is ready, then waits until the parent closes its stdin
/// ([`Running::finish`]) or dies.
///
/// # Cancel safety
///
/// Cancel safe: it only reads stdin.
pub(crate) async fn ready_until_stdin_closed() -> Result<(), BoxError> {
    println!("{READY}");
    let mut sink = Vec::new();
    tokio::io::stdin().read_to_end(&mut sink).await?;
    Ok(())
}

/// What a standby does after it was elected: resign, close its session.
pub(crate) type Cleanup = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Crash failovers of one system, `samples` side by side on their own election names. In each,
/// a child (`role`, arguments `target name ttl`) wins and prints [`READY`], a standby
/// (`standby(name)`, which returns once elected) campaigns, and the child is SIGKILLed at a
/// phase spread over one renewal period (TTL/3). A sample is the ms from the kill to the
/// standby's election. A sample whose standby is not elected in time is dropped and reported
/// instead of failing the metric.
///
/// # Cancel safety
///
/// Cancel safe: dropping the call aborts every sample and kills its child.
pub(crate) async fn crash_failovers<F, Fut>(
    role: &'static str,
    target: &str,
    ttl_s: u64,
    samples: usize,
    standby: F,
) -> Result<Vec<f64>, BoxError>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Cleanup, BoxError>> + Send + 'static,
{
    let mut runs = JoinSet::new();
    for i in 0..samples {
        let phase = Duration::from_millis(ttl_s * 1000 / 3 * i as u64 / samples as u64);
        let name = format!("crash{ttl_s}-{i}-{}", std::process::id());
        let args = vec![target.to_string(), name.clone(), ttl_s.to_string()];
        runs.spawn(crash_once(role, args, ttl_s, phase, standby(name)));
    }
    let (mut out, mut failed) = (Vec::new(), Vec::new());
    while let Some(r) = runs.join_next().await {
        match r {
            Ok(Ok(ms)) => out.push(ms),
            Ok(Err(e)) => failed.push(e.to_string()),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if !failed.is_empty() {
        eprintln!(
            "{role} crash failover (TTL {ttl_s} s): {} of {samples} samples failed: {}",
            failed.len(),
            failed.join("; ")
        );
    }
    if out.is_empty() {
        return Err(format!("every {role} crash sample failed: {}", failed.join("; ")).into());
    }
    Ok(out)
}

async fn crash_once(
    role: &'static str,
    args: Vec<String>,
    ttl_s: u64,
    phase: Duration,
    standby: impl Future<Output = Result<Cleanup, BoxError>> + Send + 'static,
) -> Result<f64, BoxError> {
    let child = Running::start(role, &args, Duration::from_secs(20))
        .await
        .map_err(|e| format!("child {role} did not become leader: {e}"))?;
    let mut campaign = JoinSet::new();
    campaign.spawn(async move { (standby.await, Instant::now()) });
    // Lets the standby start campaigning, then kills at this sample's phase of the renewals.
    tokio::time::sleep(Duration::from_millis(300) + phase).await;
    let killed = Instant::now();
    child.kill().await?;
    let limit = Duration::from_secs(ttl_s * 3 + 10);
    let (elected, won) = tokio::time::timeout(limit, campaign.join_next())
        .await
        .map_err(|_| format!("standby not elected within {limit:?} of the kill"))?
        .ok_or("standby task missing")??;
    elected?.await;
    Ok(won.duration_since(killed).as_secs_f64() * 1000.0)
}
