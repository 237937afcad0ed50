//! Clients for tests with short timeouts, so that a cut or blackholed link shows within a
//! lease instead of after async-nats' 5 s default request timeout.

use std::time::Duration;

use async_nats::{Client, ConnectOptions, ToServerAddrs};

/// The request timeout of [`short_timeouts`]: a lost reply is known in half a second.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);

/// The request timeout of [`NatsCluster::node_client`](crate::NatsCluster::node_client): on
/// an R3 bucket a write waits for a quorum, which a busy 2-core machine can take longer than
/// [`REQUEST_TIMEOUT`] to gather with nothing failing.
pub const QUORUM_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one connection attempt may take (async-nats' default is 5 s).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// Connect options with `request_timeout` and a 1 s connection timeout. Add what a test needs
/// (`retry_on_initial_connect` for a server that may be down, `ignore_discovered_servers`,
/// credentials) and connect.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
///
/// let server = kvtk_tests::NatsServer::start().await;
/// let client = kvtk_tests::client::options(Duration::from_millis(300))
///     .ignore_discovered_servers()
///     .connect(server.client_url())
///     .await
///     .unwrap();
/// assert_eq!(client.timeout(), Some(Duration::from_millis(300)));
/// # }
/// ```
pub fn options(request_timeout: Duration) -> ConnectOptions {
    ConnectOptions::new()
        .request_timeout(Some(request_timeout))
        .connection_timeout(CONNECTION_TIMEOUT)
}

/// A client of `url` with [`REQUEST_TIMEOUT`] and the other [`options`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let server = kvtk_tests::NatsServer::start().await;
/// let client = kvtk_tests::client::short_timeouts(server.client_url()).await;
/// assert_eq!(client.timeout(), Some(kvtk_tests::client::REQUEST_TIMEOUT));
/// # }
/// ```
///
/// # Panics
///
/// When the client cannot connect.
///
/// # Cancel safety
///
/// Cancel safe: nothing is left behind.
pub async fn short_timeouts(url: impl ToServerAddrs) -> Client {
    with_request_timeout(url, REQUEST_TIMEOUT).await
}

/// A client of `url` with `request_timeout` and the other [`options`].
///
/// # Panics
///
/// When the client cannot connect.
///
/// # Cancel safety
///
/// Cancel safe: nothing is left behind.
pub async fn with_request_timeout(url: impl ToServerAddrs, request_timeout: Duration) -> Client {
    match options(request_timeout).connect(url).await {
        Ok(client) => client,
        Err(err) => panic!("kvtk-tests: cannot connect: {err}"),
    }
}
