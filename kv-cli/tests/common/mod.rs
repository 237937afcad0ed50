//! Shared pieces of the kvtk tests: the binary with a clean environment, the one-line error
//! check, and waiting on a file of marks the children append to.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses some of these; helpers panic by design

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use kvtk_locks::Locks;
use kvtk_tests::{until, within, T};
use tempfile::TempDir;
use tokio::time::Instant;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_kvtk");

/// kvtk pointed at one server, with its own empty home (no nats context of the machine's)
/// and a scratch directory.
pub(crate) struct Kvtk {
    url: String,
    home: TempDir,
}

const CLEARED: &[&str] = &[
    "NATS_URL",
    "NATS_CONTEXT",
    "NATS_CREDS",
    "NATS_NKEY",
    "NATS_TOKEN",
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_CA",
    "NATS_CERT",
    "NATS_KEY",
    "KVTK_LOCK_BUCKET",
    "KVTK_ELECTION_BUCKET",
    "KVTK_CONFIG_BUCKET",
    "KVTK_CONFIG_KEY",
    "KVTK_SYSTEM_PASSWORD",
    "VISUAL",
    "EDITOR",
];

impl Kvtk {
    pub(crate) fn new(url: impl Into<String>) -> Kvtk {
        Kvtk {
            url: url.into(),
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// The scratch directory (also HOME and XDG_CONFIG_HOME's parent).
    pub(crate) fn dir(&self) -> &Path {
        self.home.path()
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }

    fn env<C: EnvCmd>(&self, c: &mut C) {
        for v in CLEARED {
            c.remove(v);
        }
        c.set("HOME", self.home.path().as_os_str());
        c.set("XDG_CONFIG_HOME", self.home.path().join("cfg").as_os_str());
        c.set("NATS_URL", self.url.as_ref());
    }

    /// A one-shot run (assert_cmd), bounded by [`T`].
    pub(crate) fn cmd(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::new(BIN);
        self.env(&mut c);
        c.timeout(T);
        c
    }

    /// A one-shot run of `kvtk <args>` to its end: its status and output.
    pub(crate) fn output(&self, args: &[&str]) -> std::process::Output {
        self.cmd().args(args).output().unwrap()
    }

    /// A background run whose stdout is piped; it dies with its handle.
    pub(crate) fn spawn<I, S>(&self, args: I) -> tokio::process::Child
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = tokio::process::Command::new(BIN);
        self.env(&mut c);
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }
}

trait EnvCmd {
    fn remove(&mut self, k: &str);
    fn set(&mut self, k: &str, v: &std::ffi::OsStr);
}

impl EnvCmd for assert_cmd::Command {
    fn remove(&mut self, k: &str) {
        self.env_remove(k);
    }
    fn set(&mut self, k: &str, v: &std::ffi::OsStr) {
        self.env(k, v);
    }
}

impl EnvCmd for tokio::process::Command {
    fn remove(&mut self, k: &str) {
        self.env_remove(k);
    }
    fn set(&mut self, k: &str, v: &std::ffi::OsStr) {
        self.env(k, v);
    }
}

/// Asserts that a failed run said why in one line, without a panic or a backtrace, and
/// returns that line.
pub(crate) fn one_line_error(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {err:?}");
    assert!(lines[0].starts_with("kvtk: "), "{err:?}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err:?}"
    );
    lines[0].to_string()
}

/// The exit code of a run.
pub(crate) fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// The lines of a marks file (missing: none).
pub(crate) fn marks(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until the marks file has a line for which `pred` holds; returns when it appeared
/// (as seen by the kit's `until`, every `POLL`) and the line. Panics after [`T`].
pub(crate) async fn mark(
    path: &Path,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> (Instant, String) {
    let found = RefCell::new(None);
    until(&format!("the mark {what}"), || {
        *found.borrow_mut() = marks(path).into_iter().find(|l| pred(l));
        std::future::ready(found.borrow().is_some())
    })
    .await;
    let seen = Instant::now();
    (seen, found.into_inner().expect("a mark"))
}

/// Waits until lock `name` has a waiter in its queue.
pub(crate) async fn queued(locks: &Locks, name: &str) {
    until(&format!("a waiter for {name}"), || async {
        !locks.inspect(name).await.unwrap().waiters.is_empty()
    })
    .await;
}

/// Waits for a child's exit, bounded by [`T`].
pub(crate) async fn exit_of(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    within("kvtk to exit", child.wait()).await.unwrap()
}

/// Sends SIGTERM to a background kvtk.
pub(crate) fn terminate(child: &tokio::process::Child) {
    signal(child, nix::sys::signal::Signal::SIGTERM);
}

/// Sends `sig` to a background kvtk.
pub(crate) fn signal(child: &tokio::process::Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, sig).unwrap();
}
