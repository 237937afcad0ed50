//! `kvtk elect` (run a command while leader, or observe) and `kvtk leader`.

use std::io::IsTerminal;
use std::time::Duration;

use futures::StreamExt;
use kvtk_core::lease::LeaseConfig;
use kvtk_core::ErrorKind;
use kvtk_leader::{Election, Leadership, Observed};
use nix::sys::signal::Signal;
use serde_json::json;

use crate::child::{self, exit_code, signal_exit, Signals};
use crate::connect::{connect, ConnectArgs};
use crate::error::{CliError, Result};
use crate::util::{parse_duration, print_json, print_line};

/// The lease TTL of `kvtk elect` without `--ttl` on a single-server bucket.
const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// The environment variable that names the election for the command.
pub(crate) const ENV_NAME: &str = "KVTK_ELECTION_NAME";
/// The environment variable that carries the candidate id.
pub(crate) const ENV_ID: &str = "KVTK_LEADER_ID";
/// The environment variable that carries the term: the fencing token of this leadership,
/// strictly greater than every earlier term.
pub(crate) const ENV_TERM: &str = "KVTK_LEADER_TERM";

/// Run a command only while elected leader, or observe an election (--observe).
///
/// Campaigns; once elected, runs the command with KVTK_ELECTION_NAME, KVTK_LEADER_ID and
/// KVTK_LEADER_TERM (the term, a fencing token that only grows). When leadership is lost
/// the command gets SIGTERM (SIGKILL after --grace) and kvtk campaigns again. SIGUSR1 hands
/// over gracefully: the command is stopped the same way, kvtk resigns (another candidate
/// takes over within milliseconds) and campaigns again. SIGINT, SIGTERM, SIGHUP and
/// SIGUSR2 are forwarded to the command. When the command exits, kvtk resigns and exits
/// with its status. With --observe, prints every leader change instead (one line each,
/// JSON lines with --json).
#[derive(clap::Args)]
pub(crate) struct ElectArgs {
    /// Election name
    name: String,
    /// Candidate id (default: host/pid)
    #[arg(long)]
    id: Option<String>,
    /// Value published with the leadership (an address, say)
    #[arg(long, default_value = "")]
    value: String,
    /// Lease TTL, whole seconds: a crashed leader is replaced within TTL + about 1 s
    /// (default: 10s on one server, 30s on a replicated bucket, which rides through a
    /// stream-leader election)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// How long the command has to exit after SIGTERM before SIGKILL
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    grace: Duration,
    /// Bucket of the elections
    #[arg(long, default_value = "elections", env = "KVTK_ELECTION_BUCKET")]
    bucket: String,
    /// Print every leader change as it happens instead of campaigning
    #[arg(long, conflicts_with_all = ["id", "command"])]
    observe: bool,
    /// With --observe: one JSON object per line
    #[arg(long, requires = "observe")]
    json: bool,
    /// The command and its arguments, after --
    #[arg(last = true, value_name = "CMD", required_unless_present = "observe")]
    command: Vec<String>,
}

/// Print an election's current leader, term and value.
#[derive(clap::Args)]
pub(crate) struct LeaderArgs {
    /// Election name
    name: String,
    /// Bucket of the elections
    #[arg(long, default_value = "elections", env = "KVTK_ELECTION_BUCKET")]
    bucket: String,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: ElectArgs, conn: &ConnectArgs) -> Result<u8> {
    let kv = connect(conn).await?;
    let bucket = kv
        .create_or_open(Election::bucket_config(&args.bucket))
        .await?;
    let ttl = match args.ttl {
        Some(ttl) => ttl,
        // The lease layer's default for the bucket (kvtk's own base is 10 s).
        None => {
            let replicas = bucket.status().await?.replicas;
            LeaseConfig::default_for(replicas, DEFAULT_TTL)?
                .ttl()
                .as_duration()
        }
    };
    let election = Election::new(bucket, &args.name, ttl)?;
    let mut signals = Signals::new()?;
    let result = if args.observe {
        observe(&election, args.json, &mut signals).await
    } else {
        campaign_loop(&args, &election, &mut signals).await
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), election.shutdown()).await;
    result
}

