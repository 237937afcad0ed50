//! What the server reports about a bucket's stream, for tools that judge a deployment without
//! opening the bucket or sending JetStream requests of their own.

use std::time::Duration;

use async_nats::jetstream::stream;
use tracing::Instrument as _;

use crate::client::Kv;
use crate::config::validate_bucket_name;
use crate::error::{Error, Operation};

impl Kv {
    /// The stream info of bucket `name`'s backing stream (`KV_<name>`), fresh from the
    /// server in one request: its configuration (replicas, storage, persist mode, per-key
    /// TTLs, atomic batches, history, mirror, max age), its state and, in a cluster, its
    /// leader and replicas. Unlike [`ReadOnlyBucket::status`](crate::ReadOnlyBucket::status)
    /// it needs no opened handle, so it also works on buckets this process does not use.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for an invalid bucket
    /// name (before any request), [`ErrorKind::BucketNotFound`](crate::ErrorKind::BucketNotFound),
    /// or the request's own failures (timeout, lost connection, refused permission). The
    /// error's operation is [`Operation::Status`].
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn stream_info(&self, name: &str) -> Result<stream::Info, Error> {
        validate_bucket_name(name).map_err(|e| e.with_op(Operation::Status))?;
        let span = tracing::debug_span!("kv.stream_info", bucket = %name);
        self.js()
            .stream_info(&format!("KV_{name}"))
            .instrument(span)
            .await
            .map_err(|e| e.with_op(Operation::Status))
    }

    /// The timeout of every request of this handle (the client's request timeout, 5 s
    /// without one, or what [`Kv::with_timeout`] set), for tools that send requests beside it
    /// and should give up when it would.
    pub fn timeout(&self) -> Duration {
        self.js().timeout
    }
}
