//! One `nats-server` process with JetStream, owned by a [`NatsServer`] handle.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::auth::{quote, render_authorization, Account, User};
use crate::binary::nats_server_bin;
use crate::monitor;
use crate::operator::TestOperator;
use crate::tls::TestPki;
use std::sync::Arc;

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
/// let server = kvtk_tests::NatsServer::builder()
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
    accounts: Vec<Account>,
    users: Vec<User>,
    token: Option<Secret>,
    system_account: Option<String>,
    tls: Option<TlsSpec>,
    domain: Option<String>,
    leafnode_listener: bool,
    leaf_remotes: Vec<LeafRemote>,
    extra: Vec<String>,
    operator: Option<Arc<TestOperator>>,
}

/// A string kept out of `Debug` output.
#[derive(Clone, Default, PartialEq, Eq)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// The server's `tls {}` block.
#[derive(Debug, Clone)]
struct TlsSpec {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    verify: bool,
    handshake_first: bool,
}

/// A leaf node connection from this server to a hub's leaf node listener.
///
/// ```
/// let remote = kvtk_tests::LeafRemote::new("nats-leaf://127.0.0.1:7422").local_account("APP");
/// assert_eq!(remote.url(), "nats-leaf://127.0.0.1:7422");
/// ```
#[derive(Clone, PartialEq, Eq)]
#[must_use]
pub struct LeafRemote {
    url: String,
    account: Option<String>,
}

impl std::fmt::Debug for LeafRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry the hub user's password.
        let shown = self.url.rsplit('@').next().unwrap_or(&self.url);
        f.debug_struct("LeafRemote")
            .field("url", &shown)
            .field("account", &self.account)
            .finish()
    }
}

impl LeafRemote {
    /// A remote to the hub's leaf node URL (`nats-leaf://[user:password@]127.0.0.1:PORT`, see
    /// [`NatsServer::leafnode_url`]); the URL may point at a [`crate::FaultProxy`] in front of
    /// the hub to cut and heal the leaf link. The hub authenticates the leaf as the user in
    /// the URL, binding the link to that user's account.
    pub fn new(url: impl Into<String>) -> LeafRemote {
        LeafRemote {
            url: url.into(),
            account: None,
        }
    }

    /// Binds the link to this local account (default: the global account `$G`).
    pub fn local_account(mut self, account: impl Into<String>) -> LeafRemote {
        self.account = Some(account.into());
        self
    }

