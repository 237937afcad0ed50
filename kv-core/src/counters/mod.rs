//! Server-side counters (ADR-49, nats-server ≥ 2.12): the server adds each increment to the
//! subject's last value, so increments never conflict and cost one request each.
//!
//! Counters cannot live in a KV bucket (a counter stream accepts only increments), so they get
//! their own stream, `KVC_<name>`, with subjects `$KVC.<name>.<key>`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), kvtk_core::Error> {
//! # let server = kvtk_tests::NatsServer::start().await;
//! let kv = kvtk_core::Kv::connect(&server.client_url()).await?;
//! let counters = kv.counters("stats").await?;
//! assert_eq!(counters.add("hits", 1).await?, 1);
//! assert_eq!(counters.add("hits", 41).await?, 42);
//! assert_eq!(counters.get("hits").await?, 42);
//! assert_eq!(counters.get("never").await?, 0);
//! # Ok(()) }
//! ```

mod resend;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream;
use bytes::Bytes;
use serde::Deserialize;

use crate::client::Kv;
use crate::combine::{Apply, Combiner};
use crate::config::validate_bucket_name;
use crate::error::{Error, ErrorKind, Operation};
use crate::js::Js;
use crate::key::Key;
use crate::version::ServerVersion;

/// A set of server-side counters. Cheap to clone.
///
/// # Lost acknowledgements
/// An increment whose acknowledgement is lost (the add landed, the reply did not) is
/// re-sent with the same message id (`Nats-Msg-Id`) until its fate is known; the stream's
/// duplicate window makes the server store it once, however often it is re-sent. So no
/// increment is lost or counted twice, and the caller gets the value right after it. When
/// its fate cannot be learned within the resend timeout ([`Counters::with_resend_timeout`],
/// 15 s by default) the add fails with [`ErrorKind::OutcomeUnknown`]: it may or may not have
/// been applied, and repeating it blindly may count it twice. In the rare case that the
/// increment was applied but another write replaced the stored value before it could be
/// read back, the add fails with [`ErrorKind::ValueUnknown`]: counted once, value unknown.
#[derive(Debug, Clone)]
pub struct Counters {
    js: Js,
    name: String,
    stream: String,
    ids: Arc<resend::MsgIds>,
    /// The stream's duplicate window: how long the server remembers a message id.
    window: Duration,
    resend_for: Duration,
}

/// One server-side counter whose clones combine concurrent increments
/// ([`Counters::counter`]). Cheap to clone; the combining worker stops with the last clone.
#[derive(Debug, Clone)]
pub struct CounterHandle {
    counters: Counters,
    key: String,
    combiner: Arc<Combiner>,
}

impl CounterHandle {
    /// Adds `delta` (may be negative) and returns the value right after it. The combined
    /// write's lost acknowledgement is recognised as for [`Counters::add`]: every increment of
    /// the batch gets its value, or all of them the same
    /// [`ErrorKind::OutcomeUnknown`] / [`ErrorKind::ValueUnknown`] (see
    /// [Lost acknowledgements](Counters#lost-acknowledgements)).
    ///
    /// # Cancel safety
    /// Not cancel safe: once queued, the increment is applied even if the future is dropped.
    pub async fn add(&self, delta: i64) -> Result<i64, Error> {
        self.combiner.add(delta).await
    }

    /// The counter's current value.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn get(&self) -> Result<i64, Error> {
        self.counters.get(&self.key).await
    }
}

#[derive(Deserialize)]
struct CounterValue {
    val: String,
}

fn parse_value(s: &str) -> Result<i64, Error> {
    s.parse::<i64>().map_err(|_| {
        Error::new(
            ErrorKind::Codec,
            format!("counter value {s:?} does not fit in an i64"),
        )
    })
}

impl Kv {
    /// Opens (creating if needed) the counter set `name`: a stream with server-side counters.
    ///
    /// # Cancel safety
    /// Cancel safe: creating the stream is idempotent.
    pub async fn counters(&self, name: &str) -> Result<Counters, Error> {
        validate_bucket_name(name).map_err(|e| e.with_op(Operation::Bucket))?;
        let js = self.js().clone();
        js.server_version()
            .require(ServerVersion::ATOMIC_BATCH, "server-side counters")
            .map_err(|e| e.with_op(Operation::Bucket))?;
        let stream = format!("KVC_{name}");
        let cfg = stream::Config {
            name: stream.clone(),
            subjects: vec![format!("$KVC.{name}.>")],
            allow_message_counter: true,
            allow_direct: true,
            max_messages_per_subject: 1,
            duplicate_window: resend::DUPLICATE_WINDOW,
            ..Default::default()
        };
        let body = serde_json::to_vec(&cfg)
            .map_err(|e| Error::new(ErrorKind::InvalidArgument, e.to_string()))?;
        let created: Result<stream::Info, Error> = js
            .api(&format!("STREAM.CREATE.{stream}"), Bytes::from(body))
            .await;
        let window = match created {
            Ok(info) => info.config.duplicate_window,
            // Created by someone else with another configuration: use it if it counts.
            Err(e) if e.kind() == ErrorKind::BucketExists => {
                let info = js
                    .stream_info(&stream)
                    .await
                    .map_err(|e| e.with_op(Operation::Bucket))?;
                if !info.config.allow_message_counter {
                    return Err(Error::new(
                        ErrorKind::FeatureDisabled,
                        format!("stream {stream} exists without server-side counters"),
                    )
                    .with_op(Operation::Bucket));
                }
                info.config.duplicate_window
            }
            Err(e) => return Err(e.with_op(Operation::Bucket)),
        };
        Ok(Counters {
            js,
            name: name.to_string(),
            stream,
            ids: Arc::new(resend::MsgIds::new()),
            window,
            resend_for: resend::resend_bound(resend::RESEND_FOR, window),
        })
    }
}

