//! Real-server test kit for the NATS JetStream KV coordination toolkit.
//!
//! Like Curator's `TestingServer` for ZooKeeper, it runs real servers as child processes that
//! die with their handles:
//!
//! - [`NatsServer`]: one JetStream server on 127.0.0.1, a free port and a temporary store, with
//!   [`restart`](NatsServer::restart) (same port, same data), [`kill`](NatsServer::kill)
//!   (SIGKILL) and [`stop`](NatsServer::stop) (graceful).
//! - [`NatsCluster`]: three routed JetStream nodes, ready once a meta leader exists, with node
//!   kills and restarts and stream-leader lookup.
//! - [`NatsServerBuilder`]: accounts, users and [`Permissions`] (password, NKey, token),
//!   operator mode with `.creds` files ([`TestOperator`]), TLS with certificates generated at
//!   test time ([`TestPki`]), JetStream domains, leaf nodes attached to a hub ([`LeafRemote`];
//!   [`HubAndLeaf`] is a hub and a leaf in two domains with the leaf link behind a
//!   [`FaultProxy`]), and configuration reload ([`NatsServer::reload`]).
//! - [`FaultProxy`]: a TCP proxy that cuts, blackholes or delays a client's link on demand.
//! - [`history`] and [`check`]: record what every client did and believed, then check
//!   mutual exclusion, fencing, leader terms, watches and configurations.
//! - [`nemesis`]: a seeded fault schedule (link cuts, SIGKILL, SIGSTOP, partitions between
//!   nodes, stream-leader kills) run against a cluster.
//! - `docker` (feature `docker`): the official `nats` image through testcontainers.
//!
//! The `nats-server` binary comes from [`nats_server_bin`]: `NATS_SERVER_BIN`, `PATH`, or the
//! project-local copy that `scripts/ensure-nats-server.sh` installs (version ≥ 2.12).
//!
//! Dropping a handle kills its processes and removes their files, also while a test panics.
//! Start-up polls for readiness (no fixed sleeps) and panics with the server log on timeout.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use kv_tests::NatsServer;
//!
//! let server = NatsServer::start().await;
//! let js = async_nats::jetstream::new(server.connect().await);
//! let kv = js
//!     .create_key_value(async_nats::jetstream::kv::Config {
//!         bucket: "example".into(),
//!         ..Default::default()
//!     })
//!     .await
//!     .unwrap();
//! kv.put("greeting", "hello".into()).await.unwrap();
//! # }
//! ```
#![doc(test(attr(deny(warnings))))]

mod auth;
mod binary;
pub mod check;
mod cluster;
#[cfg(feature = "docker")]
pub mod docker;
mod errors;
pub mod history;
mod leaf;
mod monitor;
pub mod nemesis;
mod operator;
mod proxy;
pub mod recipes;
mod server;
mod tls;

pub use auth::{Account, NkeyUser, Permissions, Rule, User};
pub use binary::{nats_server_bin, LOCAL_SERVER_PATH, MIN_SERVER_VERSION, PINNED_SERVER_VERSION};
pub use cluster::{NatsCluster, CLUSTER_SIZE};
pub use errors::{assert_one_layer_each, error_layers};
pub use leaf::HubAndLeaf;
pub use operator::{TestOperator, OPERATOR_ACCOUNT};
pub use proxy::FaultProxy;
pub use server::{LeafRemote, NatsServer, NatsServerBuilder, READY_TIMEOUT};
pub use tls::TestPki;
