//! A TCP proxy between clients and a server that injects network faults on demand.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

/// What the proxy does with traffic right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Cut,
    Blackhole,
}

#[derive(Debug, Clone, Copy)]
struct Faults {
    mode: Mode,
    latency: Duration,
}

/// A TCP proxy on a free 127.0.0.1 port toward one server, with switchable faults.
///
/// Point a client at [`FaultProxy::url`] instead of the server, then [`cut`](FaultProxy::cut),
/// [`blackhole`](FaultProxy::blackhole) or [`set_latency`](FaultProxy::set_latency) the link
/// and [`heal`](FaultProxy::heal) it again. Fault switches act at once on live connections.
///
/// The proxy's tasks belong to the handle: dropping it aborts the accept loop, which aborts
/// every connection task and closes their sockets.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
///
/// let server = kvtk_tests::NatsServer::start().await;
/// let proxy = kvtk_tests::FaultProxy::start(&server.client_url()).await;
/// let client = async_nats::ConnectOptions::new()
///     .request_timeout(Some(Duration::from_millis(300)))
///     .connect(proxy.url())
///     .await
///     .unwrap();
/// assert!(client.request("$JS.API.INFO", "".into()).await.is_ok());
///
/// proxy.blackhole();
/// assert!(client.request("$JS.API.INFO", "".into()).await.is_err());
/// # }
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    faults: Arc<watch::Sender<Faults>>,
    live: Arc<AtomicUsize>,
    accept_task: AbortHandle,
}

impl FaultProxy {
    /// Starts a proxy toward `target`, given as `nats://127.0.0.1:4222` or `127.0.0.1:4222`.
    ///
    /// The target is dialled anew for each accepted client connection.
    ///
    /// # Panics
    ///
    /// When `target` has no `host:port` or 127.0.0.1 has no free port; outside a Tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing has been spawned until it returns.
    pub async fn start(target_url_or_addr: &str) -> FaultProxy {
        let target = target_url_or_addr
            .trim()
            .split_once("://")
            .map_or(target_url_or_addr.trim(), |(_, rest)| rest)
            .trim_end_matches('/')
            .to_string();
        assert!(
            target.contains(':'),
            "kvtk-tests: FaultProxy target {target_url_or_addr:?} has no host:port"
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("kvtk-tests: FaultProxy cannot bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("kvtk-tests: bound listener has an address");
        let faults = Arc::new(watch::Sender::new(Faults {
            mode: Mode::Forward,
            latency: Duration::ZERO,
        }));
        let live = Arc::new(AtomicUsize::new(0));
        let accept_task = tokio::spawn(accept_loop(
            listener,
            target,
            Arc::clone(&faults),
            Arc::clone(&live),
        ))
        .abort_handle();
        FaultProxy {
            addr,
            faults,
            live,
            accept_task,
        }
    }

    /// The URL clients use instead of the server's, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// The proxy's listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every live connection now; new connections are accepted and closed at once
    /// until [`FaultProxy::heal`].
    pub fn cut(&self) {
        self.faults.send_modify(|f| f.mode = Mode::Cut);
    }

    /// Keeps sockets open but silently drops all bytes both ways, on live and new connections.
    ///
    /// A NATS protocol stream that lost bytes mid-message may be unusable after
    /// [`FaultProxy::heal`]; clients then see an error and reconnect.
    pub fn blackhole(&self) {
        self.faults.send_modify(|f| f.mode = Mode::Blackhole);
    }

    /// Delays each forwarded chunk by `d`, in both directions.
    pub fn set_latency(&self, d: Duration) {
        self.faults.send_modify(|f| f.latency = d);
    }

    /// Back to plain forwarding without latency.
    pub fn heal(&self) {
        self.faults.send_modify(|f| {
            f.mode = Mode::Forward;
            f.latency = Duration::ZERO;
        });
    }

    /// The number of live proxied connections.
    pub fn connections(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.accept_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: String,
    faults: Arc<watch::Sender<Faults>>,
    live: Arc<AtomicUsize>,
) {
    // Connection tasks live in this set, so they can never outlive the accept loop.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                if faults.borrow().mode == Mode::Cut {
                    drop(client);
                    continue;
                }
                conns.spawn(connection(client, target.clone(), faults.subscribe(), Arc::clone(&live)));
            }
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Decrements the live-connection count however the connection task ends (also on abort).
struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn connection(
    client: TcpStream,
    target: String,
    faults: watch::Receiver<Faults>,
    live: Arc<AtomicUsize>,
) {
    live.fetch_add(1, Ordering::SeqCst);
    let _guard = LiveGuard(live);
    let Ok(server) = TcpStream::connect(&target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Either direction ending (EOF, error or cut) closes both sockets.
    tokio::select! {
        _ = pump(client_read, server_write, faults.clone()) => {}
        _ = pump(server_read, client_write, faults) => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut faults: watch::Receiver<Faults>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if faults.borrow_and_update().mode == Mode::Cut {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // A fault switch wakes the pump at once, so a cut closes idle connections too.
            changed = faults.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let now = *faults.borrow();
        match now.mode {
            Mode::Cut => return,
            Mode::Blackhole => continue,
            Mode::Forward => {}
        }
        if !now.latency.is_zero() {
            tokio::time::sleep(now.latency).await;
            if faults.borrow().mode != Mode::Forward {
                // Faulted while the chunk was delayed: handle it as if it arrived now.
                if faults.borrow().mode == Mode::Cut {
                    return;
                }
                continue;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
