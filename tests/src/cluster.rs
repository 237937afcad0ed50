//! A three-node JetStream cluster on loopback, owned by a [`NatsCluster`] handle.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};

use crate::client;
use crate::proxy::FaultProxy;
use crate::server::{free_ports, ClusterSpec, NatsServer, Reserved, POLL_CLUSTER};
use crate::wait::poll_until;

/// Three JetStream nodes named `n0`, `n1`, `n2`, routed to each other on 127.0.0.1.
///
/// Every node has its own free client, route and monitoring port and its own temporary store.
/// Dropping the cluster kills all nodes and removes their files.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cluster = kvtk_tests::NatsCluster::start().await;
/// assert!(cluster.meta_leader().await.is_some());
/// // async-nats takes the node list as a Vec, not as one comma-joined string. Placing an R3
/// // stream can take seconds on a busy machine: a generous request timeout.
/// let client = async_nats::ConnectOptions::new()
///     .request_timeout(Some(std::time::Duration::from_secs(30)))
///     .connect(cluster.client_urls())
///     .await
///     .unwrap();
/// let js = async_nats::jetstream::new(client);
/// js.create_key_value(async_nats::jetstream::kv::Config {
///     bucket: "r3".into(),
///     num_replicas: 3,
///     ..Default::default()
/// })
/// .await
/// .unwrap();
/// # }
/// ```
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    name: String,
    /// Route links `(from, to)` through proxies, for partitions (empty unless partitionable).
    links: Vec<((usize, usize), FaultProxy)>,
    /// The advertised route address of a partitionable cluster: a proxy that refuses every
    /// connection, so gossip never leads a node around the link proxies.
    _sink: Option<FaultProxy>,
    /// The route ports' reservations, kept while nodes restart on them.
    _route_ports: Vec<Reserved>,
}

/// Number of nodes in a [`NatsCluster`].
pub const CLUSTER_SIZE: usize = 3;

/// The stream a starting cluster places (and deletes) to know it can place R3 streams.
const PLACEMENT_PROBE: &str = "KVTK_TESTS_PLACEMENT";

impl NatsCluster {
    /// Starts three nodes and waits until they elected a JetStream meta leader, each node
    /// answers `$JS.API.INFO`, and an R3 stream can be placed.
    ///
    /// # Panics
    ///
    /// When a node cannot start or no meta leader appears in time; the message carries the logs.
    ///
    /// # Cancel safety
    ///
    /// Cancelling drops the started nodes, which kills them and removes their files.
    pub async fn start() -> NatsCluster {
        Self::start_with(false).await
    }

    /// Like [`NatsCluster::start`], but every route connection from node `i` to node `j` runs
    /// through its own [`FaultProxy`], so [`NatsCluster::partition`] can cut `i` from `j` while
    /// both keep serving clients and talking to the third node.
    ///
    /// # Panics
    ///
    /// As [`NatsCluster::start`].
    ///
    /// # Cancel safety
    ///
    /// Cancelling drops the started nodes and proxies, which kills them and removes their files.
    pub async fn start_partitionable() -> NatsCluster {
        Self::start_with(true).await
    }

    async fn start_with(partitionable: bool) -> NatsCluster {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "kv-tests-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // Route ports must be known before any node starts, since every node lists all routes;
        // their reservations keep them ours for the cluster's life.
        let reserved = free_ports(CLUSTER_SIZE);
        let route_ports: Vec<u16> = reserved.iter().map(Reserved::port).collect();
        let (links, sink) = if partitionable {
            route_links(&route_ports).await
        } else {
            (Vec::new(), None)
        };
        let mut nodes: Vec<NatsServer> = route_ports
            .iter()
            .enumerate()
            .map(|(i, &listen_port)| {
                let mut builder = NatsServer::builder().server_name(format!("n{i}"));
                builder.cluster = Some(ClusterSpec {
                    name: name.clone(),
                    listen_port,
                    routes: routes_of(i, &route_ports, &links),
                    advertise: sink.as_ref().map(|p| p.local_addr().to_string()),
                });
                builder.spawn_only()
            })
            .collect();
        let deadline = Instant::now() + nodes[0].ready_timeout();
        for node in &mut nodes {
            node.wait_listening(deadline).await;
        }
        // A node answers `$JS.API.INFO` only once it knows a meta leader.
        for node in &mut nodes {
            node.wait_ready().await;
        }
        let cluster = NatsCluster {
            nodes,
            name,
            links,
            _sink: sink,
            _route_ports: reserved,
        };
        if cluster.wait_meta_leader(deadline).await.is_none() {
            cluster.fail("elected no JetStream meta leader");
        }
        if !cluster.wait_routes(deadline).await {
            cluster.fail("did not complete its route pools");
        }
        if let Err(err) = cluster.wait_placement(deadline).await {
            cluster.fail(&format!("could not place an R3 stream: {err}"));
        }
        cluster
    }

