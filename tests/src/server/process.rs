//! The child process: starting it (and restarting it on the same port and store), signals,
//! a configuration reload and a graceful stop.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::builder::NatsServerBuilder;
use super::handle::NatsServer;
use super::ports::{free_port, Reserved};
use super::ready::{POLL, READY_TIMEOUT};
use crate::binary::nats_server_bin;
use crate::wait::poll_until;

impl NatsServerBuilder {
    /// Starts the server and waits until JetStream answers `$JS.API.INFO`.
    ///
    /// # Panics
    ///
    /// When no binary is found, the process cannot be started, or it is not ready in time; the
    /// message carries the server log.
    ///
    /// # Cancel safety
    ///
    /// Cancelling drops the half-started server, which kills the process and removes its files.
    pub async fn start(self) -> NatsServer {
        let mut server = self.spawn_only();
        server.wait_ready().await;
        server
    }

    /// Starts the process and waits only for its listeners (cluster nodes, before a meta leader).
    pub(crate) fn spawn_only(self) -> NatsServer {
        let binary = self.binary.clone().unwrap_or_else(nats_server_bin);
        let dir = match (self.memory, Path::new("/dev/shm").is_dir()) {
            (true, true) => tempfile::Builder::new()
                .prefix("kv-tests-nats-")
                .tempdir_in("/dev/shm"),
            _ => tempfile::Builder::new().prefix("kv-tests-nats-").tempdir(),
        }
        .expect("kvtk-tests: cannot create a temporary directory for nats-server");
        let root = dir.path().to_path_buf();
        let client = self.port.is_none().then(free_port);
        let leaf = self.leafnode_listener.then(free_port);
        let mut server = NatsServer {
            binary,
            store_dir: root.join("store"),
            ports_dir: root.join("ports"),
            conf_path: root.join("nats-server.conf"),
            log_path: root.join("nats-server.log"),
            stderr_path: root.join("nats-server.stderr"),
            dir: Some(dir),
            child: None,
            last_exit: None,
            port: self
                .port
                .or(client.as_ref().map(Reserved::port))
                .unwrap_or(0),
            http_port: None,
            leaf_port: leaf.as_ref().map(Reserved::port),
            _reserved: client.into_iter().chain(leaf).collect(),
            ready_timeout: self.ready_timeout.unwrap_or(READY_TIMEOUT),
            spec: self,
        };
        for d in [&server.store_dir, &server.ports_dir] {
            fs::create_dir_all(d).expect("kvtk-tests: cannot create the server's directories");
        }
        server.spawn();
        server
    }
}

impl NatsServer {
    /// Changes the server's options and reloads its configuration in place (SIGHUP), the way
    /// an operator revokes a permission: connections stay, new rules apply to them. Waits
    /// until the server logs that it reloaded.
    ///
    /// Only what nats-server reloads changes (accounts, users, permissions, TLS files, log
    /// options); ports, the store and the JetStream domain need a restart.
    ///
    /// # Panics
    ///
    /// When no process runs or the server does not confirm the reload within the ready
    /// timeout (an invalid configuration is logged and refused); the message carries the log.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the new configuration may or may not be in force.
    pub async fn reload(&mut self, change: impl FnOnce(NatsServerBuilder) -> NatsServerBuilder) {
        const RELOADED: &str = "Reloaded server configuration";
        if !self.is_running() {
            self.fail("cannot reload: it is not running");
        }
        self.spec = change(self.spec.clone());
        let before = self.log().matches(RELOADED).count();
        fs::write(&self.conf_path, self.config())
            .expect("kvtk-tests: cannot write nats-server.conf");
        self.signal(Signal::SIGHUP);
        const FAILED: &str = "Failed to reload server configuration";
        let failed_before = self.log().matches(FAILED).count();
        let deadline = Instant::now() + self.ready_timeout;
        let reloaded = poll_until(deadline, POLL, || {
            let log = self.log();
            std::future::ready(if log.matches(RELOADED).count() > before {
                Ok(true)
            } else if log.matches(FAILED).count() > failed_before {
                Ok(false)
            } else {
                Err(())
            })
        });
        match reloaded.await {
            Ok(true) => {}
            Ok(false) => self.fail("refused the new configuration"),
            Err(()) => self.fail("did not confirm the configuration reload"),
        }
    }

