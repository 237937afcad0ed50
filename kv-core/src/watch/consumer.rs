//! The push consumer a watch reads through, managed by hand so that every disruption shows.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::StatusCode;
use async_nats::Subscriber;
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::time::Instant;

use crate::bucket::inner::Inner;
use crate::error::{Error, ErrorKind, Operation};
use crate::js::Js;

/// How long without any message or heartbeat before a consumer is presumed dead.
const HEARTBEAT: Duration = Duration::from_secs(2);

/// One delivered message with its JetStream metadata.
pub(super) struct Delivery {
    pub(super) message: async_nats::Message,
    pub(super) stream_seq: u64,
    /// How many more messages the consumer had for us after this one.
    pub(super) pending: u64,
    pub(super) published: time::OffsetDateTime,
}

/// A push consumer managed by hand, so that every disruption is visible: a skipped consumer
/// sequence (deliveries lost while disconnected), missing heartbeats (server restarted, consumer
/// gone) or a closed subscription all end it, and the watch re-creates it from its own resume
/// point. (async-nats' ordered consumer re-creates itself silently from its own idea of the
/// resume point, which hides gaps.)
pub(super) struct Consumer {
    client: async_nats::Client,
    sub: Subscriber,
    /// The server's name for it, to delete it when we replace or drop it.
    pub(super) name: String,
    js: Js,
    stream: String,
    /// What it had to deliver when it was made (0: the snapshot is already over).
    pub(super) num_pending: u64,
    last_cseq: u64,
    deadline: Instant,
    /// The client's connection count when the consumer was made: a reconnect since means
    /// the consumer may have skipped what the server removed meanwhile, so we re-check.
    connects: u64,
}

impl Consumer {
    /// Makes a consumer of `subjects` starting at `policy`, delivering to a new inbox of the
    /// bucket's client; `paced`: with flow control.
    pub(super) async fn create(
        inner: &Inner,
        subjects: &[String],
        policy: DeliverPolicy,
        meta_only: bool,
        paced: bool,
    ) -> Result<Consumer, Error> {
        let client = inner.js.client.clone();
        inner.js.ensure_janitor();
        let connects = client.statistics().connects.load(Ordering::Relaxed);
        let inbox = client.new_inbox();
        let since = std::time::Instant::now();
        // Subscribe first: the consumer starts pushing as soon as it exists.
        let sub = client.subscribe(inbox.clone()).await.map_err(|e| {
            Error::new(ErrorKind::Connection, "cannot subscribe")
                .with_source(e)
                .with_op(Operation::Watch)
        })?;
        let name = format!("kvw_{}", uuid::Uuid::new_v4().simple());
        let config = config(&inbox, &name, subjects, policy, meta_only, paced);
        let created = send_create(inner, &name, subjects, config).await?;
        // The server answers a refused subscription before it handles the create request
        // sent after it on the same connection, so the refusal is known by now.
        if let Some(e) = inner.js.refused_subscription(&inbox, since) {
            inner.js.delete_consumer_later(&inner.stream, &name);
            return Err(e.with_op(Operation::Watch));
        }
        Ok(Consumer {
            client,
            sub,
            js: inner.js.clone(),
            stream: inner.stream.clone(),
            name: created.name,
            num_pending: created.num_pending,
            last_cseq: 0,
            deadline: Instant::now() + HEARTBEAT * 2,
            connects,
        })
    }

    /// The next data message, answering flow control on the way. An `Err` names why the
    /// consumer can no longer be trusted.
    pub(super) async fn next(&mut self) -> Result<Delivery, &'static str> {
        loop {
            let msg = match tokio::time::timeout_at(self.deadline, self.sub.next()).await {
                Err(_) => return Err("missed heartbeats"),
                Ok(None) => return Err("subscription closed"),
                Ok(Some(m)) => m,
            };
            self.deadline = Instant::now() + HEARTBEAT * 2;
            if self.client.statistics().connects.load(Ordering::Relaxed) != self.connects {
                return Err("client reconnected");
            }
            if msg.status == Some(StatusCode::IDLE_HEARTBEAT) {
                if let Some(reply) = msg.reply.clone() {
                    // Flow control: the server waits for this before sending more.
                    if self.client.publish(reply, Bytes::new()).await.is_err() {
                        return Err("cannot answer flow control");
                    }
                }
                let last = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Last-Consumer"))
                    .and_then(|v| v.as_str().parse::<u64>().ok());
                if last.is_some_and(|l| l > self.last_cseq) {
                    return Err("heartbeat shows deliveries we never got");
                }
                continue;
            }
            if msg.status.is_some() {
                // 409 consumer deleted and friends.
                return Err("consumer ended by the server");
            }
            let Some(reply) = msg.reply.as_ref() else {
                continue;
            };
            let Some(meta) = parse_ack_subject(reply.as_str()) else {
                continue;
            };
            if meta.cseq != self.last_cseq + 1 {
                return Err("consumer sequence skipped");
            }
            self.last_cseq = meta.cseq;
            return Ok(Delivery {
                message: msg,
                stream_seq: meta.sseq,
                pending: meta.pending,
                published: meta.published,
            });
        }
    }
}