    /// Node `i` (0, 1 or 2).
    ///
    /// # Panics
    ///
    /// When `i` is out of range.
    pub fn node(&self, i: usize) -> &NatsServer {
        &self.nodes[i]
    }

    /// The cluster name of the `cluster {}` block.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client URLs of all nodes, in node order.
    pub fn client_urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::client_url).collect()
    }

    /// All client URLs joined with commas (`nats://127.0.0.1:A,nats://127.0.0.1:B,...`).
    ///
    /// This is the form of the `nats` CLI's `--server` and of a `NATS_URL` variable. async-nats
    /// 0.51 does **not** split it: pass [`NatsCluster::client_urls`] (a `Vec`) to
    /// `async_nats::connect` or `ConnectOptions::connect`, or use [`NatsCluster::connect`].
    pub fn client_url(&self) -> String {
        self.client_urls().join(",")
    }

    /// Connects a client of node `i` alone, with [`client::QUORUM_TIMEOUT`] requests: tests
    /// that want a client on a stream follower (whose consumers and direct gets may lag the
    /// leader) use one per node.
    ///
    /// # Panics
    ///
    /// When the connection fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is left behind.
    pub async fn node_client(&self, i: usize) -> async_nats::Client {
        client::with_request_timeout(self.node(i).client_url(), client::QUORUM_TIMEOUT).await
    }

    /// Connects a client that knows every node, with async-nats' default options.
    ///
    /// # Panics
    ///
    /// When the connection fails; the message carries the logs.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is left behind.
    pub async fn connect(&self) -> async_nats::Client {
        match async_nats::connect(self.client_urls()).await {
            Ok(client) => client,
            Err(err) => self.fail(&format!("refused a client: {err}")),
        }
    }

    /// Cuts the route links between nodes `a` and `b` both ways (both keep their clients and
    /// their links to the third node). Does nothing unless the cluster was started with
    /// [`NatsCluster::start_partitionable`].
    pub fn partition(&self, a: usize, b: usize) {
        self.links_between(a, b).for_each(FaultProxy::cut);
    }

    /// Restores the route links between nodes `a` and `b`.
    pub fn heal_partition(&self, a: usize, b: usize) {
        self.links_between(a, b).for_each(FaultProxy::heal);
    }

    /// Whether [`NatsCluster::partition`] works on this cluster.
    pub fn is_partitionable(&self) -> bool {
        !self.links.is_empty()
    }

    fn links_between(&self, a: usize, b: usize) -> impl Iterator<Item = &FaultProxy> {
        self.links
            .iter()
            .filter(move |((i, j), _)| (*i, *j) == (a, b) || (*i, *j) == (b, a))
            .map(|(_, proxy)| proxy)
    }

    /// Freezes node `i` with SIGSTOP; see [`NatsServer::pause`].
    pub fn pause_node(&self, i: usize) {
        self.nodes[i].pause();
    }

    /// Continues node `i` after [`NatsCluster::pause_node`] (SIGCONT).
    pub fn resume_node(&self, i: usize) {
        self.nodes[i].resume();
    }

    /// Kills node `i` with SIGKILL and waits for it to exit.
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Restarts node `i` on the same ports with the same store and waits until it rejoined:
    /// it sees a meta leader and answers `$JS.API.INFO`.
    ///
    /// # Panics
    ///
    /// When the node is not back in time; the message carries the logs.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: cancelling may leave the node stopped or not yet rejoined.
    pub async fn restart_node(&mut self, i: usize) {
        self.nodes[i].restart().await;
        let deadline = Instant::now() + self.nodes[i].ready_timeout();
        let node = &self.nodes[i];
        let rejoined = poll_until(deadline, POLL_CLUSTER, || async {
            node_meta_leader(node).await.map(drop).ok_or(())
        });
        if rejoined.await.is_err() {
            self.fail(&format!("node n{i} did not rejoin"));
        }
    }

    /// The index of the node that leads `stream` now, from `$JS.API.STREAM.INFO` (`None` when
    /// the stream does not exist, has no leader, or no node answers).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        for node in self.nodes.iter().filter(|n| n.has_process()) {
            let Ok(client) = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(1))
                .request_timeout(Some(Duration::from_secs(1)))
                .connect(node.client_url())
                .await
            else {
                continue;
            };
            let reply = client
                .request(format!("$JS.API.STREAM.INFO.{stream}"), "".into())
                .await;
            let _ = client.drain().await;
            let Ok(reply) = reply else { continue };
            let Ok(info) = serde_json::from_slice::<serde_json::Value>(&reply.payload) else {
                continue;
            };
            if info.get("error").is_some() {
                continue;
            }
            let leader = info.pointer("/cluster/leader").and_then(|v| v.as_str());
            return leader.and_then(|name| self.index_of(name));
        }
        None
    }

    /// Polls [`NatsCluster::stream_leader`] until it names a running node or `timeout` passes.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait_stream_leader(&self, stream: &str, timeout: Duration) -> Option<usize> {
        let leader = poll_until(Instant::now() + timeout, POLL_CLUSTER, || async {
            let running = |i: &usize| self.nodes[*i].has_process();
            self.stream_leader(stream).await.filter(running).ok_or(())
        });
        leader.await.ok()
    }

    /// The index of the JetStream meta leader, as a running node's `/jsz` reports it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn meta_leader(&self) -> Option<usize> {
        for node in self.nodes.iter().filter(|n| n.has_process()) {
            if let Some(name) = node_meta_leader(node).await {
                if let Some(i) = self.index_of(&name) {
                    if self.nodes[i].has_process() {
                        return Some(i);
                    }
                }
            }
        }
        None
    }

    /// Waits for a meta leader that sees every other node as a current peer: before that,
    /// placing an R3 stream can fail with "no suitable peers for placement".
    async fn wait_meta_leader(&self, deadline: Instant) -> Option<usize> {
        let leader = poll_until(deadline, POLL_CLUSTER, || async {
            let i = self.meta_leader().await.ok_or(())?;
            let current = peers_current(&self.nodes[i], self.nodes.len() - 1).await;
            current.then_some(i).ok_or(())
        });
        leader.await.ok()
    }

    /// Waits until the meta leader places an R3 stream, by placing one in memory and deleting
    /// it. Current meta peers and complete routes do not say so: the meta leader places streams
    /// only on peers whose statistics (statsz) it has received, which can follow the routes by
    /// a statsz interval — a bucket created a second after start failed with "no suitable peers
    /// for placement, peer offline" (1 CI run).
    async fn wait_placement(&self, deadline: Instant) -> Result<(), String> {
        let js = jetstream::new(
            client::with_request_timeout(self.client_urls(), client::QUORUM_TIMEOUT).await,
        );
        let config = stream::Config {
            name: PLACEMENT_PROBE.into(),
            subjects: vec![PLACEMENT_PROBE.to_lowercase()],
            num_replicas: CLUSTER_SIZE,
            storage: stream::StorageType::Memory,
            ..Default::default()
        };
        poll_until(deadline, POLL_CLUSTER, || async {
            match js.create_stream(config.clone()).await {
                Ok(_) => js
                    .delete_stream(PLACEMENT_PROBE)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Err(err) => Err(err.to_string()),
            }
        })
        .await
    }

    /// Waits until every node's route pool to every other node is complete. Until then a
    /// message whose account (or the system account, which JetStream's API requests cross)
    /// maps to a missing route is not forwarded: a stream info request sent in the first
    /// second of a cluster went unanswered for 5 s (its stream leader never saw it) while the
    /// last pooled route came up.
    async fn wait_routes(&self, deadline: Instant) -> bool {
        let complete = poll_until(deadline, POLL_CLUSTER, || async {
            for node in &self.nodes {
                if !routes_complete(node, self.nodes.len() - 1).await {
                    return Err(());
                }
            }
            Ok(())
        });
        complete.await.is_ok()
    }

    fn index_of(&self, server_name: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.server_name() == server_name)
    }

    fn fail(&self, what: &str) -> ! {
        let logs: Vec<String> = self.nodes.iter().map(NatsServer::log_section).collect();
        panic!(
            "kvtk-tests: cluster {} {what}\n{}",
            self.name,
            logs.join("\n")
        )
    }
}

