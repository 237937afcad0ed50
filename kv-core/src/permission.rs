//! Permission violations the server reported on a connection, matched to the requests they
//! refused.
//!
//! nats-server answers a publish or subscription the user may not make with an asynchronous
//! `-ERR 'Permissions Violation for Publish to "<subject>"'` and drops the message; the request
//! that sent it would only time out. async-nats hands the error to the connection's event
//! callback ([`async_nats::Event::ServerError`]). A [`crate::Connect`] installs a callback that
//! records each violation here, and every request of a [`crate::Kv`] built by it waits for
//! either its reply or a violation naming its subject, whichever comes first.
//!
//! Publish permissions depend on the subject alone, so a violation for subject `S` reported
//! after a request to `S` was sent refused that request, whatever else is in flight
//! concurrently. Subscription violations name the subject subscribed to: a watch or a batch
//! read compares it with its own inbox; a refused subscription to the client's request inbox
//! (`<prefix>.<id>.*`, made once per connection) refuses every request from then on.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use async_nats::{Client, Message, Request, Subject};
use tokio::sync::Notify;

use crate::error::{Error, ErrorKind};

/// How many violations are remembered; older ones are forgotten (a request only looks at
/// violations reported after it was sent, so a short memory is enough).
const REMEMBERED: usize = 256;

/// What the server refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    Publish,
    Subscribe,
    /// A publish whose reply subject the user may not use.
    Reply,
}

#[derive(Debug, Clone)]
pub(crate) struct Violation {
    at: Instant,
    denied: Denied,
    subject: String,
}

impl Violation {
    /// The error for a request refused by this violation.
    pub(crate) fn error(&self) -> Error {
        let what = match self.denied {
            Denied::Publish => "publish to",
            Denied::Subscribe => "subscribe to",
            Denied::Reply => "reply to",
        };
        Error::new(
            ErrorKind::PermissionDenied,
            format!("permission denied: {what} {:?}", self.subject),
        )
    }
}

/// The violations of one connection (shared by the event callback and the requests).
#[derive(Debug)]
pub(crate) struct Violations {
    recent: Mutex<Recent>,
    notify: Notify,
    inbox_prefix: String,
}

#[derive(Debug, Default)]
struct Recent {
    list: VecDeque<Violation>,
    /// The request inbox subscription was refused: no request can get a reply.
    inbox: Option<Violation>,
}

impl Violations {
    pub(crate) fn new(inbox_prefix: impl Into<String>) -> Arc<Violations> {
        Arc::new(Violations {
            recent: Mutex::default(),
            notify: Notify::new(),
            inbox_prefix: inbox_prefix.into(),
        })
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        // Entries are plain data: a panic elsewhere cannot leave them half-written.
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a server error if it is a permission violation.
    pub(crate) fn record(&self, server_error: &str) {
        let Some((denied, subject)) = parse(server_error) else {
            return;
        };
        tracing::warn!(?denied, subject, "the server refused a permission");
        let v = Violation {
            at: Instant::now(),
            denied,
            subject,
        };
        {
            let mut r = self.recent();
            let request_inbox = denied == Denied::Subscribe
                && v.subject.starts_with(&self.inbox_prefix)
                && v.subject.ends_with(".*");
            if request_inbox {
                r.inbox = Some(v.clone());
            }
            if r.list.len() == REMEMBERED {
                r.list.pop_front();
            }
            r.list.push_back(v);
        }
        self.notify.notify_waiters();
    }

    /// A violation reported at or after `since` that refuses a request published to
    /// `subject` (or a subscription to it, for `Denied::Subscribe`).
    pub(crate) fn find(&self, denied: Denied, subject: &str, since: Instant) -> Option<Violation> {
        let r = self.recent();
        if denied == Denied::Publish {
            if let Some(v) = &r.inbox {
                return Some(v.clone());
            }
        }
        r.list
            .iter()
            .rev()
            .take_while(|v| v.at >= since)
            .find(|v| {
                (v.denied == denied && v.subject == subject)
                    || (denied == Denied::Publish && v.denied == Denied::Reply)
            })
            .cloned()
    }

    /// Sends `req` to `subject` on `client` and waits for its reply, unless the server
    /// refuses the publish first: a refused publish gets no reply, and the server's error,
    /// reported on the connection, ends the request as soon as it arrives.
    pub(crate) async fn refusable(
        &self,
        client: &Client,
        subject: Subject,
        req: Request,
    ) -> Result<Message, Error> {
        let since = Instant::now();
        tokio::select! {
            biased;
            res = client.send_request(subject.clone(), req) => res.map_err(|e| {
                match self.find(Denied::Publish, &subject, since) {
                    Some(v) => v.error(),
                    None => crate::error::from_request(e),
                }
            }),
            v = self.refusing(&subject, since) => Err(v.error()),
        }
    }

    /// Waits until a violation refusing a publish to `subject` sent at `since` is reported.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub(crate) async fn refusing(&self, subject: &str, since: Instant) -> Violation {
        loop {
            // Registered before the check, so a violation between the two still wakes us.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = self.find(Denied::Publish, subject, since) {
                return v;
            }
            notified.await;
        }
    }
}

