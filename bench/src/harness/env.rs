//! What every metric shares: the servers, the run's size, the durability labels.

use std::time::Instant;

use kvtk_tests::NatsServer;
use serde_json::{json, Value};

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Size {
    pub quick: bool,
}

impl Size {
    /// `quick` in quick runs, `full` otherwise.
    pub(crate) fn pick<T>(self, quick: T, full: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// JetStream durability of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sync {
    /// Default `sync_interval` (file storage flushed every 2 minutes).
    Default,
    /// `sync_interval: always`: fsync before every ack, like etcd.
    Always,
}

impl Sync {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Sync::Default => "periodic fsync (nats default sync_interval 2m)",
            Sync::Always => "fsync every write (sync_interval: always)",
        }
    }
    pub(crate) fn short(self) -> &'static str {
        match self {
            Sync::Default => "default",
            Sync::Always => "sync-always",
        }
    }
}

/// The NATS servers of the run (started through the kvtk-tests kit) and the other systems'
/// endpoints (started by scripts/bench.sh).
pub(crate) struct Env {
    pub size: Size,
    pub nats_default: NatsServer,
    pub nats_always: NatsServer,
    pub nats_version: String,
    pub etcd: Option<(String, String)>,
    pub redis: Option<(String, String)>,
    pub started: Instant,
}

impl Env {
    pub(crate) fn nats(&self, sync: Sync) -> &NatsServer {
        match sync {
            Sync::Default => &self.nats_default,
            Sync::Always => &self.nats_always,
        }
    }

    pub(crate) fn url(&self, sync: Sync) -> String {
        self.nats(sync).client_url()
    }

    /// The `config` of a NATS row.
    pub(crate) fn nats_config(&self, sync: Sync, ttl_s: Option<u64>) -> Value {
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

    pub(crate) fn etcd_config(&self, ttl_s: Option<u64>) -> Value {
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

    pub(crate) fn redis_config(&self, ttl_s: Option<u64>) -> Value {
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

    pub(crate) fn progress(&self, what: &str) {
        eprintln!("[{:>6.1}s] {what}", self.started.elapsed().as_secs_f64());
    }
}

/// Adds `more` to a JSON object.
pub(crate) fn with(mut v: Value, more: Value) -> Value {
    if let (Some(a), Some(b)) = (v.as_object_mut(), more.as_object()) {
        for (k, x) in b {
            a.insert(k.clone(), x.clone());
        }
    }
    v
}

pub(crate) type BoxError = Box<dyn std::error::Error + Send + std::marker::Sync>;
