//! One `nats-server` process with JetStream, owned by a [`NatsServer`] handle.
//!
//! By role: [`builder`] holds the options, [`leaf_remote`] a leaf node link, [`config`] renders
//! them into the server's config file, [`handle`] is the handle and what it tells about its
//! server, [`process`] starts, signals, reloads and stops the child process, [`ready`] waits
//! until it listens and answers, and [`ports`] picks free ports.

mod builder;
mod config;
mod handle;
mod leaf_remote;
mod ports;
mod process;
mod ready;

pub(crate) use builder::ClusterSpec;
pub use builder::NatsServerBuilder;
pub use handle::NatsServer;
pub use leaf_remote::LeafRemote;
pub(crate) use ports::{free_ports, Reserved};
pub(crate) use ready::POLL_CLUSTER;
pub use ready::READY_TIMEOUT;
