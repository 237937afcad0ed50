//! The official `nats` container image through testcontainers, for machines with a Docker
//! engine but no `nats-server` binary (feature `docker`).
//!
//! The project's own CI has no Docker engine: it compiles this module but never runs it.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let nats = kvtk_tests::docker::DockerNats::start().await;
//! let _client = async_nats::connect(nats.client_url()).await.unwrap();
//! # }
//! ```

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// The image tag started by default: the server version the toolkit targets.
pub const DEFAULT_TAG: &str = "2.15.1";

const CLIENT_PORT: u16 = 4222;

/// A `nats` container started with `-js`; removed when dropped.
#[derive(Debug)]
pub struct DockerNats {
    // Held for its Drop, which stops and removes the container.
    _container: ContainerAsync<GenericImage>,
    url: String,
}

impl DockerNats {
    /// Starts `nats:`[`DEFAULT_TAG`] with JetStream and waits for "Server is ready".
    ///
    /// # Panics
    ///
    /// When no Docker engine answers or the container does not start.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a container being created when cancelled may be left behind.
    pub async fn start() -> DockerNats {
        Self::start_tag(DEFAULT_TAG).await
    }

    /// Starts `nats:<tag>` with JetStream (pick a tag ≥ 2.12 for the toolkit's features).
    ///
    /// # Panics
    ///
    /// When no Docker engine answers or the container does not start.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a container being created when cancelled may be left behind.
    pub async fn start_tag(tag: &str) -> DockerNats {
        let container = GenericImage::new("nats", tag)
            .with_exposed_port(CLIENT_PORT.tcp())
            .with_wait_for(WaitFor::message_on_stderr("Server is ready"))
            .with_cmd(["-js"])
            .start()
            .await
            .expect("kvtk-tests: cannot start the nats container (is a Docker engine running?)");
        let host = container
            .get_host()
            .await
            .expect("kvtk-tests: nats container has no host");
        let port = container
            .get_host_port_ipv4(CLIENT_PORT)
            .await
            .expect("kvtk-tests: nats container exposes no client port");
        DockerNats {
            _container: container,
            url: format!("nats://{host}:{port}"),
        }
    }

    /// The client URL of the container's server.
    pub fn client_url(&self) -> String {
        self.url.clone()
    }
}