/// Whether `node`'s `/jsz` lists `others` meta peers, all current.
async fn peers_current(node: &NatsServer, others: usize) -> bool {
    let Some(jsz) = node.monitor_json("/jsz").await else {
        return false;
    };
    let Some(peers) = jsz
        .pointer("/meta_cluster/replicas")
        .and_then(|r| r.as_array())
    else {
        return others == 0;
    };
    peers.len() >= others
        && peers
            .iter()
            .all(|p| p.get("current").and_then(|c| c.as_bool()) == Some(true))
}

/// Whether `node` has, to each of `others` peers, its whole pool of routes (the configured
/// pool size) and the system account's own route (nats-server pins it whenever routes are
/// pooled).
async fn routes_complete(node: &NatsServer, others: usize) -> bool {
    let (Some(varz), Some(routez)) = (
        node.monitor_json("/varz").await,
        node.monitor_json("/routez").await,
    ) else {
        return false;
    };
    // -1: pooling off, one route per peer and no pinned accounts.
    let configured = varz
        .pointer("/cluster/pool_size")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(-1);
    let pool = configured.max(1);
    let system = varz.get("system_account").and_then(|a| a.as_str());
    let mut peers: BTreeMap<&str, (i64, bool)> = BTreeMap::new();
    let routes = routez.get("routes").and_then(|r| r.as_array());
    for r in routes.into_iter().flatten() {
        let Some(peer) = r.get("remote_name").and_then(|n| n.as_str()) else {
            continue;
        };
        let (pooled, system_pinned) = peers.entry(peer).or_default();
        match r.get("account").and_then(|a| a.as_str()) {
            Some(account) => *system_pinned |= Some(account) == system,
            None => *pooled += 1,
        }
    }
    let needs_system = configured > 0 && system.is_some();
    peers.len() >= others
        && peers
            .values()
            .all(|(pooled, pinned)| *pooled >= pool && (*pinned || !needs_system))
}

