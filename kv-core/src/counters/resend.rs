//! Increments whose acknowledgement was lost: recognised, never applied twice.
//!
//! Every increment carries a message id (`Nats-Msg-Id`) of its own and is re-sent with the
//! same id until its fate is known. The stream remembers the ids it stored for its duplicate
//! window: a re-sent increment that had landed is not applied again, the server answers
//! `"duplicate": true` with the sequence of the stored one (nats-server `stream.go`,
//! `processJetStreamMsg`; on a replicated stream `checkMsgHeadersPreClusteredProposal`, which
//! answers 10158 "duplicate message id is in process" while the first is still proposed). A
//! duplicate's answer carries no value, so the value right after the increment is read back
//! from the message at that sequence.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::Deserialize;

use super::{parse_value, CounterValue, Counters};
use crate::error::{codes, Error, ErrorKind};
use crate::js::parse_api;
use crate::retry::Backoff;

/// The duplicate window of the counter streams this library creates. Long enough to re-send
/// through a replicated stream's leader election (seconds), short enough that the ids the
/// server keeps for it stay few: a hot counter written 10,000 times a second keeps 300,000.
pub(crate) const DUPLICATE_WINDOW: Duration = Duration::from_secs(30);

/// How long an increment is re-sent by default (at most half the stream's duplicate window).
pub(crate) const RESEND_FOR: Duration = Duration::from_secs(15);

const MSG_ID: &str = "Nats-Msg-Id";

/// Message ids unique to one [`Counters`] value and its clones: a random prefix and a count.
#[derive(Debug)]
pub(crate) struct MsgIds {
    prefix: String,
    next: AtomicU64,
}

impl MsgIds {
    pub(crate) fn new() -> MsgIds {
        MsgIds {
            prefix: format!("kvtk.incr.{:016x}.", rand::random::<u64>()),
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}{n}", self.prefix)
    }
}

/// How long increments may be re-sent on a stream whose duplicate window is `window`:
/// `wanted`, at most half the window, so that the last re-send reaches the server well
/// before the server forgets the first one's id.
pub(crate) fn resend_bound(wanted: Duration, window: Duration) -> Duration {
    wanted.min(window / 2)
}

/// A counter's publish acknowledgement.
#[derive(Debug, Deserialize)]
struct CounterAck {
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    val: Option<String>,
    #[serde(default)]
    duplicate: bool,
}

/// What one send of an increment learned.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    /// Applied by this send: the counter's value right after it.
    Applied(i64),
    /// An earlier send had applied it, stored at this sequence.
    Duplicate(u64),
}

/// Reads one answer to an increment. An error that says the outcome is not known yet (an
/// earlier send still proposed) becomes a timeout, so that it is re-sent like one.
fn classify(payload: &[u8]) -> Result<Sent, Error> {
    let ack: CounterAck = parse_api(payload).map_err(|e| {
        if e.server_code() == Some(codes::DUPLICATE_IN_PROCESS) {
            Error::new(ErrorKind::Timeout, "an earlier send is still being applied")
        } else {
            e
        }
    })?;
    match (ack.duplicate, ack.val) {
        (true, _) if ack.seq > 0 => Ok(Sent::Duplicate(ack.seq)),
        (false, Some(v)) => parse_value(&v).map(Sent::Applied),
        _ => Err(Error::new(
            ErrorKind::Server,
            "counter ack without a value or a sequence",
        )),
    }
}

