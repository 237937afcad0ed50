//! `kvtk lock NAME -- CMD…`: run a command while holding a lock.

use std::future::IntoFuture;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use kvtk_locks::{Acquire, Guard, LockInfo, Locks, Released};
use nix::sys::signal::Signal;
use tokio::time::Instant;

use crate::child::{self, exit_code, signal_exit, Signals};
use crate::connect::{connect, ConnectArgs};
use crate::error::{code, CliError, Result};
use crate::util::parse_duration;

/// The environment variable that names the lock for the command.
pub(crate) const ENV_NAME: &str = "KVTK_LOCK_NAME";
/// The environment variable that carries the fencing token (a decimal number that only
/// grows from one holder to the next): pass it to whatever the command writes to.
pub(crate) const ENV_TOKEN: &str = "KVTK_FENCING_TOKEN";
/// The environment variable that names the lock bucket.
pub(crate) const ENV_BUCKET: &str = "KVTK_LOCK_BUCKET";

/// Run a command while holding a lock.
///
/// The command gets KVTK_LOCK_NAME, KVTK_LOCK_BUCKET and KVTK_FENCING_TOKEN (the lock's fencing
/// token: it only grows from one holder to the next). It runs in its own process group;
/// kvtk forwards SIGINT, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 to it. If the lock is lost
/// (the lease could not be renewed in time, or an operator evicted the holder), the command
/// gets SIGTERM, SIGKILL after --grace, and kvtk exits with 76. The lock is released when
/// the command exits, and kvtk exits with the command's status.
#[derive(clap::Args)]
#[command(
    after_help = "Exit codes: the command's status; 75 not acquired in time; 76 lock lost; 69 connection or permission error."
)]
pub(crate) struct LockArgs {
    /// Lock name: dot-separated tokens, such as jobs.reindex
    name: String,
    /// Take one of PERMITS permits (a semaphore) instead of the lock alone
    #[arg(short = 'n', long, value_name = "PERMITS", conflicts_with = "shared")]
    permits: Option<u32>,
    /// Take a read lock: shared with other --shared holders, exclusive of the others
    #[arg(long)]
    shared: bool,
    /// Lease TTL, whole seconds (default 10s): a holder that stops renewing loses the lock
    /// within it
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// Give up (exit 75) when not acquired within DURATION (default: wait for ever)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "no_wait")]
    wait: Option<Duration>,
    /// Give up at once (exit 75) when the lock is held
    #[arg(long)]
    no_wait: bool,
    /// How long the command has to exit after SIGTERM before SIGKILL, when the lock is lost
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    grace: Duration,
    /// Bucket of the locks
    #[arg(long, default_value = "locks", env = "KVTK_LOCK_BUCKET")]
    bucket: String,
    /// The command and its arguments, after --
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

pub(crate) async fn run(args: LockArgs, conn: &ConnectArgs) -> Result<u8> {
    let kv = connect(conn).await?;
    let locks = Locks::open(&kv, &args.bucket).await?;
    let result = hold(&args, &locks).await;
    // Bounded: on a cut connection the keeper's goodbye must not keep us here.
    let _ = tokio::time::timeout(Duration::from_secs(2), locks.shutdown()).await;
    result
}

fn acquisition(args: &LockArgs, locks: &Locks) -> Result<Acquire> {
    let acquire = match (args.permits, args.shared) {
        (Some(n), _) => locks.semaphore(&args.name, n)?.acquire(),
        (None, true) => locks.rwlock(&args.name)?.read(),
        (None, false) => locks.mutex(&args.name)?.lock(),
    };
    Ok(match args.ttl {
        Some(ttl) => acquire.ttl(ttl),
        None => acquire,
    })
}

async fn hold(args: &LockArgs, locks: &Locks) -> Result<u8> {
    let mut signals = Signals::new()?;
    let guard = match wait_for(args, locks, &mut signals).await? {
        Waited::Acquired(g) => g,
        Waited::Signalled(sig) => return Ok(signal_exit(sig)),
    };
    let env = [
        (ENV_NAME.to_string(), args.name.clone()),
        (ENV_BUCKET.to_string(), args.bucket.clone()),
        (ENV_TOKEN.to_string(), guard.token().get().to_string()),
    ];
    let mut child = match child::spawn(&args.command, &env) {
        Ok(c) => c,
        Err(e) => {
            let _ = guard.release().await;
            return Err(e);
        }
    };
    let lost = guard.lost();
    tokio::pin!(lost);
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status?;
                release(&args.name, guard).await;
                return Ok(exit_code(status));
            }
            reason = &mut lost => {
                child.stop(args.grace).await?;
                return Err(CliError::new(
                    code::LOCK_LOST,
                    format!("lock {} lost ({reason}); the command was stopped", args.name),
                ));
            }
            sig = signals.recv() => child.signal(sig),
        }
    }
}

