//! [`Ui`], the console's options, and [`Server`], the running console that owns every task
//! it started.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use kvtk_core::Kv;
use kvtk_doctor::Intent;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::{App, Buckets};
use crate::error::{Error, ErrorKind};
use crate::feed::{self, Ctx};
use crate::hub::Hub;
use crate::schema::Schemas;

/// The address `kvtk ui` listens on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// The console's options; [`start`](Ui::start) it to serve.
///
/// By default it listens on [`DEFAULT_LISTEN`], reads the buckets `locks`, `elections`,
/// `members` and `config`, and writes nothing.
pub struct Ui {
    kv: Kv,
    listen: SocketAddr,
    allow_remote: bool,
    allow_writes: bool,
    secret: Option<String>,
    buckets: Buckets,
    schemas: Schemas,
}

impl std::fmt::Debug for Ui {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ui")
            .field("listen", &self.listen)
            .field("allow_remote", &self.allow_remote)
            .field("allow_writes", &self.allow_writes)
            .field("buckets", &self.buckets)
            .finish_non_exhaustive()
    }
}

impl Ui {
    /// A console reading through `kv`.
    pub fn new(kv: Kv) -> Ui {
        Ui {
            kv,
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            allow_remote: false,
            allow_writes: false,
            secret: None,
            buckets: Buckets {
                locks: Some("locks".into()),
                elections: Some("elections".into()),
                members: Some("members".into()),
                config: Some("config".into()),
            },
            schemas: Schemas::default(),
        }
    }

    /// The address to listen on (port 0: any free port). Only loopback addresses are
    /// accepted unless [`allow_remote`](Self::allow_remote).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Accepts a non-loopback address. Everyone who can reach it sees lock holders,
    /// identities and configuration: put it behind authentication.
    pub fn allow_remote(mut self, on: bool) -> Self {
        self.allow_remote = on;
        self
    }

    /// Offers the actions (force-release of a lock holder, configuration rollback). Each
    /// request must carry the per-process secret in the [`SECRET_HEADER`](crate::SECRET_HEADER) header.
    pub fn allow_writes(mut self, on: bool) -> Self {
        self.allow_writes = on;
        self
    }

    /// The secret write requests must carry (default: 32 random bytes, hex).
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// The bucket of the Locks view (`None`: no Locks view).
    pub fn locks_bucket(mut self, name: Option<String>) -> Self {
        self.buckets.locks = name;
        self
    }

    /// The bucket of the Elections view (`None`: no Elections view).
    pub fn elections_bucket(mut self, name: Option<String>) -> Self {
        self.buckets.elections = name;
        self
    }

    /// The bucket of the Members view (`None`: no Members view).
    pub fn members_bucket(mut self, name: Option<String>) -> Self {
        self.buckets.members = name;
        self
    }

    /// The bucket of the Configuration view (`None`: no Configuration view).
    pub fn config_bucket(mut self, name: Option<String>) -> Self {
        self.buckets.config = name;
        self
    }

    /// A JSON Schema the Configuration view checks document `key` against, or every
    /// document without a schema of its own when `key` is `None`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when `schema` is not a valid JSON Schema.
    pub fn schema(mut self, key: Option<String>, schema: &Value) -> Result<Self, Error> {
        self.schemas.add(key, schema)?;
        Ok(self)
    }

