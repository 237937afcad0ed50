//! Raw JetStream requests through async-nats: the floors the toolkit's operations stand on.

use async_nats::HeaderMap;
use bytes::Bytes;

/// A raw JetStream write failed.
#[derive(Debug)]
pub(crate) enum RawError {
    /// The server refused it with this `err_code` (10071: wrong last sequence).
    Api(u64, String),
    Other(String),
}

impl RawError {
    pub(crate) fn is_conflict(&self) -> bool {
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
pub(crate) async fn raw_write(
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

pub(crate) const EXPECTED_LAST_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";

/// Headers of a conditional raw write: expected last revision of the key, optional TTL, and
/// `KV-Operation: DEL` for a delete.
pub(crate) fn raw_headers(expect: u64, ttl_s: Option<u64>, delete: bool) -> HeaderMap {
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
