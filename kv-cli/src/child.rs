//! The command kvtk runs for `lock`, `elect` and `config exec`.
//!
//! It starts in its own process group, so kvtk signals it and everything it started as one
//! (a `sh -c` command's children too), and a terminal's Ctrl-C reaches it once, through
//! kvtk, not twice. The price: it is not the terminal's foreground job and cannot read from
//! the terminal.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

use crate::error::{code, CliError, Result};

/// A running command.
pub(crate) struct Child {
    inner: tokio::process::Child,
    group: Option<Pid>,
}

/// Starts `argv` with `env` added to kvtk's environment.
pub(crate) fn spawn(argv: &[String], env: &[(String, String)]) -> Result<Child> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| CliError::new(code::USAGE, "no command given (put it after --)"))?;
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
    Ok(Child { inner, group })
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