impl Counters {
    /// Adds `delta` to the counter on `subject`, re-sending it with one message id until its
    /// fate is known or `self.resend_for` has passed.
    pub(super) async fn add_once(&self, subject: String, delta: i64) -> Result<i64, Error> {
        let id = self.ids.next();
        // Whether a send may have landed: from then on, no failure may claim "not applied".
        let maybe_applied = AtomicBool::new(false);
        let (subject_ref, id, maybe) = (subject.as_str(), id.as_str(), &maybe_applied);
        let sent = Backoff::DEFAULT
            .retry_for(self.resend_for, move || async move {
                let r = self.send(subject_ref, delta, id).await;
                if matches!(&r, Err(e) if e.outcome_unknown()) {
                    maybe.store(true, Ordering::Relaxed);
                }
                r
            })
            .await;
        match sent {
            Ok(Sent::Applied(v)) => Ok(v),
            Ok(Sent::Duplicate(seq)) => self.value_at(&subject, seq).await,
            Err(e) if maybe_applied.load(Ordering::Relaxed) => Err(Error::new(
                ErrorKind::OutcomeUnknown,
                format!(
                    "increment not acknowledged within {:?}: it may or may not have been applied",
                    self.resend_for
                ),
            )
            .with_source(e)),
            Err(e) => Err(e),
        }
    }

    async fn send(&self, subject: &str, delta: i64, id: &str) -> Result<Sent, Error> {
        let mut h = HeaderMap::new();
        h.insert("Nats-Incr", format!("{delta:+}").as_str());
        h.insert(MSG_ID, id);
        let msg = self
            .js
            .request(subject.to_string(), Some(h), Bytes::new())
            .await?;
        classify(&msg.payload)
    }

    /// The value stored at `seq`, the increment a duplicate answer named. Gone when another
    /// write to the counter replaced it (one message per counter is kept).
    async fn value_at(&self, subject: &str, seq: u64) -> Result<i64, Error> {
        let unknown = |why: &str| {
            Error::new(
                ErrorKind::ValueUnknown,
                format!("increment applied once, but its value is unknown: {why}"),
            )
        };
        let stored = Backoff::DEFAULT
            .retry_for(self.resend_for, || self.js.direct_seq(&self.stream, seq))
            .await
            .map_err(|e| unknown("reading it back failed").with_source(e))?;
        match stored {
            Some(m) if m.subject == subject => {
                let v: CounterValue = serde_json::from_slice(&m.payload)
                    .map_err(|e| unknown("bad counter value").with_source(e))?;
                parse_value(&v.val)
            }
            _ => Err(unknown("a later write replaced it")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_is_applied_a_duplicate_names_its_sequence() {
        let applied = br#"{"stream":"KVC_s","seq":7,"val":"42"}"#;
        assert_eq!(classify(applied).unwrap(), Sent::Applied(42));
        let dup = br#"{"stream":"KVC_s", "domain":"", "seq":7,"duplicate": true}"#;
        assert_eq!(classify(dup).unwrap(), Sent::Duplicate(7));
    }

    #[test]
    fn in_process_is_resent_other_errors_are_not() {
        let in_process =
            br#"{"error":{"code":409,"err_code":10158,"description":"duplicate message id is in process"}}"#;
        let e = classify(in_process).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(e.is_transient() && e.outcome_unknown());
        let broken =
            br#"{"error":{"code":400,"err_code":10172,"description":"message counter is broken"}}"#;
        assert!(!classify(broken).unwrap_err().is_transient());
        assert_eq!(
            classify(br#"{"seq":3}"#).unwrap_err().kind(),
            ErrorKind::Server
        );
        assert_eq!(
            classify(br#"{"seq":3,"val":"x"}"#).unwrap_err().kind(),
            ErrorKind::Codec
        );
    }

    #[test]
    fn ids_are_unique_and_resending_stays_inside_the_window() {
        let (a, b) = (MsgIds::new(), MsgIds::new());
        let ids = [a.next(), a.next(), b.next()];
        assert!(ids[0] != ids[1] && ids[0] != ids[2] && ids[1] != ids[2]);
        let s = Duration::from_secs;
        assert_eq!(resend_bound(RESEND_FOR, DUPLICATE_WINDOW), s(15));
        assert_eq!(resend_bound(s(60), s(120)), s(60));
        assert_eq!(resend_bound(s(60), s(10)), s(5));
    }
}
