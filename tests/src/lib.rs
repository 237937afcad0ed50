#![doc = include_str!("../README.md")]
// docs.rs (nightly) marks items that need a feature.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod auth;
mod binary;
pub mod check;
pub mod client;
mod cluster;
#[cfg(feature = "docker")]
pub mod docker;
mod errors;
pub mod history;
mod leaf;
pub mod metrics;
mod monitor;
pub mod nemesis;
mod operator;
mod proxy;
pub mod recipes;
mod server;
mod tls;
mod wait;

pub use auth::{Account, NkeyUser, Permissions, Rule, User};
pub use binary::{nats_server_bin, LOCAL_SERVER_PATH, MIN_SERVER_VERSION, PINNED_SERVER_VERSION};
pub use cluster::{NatsCluster, CLUSTER_SIZE};
pub use errors::{assert_one_layer_each, error_layers};
pub use leaf::HubAndLeaf;
pub use operator::{TestOperator, OPERATOR_ACCOUNT};
pub use proxy::FaultProxy;
pub use server::{LeafRemote, NatsServer, NatsServerBuilder, READY_TIMEOUT};
pub use tls::TestPki;
pub use wait::{collect_for, next, until, within, within_for, POLL, T};
