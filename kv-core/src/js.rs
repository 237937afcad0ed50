//! The few JetStream requests kvtk-core needs, sent as plain core NATS requests.
//!
//! Going below async-nats' JetStream publish path gives us the server's `err_code` for every
//! failure (async-nats folds 10164 into `Other`), headers it does not expose (marker reason,
//! TTL), and exactly one round trip per operation.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::Duration;

use async_nats::header::HeaderName;
use async_nats::jetstream::stream;
use async_nats::{Client, HeaderMap, Message, StatusCode, Subject};
use base64::Engine as _;
use bytes::Bytes;
use futures::future::Either;
use futures::{FutureExt as _, StreamExt as _, TryFutureExt as _};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use crate::error::{self, Error, ErrorKind};
use crate::permission::{Denied, Violations};
use crate::revision::Revision;
use crate::version::ServerVersion;

pub(crate) const EXPECTED_LAST_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
/// The status of a direct-get batch whose filter matches more than the server sends in one
/// answer (1,024 subjects).
pub(crate) const TOO_MANY_RESULTS: u16 = 413;
pub(crate) const EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: &str =
    "Nats-Expected-Last-Subject-Sequence-Subject";
pub(crate) const ROLLUP: &str = "Nats-Rollup";
pub(crate) const BATCH_ID: &str = "Nats-Batch-Id";
pub(crate) const BATCH_SEQ: &str = "Nats-Batch-Sequence";
pub(crate) const BATCH_COMMIT: &str = "Nats-Batch-Commit";
const NUM_PENDING: &str = "Nats-Num-Pending";

/// The header names above as async-nats names, made at compile time: a `&str` name that is
/// not one of async-nats' standard names is copied into a new allocation at every insert and
/// every lookup.
pub(crate) mod name {
    use async_nats::header::HeaderName;

    pub(crate) const EXPECTED_LAST_SUBJECT_SEQ: HeaderName =
        HeaderName::from_static(super::EXPECTED_LAST_SUBJECT_SEQ);
    pub(crate) const EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: HeaderName =
        HeaderName::from_static(super::EXPECTED_LAST_SUBJECT_SEQ_SUBJECT);
    pub(crate) const ROLLUP: HeaderName = HeaderName::from_static(super::ROLLUP);
    pub(crate) const BATCH_ID: HeaderName = HeaderName::from_static(super::BATCH_ID);
    pub(crate) const BATCH_SEQ: HeaderName = HeaderName::from_static(super::BATCH_SEQ);
    pub(crate) const BATCH_COMMIT: HeaderName = HeaderName::from_static(super::BATCH_COMMIT);
    pub(crate) const NUM_PENDING: HeaderName = HeaderName::from_static(super::NUM_PENDING);
    pub(crate) const UP_TO_SEQUENCE: HeaderName = HeaderName::from_static("Nats-UpTo-Sequence");
    pub(crate) const SEQUENCE: HeaderName = HeaderName::from_static("Nats-Sequence");
    pub(crate) const TIME_STAMP: HeaderName = HeaderName::from_static("Nats-Time-Stamp");
    pub(crate) const SUBJECT: HeaderName = HeaderName::from_static("Nats-Subject");
}
/// How long a server version read from `INFO` is used without reading it again.
const VERSION_MAX_AGE: Duration = Duration::from_secs(1);

/// The JetStream API, reached over one client.
#[derive(Debug, Clone)]
pub(crate) struct Js {
    pub(crate) client: Client,
    pub(crate) api: String,
    pub(crate) timeout: Duration,
    /// Overrides the version the server announces (tests of old-server behaviour).
    pub(crate) assumed_version: Option<ServerVersion>,
    /// The server version last read from `INFO`: (connection count, when, version); see
    /// [`Js::server_version`]. Shared by every clone of this handle.
    pub(crate) version_seen: Arc<StdMutex<Option<(u64, std::time::Instant, ServerVersion)>>>,
    /// Deletes the consumers of dropped watches (shared by every clone of this handle).
    pub(crate) janitor: Arc<OnceLock<Janitor>>,
    /// The connection's permission violations, when a [`crate::Connect`] made it and listens
    /// for them; without it a refused request ends as [`ErrorKind::Timeout`].
    pub(crate) violations: Option<Arc<Violations>>,
}

