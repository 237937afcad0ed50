//! The options of a [`NatsServer`](super::NatsServer): what the builder collects before
//! [`process`](super::process) starts it and [`config`](super::config) renders it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::leaf_remote::LeafRemote;
use crate::auth::{Account, User};
use crate::operator::TestOperator;
use crate::tls::TestPki;

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

/// Options for a [`NatsServer`](crate::NatsServer); get one from
/// [`NatsServer::builder`](crate::NatsServer::builder).
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
    pub(super) memory: bool,
    pub(super) sync_always: bool,
    pub(super) server_name: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) binary: Option<PathBuf>,
    pub(super) ready_timeout: Option<Duration>,
    pub(crate) cluster: Option<ClusterSpec>,
    pub(super) accounts: Vec<Account>,
    pub(super) users: Vec<User>,
    pub(super) token: Option<Secret>,
    pub(super) system_account: Option<String>,
    pub(super) tls: Option<TlsSpec>,
    pub(super) domain: Option<String>,
    pub(super) leafnode_listener: bool,
    pub(super) leaf_remotes: Vec<LeafRemote>,
    pub(super) extra: Vec<String>,
    pub(super) operator: Option<Arc<TestOperator>>,
}

/// A string kept out of `Debug` output.
#[derive(Clone, Default, PartialEq, Eq)]
pub(super) struct Secret(pub(super) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// The server's `tls {}` block.
#[derive(Debug, Clone)]
pub(super) struct TlsSpec {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) ca: PathBuf,
    pub(super) verify: bool,
    pub(super) handshake_first: bool,
}

impl NatsServerBuilder {
    /// Keeps the JetStream store on a RAM file system (`/dev/shm`) when the machine has one.
    ///
    /// A server cannot force a stream's storage type (each stream chooses `file` or `memory`), so
    /// this moves the store directory instead: file-storage streams and KV buckets then never touch
    /// a disk, yet survive [`NatsServer::restart`](crate::NatsServer::restart) like on-disk ones.
    /// Without `/dev/shm` the ordinary temporary directory is used.
    pub fn memory_storage(mut self) -> Self {
        self.memory = true;
        self
    }

    /// Sets `jetstream { sync_interval: always }`: every write is fsynced before it is acked, so
    /// data written before a [`NatsServer::kill`](crate::NatsServer::kill) survives the restart
    /// (etcd's durability).
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

    /// Overrides how long start and restart wait for readiness (default [`READY_TIMEOUT`](crate::READY_TIMEOUT)).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = Some(timeout);
        self
    }

    /// Adds an account with its users (see [`Account`]), replacing an account of the same name (so
    /// [`NatsServer::reload`](crate::NatsServer::reload) can change one). Once any account or user
    /// exists, the server requires clients to authenticate; start-up then waits on the monitoring
    /// endpoint's `/healthz` instead of connecting, and
    /// [`NatsServer::connect`](crate::NatsServer::connect) no longer works: use
    /// [`NatsServer::connect_with`](crate::NatsServer::connect_with).
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
    /// [`NatsServer::leafnode_url`](crate::NatsServer::leafnode_url). A hub in its own JetStream
    /// domain is the usual setup.
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
    pub(super) fn is_secured(&self) -> bool {
        !self.accounts.is_empty()
            || self.operator.is_some()
            || !self.users.is_empty()
            || self.token.is_some()
            || self.tls.is_some()
    }
}
