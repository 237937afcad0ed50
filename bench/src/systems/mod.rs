//! The systems the toolkit is compared with: raw JetStream through async-nats, etcd, Redis.

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod jetstream;
#[cfg(feature = "redis")]
pub mod redis;