    /// The hub URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn render(&self) -> String {
        match &self.account {
            Some(a) => format!("{{ url: {}, account: {} }}", quote(&self.url), quote(a)),
            None => format!("{{ url: {} }}", quote(&self.url)),
        }
    }
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

    /// Adds an account with its users (see [`Account`]), replacing an account of the same name
    /// (so [`NatsServer::reload`] can change one). Once any account or user exists,
    /// the server requires clients to authenticate; start-up then waits on the monitoring
    /// endpoint's `/healthz` instead of connecting, and [`NatsServer::connect`] no longer
    /// works: use [`NatsServer::connect_with`].
    pub fn account(mut self, account: Account) -> Self {
        self.accounts.retain(|a| a.name() != account.name());
        self.accounts.push(account);
        self
    }

    /// Adds a user of the global account (the server's `authorization { users }`). Global
    /// users and [`NatsServerBuilder::account`]s do not mix: give users to accounts instead.
    pub fn user(mut self, user: User) -> Self {
        self.users.push(user);
        self
    }

    /// Requires this token from every client (`authorization { token }`); replaces any
    /// global users.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Secret(token.into()));
        self
    }

    /// Names the system account (`system_account`); the account must be added too.
    pub fn system_account(mut self, name: impl Into<String>) -> Self {
        self.system_account = Some(name.into());
        self
    }

    /// Serves clients over TLS with the PKI's server certificate; clients must trust
    /// [`TestPki::ca_file`]. The `pki` must outlive the server (its files are read again on
    /// restart and reload).
    pub fn tls(mut self, pki: &TestPki) -> Self {
        self.tls = Some(TlsSpec {
            cert: pki.server_cert_file(),
            key: pki.server_key_file(),
            ca: pki.ca_file(),
            verify: false,
            handshake_first: false,
        });
        self
    }

    /// With [`NatsServerBuilder::tls`]: requires a client certificate signed by the CA
    /// (mutual TLS, `verify: true`).
    pub fn tls_verify(mut self) -> Self {
        if let Some(t) = self.tls.as_mut() {
            t.verify = true;
        }
        self
    }

    /// With [`NatsServerBuilder::tls`]: expects the TLS handshake before the server's `INFO`
    /// (`handshake_first: true`); clients must connect with TLS-first too.
    pub fn tls_handshake_first(mut self) -> Self {
        if let Some(t) = self.tls.as_mut() {
            t.handshake_first = true;
        }
        self
    }

    /// Puts the server's JetStream into this domain (`jetstream { domain }`); other domains
    /// reach it through `$JS.<domain>.API`.
    pub fn jetstream_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// Accepts leaf node connections on a free port of 127.0.0.1 (kept across restarts); see
    /// [`NatsServer::leafnode_url`]. A hub in its own JetStream domain is the usual setup.
    pub fn leafnode_listener(mut self) -> Self {
        self.leafnode_listener = true;
        self
    }

    /// Connects this server as a leaf node to a hub (repeatable).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use kvtk_tests::{LeafRemote, NatsServer};
    /// let hub = NatsServer::builder()
    ///     .jetstream_domain("hub")
    ///     .leafnode_listener()
    ///     .start()
    ///     .await;
    /// let leaf = NatsServer::builder()
    ///     .server_name("leaf")
    ///     .jetstream_domain("leaf")
    ///     .leaf_remote(LeafRemote::new(hub.leafnode_url().unwrap()))
    ///     .start()
    ///     .await;
    /// leaf.wait_leaf_connected(kvtk_tests::READY_TIMEOUT).await;
    /// // A client of the leaf reaches the hub's JetStream through its domain's API prefix.
    /// let client = leaf.connect().await;
    /// let hub_js = async_nats::jetstream::with_domain(client, "hub");
    /// assert!(hub_js.query_account().await.is_ok());
    /// # }
    /// ```
    pub fn leaf_remote(mut self, remote: LeafRemote) -> Self {
        self.leaf_remotes.push(remote);
        self
    }

    /// Runs in operator mode (JWT authentication, `.creds` files) with this operator's
    /// accounts; replaces accounts, users and tokens set on the builder.
    pub fn operator(mut self, operator: &Arc<TestOperator>) -> Self {
        self.operator = Some(operator.clone());
        self
    }

    /// Appends raw lines to the config file (anything the builder has no method for).
    pub fn raw_config(mut self, text: impl Into<String>) -> Self {
        self.extra.push(text.into());
        self
    }

    /// Whether clients must authenticate or use TLS, so a plain connection cannot probe.
    fn is_secured(&self) -> bool {
        !self.accounts.is_empty()
            || self.operator.is_some()
            || !self.users.is_empty()
            || self.token.is_some()
            || self.tls.is_some()
    }

    fn render_tls(&self) -> Option<String> {
        let t = self.tls.as_ref()?;
        let path = |p: &Path| quote(&p.display().to_string());
        let mut s = format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n",
            path(&t.cert),
            path(&t.key),
            path(&t.ca)
        );
        if t.verify {
            s.push_str("  verify: true\n");
        }
        if t.handshake_first {
            s.push_str("  handshake_first: true\n");
        }
        s.push_str("}\n");
        Some(s)
    }

    fn render_auth(&self) -> String {
        if let Some(op) = &self.operator {
            return op.render();
        }
        let mut c = String::new();
        if !self.accounts.is_empty() {
            c.push_str("accounts {\n");
            for a in &self.accounts {
                c.push_str(&a.render());
            }
            c.push_str("}\n");
        }
        if let Some(sys) = &self.system_account {
            let _ = writeln!(c, "system_account: {}", quote(sys));
        }
        if let Some(a) =
            render_authorization(&self.users, self.token.as_ref().map(|t| t.0.as_str()))
        {
            c.push_str(&a);
        }
        c
    }

    fn render_leafnodes(&self, leaf_port: Option<u16>) -> Option<String> {
        if leaf_port.is_none() && self.leaf_remotes.is_empty() {
            return None;
        }
        let mut s = String::from("leafnodes {\n");
        if let Some(p) = leaf_port {
            let _ = writeln!(s, "  listen: \"127.0.0.1:{p}\"");
        }
        if !self.leaf_remotes.is_empty() {
            let remotes: Vec<String> = self.leaf_remotes.iter().map(LeafRemote::render).collect();
            let _ = writeln!(s, "  remotes: [\n    {}\n  ]", remotes.join("\n    "));
        }
        s.push_str("}\n");
        Some(s)
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
        .expect("kvtk-tests: cannot create a temporary directory for nats-server");
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
            port: self.port.unwrap_or_else(free_port),
            http_port: None,
            leaf_port: self.leafnode_listener.then(free_port),
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
    /// The leaf node listener's port, chosen before the first start and kept.
    leaf_port: Option<u16>,
    ready_timeout: Duration,
}