    /// Stops the server if it runs (gracefully), starts it again on the same port with the same
    /// store, and waits until it is ready.
    ///
    /// # Panics
    ///
    /// When the server is not ready in time; the message carries the server log.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: cancelling may leave the server stopped or not yet ready.
    pub async fn restart(&mut self) {
        if self.is_running() {
            self.stop().await;
        }
        self.spawn();
        self.wait_ready().await;
    }

    /// Kills the process with SIGKILL (an unclean crash) and waits for it to exit.
    ///
    /// Does nothing when no process runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fails only when the process already exited; `wait` reaps it either way.
            let _ = child.kill();
            self.last_exit = child.wait().ok();
        }
    }

    /// Freezes the process with SIGSTOP (a paused server: connections stay open, nothing is
    /// answered). [`NatsServer::resume`] continues it; [`NatsServer::kill`] works on a paused
    /// process, [`NatsServer::stop`] and [`NatsServer::restart`] need it resumed first.
    ///
    /// Returns once the kernel reports the process stopped: `kill` returns before every
    /// thread has stopped (each stops when it next runs), and on a busy machine a nats-server
    /// answered requests for a moment after SIGSTOP (8 runs in 30 at load 12). On other
    /// systems than Linux it returns right after the signal.
    ///
    /// Does nothing when no process runs.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
        self.wait_stopped();
    }

    /// Blocks until the process has stopped (or exited), without reaping it.
    #[cfg(target_os = "linux")]
    fn wait_stopped(&self) {
        use nix::errno::Errno;
        use nix::sys::wait::{waitid, Id, WaitPidFlag};
        let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) else {
            return;
        };
        // WNOWAIT leaves the stop (and an exit) to be collected by `Child::try_wait`.
        let flags = WaitPidFlag::WSTOPPED | WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
        while waitid(Id::Pid(Pid::from_raw(pid)), flags) == Err(Errno::EINTR) {}
    }

    #[cfg(not(target_os = "linux"))]
    fn wait_stopped(&self) {}

    /// Continues a process paused by [`NatsServer::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// Sends `sig` to the process, if one runs.
    fn signal(&self, sig: Signal) {
        let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) else {
            return;
        };
        // Fails only when the process already exited, which `is_running` reports.
        let _ = signal::kill(Pid::from_raw(pid), sig);
    }

    /// Stops the process gracefully with SIGTERM and waits for it to exit.
    ///
    /// Falls back to SIGKILL when it has not exited after the ready timeout.
    ///
    /// # Cancel safety
    ///
    /// Cancelling leaves the process running or exiting; dropping the handle still kills it.
    pub async fn stop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("kvtk-tests: pid fits in i32"));
        let _ = signal::kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + self.ready_timeout;
        let exited = poll_until(deadline, POLL, || {
            std::future::ready(child.try_wait().ok().flatten().ok_or(()))
        });
        if let Ok(status) = exited.await {
            self.last_exit = Some(status);
            self.child = None;
            return;
        }
        tracing::warn!(
            server = self.server_name(),
            "nats-server ignored SIGTERM; killing it"
        );
        self.kill();
    }

    /// Whether the process is still running (reaps it when it has exited).
    pub fn is_running(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                self.last_exit = Some(status);
                self.child = None;
                false
            }
            Err(_) => false,
        }
    }

    /// Writes the config file and starts a process on it (its ports are learned once it
    /// listens).
    fn spawn(&mut self) {
        fs::write(&self.conf_path, self.config())
            .expect("kvtk-tests: cannot write nats-server.conf");
        // Ports files of earlier processes would be mistaken for this one's.
        if let Ok(entries) = fs::read_dir(&self.ports_dir) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        self.http_port = None;
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .expect("kvtk-tests: cannot open the nats-server stderr file");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "kvtk-tests: cannot start {}: {e}; see scripts/ensure-nats-server.sh",
                    self.binary.display()
                )
            });
        self.child = Some(child);
    }
}