/// `Permissions Violation for Publish to "x"`, `… for Subscription to "x" …`,
/// `… for Publish with Reply of "x"`.
fn parse(text: &str) -> Option<(Denied, String)> {
    let rest = text.split_once("Permissions Violation for ")?.1;
    let (denied, rest) = if let Some(r) = rest.strip_prefix("Publish with Reply of ") {
        (Denied::Reply, r)
    } else if let Some(r) = rest.strip_prefix("Publish to ") {
        (Denied::Publish, r)
    } else if let Some(r) = rest.strip_prefix("Subscription to ") {
        (Denied::Subscribe, r)
    } else {
        return None;
    };
    let subject = rest.strip_prefix('"')?.split('"').next()?;
    Some((denied, subject.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_server_texts() {
        assert_eq!(
            parse("Permissions Violation for Publish to \"$KV.b.x\""),
            Some((Denied::Publish, "$KV.b.x".into()))
        );
        assert_eq!(
            parse("nats: Permissions Violation for Subscription to \"_INBOX.a.*\" (sid \"3\")"),
            Some((Denied::Subscribe, "_INBOX.a.*".into()))
        );
        assert_eq!(
            parse("Permissions Violation for Publish with Reply of \"r.1\""),
            Some((Denied::Reply, "r.1".into()))
        );
        assert_eq!(parse("Authorization Violation"), None);
        assert_eq!(parse("Permissions Violation for Publish to x"), None);
    }

    #[test]
    fn matches_by_subject_and_time() {
        let v = Violations::new("_INBOX");
        let before = Instant::now();
        v.record("Permissions Violation for Publish to \"a\"");
        let after = Instant::now();
        assert!(v.find(Denied::Publish, "a", before).is_some());
        assert!(v.find(Denied::Publish, "b", before).is_none());
        assert!(
            v.find(Denied::Publish, "a", after).is_none(),
            "older than the request"
        );
        let e = v.find(Denied::Publish, "a", before).map(|x| x.error());
        assert_eq!(e.map(|e| e.kind()), Some(ErrorKind::PermissionDenied));
    }

    #[test]
    fn a_refused_request_inbox_refuses_every_request() {
        let v = Violations::new("_INBOX");
        v.record("Permissions Violation for Subscription to \"_INBOX.abc.*\"");
        let later = Instant::now();
        assert!(v.find(Denied::Publish, "anything", later).is_some());
    }

    #[tokio::test]
    async fn a_waiting_request_wakes_on_its_violation() {
        let v = Violations::new("_INBOX");
        let since = Instant::now();
        let waiter = {
            let v = v.clone();
            tokio::spawn(async move { v.refusing("a", since).await.subject })
        };
        tokio::task::yield_now().await;
        v.record("Permissions Violation for Publish to \"b\"");
        v.record("Permissions Violation for Publish to \"a\"");
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await;
        assert_eq!(got.ok().and_then(Result::ok).as_deref(), Some("a"));
    }
}
