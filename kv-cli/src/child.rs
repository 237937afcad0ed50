//! The command kvtk runs for `lock`, `elect` and `config exec`.
//!
//! It starts in its own process group, so kvtk signals it and everything it started as one
//! (a `sh -c` command's children too), and a terminal's Ctrl-C reaches it once, through
//! kvtk, not twice. The price: it is not the terminal's foreground job and cannot read from
//! the terminal.
//!
//! On Linux the command does not outlive kvtk: a small guard process (kvtk itself, hidden
//! subcommand `__guard`) asks the kernel for a signal when kvtk dies (`PR_SET_PDEATHSIG`),
//! however it dies — SIGKILL included —, and then stops the command's group: SIGTERM,
//! SIGKILL after [`GUARD_GRACE`]. When kvtk ends normally it kills the guard first.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

use crate::error::{code, CliError, Result};

/// How long the guard waits after SIGTERM before it kills a dead kvtk's command group.
pub(crate) const GUARD_GRACE: Duration = Duration::from_secs(5);

/// A running command.
pub(crate) struct Child {
    inner: tokio::process::Child,
    group: Option<Pid>,
    /// Stops the command if kvtk dies; killed (kill on drop) when this handle goes.
    _guard: Option<tokio::process::Child>,
}

/// Starts `argv` with `env` added to kvtk's environment.
pub(crate) fn spawn(argv: &[String], env: &[(String, String)]) -> Result<Child> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| CliError::new(code::USAGE, "no command given (put it after --)"))?;
    // The guard first: once the command runs, a kvtk killed at any moment has one.
    let mut guard = start_guard();
    let inner = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                return CliError::new(code::NOT_FOUND, format!("command not found: {program}"));
            }
            CliError::new(
                code::CANNOT_RUN,
                format!("cannot run {program}: {}", e.kind()),
            )
        })?;
    let group = inner
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    if let (Some(g), Some(group)) = (guard.as_mut(), group) {
        tell_guard(g, group);
    }
    Ok(Child {
        inner,
        group,
        _guard: guard,
    })
}

/// Starts the guard (Linux only: elsewhere the command may outlive a killed kvtk). It learns
/// the command's group on its stdin.
fn start_guard() -> Option<tokio::process::Child> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let started = tokio::process::Command::new(exe)
        .args(["__guard", "--parent", &std::process::id().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        // Its own group: signals kvtk forwards to the command, or a terminal's, miss it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    match started {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!(
                "kvtk: warning: cannot start the guard that stops the command if kvtk dies: {}",
                e.kind()
            );
            None
        }
    }
}

/// Writes the command's group to the guard (a line; the pipe then closes).
fn tell_guard(guard: &mut tokio::process::Child, group: Pid) {
    let Some(stdin) = guard.stdin.take() else {
        return;
    };
    let written = stdin.into_owned_fd().and_then(|fd| {
        std::io::Write::write_all(
            &mut std::fs::File::from(fd),
            format!("{group}\n").as_bytes(),
        )
    });
    if let Err(e) = written {
        eprintln!(
            "kvtk: warning: cannot tell the guard the command's group: {}",
            e.kind()
        );
    }
}

/// The guard's arguments (`kvtk __guard`, started by kvtk itself; the command's process
/// group comes on stdin).
#[derive(clap::Args)]
pub(crate) struct GuardArgs {
    /// kvtk's pid
    #[arg(long)]
    parent: i32,
}

/// The guard: waits for its parent kvtk to die, then stops the command's group.
#[cfg(target_os = "linux")]
pub(crate) async fn guard(a: GuardArgs) -> Result<u8> {
    let mut hup = signal(SignalKind::hangup())?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGHUP)
        .map_err(|e| CliError::msg(format!("cannot ask for a parent-death signal: {e}")))?;
    // kvtk writes the group right after starting the command; a line written before kvtk
    // died is still in the pipe. No line: no command was started.
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut line)?;
    let Ok(group) = line.trim().parse::<i32>() else {
        return Ok(0);
    };
    // A SIGHUP while kvtk lives (a terminal's) is not kvtk's death.
    while nix::unistd::getppid().as_raw() == a.parent {
        hup.recv().await;
    }
    let group = Pid::from_raw(group);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + GUARD_GRACE;
    while tokio::time::Instant::now() < deadline && killpg(group, None).is_ok() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = killpg(group, Signal::SIGKILL);
    Ok(0)
}

/// No parent-death signal here: nothing to guard with.
#[cfg(not(target_os = "linux"))]
pub(crate) async fn guard(_: GuardArgs) -> Result<u8> {
    Ok(0)
}

impl Child {
    /// Waits for the command to exit.
    ///
    /// # Cancel safety
    /// Cancel safe (tokio's `Child::wait`).
    pub(crate) async fn wait(&mut self) -> Result<ExitStatus> {
        let status = self.inner.wait().await?;
        // Reaped: the group id may be reused from now on.
        self.group = None;
        Ok(status)
    }

    /// Sends `sig` to the command's process group (nothing once it has been reaped).
    pub(crate) fn signal(&self, sig: Signal) {
        if let Some(g) = self.group {
            // ESRCH: the group is already gone, which is what we wanted.
            let _ = killpg(g, sig);
        }
    }

    /// Stops the command: SIGTERM to its group, SIGKILL after `grace`.
    ///
    /// # Cancel safety
    /// Cancel safe: a later call starts again from SIGTERM.
    pub(crate) async fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        self.signal(Signal::SIGTERM);
        if let Ok(status) = tokio::time::timeout(grace, self.inner.wait()).await {
            self.group = None;
            return Ok(status?);
        }
        self.signal(Signal::SIGKILL);
        self.wait().await
    }
}

/// The exit code that passes a command's status on: its code, or 128 + N when signal N
/// ended it (as shells report it).
pub(crate) fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => (c & 0xff) as u8,
        (None, Some(s)) => 128u8.saturating_add((s & 0x7f) as u8),
        (None, None) => code::ERROR,
    }
}

/// The signals kvtk catches while a command runs: SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2.
pub(crate) struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn new() -> Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// The next signal.
    ///
    /// # Cancel safety
    /// Cancel safe: a signal not yet returned stays pending.
    pub(crate) async fn recv(&mut self) -> Signal {
        tokio::select! {
            Some(()) = self.int.recv() => Signal::SIGINT,
            Some(()) = self.term.recv() => Signal::SIGTERM,
            Some(()) = self.hup.recv() => Signal::SIGHUP,
            Some(()) = self.usr1.recv() => Signal::SIGUSR1,
            Some(()) = self.usr2.recv() => Signal::SIGUSR2,
            else => std::future::pending().await,
        }
    }
}

/// The exit code of kvtk ended by `sig` before a command ran (as shells report it).
pub(crate) fn signal_exit(sig: Signal) -> u8 {
    128u8.saturating_add(sig as i32 as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn statuses_pass_through_as_shells_report_them() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(Signal::SIGTERM as i32)), 143);
        assert_eq!(signal_exit(Signal::SIGINT), 130);
    }
}
