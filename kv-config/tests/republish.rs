//! What the server's RePublish really sends for a KV bucket (history 1, per-key TTLs, atomic
//! batches): the groundwork for a cross-process fan-out without consumers. Every expected
//! value below is computed from the revisions the writes were acknowledged with.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use kvtk_core::nats::Republish;
use kvtk_core::{BucketConfig, Kv, Revision};
use kvtk_tests::{within, NatsServer};

/// One republished message: its subject and the headers RePublish adds (plus the KV ones).
#[derive(Debug, Clone)]
struct Seen {
    subject: String,
    headers: BTreeMap<String, String>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
    fn num(&self, name: &str) -> u64 {
        self.header(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing or not a number: {self:?}"))
    }
}

/// Reads republished messages until one with stream sequence `rev` arrived.
async fn republished(
    sub: &mut async_nats::Subscriber,
    seen: &mut BTreeMap<u64, Seen>,
    rev: Revision,
) -> Seen {
    within("the republished message", async {
        while !seen.contains_key(&rev.get()) {
            let m = sub.next().await.expect("subscription open");
            let headers = m
                .headers
                .iter()
                .flat_map(|h| h.iter())
                .map(|(k, v)| {
                    let v = v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
                    (k.to_string(), v)
                })
                .collect();
            let s = Seen {
                subject: m.subject.to_string(),
                headers,
            };
            seen.insert(s.num("Nats-Sequence"), s);
        }
    })
    .await;
    seen[&rev.get()].clone()
}

#[tokio::test]
async fn republish_headers_on_a_history_1_bucket() {
    let server = NatsServer::start().await;
    let client = server.connect().await;
    let kv = Kv::new(client.clone());
    let b = kv
        .create_bucket(
            BucketConfig::new("rp")
                .history(1)
                .per_key_ttl(Duration::from_secs(1))
                .atomic_batches(true)
                .republish(Republish {
                    source: "$KV.rp.>".into(),
                    destination: "repub.rp.>".into(),
                    headers_only: false,
                }),
        )
        .await
        .unwrap();
    let mut sub = client.subscribe("repub.rp.>").await.unwrap();
    client.flush().await.unwrap();
    let mut seen = BTreeMap::new();

    let a1 = b.put("a", "1").await.unwrap();
    let a2 = b.put("a", "2").await.unwrap();
    let b1 = b.put("b", "1").await.unwrap();
    let a_del = b.delete("a").await.unwrap();
    let a3 = b.put("a", "3").await.unwrap();
    let a_purge = b.purge("a").await.unwrap();
    let txn = b.txn().put("a", "4").put("b", "2").commit().await.unwrap();
    let (a4, b2) = (txn.revision("a").unwrap(), txn.revision("b").unwrap());
    let c1 = b.put("c", "1").ttl(Duration::from_secs(1)).await.unwrap();

    let mut report = Vec::new();
    for (what, rev) in [
        ("put a (first)", a1),
        ("put a", a2),
        ("put b (first)", b1),
        ("delete a", a_del),
        ("put a over tombstone", a3),
        ("purge a", a_purge),
        ("txn put a", a4),
        ("txn put b (commit)", b2),
        ("put c ttl 1s", c1),
    ] {
        let s = republished(&mut sub, &mut seen, rev).await;
        report.push(format!("{what} @{rev}: {} {:?}", s.subject, s.headers));
    }
    // The expiry marker is written by the server itself: the next sequence after c1.
    let marker = Revision::new(c1.get() + 1).unwrap();
    let m = republished(&mut sub, &mut seen, marker).await;
    report.push(format!(
        "expiry marker @{marker}: {} {:?}",
        m.subject, m.headers
    ));
    println!("{}", report.join("\n"));

    let last = |rev: Revision| seen[&rev.get()].num("Nats-Last-Sequence");
    // The previous message on the same subject, also when history 1 already removed it.
    assert_eq!(last(a1), 0);
    assert_eq!(last(a2), a1.get());
    assert_eq!(last(b1), 0);
    assert_eq!(
        last(a_del),
        a2.get(),
        "a delete is a message on the subject"
    );
    assert_eq!(last(a3), a_del.get(), "a put follows the tombstone");
    assert_eq!(last(a_purge), a3.get());
    assert_eq!(last(a4), a_purge.get(), "inside a batch too");
    assert_eq!(last(b2), b1.get());
    assert_eq!(last(c1), 0);
    assert_eq!(
        m.num("Nats-Last-Sequence"),
        c1.get(),
        "the marker follows the value"
    );
    assert_eq!(m.subject, "repub.rp.c");
    assert_eq!(m.header("Nats-Marker-Reason"), Some("MaxAge"));
    for s in seen.values() {
        assert_eq!(s.header("Nats-Stream"), Some("KV_rp"));
        assert!(s.num("Nats-Sequence") > 0);
    }
}