/// The ports the kit's servers listen on: below Linux's ephemeral range (32768–60999), from
/// which clients take their local ports. A server port from that range can be handed to some
/// client's connection while its node is down, and the restart on the same port then fails
/// ("address already in use": seen with suites running side by side).
const SERVER_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free port on 127.0.0.1 at the time of the call, from [`SERVER_PORTS`].
pub(crate) fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct ports of [`SERVER_PORTS`] free on 127.0.0.1 at the time of the call.
pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    use rand::Rng as _;
    let mut rng = rand::rng();
    let mut held = Vec::with_capacity(n);
    for _ in 0..10_000 {
        if held.len() == n {
            break;
        }
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", rng.random_range(SERVER_PORTS))) {
            held.push(l);
        }
    }
    assert_eq!(
        held.len(),
        n,
        "kvtk-tests: no free port in {SERVER_PORTS:?}"
    );
    held.iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .expect("kvtk-tests: a bound port")
        })
        .collect()
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

    /// How many leaf node connections the server has now (monitoring `/leafz`; 0 when it
    /// cannot tell).
    pub async fn leaf_connections(&self) -> usize {
        self.monitor_json("/leafz")
            .await
            .and_then(|j| j.get("leafnodes")?.as_u64())
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
    }

    /// Waits until the server has at least one leaf node connection (call it on the leaf or
    /// on the hub).
    ///
    /// # Panics
    ///
    /// When no leaf connection appears within `timeout`; the message carries the server log.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads the monitoring endpoint.
    pub async fn wait_leaf_connected(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.leaf_connections().await == 0 {
            if Instant::now() > deadline {
                self.fail(&format!("has no leaf node connection after {timeout:?}"));
            }
            tokio::time::sleep(POLL_CLUSTER).await;
        }
    }

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
        let deadline = Instant::now() + self.ready_timeout;
        const FAILED: &str = "Failed to reload server configuration";
        let failed_before = self.log().matches(FAILED).count();
        while self.log().matches(RELOADED).count() == before {
            if self.log().matches(FAILED).count() > failed_before {
                self.fail("refused the new configuration");
            }
            if Instant::now() > deadline {
                self.fail("did not confirm the configuration reload");
            }
            tokio::time::sleep(POLL).await;
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
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("kvtk-tests: pid fits in i32"));
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
        let domain = self
            .spec
            .domain
            .as_ref()
            .map_or(String::new(), |d| format!("\n  domain: {}", quote(d)));
        let _ = writeln!(
            c,
            "jetstream {{\n  store_dir: {}{sync}{domain}\n}}",
            q(&self.store_dir)
        );
        c.push_str(&self.spec.render_auth());
        c.extend(self.spec.render_tls());
        c.extend(self.spec.render_leafnodes(self.leaf_port));
        for line in &self.spec.extra {
            let _ = writeln!(c, "{line}");
        }
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

    fn fail(&self, what: &str) -> ! {
        panic!("kvtk-tests: nats-server {what}\n{}", self.log_section())
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

    /// Waits for the listeners, then until JetStream answers `$JS.API.INFO` on this node (or,
    /// when clients must authenticate, until `/healthz` says ok).
    pub(crate) async fn wait_ready(&mut self) {
        let deadline = Instant::now() + self.ready_timeout;
        self.wait_listening(deadline).await;
        loop {
            let probe = if self.spec.is_secured() {
                self.healthz().await
            } else {
                jetstream_info(&self.client_url()).await
            };
            let last_err = match probe {
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

    async fn healthz(&self) -> Result<(), String> {
        let json = self
            .monitor_json("/healthz")
            .await
            .ok_or_else(|| "no answer from /healthz".to_string())?;
        match json.get("status").and_then(|s| s.as_str()) {
            Some("ok") => Ok(()),
            _ => Err(format!("/healthz: {json}")),
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
