//! What every metric shares: the servers, the run's size, raw JetStream requests.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use kv_tests::NatsServer;
use serde_json::{json, Value};

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub quick: bool,
}

impl Size {
    /// `quick` in quick runs, `full` otherwise.
    pub fn pick<T>(self, quick: T, full: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// JetStream durability of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// Default `sync_interval` (file storage flushed every 2 minutes).
    Default,
    /// `sync_interval: always`: fsync before every ack, like etcd.
    Always,
}

impl Sync {
    pub fn label(self) -> &'static str {
        match self {
            Sync::Default => "periodic fsync (nats default sync_interval 2m)",
            Sync::Always => "fsync every write (sync_interval: always)",
        }
    }
    pub fn short(self) -> &'static str {
        match self {
            Sync::Default => "default",
            Sync::Always => "sync-always",
        }
    }
}

/// The NATS servers of the run (started through the kv-tests kit) and the other systems'
/// endpoints (started by scripts/bench.sh).
pub struct Env {
    pub size: Size,
    pub nats_default: NatsServer,
    pub nats_always: NatsServer,
    pub nats_version: String,
    pub etcd: Option<(String, String)>,
    pub redis: Option<(String, String)>,
    pub started: Instant,
}

impl Env {
    pub fn nats(&self, sync: Sync) -> &NatsServer {
        match sync {
            Sync::Default => &self.nats_default,
            Sync::Always => &self.nats_always,
        }
    }

    pub fn url(&self, sync: Sync) -> String {
        self.nats(sync).client_url()
    }

    /// The `config` of a NATS row.
    pub fn nats_config(&self, sync: Sync, ttl_s: Option<u64>) -> Value {
        json!({
            "server": format!("nats-server {}", self.nats_version),
            "client": "async-nats 0.51",
            "storage": "file",
            "fsync": sync.short(),
            "durability": sync.label(),
            "replicas": 1,
            "ttl_s": ttl_s,
        })
    }

    pub fn etcd_config(&self, ttl_s: Option<u64>) -> Value {
        json!({
            "server": format!("etcd {}", self.etcd.as_ref().map_or("?", |e| e.1.as_str())),
            "client": "etcd-client 0.21",
            "storage": "bbolt + WAL (file)",
            "fsync": "fsync-every-write",
            "durability": "fsync every write (etcd default)",
            "replicas": 1,
            "ttl_s": ttl_s,
        })
    }

    pub fn redis_config(&self, ttl_s: Option<u64>) -> Value {
        json!({
            "server": format!("redis {}", self.redis.as_ref().map_or("?", |e| e.1.as_str())),
            "client": "rslock 0.10 (Redlock, one instance)",
            "storage": "memory (--save '', no AOF)",
            "fsync": "none",
            "durability": "none (in memory)",
            "replicas": 1,
            "ttl_s": ttl_s,
        })
    }

    pub fn progress(&self, what: &str) {
        eprintln!("[{:>6.1}s] {what}", self.started.elapsed().as_secs_f64());
    }
}

/// Adds `more` to a JSON object.
pub fn with(mut v: Value, more: Value) -> Value {
    if let (Some(a), Some(b)) = (v.as_object_mut(), more.as_object()) {
        for (k, x) in b {
            a.insert(k.clone(), x.clone());
        }
    }
    v
}

pub type BoxError = Box<dyn std::error::Error + Send + std::marker::Sync>;

/// A raw JetStream write failed.
#[derive(Debug)]
pub enum RawError {
    /// The server refused it with this `err_code` (10071: wrong last sequence).
    Api(u64, String),
    Other(String),
}

impl RawError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, RawError::Api(10071 | 10164, _))
    }
}

impl std::fmt::Display for RawError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RawError::Api(c, d) => write!(f, "jetstream error {c}: {d}"),
            RawError::Other(s) => write!(f, "{s}"),
        }
    }
}
impl std::error::Error for RawError {}

#[derive(serde::Deserialize)]
struct Ack {
    seq: Option<u64>,
    error: Option<ApiErr>,
}
#[derive(serde::Deserialize)]
struct ApiErr {
    err_code: Option<u64>,
    description: Option<String>,
}

/// One JetStream write as one request, nothing else: the floor every KV write stands on.
/// Returns the stream sequence (the key's new revision).
pub async fn raw_write(
    client: &async_nats::Client,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
) -> Result<u64, RawError> {
    let msg = client
        .request_with_headers(subject, headers, payload)
        .await
        .map_err(|e| RawError::Other(e.to_string()))?;
    let ack: Ack =
        serde_json::from_slice(&msg.payload).map_err(|e| RawError::Other(e.to_string()))?;
    match (ack.seq, ack.error) {
        (_, Some(e)) => Err(RawError::Api(
            e.err_code.unwrap_or(0),
            e.description.unwrap_or_default(),
        )),
        (Some(s), None) => Ok(s),
        (None, None) => Err(RawError::Other("ack without sequence".into())),
    }
}

pub const EXPECTED_LAST_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";

/// Headers of a conditional raw write: expected last revision of the key, optional TTL, and
/// `KV-Operation: DEL` for a delete.
pub fn raw_headers(expect: u64, ttl_s: Option<u64>, delete: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(EXPECTED_LAST_SUBJECT_SEQ, expect.to_string().as_str());
    if let Some(t) = ttl_s {
        h.insert("Nats-TTL", format!("{t}s").as_str());
    }
    if delete {
        h.insert("KV-Operation", "DEL");
    }
    h
}

/// Runs `f` for at most `limit`; `None` when it took longer.
pub async fn within<T>(limit: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(limit, f).await.ok()
}

/// Counts the conditional writes to a bucket by listening on its subjects: every JetStream
/// publish is also an ordinary NATS message, so failed CAS attempts are seen too.
pub struct WriteCounter {
    pub cas: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub all: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl WriteCounter {
    pub async fn start(
        client: &async_nats::Client,
        bucket: &str,
    ) -> Result<WriteCounter, BoxError> {
        use futures::StreamExt;
        use std::sync::atomic::Ordering;
        let mut sub = client.subscribe(format!("$KV.{bucket}.>")).await?;
        client.flush().await?;
        let cas = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let all = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (c, a) = (cas.clone(), all.clone());
        let task = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                a.fetch_add(1, Ordering::Relaxed);
                let Some(h) = m.headers.as_ref() else {
                    continue;
                };
                let is_removal = h
                    .get("KV-Operation")
                    .is_some_and(|v| v.as_str() == "DEL" || v.as_str() == "PURGE");
                if h.get(EXPECTED_LAST_SUBJECT_SEQ).is_some() && !is_removal {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(WriteCounter { cas, all, task })
    }

    pub fn snapshot(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.cas.load(Ordering::Relaxed),
            self.all.load(Ordering::Relaxed),
        )
    }
}

impl Drop for WriteCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}
