//! One `nats-server` process with JetStream, owned by a [`NatsServer`] handle.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::binary::nats_server_bin;
use crate::monitor;

/// How long [`NatsServer::start`], [`NatsServer::restart`] and friends wait for readiness.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Poll interval of the readiness loops: short, since a local server is ready in milliseconds.
const POLL: Duration = Duration::from_millis(5);

/// Poll interval for cluster state (leaders), which changes on a scale of tens of milliseconds.
pub(crate) const POLL_CLUSTER: Duration = Duration::from_millis(20);

/// The cluster block of a node, filled in by [`crate::NatsCluster`].
#[derive(Debug, Clone)]
pub(crate) struct ClusterSpec {
    pub(crate) name: String,
    pub(crate) listen_port: u16,
    /// Route URLs (`nats-route://127.0.0.1:PORT`), possibly through proxies.
    pub(crate) routes: Vec<String>,
    /// `cluster { advertise }`: the route address gossiped to other nodes.
    pub(crate) advertise: Option<String>,
}

/// Options for a [`NatsServer`]; get one from [`NatsServer::builder`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let server = kv_tests::NatsServer::builder()
///     .sync_always()
///     .server_name("n0")
///     .start()
///     .await;
/// assert!(server.client_url().starts_with("nats://127.0.0.1:"));
/// # }
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until `start().await`"]
pub struct NatsServerBuilder {
    memory: bool,
    sync_always: bool,
    server_name: Option<String>,
    port: Option<u16>,
    binary: Option<PathBuf>,
    ready_timeout: Option<Duration>,
    pub(crate) cluster: Option<ClusterSpec>,
}

impl NatsServerBuilder {
    /// Keeps the JetStream store on a RAM file system (`/dev/shm`) when the machine has one.
    ///
    /// A server cannot force a stream's storage type (each stream chooses `file` or `memory`),
    /// so this moves the store directory instead: file-storage streams and KV buckets then never
    /// touch a disk, yet survive [`NatsServer::restart`] like on-disk ones. Without `/dev/shm`
    /// the ordinary temporary directory is used.
    pub fn memory_storage(mut self) -> Self {
        self.memory = true;
        self
    }

    /// Sets `jetstream { sync_interval: always }`: every write is fsynced before it is acked, so
    /// data written before a [`NatsServer::kill`] survives the restart (etcd's durability).
    pub fn sync_always(mut self) -> Self {
        self.sync_always = true;
        self
    }

    /// Sets the server name (JetStream reports it as stream and meta leader). Default: `n0`.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Listens for clients on this port instead of a free one the server picks itself.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Starts this binary instead of the one [`crate::nats_server_bin`] finds.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Overrides how long start and restart wait for readiness (default [`READY_TIMEOUT`]).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = Some(timeout);
        self
    }

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
        .expect("kv-tests: cannot create a temporary directory for nats-server");
        let root = dir.path().to_path_buf();
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
            port: self.port.unwrap_or(0),
            http_port: None,
            ready_timeout: self.ready_timeout.unwrap_or(READY_TIMEOUT),
            spec: self,
        };
        for d in [&server.store_dir, &server.ports_dir] {
            fs::create_dir_all(d).expect("kv-tests: cannot create the server's directories");
        }
        server.spawn();
        server
    }
}

