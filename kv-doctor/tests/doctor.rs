//! The doctor against real servers started with the settings it should flag.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::time::Duration;

use kvtk_core::lease::LeaseConfig;
use kvtk_core::{BucketConfig, ErrorKind, Kv, ServerVersion, Storage};
use kvtk_doctor::{self as doctor, Code, Doctor, Intent, Recipe, Report, Severity, SyncSetting};
use kvtk_tests::{Account, NatsCluster, NatsServer, User};

/// A lease that rides through a stream-leader election (the recipes' default on R3).
fn lease() -> LeaseConfig {
    LeaseConfig::new(kvtk_core::lease::REPLICATED_TTL).unwrap()
}

/// A bucket the way the recipes create it.
fn recipe_bucket(name: &str) -> BucketConfig {
    BucketConfig::new(name)
        .history(1)
        .per_key_ttl(Duration::from_secs(60))
        .atomic_batches(true)
}

fn codes(report: &Report) -> Vec<(Severity, Code)> {
    report
        .findings
        .iter()
        .map(|f| (f.severity, f.code))
        .collect()
}

#[tokio::test]
async fn flags_an_r1_bucket_in_memory_and_without_ttl_or_batches() {
    let server = NatsServer::start().await;
    let kv = Kv::new(server.connect().await);
    kv.create_bucket(recipe_bucket("mem").storage(Storage::Memory))
        .await
        .unwrap();
    kv.create_bucket(BucketConfig::new("plain").history(5))
        .await
        .unwrap();
    let locks = Intent::locks().lease(lease());

    let mem = doctor::check(&kv, "mem", &locks).await.unwrap();
    assert_eq!(
        codes(&mem),
        vec![
            (Severity::Error, Code::MemoryStorage),
            (Severity::Warning, Code::FewReplicas)
        ],
        "{mem}"
    );
    assert!(!mem.is_safe());

    let plain = doctor::check(&kv, "plain", &locks).await.unwrap();
    assert_eq!(
        codes(&plain),
        vec![
            (Severity::Error, Code::PerKeyTtlOff),
            (Severity::Error, Code::HistoryNotOne),
            (Severity::Warning, Code::SyncUnchecked),
            (Severity::Warning, Code::FewReplicas),
            (Severity::Warning, Code::AtomicBatchesOff),
        ],
        "{plain}"
    );
    // The same bucket is fine for configuration, but its acknowledgements get no TTL.
    let config = doctor::check(&kv, "plain", &Intent::config())
        .await
        .unwrap();
    assert_eq!(
        codes(&config),
        vec![
            (Severity::Warning, Code::AtomicBatchesOff),
            (Severity::Info, Code::SyncUnchecked),
            (Severity::Info, Code::PerKeyTtlOff),
        ],
        "{config}"
    );
    assert!(config.is_safe());
}

/// Watches count against the bucket's consumer limit: four of five is a warning, and the
/// finding goes once the bucket's limit is raised.
#[tokio::test]
async fn flags_consumers_near_the_limit() {
    let server = NatsServer::start().await;
    let kv = Kv::new(server.connect().await);
    let b = kv
        .create_bucket(recipe_bucket("busy").max_consumers(5))
        .await
        .unwrap();
    let mut watches = Vec::new();
    for key in ["a", "b", "c", "d"] {
        watches.push(b.watch([key]).await.unwrap());
    }
    let config = Intent::config();
    let report = doctor::check(&kv, "busy", &config).await.unwrap();
    let near = report.find(Code::ConsumersNearLimit).expect("flagged");
    assert_eq!(near.severity, Severity::Warning, "{report}");
    assert!(near.message.contains("4 consumers of the 5"), "{report}");
    assert!(
        near.fix.contains("kvtk kv edit busy --max-consumers"),
        "{report}"
    );

    let raised = kvtk_core::BucketUpdate::new().max_consumers(Some(50));
    kv.update_bucket("busy", raised).await.unwrap();
    let report = doctor::check(&kv, "busy", &config).await.unwrap();
    assert!(report.find(Code::ConsumersNearLimit).is_none(), "{report}");
    drop(watches);
}

#[tokio::test]
async fn flags_persist_mode_async() {
    use async_nats::jetstream::stream::{Config, PersistenceMode};
    let server = NatsServer::start().await;
    let client = server.connect().await;
    // kvtk-core has no switch for it on purpose: create the stream the way another tool would.
    async_nats::jetstream::new(client.clone())
        .create_stream(Config {
            name: "KV_fast".into(),
            subjects: vec!["$KV.fast.>".into()],
            max_messages_per_subject: 1,
            allow_message_ttl: true,
            subject_delete_marker_ttl: Some(Duration::from_secs(60)),
            persist_mode: Some(PersistenceMode::Async),
            ..Default::default()
        })
        .await
        .unwrap();
    let kv = Kv::new(client);
    let report = doctor::check(&kv, "fast", &Intent::elections().lease(lease()))
        .await
        .unwrap();
    let persist = report
        .find(Code::PersistAsync)
        .expect("persist_mode flagged");
    assert_eq!(persist.severity, Severity::Error, "{report}");
    assert!(persist.message.contains("persist_mode: async"), "{report}");
    let membership = doctor::check(&kv, "fast", &Intent::membership().lease(lease()))
        .await
        .unwrap();
    assert_eq!(
        membership.find(Code::PersistAsync).map(|f| f.severity),
        Some(Severity::Warning),
        "{membership}"
    );
}

