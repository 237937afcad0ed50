//! The systems the toolkit is compared with: raw JetStream through async-nats, etcd, Redis.

#[cfg(feature = "etcd")]
pub(crate) mod etcd;
pub(crate) mod jetstream;
#[cfg(feature = "redis")]
pub(crate) mod redis;
