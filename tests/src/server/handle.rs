//! The [`NatsServer`] handle: what it knows about its server (URLs, ports, directories, the
//! log) and clients connected to it. Dropping it kills the process and removes its files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::Duration;

use tempfile::TempDir;

use super::builder::NatsServerBuilder;
use super::ports::Reserved;

/// A `nats-server` child process with JetStream on 127.0.0.1 and its own temporary store.
///
/// Dropping the handle kills the process with SIGKILL, waits for it and removes the temporary
/// directory — also while a test panics. [`NatsServer::restart`] brings the server back on the
/// same port with the same store, so clients reconnect by themselves.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut server = kvtk_tests::NatsServer::start().await;
/// let client = server.connect().await;
/// let js = async_nats::jetstream::new(client);
/// let kv = js
///     .create_key_value(async_nats::jetstream::kv::Config {
///         bucket: "demo".into(),
///         ..Default::default()
///     })
///     .await
///     .unwrap();
/// kv.put("k", "v".into()).await.unwrap();
///
/// server.restart().await; // same port, same store
/// let js = async_nats::jetstream::new(server.connect().await);
/// let kv = js.get_key_value("demo").await.unwrap();
/// assert_eq!(kv.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
/// # }
/// ```
#[derive(Debug)]
pub struct NatsServer {
    pub(super) spec: NatsServerBuilder,
    pub(super) binary: PathBuf,
    // `Option` so Drop can remove the directory only after the process is gone.
    pub(super) dir: Option<TempDir>,
    pub(super) store_dir: PathBuf,
    pub(super) ports_dir: PathBuf,
    pub(super) conf_path: PathBuf,
    pub(super) log_path: PathBuf,
    pub(super) stderr_path: PathBuf,
    pub(super) child: Option<Child>,
    pub(super) last_exit: Option<ExitStatus>,
    /// 0 until the first start has learned the port from the ports file.
    pub(super) port: u16,
    pub(super) http_port: Option<u16>,
    /// The leaf node listener's port, chosen before the first start and kept.
    pub(super) leaf_port: Option<u16>,
    /// The reservations of the ports the kit chose for it, kept for its whole life (restarts
    /// reuse them).
    pub(super) _reserved: Vec<Reserved>,
    pub(super) ready_timeout: Duration,
}

impl NatsServer {
    /// Starts a JetStream server on 127.0.0.1, on a free port, with its own temporary store.
    ///
    /// Same as `NatsServer::builder().start().await`; see [`NatsServerBuilder::start`] for the
    /// panics.
    ///
    /// # Cancel safety
    ///
    /// Cancelling drops the half-started server, which kills the process and removes its files.
    pub async fn start() -> NatsServer {
        Self::builder().start().await
    }

    /// Returns a builder for servers with other options.
    pub fn builder() -> NatsServerBuilder {
        NatsServerBuilder::default()
    }

    /// The URL clients connect to, `nats://127.0.0.1:PORT`.
    pub fn client_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client URL with the credentials of [`User::named`](crate::User::named)`(user)`:
    /// `nats://<user>:<user>-pw@127.0.0.1:PORT` (`user` goes in as it is: use a URL-safe name),
    /// for clients that take credentials from the URL, such as kvtk-core's `Connect` (async-nats
    /// 0.51 does not: give it `ConnectOptions::with_user_and_password`).
    pub fn client_url_as(&self, user: &str) -> String {
        let password = crate::auth::test_password(user);
        format!("nats://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// The client port. It stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring URL (`http://127.0.0.1:PORT`) of the running process, if it has one.
    pub fn monitoring_url(&self) -> Option<String> {
        self.http_port.map(|p| format!("http://127.0.0.1:{p}"))
    }

    /// The server name, as JetStream reports it in leader fields.
    pub fn server_name(&self) -> &str {
        self.spec.server_name.as_deref().unwrap_or("n0")
    }

    /// The JetStream store directory (inside the temporary directory removed on drop).
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// The process id while a process has been started and not yet killed or stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How the last process ended, after [`NatsServer::kill`] or [`NatsServer::stop`].
    pub fn last_exit_status(&self) -> Option<ExitStatus> {
        self.last_exit
    }

    /// Connects a client with async-nats' default options.
    ///
    /// # Panics
    ///
    /// When the connection fails; the message carries the server log.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is left behind.
    pub async fn connect(&self) -> async_nats::Client {
        match async_nats::connect(self.client_url()).await {
            Ok(client) => client,
            Err(err) => panic!(
                "kvtk-tests: cannot connect to {}: {err}\n{}",
                self.client_url(),
                self.log_section()
            ),
        }
    }

    /// Connects a client with these options (credentials, TLS) to [`NatsServer::client_url`].
    ///
    /// # Panics
    ///
    /// When the connection fails; the message carries the server log.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is left behind.
    pub async fn connect_with(&self, options: async_nats::ConnectOptions) -> async_nats::Client {
        match options.connect(self.client_url()).await {
            Ok(client) => client,
            Err(err) => panic!(
                "kvtk-tests: cannot connect to {}: {err}\n{}",
                self.client_url(),
                self.log_section()
            ),
        }
    }

    /// The URL a leaf node connects to, `nats-leaf://127.0.0.1:PORT`, when the server was
    /// built with [`NatsServerBuilder::leafnode_listener`]. The port stays across restarts.
    pub fn leafnode_url(&self) -> Option<String> {
        self.leaf_port.map(|p| format!("nats-leaf://127.0.0.1:{p}"))
    }

    /// The leaf node listener's address, `127.0.0.1:PORT` (for a [`crate::FaultProxy`]).
    pub fn leafnode_addr(&self) -> Option<String> {
        self.leaf_port.map(|p| format!("127.0.0.1:{p}"))
    }

    /// The server log so far (log file plus anything the process wrote to stderr).
    pub fn log(&self) -> String {
        let mut out = fs::read_to_string(&self.log_path).unwrap_or_default();
        if let Ok(stderr) = fs::read_to_string(&self.stderr_path) {
            if !stderr.trim().is_empty() {
                out.push_str("--- stderr ---\n");
                out.push_str(&stderr);
            }
        }
        out
    }

    /// Whether a process was started and not yet reaped, without touching it (`&self`).
    pub(crate) fn has_process(&self) -> bool {
        self.child.is_some()
    }

    pub(crate) fn ready_timeout(&self) -> Duration {
        self.ready_timeout
    }

    pub(crate) fn log_section(&self) -> String {
        format!(
            "--- nats-server {} log ({}) ---\n{}--- end of log ---",
            self.server_name(),
            self.log_path.display(),
            self.log()
        )
    }

    /// Panics naming what went wrong, with the server log.
    pub(super) fn fail(&self, what: &str) -> ! {
        panic!("kvtk-tests: nats-server {what}\n{}", self.log_section())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // Kill before the temporary directory goes, so the server never writes into a removed
        // store; runs during unwinding too, which is what makes a panicking test leave nothing.
        // A failing test shows what its servers saw (elections, lost quorum, slow disks).
        if std::thread::panicking() && self.has_process() {
            eprintln!("{}", self.log_section());
        }
        self.kill();
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                tracing::warn!(dir = %path.display(), "cannot remove nats-server temp dir: {e}");
            }
        }
    }
}