/// The consumer's configuration: push to `deliver`, no acks, memory, one replica, the
/// heartbeat the watch trusts, and the start `policy`.
fn config(
    deliver: &str,
    name: &str,
    subjects: &[String],
    policy: DeliverPolicy,
    meta_only: bool,
    paced: bool,
) -> serde_json::Value {
    let mut config = serde_json::json!({
        "name": name,
        "deliver_subject": deliver,
        "ack_policy": "none",
        "max_deliver": 1,
        // See "Pacing" in the `watch` module docs.
        "flow_control": paced,
        "idle_heartbeat": HEARTBEAT.as_nanos() as u64,
        "headers_only": meta_only,
        "mem_storage": true,
        "num_replicas": 1,
        // Only counts while nobody listens: a live watch always does.
        "inactive_threshold": Duration::from_secs(10).as_nanos() as u64,
        "replay_policy": "instant",
    });
    let policy_json = serde_json::to_value(policy).unwrap_or_default();
    if let (Some(c), Some(p)) = (config.as_object_mut(), policy_json.as_object()) {
        for (k, v) in p {
            c.insert(k.clone(), v.clone());
        }
        match subjects {
            [one] => c.insert("filter_subject".into(), one.clone().into()),
            _ => c.insert("filter_subjects".into(), subjects.to_vec().into()),
        };
    }
    config
}

/// The server's answer to a consumer create.
#[derive(serde::Deserialize)]
struct Created {
    #[serde(default)]
    name: String,
    #[serde(default)]
    num_pending: u64,
}

/// Creates the consumer `name` with `config`. Named, with the filter in the subject
/// (`CONSUMER.CREATE.<stream>.<name>.<filter>`), so a user's publish permissions can confine
/// which keys it may watch.
async fn send_create(
    inner: &Inner,
    name: &str,
    subjects: &[String],
    config: serde_json::Value,
) -> Result<Created, Error> {
    let create = match subjects {
        [one] => format!("CONSUMER.CREATE.{}.{name}.{one}", inner.stream),
        _ => format!("CONSUMER.CREATE.{}.{name}", inner.stream),
    };
    let body = serde_json::json!({ "stream_name": inner.stream, "config": config });
    inner
        .js
        .api(&create, Bytes::from(body.to_string()))
        .await
        .map_err(|e| e.with_op(Operation::Watch))
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Without this, every dropped watch would leave its consumer on the server until the
        // inactivity threshold: thousands of them for a busy lock, up to the server's limit.
        if !self.name.is_empty() {
            self.js.delete_consumer_later(&self.stream, &self.name);
        }
    }
}

struct AckMeta {
    sseq: u64,
    cseq: u64,
    pending: u64,
    published: time::OffsetDateTime,
}

/// Parses `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>` (v1) or the
/// v2 form with domain and account hash before the stream (and an optional trailing token).
fn parse_ack_subject(s: &str) -> Option<AckMeta> {
    // Called for every delivered message: tokens on the stack, no allocation.
    let mut t: [&str; 12] = [""; 12];
    let mut len = 0;
    for tok in s.split('.') {
        if len == t.len() {
            return None;
        }
        t[len] = tok;
        len += 1;
    }
    if len < 9 || t[0] != "$JS" || t[1] != "ACK" {
        return None;
    }
    // v1 has exactly 9 tokens; v2 has at least 11, numbers start at index 6 (v2: after
    // domain, hash, stream, consumer).
    let base = if len == 9 { 4 } else { 6 };
    let n = |i: usize| {
        t.get(base + i)
            .filter(|_| base + i < len)
            .and_then(|x| x.parse::<u64>().ok())
    };
    let ts = i128::from(n(3)?);
    Some(AckMeta {
        sseq: n(1)?,
        cseq: n(2)?,
        pending: n(4)?,
        published: time::OffsetDateTime::from_unix_timestamp_nanos(ts)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn ack_subjects_never_panic(s in "[$A-Za-z0-9.]{0,80}") {
            let _ = parse_ack_subject(&s);
        }

        #[test]
        fn ack_subjects_round_trip(sseq: u64, cseq: u64, pending: u64, ts in 0i64..4_000_000_000_000_000_000, v2: bool) {
            let head = if v2 { "$JS.ACK.dom.hash.KV_b.cons" } else { "$JS.ACK.KV_b.cons" };
            let m = parse_ack_subject(&format!("{head}.1.{sseq}.{cseq}.{ts}.{pending}")).unwrap();
            proptest::prop_assert_eq!((m.sseq, m.cseq, m.pending), (sseq, cseq, pending));
            proptest::prop_assert_eq!(m.published.unix_timestamp_nanos(), i128::from(ts));
        }
    }

    #[test]
    fn ack_subjects() {
        let m = parse_ack_subject("$JS.ACK.KV_b.cons.1.42.7.1700000000000000000.3").unwrap();
        assert_eq!((m.sseq, m.cseq, m.pending), (42, 7, 3));
        let m = parse_ack_subject("$JS.ACK.dom.hash.KV_b.cons.1.42.7.1700000000000000000.3.tok")
            .unwrap();
        assert_eq!((m.sseq, m.cseq, m.pending), (42, 7, 3));
        assert!(parse_ack_subject("$JS.ACK.x").is_none());
        assert!(parse_ack_subject("foo.bar.a.b.c.d.e.f.g").is_none());
    }
}