pub(crate) async fn leader(args: LeaderArgs, conn: &ConnectArgs) -> Result<u8> {
    let kv = connect(conn).await?;
    let bucket = match kv.open(&args.bucket).await {
        Ok(b) => b,
        // Nobody campaigned yet: nobody leads.
        Err(e) if e.kind() == ErrorKind::BucketNotFound => {
            print(&Observed::NoLeader, args.json)?;
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    let election = Election::new(bucket, &args.name, Duration::from_secs(10))?;
    let observed = match election.leader().await? {
        Some(l) => Observed::Leader(l),
        None => Observed::NoLeader,
    };
    print(&observed, args.json)?;
    Ok(0)
}

/// One leader change (or the current state) for people or as JSON.
fn print(o: &Observed, json: bool) -> Result<()> {
    match (o, json) {
        (Observed::Leader(l), true) => print_json(&json!({ "leader": {
            "id": l.id, "value": l.value, "term": l.term.get(),
            "revision": l.revision.get(), "transfer_to": l.transfer_to,
        }})),
        (Observed::NoLeader, true) => print_json(&json!({ "leader": null })),
        (Observed::Leader(l), false) => {
            let hand_over = l
                .transfer_to
                .as_ref()
                .map(|t| format!(", handing over to {t}"))
                .unwrap_or_default();
            print_line(format!(
                "term {}: {} leads (value {:?}){hand_over}",
                l.term, l.id, l.value
            ))
        }
        (Observed::NoLeader, false) => print_line("no leader"),
    }
}

async fn observe(election: &Election, json: bool, signals: &mut Signals) -> Result<u8> {
    let mut observer = election.observe().await?;
    loop {
        tokio::select! {
            o = observer.next() => match o {
                Some(o) => print(&o, json)?,
                None => return Err(CliError::msg("the observation ended")),
            },
            sig = signals.recv() => if stops(sig) { return Ok(signal_exit(sig)) },
        }
    }
}

/// Whether `sig` ends kvtk when no command runs.
pub(crate) fn stops(sig: Signal) -> bool {
    matches!(sig, Signal::SIGINT | Signal::SIGTERM | Signal::SIGHUP)
}

fn say(line: String) {
    if std::io::stderr().is_terminal() {
        eprintln!("kvtk: {line}");
    }
}

async fn campaign_loop(args: &ElectArgs, election: &Election, signals: &mut Signals) -> Result<u8> {
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| kvtk_locks::Holder::this_process().id);
    loop {
        let leadership = tokio::select! {
            l = election.campaign(id.clone()).value(args.value.clone()) => l?,
            sig = signals.recv() => {
                if stops(sig) { return Ok(signal_exit(sig)) }
                continue;
            }
        };
        say(format!(
            "leading {} as {id}, term {}",
            args.name,
            leadership.term()
        ));
        if let Some(code) = lead(args, &id, leadership, signals).await? {
            return Ok(code);
        }
    }
}

/// Runs the command while `leadership` lasts. `Some(code)` when kvtk should exit with it,
/// `None` to campaign again.
async fn lead(
    args: &ElectArgs,
    id: &str,
    leadership: Leadership,
    signals: &mut Signals,
) -> Result<Option<u8>> {
    let env = [
        (ENV_NAME.to_string(), args.name.clone()),
        (ENV_ID.to_string(), id.to_string()),
        (ENV_TERM.to_string(), leadership.term().get().to_string()),
    ];
    let mut child = match child::spawn(&args.command, &env) {
        Ok(c) => c,
        Err(e) => {
            let _ = leadership.resign().await;
            return Err(e);
        }
    };
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status?;
                if let Err(e) = leadership.resign().await {
                    eprintln!("kvtk: resigning failed ({}); the term ends with its TTL", crate::error::one_line(&e));
                }
                return Ok(Some(exit_code(status)));
            }
            reason = leadership.lost() => {
                eprintln!("kvtk: leadership of {} lost ({reason:?}); stopping the command", args.name);
                child.stop(args.grace).await?;
                return Ok(None);
            }
            sig = signals.recv() => {
                if sig == Signal::SIGUSR1 {
                    say(format!("handing over {}: stopping the command and resigning", args.name));
                    child.stop(args.grace).await?;
                    leadership.resign().await?;
                    return Ok(None);
                }
                child.signal(sig);
            }
        }
    }
}