    /// Binds the address and starts serving: one feed task per bucket and the HTTP server,
    /// all owned by the returned [`Server`].
    ///
    /// # Errors
    /// [`ErrorKind::NotLoopback`] for a non-loopback address without
    /// [`allow_remote`](Self::allow_remote), [`ErrorKind::Bind`] when the address cannot be
    /// bound, [`ErrorKind::InvalidArgument`] for an empty secret.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future before it returns drops the listener; no task has
    /// been started until then.
    pub async fn start(self) -> Result<Server, Error> {
        let secret = self.checked()?;
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Bind,
                    format!("cannot listen on {}: {e}", self.listen),
                )
                .with_source(e)
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::new(ErrorKind::Bind, e.to_string()).with_source(e))?;
        let hub = Hub::new();
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let ctx = Ctx {
            kv: self.kv.clone(),
            hub: hub.clone(),
            cancel: cancel.clone(),
        };
        let schemas = Arc::new(self.schemas);
        spawn_feeds(&tracker, &ctx, &self.buckets, &schemas);
        let app = App {
            kv: self.kv,
            hub: hub.clone(),
            buckets: Arc::new(self.buckets),
            schemas,
            allow_writes: self.allow_writes,
            allow_remote: self.allow_remote,
            secret: Arc::from(secret.as_str()),
            port: addr.port(),
            cancel: cancel.clone(),
        };
        tracker.spawn(serve(listener, crate::routes::router(app), cancel.clone()));
        tracker.close();
        tracing::info!(%addr, writes = self.allow_writes, "kvtk ui listening");
        Ok(Server {
            addr,
            secret: self.allow_writes.then_some(secret),
            hub,
            cancel,
            tracker,
        })
    }

    /// Refuses a non-loopback address unless allowed; the secret to use.
    fn checked(&self) -> Result<String, Error> {
        if !self.allow_remote && !self.listen.ip().is_loopback() {
            return Err(Error::new(
                ErrorKind::NotLoopback,
                format!(
                    "refusing to listen on {}: not a loopback address. The console shows lock \
                     holders, identities and configuration to anyone who reaches it; allow \
                     remote access explicitly (kvtk ui --allow-remote) and put it behind \
                     authentication",
                    self.listen
                ),
            ));
        }
        match &self.secret {
            Some(s) if s.trim().is_empty() => Err(Error::invalid("the secret is empty")),
            Some(s) => Ok(s.clone()),
            None => Ok(random_secret()),
        }
    }
}

/// Serves HTTP until `cancel` fires; a failure stops the feeds too (nobody is served).
async fn serve(listener: tokio::net::TcpListener, router: axum::Router, cancel: CancellationToken) {
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(cancel.clone().cancelled_owned())
        .await;
    if let Err(e) = served {
        tracing::error!("the console's HTTP server stopped: {e}");
    }
    cancel.cancel();
}

fn spawn_feeds(tracker: &TaskTracker, ctx: &Ctx, b: &Buckets, schemas: &Arc<Schemas>) {
    let hub = &ctx.hub;
    if let Some(name) = &b.locks {
        let f = feed::locks::LocksFeed::new(hub.clone());
        tracker.spawn(feed::run(ctx.clone(), name.clone(), f));
    }
    if let Some(name) = &b.elections {
        let f = feed::elections::ElectionsFeed::new(hub.clone());
        tracker.spawn(feed::run(ctx.clone(), name.clone(), f));
    }
    if let Some(name) = &b.members {
        let f = feed::members::MembersFeed::new(hub.clone());
        tracker.spawn(feed::run(ctx.clone(), name.clone(), f));
    }
    if let Some(name) = &b.config {
        let f = feed::config::ConfigFeed::new(hub.clone(), schemas.clone());
        tracker.spawn(feed::run(ctx.clone(), name.clone(), f));
    }
    let mut intents = BTreeMap::new();
    let pairs = [
        (&b.locks, Intent::locks()),
        (&b.elections, Intent::elections()),
        (&b.members, Intent::membership()),
        (&b.config, Intent::config()),
    ];
    for (name, intent) in pairs {
        if let Some(n) = name {
            intents.insert(n.clone(), intent);
        }
    }
    tracker.spawn(feed::buckets::run(ctx.clone(), intents));
}

/// 32 random bytes as 64 hex digits.
fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The running console. It owns every task it started (one feed per bucket, the HTTP
/// server, one event stream per open tab, each ending with its connection);
/// [`shutdown`](Server::shutdown) stops them and waits, and dropping the `Server` stops them
/// without waiting.
pub struct Server {
    addr: SocketAddr,
    secret: Option<String>,
    hub: Arc<Hub>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("writes", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's address, `http://<addr>/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The secret write requests must carry, when writes are allowed. Print it only to the
    /// operator who started the console.
    pub fn secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }

    /// How many tabs (event streams) are open now.
    pub fn tabs(&self) -> usize {
        self.hub.subscribers()
    }

    /// Stops every task (open event streams end) and waits until they have.
    ///
    /// # Cancel safety
    /// Cancel safe: the tasks are stopping either way; they end without being awaited.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.wait().await;
    }

    /// Waits until the console stops: after [`shutdown`](Self::shutdown) from a clone of
    /// its token, or when its HTTP server fails.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub async fn stopped(&self) {
        self.tracker.wait().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
