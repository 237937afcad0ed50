//! Fleet acknowledgements bound to one session per process
//! ([`ConfigBuilder::bind_ack_to_session`](kvtk_config::ConfigBuilder::bind_ack_to_session))
//! against a real nats-server: the acknowledgements of several readers cost one renewal write
//! per interval, and `wait_applied` stops counting an instance whose session ended (judged from
//! the stream leader) until it acknowledges again under a new session.

// Tests may unwrap: a panic is a test failure with a message.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use kvtk_config::{ConfigReader, ConfigWriter};
use kvtk_core::lease::{Keeper, LeaseConfig, SessionId, SessionState, Sessions};
use kvtk_core::{Bucket, Include, Kv};
use kvtk_tests::{client, until, within, FaultProxy, NatsServer};

/// The tests' bucket with one revision per key (session keys expire; see NATS-NOTES on
/// history > 1).
async fn bucket_h1(kv: &Kv, name: &str) -> Bucket {
    kv.create_or_open(bucket_config(name).history(1))
        .await
        .unwrap()
}

/// Sessions on `b` with a `ttl`-second TTL.
fn sessions(b: &Bucket, ttl: u64) -> Sessions {
    let cfg = LeaseConfig::new(Duration::from_secs(ttl)).unwrap();
    Sessions::new(&Keeper::new(b, cfg).unwrap(), cfg)
}

/// A reader of instance `name` on `b`, its acknowledgement bound to `s`.
async fn bound_reader(b: &Bucket, name: &str, s: &Sessions) -> ConfigReader<App> {
    ConfigReader::<App>::builder(doc())
        .bucket(b.clone())
        .validate(validate)
        .instance(name)
        .ack_ttl(Duration::from_secs(2))
        .bind_ack_to_session(s.clone())
        .await
        .unwrap()
}

/// The session instance `name`'s acknowledgement is bound to.
async fn ack_session(b: &Bucket, name: &str) -> Option<SessionId> {
    let e = b
        .get_from_leader(format!("_applied.app.config.{name}"))
        .await;
    SessionId::bound_by(&e.unwrap()?)
}

#[tokio::test]
async fn acknowledgements_of_readers_in_one_process_cost_one_renewal_per_interval() {
    let server = NatsServer::start().await;
    let kv = Kv::new(server.connect().await);
    let b = bucket_h1(&kv, "cfg").await;
    let w = ConfigWriter::<App>::new(b.clone(), doc()).validate(validate);
    let rev = w.set(&app("fleet", 1)).await.unwrap().revision.unwrap();
    let s = sessions(&b, 3);
    let mut readers = Vec::new();
    for i in 1..=3 {
        readers.push(bound_reader(&b, &format!("r{i}"), &s).await);
    }
    let names = within("3 acknowledgements", w.wait_applied(rev, 3))
        .await
        .unwrap();
    assert_eq!(names, vec!["r1", "r2", "r3"]);
    let session = s.current().await.unwrap().id();
    for name in ["r1", "r2", "r3"] {
        assert_eq!(ack_session(&b, name).await, Some(session), "{name}");
    }
    // Every write to the bucket for 3.5 s (session renewals every second at TTL 3 s).
    let watch = b.watch([">"]).include(Include::UpdatesOnly);
    let mut watch = watch.await.unwrap();
    let events = kvtk_tests::collect_for(Duration::from_millis(3500), &mut watch).await;
    let writes: Vec<String> = events
        .into_iter()
        .filter_map(|ev| ev.unwrap().into_entry())
        .map(|e| e.key().to_string())
        .collect();
    println!("writes in 3.5 s with 3 bound acknowledgements: {writes:?}");
    assert!((2..=4).contains(&writes.len()), "{writes:?}");
    assert!(writes.iter().all(|k| *k == session.key()), "{writes:?}");
    for r in readers {
        r.shutdown().await;
    }
}

#[tokio::test]
async fn an_instance_whose_session_ended_stops_counting_until_it_acknowledges_again() {
    let server = NatsServer::start().await;
    let proxy = FaultProxy::start(&server.client_url()).await;
    let kv = Kv::new(server.connect().await);
    let b = bucket_h1(&kv, "cfg").await;
    let w = ConfigWriter::<App>::new(b.clone(), doc()).validate(validate);
    let rev = w.set(&app("fleet", 1)).await.unwrap().revision.unwrap();
    let live = bound_reader(&b, "live", &sessions(&b, 10)).await;
    let cut_kv = Kv::new(client::short_timeouts(proxy.url()).await);
    let cut_b = cut_kv.open("cfg").await.unwrap();
    let dying = bound_reader(&cut_b, "dying", &sessions(&cut_b, 2)).await;
    let names = within("2 acknowledgements", w.wait_applied(rev, 2))
        .await
        .unwrap();
    assert_eq!(names, vec!["dying", "live"]);
    let old = ack_session(&b, "dying").await.expect("bound");

    proxy.blackhole();
    // The server's TTL clock is under test: the session key expires on it.
    until("the cut-off reader's session ended", || async {
        !SessionState::read(&b, old).await.unwrap().is_alive()
    })
    .await;
    // Its acknowledgement is still there (bound: no TTL), but it no longer counts, and the
    // wait that judged its session removes it.
    assert_eq!(ack_session(&b, "dying").await, Some(old));
    let names = within("1 acknowledgement", w.wait_applied(rev, 1))
        .await
        .unwrap();
    assert_eq!(names, vec!["live"]);
    let removed = b
        .get_from_leader("_applied.app.config.dying")
        .await
        .unwrap();
    assert!(
        removed.as_ref().is_none_or(|e| !e.is_value()),
        "the ended session's acknowledgement is gone: {removed:?}"
    );
    assert!(ack_session(&b, "live").await.is_some(), "a live one stays");

    proxy.heal();
    until(
        "the reader acknowledged again under a new session",
        || async { ack_session(&b, "dying").await.is_some_and(|s| s != old) },
    )
    .await;
    let names = within("2 acknowledgements", w.wait_applied(rev, 2))
        .await
        .unwrap();
    assert_eq!(names, vec!["dying", "live"]);
    live.shutdown().await;
    dying.shutdown().await;
}
