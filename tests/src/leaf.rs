//! A hub and a leaf node, each with JetStream in its own domain, linked through a
//! [`FaultProxy`]: the topology of a fleet that reads a mirror close by while the origin lives
//! on the hub.

use crate::proxy::FaultProxy;
use crate::server::{LeafRemote, NatsServer, READY_TIMEOUT};

/// A hub (JetStream domain [`HubAndLeaf::HUB`]) and a leaf node (domain
/// [`HubAndLeaf::LEAF`]) whose leaf link runs through a [`FaultProxy`], so a test can cut and
/// heal it. Clients of the leaf reach the hub's JetStream with the API prefix
/// `$JS.hub.API`; a stream on the leaf can mirror one on the hub through the same prefix.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let net = kvtk_tests::HubAndLeaf::start().await;
/// let leaf_client = net.leaf.connect().await;
/// let hub_js = async_nats::jetstream::with_domain(leaf_client, kvtk_tests::HubAndLeaf::HUB);
/// assert!(hub_js.query_account().await.is_ok());
/// net.link.cut(); // the leaf is alone until `net.link.heal()`
/// # }
/// ```
#[derive(Debug)]
pub struct HubAndLeaf {
    /// The hub, with a leaf node listener.
    pub hub: NatsServer,
    /// The leaf node.
    pub leaf: NatsServer,
    /// The proxy on the leaf link (leaf → hub).
    pub link: FaultProxy,
}

impl HubAndLeaf {
    /// The hub's JetStream domain.
    pub const HUB: &'static str = "hub";
    /// The leaf's JetStream domain.
    pub const LEAF: &'static str = "leaf";

    /// Starts both servers and waits until the leaf link is up.
    ///
    /// # Panics
    ///
    /// When a server cannot start or the link does not come up in time; the message carries
    /// the server log.
    ///
    /// # Cancel safety
    ///
    /// Cancelling drops what was started, which kills it and removes its files.
    pub async fn start() -> HubAndLeaf {
        let hub = NatsServer::builder()
            .server_name("hub")
            .jetstream_domain(Self::HUB)
            .leafnode_listener()
            .start()
            .await;
        let hub_addr = hub
            .leafnode_addr()
            .expect("kvtk-tests: the hub was built with a leaf node listener");
        let link = FaultProxy::start(&hub_addr).await;
        let leaf = NatsServer::builder()
            .server_name("leaf")
            .jetstream_domain(Self::LEAF)
            .leaf_remote(LeafRemote::new(format!(
                "nats-leaf://{}",
                link.local_addr()
            )))
            .start()
            .await;
        leaf.wait_leaf_connected(READY_TIMEOUT).await;
        HubAndLeaf { hub, leaf, link }
    }

    /// The JetStream API prefix of the hub's domain, `$JS.hub.API`.
    pub fn hub_api() -> String {
        format!("$JS.{}.API", Self::HUB)
    }

    /// The source of a mirror (made on the leaf) of the hub's bucket or stream `name`: `name`
    /// in the hub's domain.
    ///
    /// ```
    /// let source = kvtk_tests::HubAndLeaf::hub_source("app");
    /// assert_eq!(source.domain.as_deref(), Some(kvtk_tests::HubAndLeaf::HUB));
    /// ```
    pub fn hub_source(name: &str) -> async_nats::jetstream::stream::Source {
        async_nats::jetstream::stream::Source {
            name: name.into(),
            domain: Some(Self::HUB.into()),
            ..Default::default()
        }
    }
}