impl Counters {
    /// The counter set's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long an increment whose acknowledgement was lost is re-sent before the add gives
    /// up with [`ErrorKind::OutcomeUnknown`]: `timeout`, at most half the stream's duplicate
    /// window (so that every re-send reaches the server while it still remembers the first
    /// one). Default 15 s; the streams this library creates keep ids for 30 s.
    pub fn with_resend_timeout(mut self, timeout: Duration) -> Counters {
        self.resend_for = resend::resend_bound(timeout, self.window);
        self
    }

    /// Adds `delta` (may be negative) to counter `key` and returns the value right after it.
    /// A lost acknowledgement is recognised: see [Lost acknowledgements](Counters#lost-acknowledgements).
    ///
    /// # Cancel safety
    /// Not cancel safe: the increment may be applied even if the future is dropped.
    pub async fn add(&self, key: impl AsRef<str>, delta: i64) -> Result<i64, Error> {
        let key = Key::new(key.as_ref()).map_err(|e| e.with_op(Operation::Put))?;
        self.add_once(format!("$KVC.{}.{}", self.name, key), delta)
            .await
            .map_err(|e| e.with_op(Operation::Put).with_key(key.as_str()))
    }

    /// A handle on counter `key` whose clones **combine** concurrent increments: one worker
    /// sends the sum of every increment queued while its previous one was in flight, so a hot
    /// counter shared by many tasks of a process costs one request per batch. Each caller
    /// still gets the value right after its own increment.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), kvtk_core::Error> {
    /// # let server = kvtk_tests::NatsServer::start().await;
    /// # let kv = kvtk_core::Kv::connect(&server.client_url()).await?;
    /// let hits = kv.counters("stats").await?.counter("hits")?;
    /// let adds = (0..8).map(|_| {
    ///     let hits = hits.clone();
    ///     async move { hits.add(1).await }
    /// });
    /// let mut seen: Vec<i64> = futures::future::try_join_all(adds).await?;
    /// seen.sort();
    /// assert_eq!(seen, (1..=8).collect::<Vec<_>>());
    /// assert_eq!(hits.get().await?, 8);
    /// # Ok(()) }
    /// ```
    pub fn counter(&self, key: impl AsRef<str>) -> Result<CounterHandle, Error> {
        let key = Key::new(key.as_ref()).map_err(|e| e.with_op(Operation::Put))?;
        let apply: Apply = {
            let (counters, key) = (self.clone(), key.as_str().to_string());
            Arc::new(move |sum| {
                let (counters, key) = (counters.clone(), key.clone());
                Box::pin(async move { counters.add(&key, sum).await })
            })
        };
        Ok(CounterHandle {
            counters: self.clone(),
            key: key.as_str().to_string(),
            combiner: Arc::new(Combiner::new(apply)),
        })
    }

    /// The current value of counter `key` (0 if it was never incremented).
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn get(&self, key: impl AsRef<str>) -> Result<i64, Error> {
        let key = Key::new(key.as_ref()).map_err(|e| e.with_op(Operation::Get))?;
        let subject = format!("$KVC.{}.{}", self.name, key);
        let m = self
            .js
            .direct_last(&self.stream, &subject)
            .await
            .map_err(|e| e.with_op(Operation::Get).with_key(key.as_str()))?;
        match m {
            None => Ok(0),
            Some(m) => {
                let v: CounterValue = serde_json::from_slice(&m.payload).map_err(|e| {
                    Error::new(ErrorKind::Codec, format!("bad counter value: {e}"))
                        .with_key(key.as_str())
                })?;
                parse_value(&v.val)
            }
        }
    }

    /// Deletes the counter set and all its counters. Returns whether it existed.
    ///
    /// # Cancel safety
    /// Not cancel safe: the stream may be deleted even if the future is dropped.
    pub async fn destroy(self) -> Result<bool, Error> {
        #[derive(Deserialize)]
        struct Deleted {
            success: bool,
        }
        match self
            .js
            .api::<Deleted>(&format!("STREAM.DELETE.{}", self.stream), Bytes::new())
            .await
        {
            Ok(d) => Ok(d.success),
            Err(e) if e.kind() == ErrorKind::BucketNotFound => Ok(false),
            Err(e) => Err(e.with_op(Operation::Bucket)),
        }
    }
}
