//! The command kvtk runs for `lock`, `elect` and `config exec`.
//!
//! It starts in its own process group, so kvtk signals it and everything it started as one
//! (a `sh -c` command's children too), and a terminal's Ctrl-C reaches it once, through
//! kvtk, not twice. The price: it is not the terminal's foreground job and cannot read from
//! the terminal.
//!
//! On Linux the command does not outlive kvtk: a small guard process (kvtk itself, hidden
//! subcommand `__guard`) starts first, leading a process group of its own, and the command
//! joins that group as it starts, so the guard knows the group without being told — there is
//! no moment at which the command runs unguarded. The guard asks the kernel for a signal when
//! kvtk dies (`PR_SET_PDEATHSIG`), however it dies — SIGKILL included —, and then stops the
//! group: SIGTERM, SIGKILL after [`GUARD_GRACE`]. It ignores the signals kvtk forwards to the
//! group. When kvtk ends normally it kills the guard.

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
    let command = |group: i32| {
        tokio::process::Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::inherit())
            .process_group(group)
            .spawn()
    };
    // The guard first, and the command in its group: guarded from its first instruction.
    let mut guard = start_guard();
    let guard_group = guard
        .as_ref()
        .and_then(|g| g.id())
        .and_then(|id| i32::try_from(id).ok());
    let started = match guard_group.map(command) {
        Some(Ok(c)) => Ok(c),
        // The guard's group is gone (the guard died): a group of the command's own.
        _ => {
            guard = None;
            command(0)
        }
    };
    let inner = started.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            return CliError::new(code::NOT_FOUND, format!("command not found: {program}"));
        }
        CliError::new(
            code::CANNOT_RUN,
            format!("cannot run {program}: {}", e.kind()),
        )
    })?;
    let own = inner.id().and_then(|id| i32::try_from(id).ok());
    let group = if guard.is_some() { guard_group } else { own };
    Ok(Child {
        inner,
        group: group.map(Pid::from_raw),
        _guard: guard,
    })
}

/// Starts the guard, leading a process group of its own (Linux only: elsewhere the command
/// may outlive a killed kvtk).
fn start_guard() -> Option<tokio::process::Child> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let started = tokio::process::Command::new(exe)
        .args(["__guard", "--parent", &std::process::id().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
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

/// The guard's arguments (`kvtk __guard`, started by kvtk itself).
#[derive(clap::Args)]
pub(crate) struct GuardArgs {
    /// kvtk's pid
    #[arg(long)]
    parent: i32,
}

/// The guard: waits for its parent kvtk to die, then stops its own process group, which the
/// command joined.
#[cfg(target_os = "linux")]
pub(crate) async fn guard(a: GuardArgs) -> Result<u8> {
    // Caught (so ignored): the signals kvtk forwards to the group, and SIGHUP, the one the
    // kernel sends when kvtk dies.
    let mut signals = Signals::new()?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGHUP)
        .map_err(|e| CliError::msg(format!("cannot ask for a parent-death signal: {e}")))?;
    while nix::unistd::getppid().as_raw() == a.parent {
        signals.recv().await;
    }
    let group = nix::unistd::getpgrp();
    let _ = killpg(group, Signal::SIGTERM);
    let _ = tokio::time::timeout(GUARD_GRACE, group_empty(group)).await;
    // The guard goes too.
    let _ = killpg(group, Signal::SIGKILL);
    Ok(0)
}

/// Returns once no process but this one is left in `group`.
///
/// The group's processes are not the guard's children, so no exit of theirs reaches it as
/// an event (a pidfd would, but takes a raw system call, and this workspace forbids
/// `unsafe`): it looks in /proc on a fixed interval, [`GROUP_CHECK`].
#[cfg(target_os = "linux")]
async fn group_empty(group: Pid) {
    let mut every = tokio::time::interval(GROUP_CHECK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if !others_in_group(group) {
            return;
        }
    }
}

/// How often the guard looks whether a dead kvtk's command group has exited.
#[cfg(target_os = "linux")]
const GROUP_CHECK: Duration = Duration::from_millis(50);

/// Whether a process other than this one is in `group` (from /proc).
#[cfg(target_os = "linux")]
fn others_in_group(group: Pid) -> bool {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten()
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()) && *name != me)
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        // `pid (comm) state ppid pgrp …`: comm may hold spaces, so count after the ')'.
        .filter_map(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.to_string()))
        .any(|rest| {
            let mut f = rest.split_whitespace();
            let state = f.next();
            let pgrp = f.nth(1).and_then(|g| g.parse::<i32>().ok());
            state != Some("Z") && pgrp == Some(group.as_raw())
        })
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