/// The meta leader's server name as one node sees it.
async fn node_meta_leader(node: &NatsServer) -> Option<String> {
    let jsz = node.monitor_json("/jsz").await?;
    let leader = jsz.pointer("/meta_cluster/leader")?.as_str()?;
    (!leader.is_empty()).then(|| leader.to_string())
}

/// One proxy per ordered node pair toward the route port of the second node, and the sink that
/// every node advertises instead of its real route address.
async fn route_links(
    route_ports: &[u16],
) -> (Vec<((usize, usize), FaultProxy)>, Option<FaultProxy>) {
    let mut links = Vec::new();
    for (i, j) in pairs(route_ports.len()) {
        let proxy = FaultProxy::start(&format!("127.0.0.1:{}", route_ports[j])).await;
        links.push(((i, j), proxy));
    }
    let sink = FaultProxy::start(&format!("127.0.0.1:{}", route_ports[0])).await;
    sink.cut();
    (links, Some(sink))
}

fn pairs(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n).flat_map(move |i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
}

/// The route URLs of node `i`: through its link proxies when there are any, else direct.
fn routes_of(i: usize, route_ports: &[u16], links: &[((usize, usize), FaultProxy)]) -> Vec<String> {
    if links.is_empty() {
        return route_ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect();
    }
    links
        .iter()
        .filter(|((from, _), _)| *from == i)
        .map(|(_, proxy)| format!("nats-route://{}", proxy.local_addr()))
        .collect()
}
