//! # kv-locks
//!
//! Distributed mutex and semaphore on a NATS JetStream KV bucket: server-side leases with
//! renewal, self-demotion, fencing tokens and fair hand-off without polling.
//!
//! This crate is being built; today it holds the lease arithmetic ([`lease`]) shared with
//! kv-leader, and the error type.
#![doc(test(attr(deny(warnings))))]

pub mod error;
pub mod lease;

pub use error::{Error, ErrorKind};