/// How many consumer deletes the janitor keeps in flight. One at a time, the deletes of a
/// busy lock bucket's waiters fell behind on a replicated bucket (each is a proposal of the
/// meta group): chaos counted up to 950 deleted-but-not-yet watches' consumers on one stream,
/// past nats-server 2.15's default limit of 1,000 consumers per stream, and waiters failed
/// with "maximum consumers limit reached".
const JANITOR_IN_FLIGHT: usize = 32;

/// A task that deletes server-side consumers of watches that were dropped: `Drop` cannot
/// await, so it hands the consumer's name over. Owned by the `Js` clones that share it: the
/// task stops when the last one is dropped (a consumer it did not get to is removed by the
/// server after its inactivity threshold).
#[derive(Debug)]
pub(crate) struct Janitor {
    tx: mpsc::UnboundedSender<String>,
    _task: AbortOnDropHandle<()>,
}

impl Js {
    /// Starts the janitor if needed. Call from async code (it spawns a task).
    pub(crate) fn ensure_janitor(&self) {
        self.janitor.get_or_init(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            let client = self.client.clone();
            let timeout = self.timeout;
            let deletes = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
            let task = tokio::spawn(deletes.for_each_concurrent(JANITOR_IN_FLIGHT, move |subject| {
                let (client, req) = (client.clone(), async_nats::Request::new().timeout(Some(timeout)));
                async move {
                    if let Err(e) = client.send_request(subject, req).await {
                        tracing::debug!(error = %e, "could not delete a dropped watch's consumer");
                    }
                }
            }));
            Janitor {
                tx,
                _task: AbortOnDropHandle::new(task),
            }
        });
    }

    /// Deletes a consumer in the background (never blocks; safe in `Drop`).
    pub(crate) fn delete_consumer_later(&self, stream: &str, consumer: &str) {
        if let Some(j) = self.janitor.get() {
            let _ =
                j.tx.send(format!("{}.CONSUMER.DELETE.{stream}.{consumer}", self.api));
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ApiError {
    #[serde(default)]
    pub(crate) err_code: u64,
    #[serde(default)]
    pub(crate) description: String,
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: Option<ApiError>,
}

/// A publish acknowledgement.
#[derive(Debug, Deserialize)]
pub(crate) struct PubAck {
    pub(crate) seq: u64,
    #[serde(default)]
    pub(crate) count: Option<u64>,
}

/// A stored message, as read back.
#[derive(Debug, Clone)]
pub(crate) struct StoredMsg {
    pub(crate) subject: String,
    pub(crate) seq: u64,
    pub(crate) time: OffsetDateTime,
    pub(crate) headers: Option<HeaderMap>,
    pub(crate) payload: Bytes,
}

/// A publish acknowledgement or its error, read in one pass.
#[derive(Debug, Deserialize)]
struct AckAnswer {
    #[serde(default)]
    error: Option<ApiError>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    count: Option<u64>,
}

/// Parses a publish's answer as [`parse_api`] does, reading a well-formed answer once
/// instead of twice; anything else goes through [`parse_api`], which says what is wrong.
pub(crate) fn parse_ack(payload: &[u8]) -> Result<PubAck, Error> {
    match serde_json::from_slice::<AckAnswer>(payload) {
        Ok(AckAnswer { error: Some(e), .. }) => Err(error::from_api(e.err_code, &e.description)),
        Ok(AckAnswer {
            seq: Some(seq),
            count,
            ..
        }) => Ok(PubAck { seq, count }),
        _ => parse_api(payload),
    }
}

/// Parses a JetStream API answer: either `{"error": {...}}` or the expected body.
pub(crate) fn parse_api<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Error> {
    if let Ok(ErrorEnvelope { error: Some(e) }) = serde_json::from_slice(payload) {
        return Err(error::from_api(e.err_code, &e.description));
    }
    serde_json::from_slice(payload).map_err(|e| {
        Error::new(ErrorKind::Server, "unexpected answer from the server").with_source(e)
    })
}

impl Js {
    /// The version of the server the client is connected to now. Read from the latest
    /// `INFO`, so a client that connected late (retry on initial connect) or reconnected to
    /// another server reports the right one.
    ///
    /// Asking async-nats copies its whole `ServerInfo` (a dozen strings), which every write
    /// with a TTL did; the version read is kept while the connection count is unchanged, for
    /// at most [`VERSION_MAX_AGE`]. async-nats counts a new connection just before it
    /// publishes the new server's `INFO`, so a read in between sees the previous server's
    /// version: the age bound is how long that can last. A version that does not parse (no
    /// `INFO` yet) is not kept.
    pub(crate) fn server_version(&self) -> ServerVersion {
        if let Some(v) = self.assumed_version {
            return v;
        }
        let connects = self.client.statistics().connects.load(Ordering::Relaxed);
        let now = std::time::Instant::now();
        let mut seen = self.version_seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((c, at, v)) = *seen {
            if c == connects && now.duration_since(at) < VERSION_MAX_AGE {
                return v;
            }
        }
        let Some(v) = ServerVersion::parse(&self.client.server_info().version) else {
            return ServerVersion::new(0, 0, 0);
        };
        *seen = Some((connects, now, v));
        v
    }

    /// Sends a request and waits for its reply. A [`Subject`] made from a `String` shares
    /// its bytes: the subject is not copied again on its way to the connection (async-nats
    /// copies a `String` subject; a write keeps its subject to name its key in errors).
    ///
    /// The request is made here, before the future: the future holds async-nats' own
    /// (about 1 KB), and without a violations list nothing more.
    pub(crate) fn request(
        &self,
        subject: impl Into<Subject>,
        headers: Option<HeaderMap>,
        payload: Bytes,
    ) -> impl Future<Output = Result<Message, Error>> + Send + '_ {
        let mut req = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(self.timeout));
        if let Some(h) = headers {
            req = req.headers(h);
        }
        let subject = subject.into();
        match &self.violations {
            None => Either::Left(
                self.client
                    .send_request(subject, req)
                    .map_err(error::from_request),
            ),
            Some(violations) => Either::Right(violations.refusable(&self.client, subject, req)),
        }
    }

    /// Runs `fut` unless a publish to `subject` sent at `since` is refused first.
    async fn unless_refused<T>(
        &self,
        subject: &str,
        since: std::time::Instant,
        fut: impl Future<Output = T>,
    ) -> Result<T, Error> {
        let Some(violations) = &self.violations else {
            return Ok(fut.await);
        };
        tokio::select! {
            biased;
            out = fut => Ok(out),
            v = violations.refusing(subject, since) => Err(v.error()),
        }
    }

    /// The permission violation that refused a subscription to `subject` made at `since`.
    pub(crate) fn refused_subscription(
        &self,
        subject: &str,
        since: std::time::Instant,
    ) -> Option<Error> {
        self.violations
            .as_ref()?
            .find(Denied::Subscribe, subject, since)
            .map(|v| v.error())
    }

    /// Publishes into a stream and waits for the ack.
    pub(crate) fn publish(
        &self,
        subject: Subject,
        headers: HeaderMap,
        payload: Bytes,
    ) -> impl Future<Output = Result<PubAck, Error>> + Send + '_ {
        // A plain put carries no headers at all: the same bytes on the wire as a raw publish.
        let headers = (!headers.is_empty()).then_some(headers);
        self.request(subject, headers, payload)
            .map(|reply| reply.and_then(|msg| parse_ack(&msg.payload)))
    }

    /// Calls `$JS.API.<what>` with a JSON body.
    pub(crate) async fn api<T: DeserializeOwned>(
        &self,
        what: &str,
        body: Bytes,
    ) -> Result<T, Error> {
        let msg = self
            .request(format!("{}.{}", self.api, what), None, body)
            .await?;
        parse_api(&msg.payload)
    }

    /// The info (configuration and state) of `stream`, fresh from the server.
    pub(crate) async fn stream_info(&self, stream: &str) -> Result<stream::Info, Error> {
        self.api(&format!("STREAM.INFO.{stream}"), Bytes::new())
            .await
    }

    /// Direct get of the last message on `subject` (any replica may answer).
    pub(crate) async fn direct_last(
        &self,
        stream: &str,
        subject: &str,
    ) -> Result<Option<StoredMsg>, Error> {
        let subject = format!("{}.DIRECT.GET.{stream}.{subject}", self.api);
        self.served(|| async {
            direct_answer(self.request(subject.as_str(), None, Bytes::new()).await?)
        })
        .await
    }

    /// Direct get of the message at `seq`.
    pub(crate) async fn direct_seq(
        &self,
        stream: &str,
        seq: u64,
    ) -> Result<Option<StoredMsg>, Error> {
        let body = Bytes::from(format!("{{\"seq\":{seq}}}"));
        let subject = format!("{}.DIRECT.GET.{stream}", self.api);
        self.served(|| async {
            direct_answer(self.request(subject.as_str(), None, body.clone()).await?)
        })
        .await
    }

    /// Runs a direct get again while nobody answers it (`Unavailable`: no replica's direct-get
    /// subscription reached this server yet — right after a replicated bucket is made, its
    /// replicas' interest travels to the other servers for a moment — or no connection),
    /// within one request timeout. A direct get only reads, so asking again is safe.
    async fn served<T, F, Fut>(&self, op: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        crate::retry::Backoff::DEFAULT
            .retry_for(self.timeout, op)
            .await
    }

    /// Direct get batch: the last message of every subject matching `filter` (at or below
    /// `up_to`, when given), and the stream sequence the answer is consistent at (`None`
    /// when nothing matched).
    pub(crate) async fn direct_multi_last(
        &self,
        stream: &str,
        filter: &str,
        up_to: Option<Revision>,
    ) -> Result<(Vec<StoredMsg>, Option<Revision>), Error> {
        let mut body = serde_json::json!({ "multi_last": [filter] });
        if let (Some(r), Some(b)) = (up_to, body.as_object_mut()) {
            b.insert("up_to_seq".into(), r.get().into());
        }
        let batch = self.served(|| self.direct_batch(stream, body.clone()));
        let Some((out, eob)) = batch.await? else {
            return Ok((Vec::new(), None));
        };
        if header_u64(Some(&eob), name::NUM_PENDING).unwrap_or(0) > 0 {
            return Err(Error::new(
                ErrorKind::Server,
                "too many keys for one snapshot request",
            ));
        }
        let as_of = header_u64(Some(&eob), name::UP_TO_SEQUENCE).and_then(Revision::new);
        Ok((out, as_of))
    }

    /// The first message at or after `seq` (on `subject`, or on any subject), and how many
    /// messages the stream stores after it (on that subject, or on any), read in one request.
    pub(crate) async fn direct_first(
        &self,
        stream: &str,
        seq: u64,
        subject: Option<&str>,
    ) -> Result<Option<(u64, u64)>, Error> {
        let mut body = serde_json::json!({ "seq": seq, "batch": 1 });
        if let (Some(s), Some(b)) = (subject, body.as_object_mut()) {
            b.insert("next_by_subj".into(), s.into());
        }
        let batch = self.served(|| self.direct_batch(stream, body.clone()));
        let Some((msgs, _)) = batch.await? else {
            return Ok(None);
        };
        let Some(m) = msgs.first() else {
            return Ok(None);
        };
        let pending = header_u64(m.headers.as_ref(), name::NUM_PENDING).ok_or_else(|| {
            Error::new(
                ErrorKind::Server,
                "direct get batch answer without Nats-Num-Pending",
            )
        })?;
        Ok(Some((m.seq, pending)))
    }

    /// Sends a direct get batch request and collects its messages up to the end-of-batch
    /// marker, whose headers it returns; `None` when nothing matched.
    async fn direct_batch(
        &self,
        stream: &str,
        body: serde_json::Value,
    ) -> Result<Option<(Vec<StoredMsg>, HeaderMap)>, Error> {
        use futures::StreamExt as _;
        let inbox = self.client.new_inbox();
        let since = std::time::Instant::now();
        let mut sub =
            self.client.subscribe(inbox.clone()).await.map_err(|e| {
                Error::new(ErrorKind::Connection, "cannot subscribe").with_source(e)
            })?;
        self.client
            .publish_with_reply(
                format!("{}.DIRECT.GET.{stream}", self.api),
                inbox.clone(),
                body.to_string().into(),
            )
            .await
            .map_err(|e| Error::new(ErrorKind::Connection, "cannot publish").with_source(e))?;
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let subject = format!("{}.DIRECT.GET.{stream}", self.api);
        loop {
            let next = tokio::time::timeout_at(deadline, sub.next());
            let msg = match self.unless_refused(&subject, since, next).await {
                Err(refused) => return Err(refused),
                Ok(Err(_)) => {
                    let refused = self.refused_subscription(&inbox, since);
                    return Err(refused.unwrap_or_else(|| {
                        Error::new(ErrorKind::Timeout, "direct get timed out")
                    }));
                }
                Ok(Ok(None)) => return Err(Error::new(ErrorKind::Connection, "connection closed")),
                Ok(Ok(Some(m))) => m,
            };
            match msg.status {
                Some(StatusCode::NOT_FOUND) => return Ok(None),
                Some(s) if s.as_u16() == 204 => {
                    return Ok(Some((out, msg.headers.unwrap_or_default())));
                }
                Some(s) if s.as_u16() == TOO_MANY_RESULTS => {
                    return Err(Error::new(
                        ErrorKind::Server,
                        "too many keys for one direct-get snapshot",
                    )
                    .with_code(u64::from(TOO_MANY_RESULTS)));
                }
                _ => {
                    if let Some(m) = direct_answer(msg)? {
                        out.push(m);
                    }
                }
            }
        }
    }

    /// Leader get (`STREAM.MSG.GET`): answered by the stream leader, so never stale.
    pub(crate) async fn leader_get(
        &self,
        stream: &str,
        query: serde_json::Value,
    ) -> Result<Option<StoredMsg>, Error> {
        #[derive(Deserialize)]
        struct Raw {
            subject: String,
            seq: u64,
            #[serde(default)]
            hdrs: Option<String>,
            #[serde(default)]
            data: Option<String>,
            #[serde(with = "time::serde::rfc3339")]
            time: OffsetDateTime,
        }
        #[derive(Deserialize)]
        struct Answer {
            message: Raw,
        }
        let body = Bytes::from(query.to_string());
        let res: Result<Answer, Error> = self.api(&format!("STREAM.MSG.GET.{stream}"), body).await;
        let raw = match res {
            Ok(a) => a.message,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let decode = |s: Option<String>| -> Result<Bytes, Error> {
            match s {
                None => Ok(Bytes::new()),
                Some(s) => b64.decode(s).map(Bytes::from).map_err(|e| {
                    Error::new(ErrorKind::Server, format!("bad base64 from server: {e}"))
                }),
            }
        };
        let hdr_bytes = decode(raw.hdrs)?;
        Ok(Some(StoredMsg {
            subject: raw.subject,
            seq: raw.seq,
            time: raw.time,
            headers: parse_header_block(&hdr_bytes),
            payload: decode(raw.data)?,
        }))
    }
}