/// Releases after the command exited; trouble is reported, the command's status stands.
async fn release(name: &str, guard: Guard) {
    match guard.release().await {
        Ok(Released::Released) => {}
        Ok(Released::AlreadyLost) => {
            eprintln!("kvtk: lock {name} had been lost before the command exited")
        }
        Ok(_) => {}
        Err(e) => eprintln!(
            "kvtk: releasing lock {name} failed ({}); it expires after its TTL",
            crate::error::one_line(&e)
        ),
    }
}

enum Waited {
    Acquired(Guard),
    Signalled(Signal),
}

async fn wait_for(args: &LockArgs, locks: &Locks, signals: &mut Signals) -> Result<Waited> {
    let cannot =
        |e: kvtk_locks::Error| CliError::from(e).within(format!("cannot lock {}", args.name));
    let acquire = acquisition(args, locks)?;
    if args.no_wait {
        return match acquire.try_acquire().await.map_err(cannot)? {
            Some(g) => Ok(Waited::Acquired(g)),
            None => Err(not_acquired(args, locks, "is not free").await),
        };
    }
    let acquire = match args.wait {
        Some(d) => acquire.timeout(d),
        None => acquire,
    };
    let mut status = StatusLine::new(args, locks).await;
    let acquiring = acquire.into_future();
    tokio::pin!(acquiring);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = &mut acquiring => {
                status.clear();
                return match r {
                    Ok(g) => Ok(Waited::Acquired(g)),
                    Err(e) if e.kind() == kvtk_locks::ErrorKind::Timeout => {
                        let within = args.wait.map(humantime::format_duration);
                        let why = format!("was not acquired within {}", within.map(|d| d.to_string()).unwrap_or_default());
                        Err(not_acquired(args, locks, &why).await)
                    }
                    Err(e) => Err(cannot(e)),
                };
            }
            // Dropping the acquisition withdraws from the queue (and releases a lock that
            // had just been taken).
            sig = signals.recv() => {
                status.clear();
                return Ok(Waited::Signalled(sig));
            }
            _ = tick.tick() => status.show(),
        }
    }
}

async fn not_acquired(args: &LockArgs, locks: &Locks, why: &str) -> CliError {
    let holders = match locks.inspect(&args.name).await {
        Ok(info) => held_by(&info),
        Err(_) => String::new(),
    };
    CliError::new(
        code::NOT_ACQUIRED,
        format!("lock {} {why}{holders}", args.name),
    )
}

/// ` (held by a/1 token 5, b/2 token 6)`, or nothing.
pub(crate) fn held_by(info: &LockInfo) -> String {
    if info.holders.is_empty() {
        return String::new();
    }
    let list: Vec<String> = info
        .holders
        .iter()
        .map(|h| {
            let who = h.holder.as_ref().map_or("unknown", |h| h.id.as_str());
            format!("{who} token {}", h.token)
        })
        .collect();
    format!(" (held by {})", list.join(", "))
}

/// The one-line status on stderr while waiting, only when stderr is a terminal.
struct StatusLine {
    text: Option<String>,
    since: Instant,
}

impl StatusLine {
    async fn new(args: &LockArgs, locks: &Locks) -> StatusLine {
        if !std::io::stderr().is_terminal() {
            return StatusLine {
                text: None,
                since: Instant::now(),
            };
        }
        let holders = match locks.inspect(&args.name).await {
            Ok(info) => held_by(&info),
            Err(_) => String::new(),
        };
        StatusLine {
            text: Some(format!("kvtk: waiting for lock {}{holders}", args.name)),
            since: Instant::now(),
        }
    }

    fn show(&self) {
        if let Some(t) = &self.text {
            let secs = self.since.elapsed().as_secs();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{t} {secs}s");
            let _ = err.flush();
        }
    }

    fn clear(&mut self) {
        if self.text.take().is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}
