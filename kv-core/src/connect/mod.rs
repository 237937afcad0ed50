//! [`Connect`]: how a [`Kv`](crate::Kv) reaches a production NATS deployment — several
//! servers, credentials, TLS, a `nats` CLI context — and learns of the server's permission
//! errors.
//!
//! By role: `builder.rs` holds the settings, `servers.rs` server URLs (and credentials in
//! them), `auth.rs` the ways to authenticate, `context.rs` `nats` CLI contexts, and `open.rs`
//! connecting with all of them.

mod auth;
mod builder;
mod context;
mod open;
mod servers;

pub use builder::Connect;

#[cfg(test)]
mod tests;
