//! `kvtk`: run a command under a lock or as leader, and operate buckets, locks, elections
//! and configuration from a shell. Built on the public APIs of kvtk-core, kvtk-locks, kvtk-leader,
//! kvtk-config and kvtk-doctor; see kv-cli/README.md.

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

mod admin;
mod child;
mod config;
mod connect;
mod doctor;
mod elect;
mod error;
mod kv;
mod lock;
mod locks;
mod ui;
mod util;

use connect::ConnectArgs;
use error::{code, Result};

const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    error: invalid input, missing bucket or key, refused value
  2    usage: the command line could not be parsed
  3    doctor: a finding is an error
  69   connection: server unreachable, no answer in time, or credentials or permission refused
  70   internal error (a bug; please report it)
  75   lock: not acquired within --wait, or held at once with --no-wait
  76   lock: lost while the command ran (the command was stopped)
  126  the command could not be started; 127 the command was not found
  lock, elect and config exec otherwise exit with their command's status
  (128 + N when signal N ended it).

Logs: KVTK_LOG=debug (tracing filter) prints the libraries' logs on stderr.";

/// Run a command under a lock or as leader; operate buckets, locks, elections and
/// configuration on NATS JetStream KV.
#[derive(Parser)]
#[command(name = "kvtk", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    // The help texts of `lock`, `elect` and `doctor` are their argument structs' docs.
    Lock(lock::LockArgs),
    Elect(elect::ElectArgs),
    /// Print an election's current leader, term and value
    Leader(elect::LeaderArgs),
    /// Buckets and keys
    #[command(subcommand)]
    Kv(kv::KvCmd),
    /// Inspect locks; evict a holder
    #[command(subcommand)]
    Locks(locks::LocksCmd),
    /// Configuration documents: validated writes, edit, history, rollback, watch, exec
    Config(config::ConfigArgs),
    Doctor(doctor::DoctorArgs),
    Ui(ui::UiArgs),
    /// The guard that stops a command if kvtk dies (started by kvtk itself)
    #[command(name = "__guard", hide = true)]
    Guard(child::GuardArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

async fn run(cli: Cli) -> Result<u8> {
    let conn = &cli.connect;
    match cli.command {
        Command::Lock(args) => lock::run(args, conn).await,
        Command::Elect(args) => elect::run(args, conn).await,
        Command::Leader(args) => elect::leader(args, conn).await,
        Command::Kv(cmd) => kv::run(cmd, conn).await,
        Command::Locks(cmd) => locks::run(cmd, conn).await,
        Command::Config(args) => config::run(args, conn).await,
        Command::Doctor(args) => doctor::run(args, conn).await,
        Command::Ui(args) => ui::run(args, conn).await,
        Command::Guard(args) => child::guard(args).await,
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kvtk", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(0),
            }
        }
    }
}

fn main() -> ExitCode {
    // A bug must still end in one line and a documented code, never a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let text = info.to_string().replace('\n', " ");
        eprintln!("kvtk: internal error, please report it: {text}");
        std::process::exit(i32::from(code::INTERNAL));
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    init_logs();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kvtk: cannot start the runtime: {e}");
            return ExitCode::from(code::ERROR);
        }
    };
    let result = rt.block_on(run(cli));
    // Background work (a release on a cut connection) must not keep us from exiting.
    rt.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(c) => ExitCode::from(c),
        Err(e) => {
            eprintln!("kvtk: {e}");
            e.exit_code()
        }
    }
}

/// Help and version as clap prints them; any other parse error as one line.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind as K;
    if matches!(e.kind(), K::DisplayHelp | K::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if e.kind() == K::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return ExitCode::from(code::USAGE);
    }
    // The first paragraph: the message and, for missing arguments, the lines naming them.
    let text = e.render().to_string();
    let first: Vec<&str> = text
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    let first = match first.join(" ") {
        s if s.is_empty() => "invalid arguments".to_string(),
        s => s.strip_prefix("error: ").unwrap_or(&s).to_string(),
    };
    eprintln!("kvtk: {first} (see --help)");
    ExitCode::from(code::USAGE)
}

/// Library logs on stderr when `KVTK_LOG` is set (a tracing filter such as `debug`).
fn init_logs() {
    if let Ok(filter) = std::env::var("KVTK_LOG") {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