/// A `nats-server` child process with JetStream on 127.0.0.1 and its own temporary store.
///
/// Dropping the handle kills the process with SIGKILL, waits for it and removes the temporary
/// directory — also while a test panics. [`NatsServer::restart`] brings the server back on the
/// same port with the same store, so clients reconnect by themselves.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut server = kv_tests::NatsServer::start().await;
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
    spec: NatsServerBuilder,
    binary: PathBuf,
    // `Option` so Drop can remove the directory only after the process is gone.
    dir: Option<TempDir>,
    store_dir: PathBuf,
    ports_dir: PathBuf,
    conf_path: PathBuf,
    log_path: PathBuf,
    stderr_path: PathBuf,
    child: Option<Child>,
    last_exit: Option<ExitStatus>,
    /// 0 until the first start has learned the port from the ports file.
    port: u16,
    http_port: Option<u16>,
    ready_timeout: Duration,
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
                "kv-tests: cannot connect to {}: {err}\n{}",
                self.client_url(),
                self.log_section()
            ),
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
    /// Does nothing when no process runs.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// Continues a process paused by [`NatsServer::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

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
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("kv-tests: pid fits in i32"));
        let _ = signal::kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.last_exit = Some(status);
                self.child = None;
                return;
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        tracing::warn!(
            server = self.server_name(),
            "nats-server ignored SIGTERM; killing it"
        );
        self.kill();
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

    fn config(&self) -> String {
        let q = |p: &Path| serde_json::Value::from(p.display().to_string()).to_string();
        let port = if self.port == 0 {
            "-1".to_string()
        } else {
            self.port.to_string()
        };
        let mut c = String::new();
        let _ = writeln!(c, "host: 127.0.0.1\nport: {port}\nhttp_port: -1");
        let _ = writeln!(
            c,
            "server_name: {}",
            serde_json::Value::from(self.server_name())
        );
        let _ = writeln!(c, "ports_file_dir: {}", q(&self.ports_dir));
        let _ = writeln!(c, "log_file: {}", q(&self.log_path));
        let sync = if self.spec.sync_always {
            "\n  sync_interval: always"
        } else {
            ""
        };
        let _ = writeln!(
            c,
            "jetstream {{\n  store_dir: {}{sync}\n}}",
            q(&self.store_dir)
        );
        if let Some(cl) = &self.spec.cluster {
            let routes: Vec<String> = cl
                .routes
                .iter()
                .map(|r| serde_json::Value::from(r.as_str()).to_string())
                .collect();
            let advertise = cl.advertise.as_ref().map_or(String::new(), |a| {
                format!("\n  advertise: {}", serde_json::Value::from(a.as_str()))
            });
            let _ = writeln!(
                c,
                "cluster {{\n  name: {}\n  listen: \"127.0.0.1:{}\"{advertise}\n  routes: [{}]\n}}",
                serde_json::Value::from(cl.name.as_str()),
                cl.listen_port,
                routes.join(", ")
            );
        }
        c
    }

    fn spawn(&mut self) {
        fs::write(&self.conf_path, self.config()).expect("kv-tests: cannot write nats-server.conf");
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
            .expect("kv-tests: cannot open the nats-server stderr file");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "kv-tests: cannot start {}: {e}; see scripts/ensure-nats-server.sh",
                    self.binary.display()
                )
            });
        self.child = Some(child);
    }

    fn fail(&self, what: &str) -> ! {
        panic!("kv-tests: nats-server {what}\n{}", self.log_section())
    }

    /// Waits until the process wrote its ports file, then learns the client and HTTP ports.
    pub(crate) async fn wait_listening(&mut self, deadline: Instant) {
        loop {
            if !self.is_running() {
                self.fail(&format!("exited during start-up ({:?})", self.last_exit));
            }
            if let Some((client, http)) = self.read_ports_file() {
                self.port = client;
                self.http_port = http;
                return;
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "wrote no ports file within {:?}",
                    self.ready_timeout
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn read_ports_file(&self) -> Option<(u16, Option<u16>)> {
        let pid = self.pid()?;
        let suffix = format!("_{pid}.ports");
        let entry = fs::read_dir(&self.ports_dir)
            .ok()?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(&suffix))?;
        let json: serde_json::Value = serde_json::from_slice(&fs::read(entry.path()).ok()?).ok()?;
        let port_of = |key: &str| -> Option<u16> {
            let url = json.get(key)?.get(0)?.as_str()?;
            url.rsplit(':').next()?.trim_end_matches('/').parse().ok()
        };
        Some((port_of("nats")?, port_of("monitoring")))
    }

    /// Waits for the listeners, then until JetStream answers `$JS.API.INFO` on this node.
    pub(crate) async fn wait_ready(&mut self) {
        let deadline = Instant::now() + self.ready_timeout;
        self.wait_listening(deadline).await;
        loop {
            let last_err = match jetstream_info(&self.client_url()).await {
                Ok(()) => return,
                Err(e) => e,
            };
            if !self.is_running() {
                self.fail(&format!("exited during start-up ({:?})", self.last_exit));
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "not ready within {:?}: {last_err}",
                    self.ready_timeout
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Fetches a monitoring endpoint such as `/jsz` as JSON.
    pub(crate) async fn monitor_json(&self, path: &str) -> Option<serde_json::Value> {
        monitor::get_json(self.http_port?, path).await
    }
}

/// One readiness probe: connect and ask JetStream for account info.
async fn jetstream_info(url: &str) -> Result<(), String> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(1))
        .request_timeout(Some(Duration::from_millis(500)))
        .connect(url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let reply = client
        .request("$JS.API.INFO", "".into())
        .await
        .map_err(|e| format!("$JS.API.INFO: {e}"));
    // Closing explicitly stops the client's background task before it is dropped.
    let _ = client.drain().await;
    let reply = reply?;
    let json: serde_json::Value =
        serde_json::from_slice(&reply.payload).map_err(|e| format!("$JS.API.INFO reply: {e}"))?;
    match json.get("error") {
        Some(err) => Err(format!("$JS.API.INFO: {err}")),
        None => Ok(()),
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // Kill before the temporary directory goes, so the server never writes into a removed
        // store; runs during unwinding too, which is what makes a panicking test leave nothing.
        self.kill();
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                tracing::warn!(dir = %path.display(), "cannot remove nats-server temp dir: {e}");
            }
        }
    }
}