#[tokio::test]
async fn flags_a_server_below_2_12_4() {
    let server = NatsServer::start().await;
    let client = server.connect().await;
    let kv = Kv::new(client.clone());
    kv.create_bucket(recipe_bucket("b")).await.unwrap();
    let intent = Intent::config();
    let today = doctor::check(&kv, "b", &intent).await.unwrap();
    assert_eq!(today.find(Code::ServerTooOld), None, "{today}");
    assert_eq!(
        today.servers[0].version,
        Some(kv.server_version()),
        "{today}"
    );
    // The kit runs one version; the connected server's announced version is what is read.
    let old = Kv::new(client).assume_server_version(ServerVersion::new(2, 12, 1));
    let report = doctor::check(&old, "b", &intent).await.unwrap();
    let finding = report.find(Code::ServerTooOld).expect("flagged");
    assert_eq!(finding.severity, Severity::Error);
    assert!(finding.message.contains("2.12.1"), "{report}");
    assert!(finding.fix.contains("2.12.4"), "{report}");
}

#[tokio::test]
async fn a_safe_r3_setup_has_no_error_and_a_short_lease_is_flagged() {
    let cluster = NatsCluster::start().await;
    // Creating an R3 stream on a freshly started cluster can take longer than the default
    // request timeout, and its info needs a stream leader.
    let kv = Kv::new(cluster.connect().await).with_timeout(Duration::from_secs(15));
    kv.create_bucket(recipe_bucket("safe").replicas(3))
        .await
        .unwrap();
    cluster
        .wait_stream_leader("KV_safe", Duration::from_secs(15))
        .await
        .expect("a stream leader");
    let all = Intent::new([
        Recipe::Locks,
        Recipe::Elections,
        Recipe::Config,
        Recipe::Membership,
    ]);
    let report = doctor::check(&kv, "safe", &all.clone().lease(lease()))
        .await
        .unwrap();
    assert!(report.is_safe(), "{report}");
    // Without a system-account client only the unread sync setting is left, as a note.
    assert_eq!(
        codes(&report),
        vec![(Severity::Info, Code::SyncUnchecked)],
        "{report}"
    );
    assert_eq!(report.replicas, 3);

    let short = doctor::check(
        &kv,
        "safe",
        &all.clone()
            .lease(LeaseConfig::new(Duration::from_secs(5)).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(
        short.find(Code::LeaseTtlBelowElection).map(|f| f.severity),
        Some(Severity::Warning),
        "{short}"
    );
    // Each recipe alone is checked too: members and config acknowledgements are leases.
    let five = LeaseConfig::new(Duration::from_secs(5)).unwrap();
    for intent in [Intent::membership(), Intent::config(), Intent::elections()] {
        let one = doctor::check(&kv, "safe", &intent.clone().lease(five))
            .await
            .unwrap();
        assert_eq!(
            one.find(Code::LeaseTtlBelowElection).map(|f| f.severity),
            Some(Severity::Warning),
            "{intent:?}: {one}"
        );
    }
    let unknown = doctor::check(&kv, "safe", &all).await.unwrap();
    assert!(unknown.find(Code::LeaseTtlUnchecked).is_some(), "{unknown}");
}

#[tokio::test]
async fn a_mirror_is_named_and_a_missing_bucket_is_an_error() {
    let server = NatsServer::start().await;
    let kv = Kv::new(server.connect().await);
    kv.create_bucket(recipe_bucket("origin")).await.unwrap();
    kv.create_bucket(BucketConfig::new("copy").mirror(kvtk_core::nats::Source {
        name: "origin".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    let report = doctor::check(&kv, "copy", &Intent::config()).await.unwrap();
    assert_eq!(
        codes(&report),
        vec![(Severity::Info, Code::Mirror)],
        "{report}"
    );
    assert_eq!(report.mirror_of.as_deref(), Some("KV_origin"));
    // A mirror made by another tool with its own expiry: keys vanish without markers.
    async_nats::jetstream::new(kv.client().clone())
        .create_stream(async_nats::jetstream::stream::Config {
            name: "KV_expiring".into(),
            mirror: Some(kvtk_core::nats::Source {
                name: "KV_origin".into(),
                ..Default::default()
            }),
            allow_message_ttl: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let report = doctor::check(&kv, "expiring", &Intent::config())
        .await
        .unwrap();
    assert_eq!(
        codes(&report),
        vec![
            (Severity::Error, Code::MirrorExpires),
            (Severity::Info, Code::Mirror)
        ],
        "{report}"
    );

    let err = doctor::check(&kv, "nothing", &Intent::locks())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BucketNotFound, "{err}");
    let err = doctor::check(&kv, "bad name", &Intent::locks())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
}

#[tokio::test]
async fn the_report_serialises_with_stable_codes() {
    let server = NatsServer::start().await;
    let kv = Kv::new(server.connect().await);
    kv.create_bucket(recipe_bucket("j").storage(Storage::Memory))
        .await
        .unwrap();
    let report = doctor::check(&kv, "j", &Intent::locks().lease(lease()))
        .await
        .unwrap();
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["bucket"], "j");
    assert_eq!(json["storage"], "memory");
    assert_eq!(json["intent"]["recipes"], serde_json::json!(["locks"]));
    assert_eq!(json["intent"]["lease"]["ttl"], 30.0);
    assert_eq!(json["findings"][0]["severity"], "error");
    assert_eq!(json["findings"][0]["code"], "memory-storage");
    assert_eq!(
        json["servers"][0]["version"],
        kv.server_version().to_string()
    );
    let text = report.to_string();
    assert!(
        text.starts_with("bucket \"j\" (R1, memory storage) for locks: 1 error(s)"),
        "{text}"
    );
    assert!(text.contains("\nerror[memory-storage]: "), "{text}");
    assert!(text.contains("\n  fix: "), "{text}");
}

/// A server with an application account and a system account, each with one user.
async fn server_with_system_account(sync_always: bool) -> NatsServer {
    let mut b = NatsServer::builder()
        .account(
            Account::new("APP")
                .jetstream()
                .user(User::password("app", "app-pw")),
        )
        .account(Account::new("SYS").user(User::password("sys", "sys-pw")))
        .system_account("SYS");
    if sync_always {
        b = b.sync_always();
    }
    b.start().await
}

async fn login(server: &NatsServer, user: &str, password: &str) -> async_nats::Client {
    server
        .connect_with(async_nats::ConnectOptions::with_user_and_password(
            user.into(),
            password.into(),
        ))
        .await
}

#[tokio::test]
async fn reads_sync_interval_through_the_system_account() {
    let intent = Intent::locks().lease(lease());
    for sync_always in [false, true] {
        let server = server_with_system_account(sync_always).await;
        let kv = Kv::new(login(&server, "app", "app-pw").await);
        kv.create_bucket(recipe_bucket("locks")).await.unwrap();
        let sys = Kv::new(login(&server, "sys", "sys-pw").await);
        let report = Doctor::new(&kv)
            .system_account(sys)
            .check("locks", &intent)
            .await
            .unwrap();
        let seen = &report.servers[0];
        assert_eq!(seen.name, server.server_name(), "{report}");
        assert_eq!(seen.version, Some(kv.server_version()), "{report}");
        if sync_always {
            assert_eq!(seen.sync, Some(SyncSetting::Always), "{report}");
            assert_eq!(
                codes(&report),
                vec![(Severity::Warning, Code::FewReplicas)],
                "{report}"
            );
        } else {
            // The server's default: fsync every two minutes.
            assert_eq!(
                seen.sync,
                Some(SyncSetting::Interval(Duration::from_secs(120))),
                "{report}"
            );
            let f = report.find(Code::SyncNotAlways).expect("flagged");
            assert_eq!(f.severity, Severity::Error, "{report}");
            assert!(f.message.contains("every 2 min"), "{report}");
            assert!(!report.is_safe());
        }
    }
}

#[tokio::test]
async fn a_client_outside_the_system_account_leaves_sync_unchecked() {
    let server = server_with_system_account(false).await;
    let kv = Kv::new(login(&server, "app", "app-pw").await);
    kv.create_bucket(recipe_bucket("locks")).await.unwrap();
    let not_sys = Kv::new(login(&server, "app", "app-pw").await);
    let report = Doctor::new(&kv)
        .system_account(not_sys)
        .check("locks", &Intent::elections().lease(lease()))
        .await
        .unwrap();
    let f = report.find(Code::SyncUnchecked).expect("unchecked");
    assert_eq!(f.severity, Severity::Warning, "{report}");
    assert!(f.message.contains("not in the system account"), "{report}");
    // The connected server's version is still known from its INFO.
    assert_eq!(report.servers[0].version, Some(kv.server_version()));
    // No password anywhere in what the doctor prints or serialises.
    let shown = format!(
        "{report}{report:?}{}",
        serde_json::to_string(&report).unwrap()
    );
    assert!(!shown.contains("app-pw") && !shown.contains("sys-pw"));
}
