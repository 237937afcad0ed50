//! The rules' table tests: one unsafe setting at a time on a safe R3 bucket.

use super::*;

fn server(name: &str, version: ServerVersion, sync: Option<SyncSetting>) -> ServerFacts {
    ServerFacts {
        name: name.into(),
        version: Some(version),
        sync,
    }
}

/// An R3 file bucket with every feature, on fixed servers that sync always.
fn safe() -> Facts {
    let v = ServerVersion::new(2, 15, 1);
    Facts {
        bucket: "b".into(),
        replicas: 3,
        storage: Storage::File,
        persist_async: false,
        per_key_ttl: true,
        atomic: true,
        history: 1,
        mirror_of: None,
        expires: false,
        servers: ["n0", "n1", "n2"]
            .map(|n| server(n, v, Some(SyncSetting::Always)))
            .into(),
        sync_unknown: None,
        consumers: 12,
        max_consumers: -1,
    }
}

fn lease(secs: u64) -> kvtk_core::lease::LeaseConfig {
    kvtk_core::lease::LeaseConfig::new(Duration::from_secs(secs)).unwrap()
}

fn codes(facts: &Facts, intent: &Intent) -> Vec<(Severity, Code)> {
    findings(facts, intent)
        .into_iter()
        .map(|f| (f.severity, f.code))
        .collect()
}

fn all() -> Intent {
    Intent::new([
        Recipe::Locks,
        Recipe::Elections,
        Recipe::Config,
        Recipe::Membership,
    ])
    .lease(lease(30))
}

#[test]
fn a_safe_r3_bucket_has_no_findings() {
    assert_eq!(codes(&safe(), &all()), vec![]);
}