/// A numeric header, if present and well formed.
fn header_u64(h: Option<&HeaderMap>, name: HeaderName) -> Option<u64> {
    h?.get(name)?.as_str().parse().ok()
}

fn direct_answer(msg: Message) -> Result<Option<StoredMsg>, Error> {
    match msg.status {
        Some(StatusCode::NOT_FOUND) => return Ok(None),
        Some(StatusCode::NO_RESPONDERS) => {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "no replica answers direct gets for the bucket",
            ))
        }
        Some(s) if s != StatusCode::OK => {
            return Err(Error::new(
                ErrorKind::Server,
                format!(
                    "direct get failed: {} {}",
                    s,
                    msg.description.as_deref().unwrap_or("")
                ),
            ))
        }
        _ => {}
    }
    let h = msg
        .headers
        .ok_or_else(|| Error::new(ErrorKind::Server, "direct get answer without headers"))?;
    let seq = header_u64(Some(&h), name::SEQUENCE)
        .ok_or_else(|| Error::new(ErrorKind::Server, "direct get answer without sequence"))?;
    let time = h
        .get(name::TIME_STAMP)
        .and_then(|v| {
            OffsetDateTime::parse(v.as_str(), &time::format_description::well_known::Rfc3339).ok()
        })
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let subject = h
        .get(name::SUBJECT)
        .map(|v| v.as_str().to_string())
        .unwrap_or_default();
    Ok(Some(StoredMsg {
        subject,
        seq,
        time,
        headers: Some(h),
        payload: msg.payload,
    }))
}

/// Parses a `NATS/1.0` header block as stored by the server.
fn parse_header_block(b: &[u8]) -> Option<HeaderMap> {
    let text = std::str::from_utf8(b).ok()?;
    let mut lines = text.split("\r\n");
    let first = lines.next()?;
    if !first.starts_with("NATS/1.0") {
        return None;
    }
    let mut h = HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            h.append(k.trim(), v.trim());
        }
    }
    Some(h)
}

#[cfg(test)]
mod tests;