/// One change to a safe bucket, the intent it is checked for, and the findings wanted.
type Row = (&'static str, fn(&mut Facts), Intent, Vec<(Severity, Code)>);

/// Each unsafe setting is one finding: every row's change alone, on a safe bucket.
fn check_rows(table: Vec<Row>) {
    for (what, change, intent, want) in table {
        let mut facts = safe();
        change(&mut facts);
        assert_eq!(codes(&facts, &intent), want, "{what}");
    }
}

#[test]
fn server_versions() {
    use Code::*;
    use Severity::*;
    check_rows(vec![
        (
            "old server",
            |f| f.servers[1].version = Some(ServerVersion::new(2, 12, 1)),
            all(),
            vec![(Error, ServerTooOld)],
        ),
        (
            "2.12.4 is fixed",
            |f| f.servers[1].version = Some(FIXED_SERVER),
            all(),
            vec![],
        ),
    ]);
}

#[test]
fn sync_settings() {
    use Code::*;
    use Severity::*;
    check_rows(vec![
        (
            "R1 lax sync, locks",
            |f| {
                f.replicas = 1;
                f.servers.truncate(1);
                f.servers[0].sync = Some(SyncSetting::Interval(Duration::from_secs(120)));
            },
            Intent::locks(),
            vec![(Error, SyncNotAlways), (Warning, FewReplicas)],
        ),
        (
            "R1 lax sync, config",
            |f| {
                f.replicas = 1;
                f.servers.truncate(1);
                f.servers[0].sync = Some(SyncSetting::Interval(Duration::from_secs(120)));
            },
            Intent::config(),
            vec![(Warning, SyncNotAlways)],
        ),
        (
            "R1 unknown sync, elections",
            |f| {
                f.replicas = 1;
                f.servers.truncate(1);
                f.servers[0].sync = None;
            },
            Intent::elections(),
            vec![(Warning, SyncUnchecked), (Warning, FewReplicas)],
        ),
        (
            "R3 unknown sync",
            |f| f.servers[2].sync = None,
            all(),
            vec![(Info, SyncUnchecked)],
        ),
    ]);
}

#[test]
fn replicas_and_storage() {
    use Code::*;
    use Severity::*;
    check_rows(vec![
        (
            "R2 locks",
            |f| f.replicas = 2,
            Intent::locks().lease(lease(30)),
            vec![(Warning, FewReplicas)],
        ),
        (
            "memory locks",
            |f| f.storage = Storage::Memory,
            Intent::locks().lease(lease(30)),
            vec![(Error, MemoryStorage)],
        ),
        (
            "memory membership",
            |f| f.storage = Storage::Memory,
            Intent::membership().lease(lease(30)),
            vec![(Warning, MemoryStorage)],
        ),
        (
            "async persist",
            |f| f.persist_async = true,
            all(),
            vec![(Error, PersistAsync)],
        ),
    ]);
}

#[test]
fn bucket_features() {
    use Code::*;
    use Severity::*;
    check_rows(vec![
        (
            "no per-key ttl, membership",
            |f| f.per_key_ttl = false,
            Intent::membership().lease(lease(30)),
            vec![(Error, PerKeyTtlOff)],
        ),
        (
            "no per-key ttl, config",
            |f| f.per_key_ttl = false,
            Intent::config().lease(lease(30)),
            vec![(Info, PerKeyTtlOff)],
        ),
        (
            "no atomic, elections",
            |f| f.atomic = false,
            Intent::elections().lease(lease(30)),
            vec![],
        ),
        (
            "no atomic, locks",
            |f| f.atomic = false,
            Intent::locks().lease(lease(30)),
            vec![(Warning, AtomicBatchesOff)],
        ),
        (
            "history 5, config",
            |f| f.history = 5,
            Intent::config().lease(lease(30)),
            vec![],
        ),
        (
            "history 5, locks",
            |f| f.history = 5,
            Intent::locks().lease(lease(30)),
            vec![(Error, HistoryNotOne)],
        ),
    ]);
}

#[test]
fn leases_and_mirrors() {
    use Code::*;
    use Severity::*;
    check_rows(vec![
        (
            "short lease",
            |_| {},
            Intent::locks().lease(lease(5)),
            vec![(Warning, LeaseTtlBelowElection)],
        ),
        (
            "no lease given",
            |_| {},
            Intent::locks(),
            vec![(Info, LeaseTtlUnchecked)],
        ),
        (
            "mirror",
            |f| {
                f.mirror_of = Some("KV_b".into());
                f.storage = Storage::Memory;
            },
            all(),
            vec![(Info, Mirror)],
        ),
    ]);
}

#[test]
fn a_short_lease_on_r1_is_fine_and_a_fast_renewal_rides_through() {
    let mut f = safe();
    f.replicas = 1;
    f.servers.truncate(1);
    let short = Intent::locks().lease(lease(5));
    assert_eq!(
        codes(&f, &short),
        vec![(Severity::Warning, Code::FewReplicas)]
    );
    // The same rule as the recipes': a 15 s lease renewed every 2 s rides through.
    let fast = kvtk_core::lease::LeaseConfig::new(Duration::from_secs(15))
        .and_then(|l| l.with_renew_every(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(codes(&safe(), &Intent::locks().lease(fast)), vec![]);
}

#[test]
fn messages_name_what_they_found() {
    let mut f = safe();
    f.replicas = 1;
    f.servers = vec![server(
        "n7",
        ServerVersion::new(2, 12, 1),
        Some(SyncSetting::Interval(Duration::from_secs(120))),
    )];
    let found = findings(&f, &Intent::locks().and(Recipe::Elections));
    let text: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert!(
        text[0].starts_with("error[server-too-old]: nats-server n7 (2.12.1)"),
        "{text:?}"
    );
    assert!(text[1].contains("n7 (every 2 min)"), "{text:?}");
    assert!(text[1].contains("locks and elections"), "{text:?}");
    assert!(found.iter().all(|f| !f.fix.is_empty()));
}

#[test]
fn consumers_against_their_limit() {
    use Code::*;
    use Severity::*;
    check_rows(vec![
        (
            "800 of the 2.15 default",
            |f| f.consumers = 800,
            all(),
            vec![(Warning, ConsumersNearLimit)],
        ),
        (
            "799 of the 2.15 default",
            |f| f.consumers = 799,
            all(),
            vec![],
        ),
        (
            "900 of a limit of 5,000",
            |f| {
                f.consumers = 900;
                f.max_consumers = 5_000;
            },
            all(),
            vec![],
        ),
        (
            "45 of a limit of 50",
            |f| {
                f.consumers = 45;
                f.max_consumers = 50;
            },
            all(),
            vec![(Warning, ConsumersNearLimit)],
        ),
        (
            "5,000 on servers without the default limit",
            |f| {
                f.consumers = 5_000;
                for s in &mut f.servers {
                    s.version = Some(FIXED_SERVER);
                }
            },
            all(),
            vec![],
        ),
    ]);
}
