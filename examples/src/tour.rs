//! The tour: a runnable walk through the toolkit.
//!
//! `scripts/tour.sh` runs it. Without `NATS_URL` it starts a throwaway local nats-server
//! (through the `kvtk-tests` kit) and removes it afterwards; with `NATS_URL` it uses that server
//! and creates its buckets under a unique `tour_*` prefix, deleting them at the end.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kvtk_core::{BucketConfig, ErrorKind, Include, Kv, Removal, WatchEvent};

type Res<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn section(title: &str) {
    println!();
    println!(
        "── {title} {}",
        "─".repeat(70usize.saturating_sub(title.len()))
    );
}

#[tokio::main]
async fn main() -> Res {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .init();

    // A throwaway server unless NATS_URL points at one.
    let (_server, url) = match std::env::var("NATS_URL") {
        Ok(url) => {
            println!("using the server at {url}");
            (None, url)
        }
        Err(_) => {
            let started = Instant::now();
            let server = kvtk_tests::NatsServer::start().await;
            let url = server.client_url();
            println!(
                "started a throwaway nats-server at {url} in {:?}",
                started.elapsed()
            );
            (Some(server), url)
        }
    };
    let kv = Kv::connect(&url).await?;
    println!("server version {}", kv.server_version());
    let run = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("tour_{}", &run[..8]);

    let mut result = core_tour(&kv, &prefix).await;
    if result.is_ok() {
        result = object_tour(&kv, &prefix).await;
    }
    if result.is_ok() {
        result = locks_tour(&kv, &prefix).await;
    }
    if result.is_ok() {
        result = leader_tour(&kv, &prefix).await;
    }
    if result.is_ok() {
        result = config_tour(&kv, &prefix).await;
    }
    if result.is_ok() {
        result = cli_tour(&kv, &prefix).await;
    }
    // Clean up whatever the tour created, also after a failure.
    for suffix in ["core", "locks", "leader", "config", "cli"] {
        let _ = kv.delete_bucket(&format!("{prefix}_{suffix}")).await;
    }
    let _ = kv.delete_object_store(&format!("{prefix}_objects")).await;
    result?;
    println!();
    println!("tour complete");
    Ok(())
}

/// kvtk-core: put/get, a CAS conflict, a transaction, a watch and a TTL expiry.
async fn core_tour(kv: &Kv, prefix: &str) -> Res {
    section("kvtk-core: a typed, validated KV bucket");
    let bucket = kv
        .create_bucket(
            BucketConfig::new(format!("{prefix}_core"))
                .history(1)
                .per_key_ttl(Duration::from_secs(1))
                .atomic_batches(true),
        )
        .await?;
    println!(
        "created bucket {} (per-key TTL, atomic batches)",
        bucket.name()
    );

    let rev = bucket.put("greeting", "hello").await?;
    let entry = bucket.get("greeting").await?.ok_or("greeting missing")?;
    println!(
        "put greeting = {:?} at revision {rev}; get reads it back at revision {}",
        std::str::from_utf8(entry.value())?,
        entry.revision()
    );

    let err = match bucket.put("bad key!", "x").await {
        Err(e) => e,
        Ok(_) => return Err("an invalid key was accepted".into()),
    };
    println!("an invalid key is refused before any request: {err}");

    section("compare-and-set");
    let rev2 = bucket.update("greeting", "hi", rev).await?;
    println!("update expecting revision {rev} → new revision {rev2}");
    match bucket.update("greeting", "hey", rev).await {
        Err(e) if e.kind() == ErrorKind::Conflict => println!(
            "update expecting the stale revision {rev} → conflict (key is at {:?}): {e}",
            e.current_revision().map(|r| r.get())
        ),
        other => return Err(format!("expected a conflict, got {other:?}").into()),
    }

    section("transaction: several keys, all or nothing, one round trip");
    let a = bucket.put("acct.alice", "100").await?;
    let b = bucket.put("acct.bob", "0").await?;
    let done = bucket
        .txn()
        .update("acct.alice", "90", a)
        .update("acct.bob", "10", b)
        .commit()
        .await?;
    println!(
        "moved 10 from alice to bob: revisions {:?}",
        done.revisions()
            .iter()
            .map(|(k, r)| format!("{k}@{r}"))
            .collect::<Vec<_>>()
    );
    let alice = done.revision("acct.alice").ok_or("alice's revision")?;
    let stale = bucket
        .txn()
        .update("acct.alice", "80", alice)
        .update("acct.bob", "20", b) // stale
        .commit()
        .await;
    let Err(err) = stale else {
        return Err("a stale transaction committed".into());
    };
    println!(
        "a second transfer with a stale revision for bob fails as a whole: key {:?} conflicted; alice is still {:?}",
        err.key(),
        std::str::from_utf8(bucket.get("acct.alice").await?.ok_or("alice")?.value())?
    );

    section("watch: last value per key, a marker, then live updates");
    let mut watch = bucket
        .watch(["acct.>"])
        .include(Include::LastPerKey)
        .await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), watch.next()).await? {
            Some(Ok(WatchEvent::Entry(e))) => println!(
                "  {} = {:?} (revision {})",
                e.key(),
                std::str::from_utf8(e.value())?,
                e.revision()
            ),
            Some(Ok(WatchEvent::InitialDone)) => {
                println!("  -- initial values delivered --");
                break;
            }
            Some(Err(e)) => return Err(e.into()),
            None => return Err("watch ended".into()),
        }
    }
    bucket.put("acct.carol", "5").await?;
    if let Some(Ok(WatchEvent::Entry(e))) =
        tokio::time::timeout(Duration::from_secs(5), watch.next()).await?
    {
        println!(
            "  live: {} = {:?}",
            e.key(),
            std::str::from_utf8(e.value())?
        );
    }

    section("per-key TTL: the server expires a key on its own clock");
    let mut expiry = bucket
        .watch(["session.1"])
        .include(Include::UpdatesOnly)
        .await?;
    let started = Instant::now();
    bucket
        .create("session.1", "alive")
        .ttl(Duration::from_secs(1))
        .await?;
    println!("created session.1 with a 1 s TTL");
    loop {
        match tokio::time::timeout(Duration::from_secs(10), expiry.next()).await? {
            Some(Ok(WatchEvent::Entry(e))) if e.removal() == Some(Removal::Expired) => {
                println!(
                    "  the watch saw its expiry marker after {:.2} s; get now reads {:?}",
                    started.elapsed().as_secs_f64(),
                    bucket.get("session.1").await?.map(|e| e.revision())
                );
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err("watch ended".into()),
        }
    }
    let counter = bucket.counter("visits");
    for _ in 0..3 {
        counter.add(1).await?;
    }
    println!(
        "an atomic counter (CAS with retries) after 3 increments: {}",
        counter.get().await?
    );
    Ok(())
}

/// kvtk-core's object store view: a chunked put, a streamed get with its digest checked, a
/// link, a watch and a delete.
async fn object_tour(kv: &Kv, prefix: &str) -> Res {
    use kvtk_core::object::{ObjectMeta, ObjectStoreConfig};
    use tokio::io::AsyncReadExt;

    section("object store: large objects in chunks, next to the buckets");
    let store = kv
        .create_object_store(ObjectStoreConfig::new(format!("{prefix}_objects")))
        .await?;
    let mut watch = store.watch().await?;
    let report: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let info = store
        .put(
            ObjectMeta::new("reports/2026-05.bin")
                .description("a monthly report")
                .chunk_size(128 * 1024),
            &mut report.as_slice(),
        )
        .await?;
    println!(
        "put {} ({} bytes) in {} chunks, {}",
        info.name(),
        info.size(),
        info.chunks(),
        info.digest().unwrap_or("no digest")
    );
    let mut reader = store.get("reports/2026-05.bin").await?;
    let (mut read, mut reads, mut buf) = (0usize, 0usize, vec![0u8; 64 * 1024]);
    loop {
        match reader.read(&mut buf).await? {
            0 => break,
            n => (read, reads) = (read + n, reads + 1),
        }
    }
    println!("streamed it back in {reads} reads: {read} bytes, digest checked at the end");

    store.link("reports/latest", &info).await?;
    println!(
        "a link reads its target: reports/latest has {} bytes",
        store.get_bytes("reports/latest").await?.len()
    );
    let names: Vec<String> = store
        .list()
        .await?
        .iter()
        .map(|i| i.name().to_string())
        .collect();
    println!("list: {names:?}");

    store.delete("reports/2026-05.bin").await?;
    for _ in 0..3 {
        let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await?
            .ok_or("watch ended")??;
        println!(
            "  watch: {}{}",
            event.name(),
            if event.is_deleted() { " deleted" } else { "" }
        );
    }
    let err = store
        .get("reports/latest")
        .await
        .err()
        .ok_or("the link still read")?;
    println!(
        "after the delete, the link's read fails with {:?}",
        err.kind()
    );
    Ok(())
}

/// kvtk-config: a typed configuration reloaded live, and a bad update rejected without harm.
async fn config_tour(kv: &Kv, prefix: &str) -> Res {
    use kvtk_config::{ConfigEvent, ConfigReader, ConfigWriter, Source};

    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct App {
        name: String,
        pool_size: u32,
    }
    fn check(a: &App) -> Result<(), String> {
        if (1..=100).contains(&a.pool_size) {
            Ok(())
        } else {
            Err(format!("pool_size {} is not in 1..=100", a.pool_size))
        }
    }

    section("kvtk-config: typed configuration, hot reload, last-known-good");
    let bucket = kv
        .create_bucket(BucketConfig::new(format!("{prefix}_config")).history(10))
        .await?;
    let source = Source::document("app");
    let writer = ConfigWriter::<App>::new(bucket.clone(), source.clone()).validate(check);
    writer
        .set(&App {
            name: "tour".into(),
            pool_size: 4,
        })
        .await?;
    let mut reader = ConfigReader::<App>::builder(source)
        .bucket(bucket.clone())
        .validate(check)
        .await?;
    let mut events = reader.events();
    println!(
        "reader started: pool_size = {} at revision {:?}",
        reader.current().pool_size,
        reader.revision().map(|r| r.get())
    );

    let started = Instant::now();
    writer.update(|c| c.pool_size = 32).await?;
    let snap = tokio::time::timeout(Duration::from_secs(10), reader.changed()).await?;
    println!(
        "writer set pool_size = 32 → the reader reloaded it in {:?}: pool_size = {}",
        started.elapsed(),
        snap.pool_size
    );

    match writer.update(|c| c.pool_size = 0).await {
        Err(e) => println!("the writer refuses an invalid value before writing it: {e}"),
        Ok(_) => return Err("an invalid value was written".into()),
    }
    // Someone bypasses the writer and stores an invalid document.
    let bad = bucket
        .put("app", r#"{"name":"tour","pool_size":0}"#)
        .await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.next()).await? {
            Some(ConfigEvent::Rejected(r)) => {
                println!("the reader rejected revision {bad}: {r}");
                break;
            }
            Some(_) => {}
            None => return Err("config events ended".into()),
        }
    }
    println!(
        "and keeps running on the last good value: pool_size = {} (revision {:?})",
        reader.current().pool_size,
        reader.revision().map(|r| r.get())
    );
    Ok(())
}

/// Waits until `live` keys under `filter` hold a value, watching them (no polling).
async fn until_live(bucket: &kvtk_core::Bucket, filter: &str, live: usize) -> Res {
    let mut watch = bucket.watch([filter]).await?;
    let mut keys = std::collections::HashSet::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while keys.len() < live {
            match watch.next().await {
                Some(Ok(WatchEvent::Entry(e))) if e.is_value() => {
                    keys.insert(e.key().clone());
                }
                Some(Ok(WatchEvent::Entry(e))) => {
                    keys.remove(e.key());
                }
                Some(Ok(WatchEvent::InitialDone)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err("watch ended".into()),
            }
        }
        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    })
    .await?
}

/// Waits until `id` is registered as a candidate of the `scheduler` election.
async fn until_candidate(election: &kvtk_leader::Election, id: &str) -> Res {
    until_live(election.bucket(), &format!("scheduler.cand.{id}"), 1).await
}

/// kvtk-leader: campaign, fencing, observe, graceful hand-over, transfer.
async fn leader_tour(kv: &Kv, prefix: &str) -> Res {
    use kvtk_leader::{Election, Observed};

    section("kvtk-leader: one leader, fenced terms, hand-over in milliseconds");
    let bucket = kv
        .create_or_open(Election::bucket_config(format!("{prefix}_leader")))
        .await?;
    let election = Election::new(bucket, "scheduler", Duration::from_secs(3))?;
    let mut observer = election.observe().await?;
    if let Some(first) = observer.next().await {
        println!("observer starts with: {first:?}");
    }

    let alpha = election.campaign("alpha").value("10.0.0.1:8080").await?;
    println!("alpha leads, term {} (a fencing token)", alpha.term());
    alpha
        .fencing()
        .put("scheduler.state", "alpha was here")
        .await?;

    // beta waits on the leader key's watch (no polling); alpha resigns, beta takes over.
    let beta_election = election.clone();
    let beta = tokio::spawn(async move { beta_election.campaign("beta").await });
    until_candidate(&election, "beta").await?;
    let old = alpha.fencing();
    let t0 = Instant::now();
    alpha.resign().await?;
    let beta = beta.await??;
    println!(
        "alpha resigned; beta leads (term {}) after {:?}",
        beta.term(),
        t0.elapsed()
    );
    match old.put("scheduler.state", "stale").await {
        Err(e) => println!("alpha's late write with its old term is refused: {e}"),
        Ok(_) => return Err("a stale write was accepted".into()),
    }
    // The observer reports every term in order (and "no leader" when it sees the gap).
    loop {
        match tokio::time::timeout(Duration::from_secs(5), observer.next()).await? {
            Some(Observed::Leader(l)) => {
                println!("  observed: leader {} term {}", l.id, l.term);
                if l.id == "beta" {
                    break;
                }
            }
            Some(other) => println!("  observed: {other:?}"),
            None => break,
        }
    }

    // Transfer to a named campaigning candidate.
    let gamma_election = election.clone();
    let gamma = tokio::spawn(async move { gamma_election.campaign("gamma").await });
    until_candidate(&election, "gamma").await?;
    beta.transfer_to("gamma").await?;
    let gamma = gamma.await??;
    println!(
        "beta transferred leadership to {} (term {})",
        gamma.id(),
        gamma.term()
    );
    gamma.resign().await?;
    println!(
        "gamma resigned with nobody campaigning: leader = {:?}",
        election.leader().await?.map(|l| l.id)
    );
    Ok(())
}

/// kvtk-locks: contention, fair hand-off, a dead holder replaced, a stale token rejected.
async fn locks_tour(kv: &Kv, prefix: &str) -> Res {
    use kvtk_locks::{ErrorKind, Fence, Holder, Locks, Released};

    section("kvtk-locks: leases, fencing tokens, hand-off without polling");
    let bucket = format!("{prefix}_locks");
    // Two clients, each with its own connection, as two processes would have.
    let a = Locks::open(&Kv::connect(kv_url(kv)?.as_str()).await?, &bucket)
        .await?
        .holder(Holder::named("client-a"));
    // b reaches the server through a fault proxy, so the tour can cut it off like a crashed
    // or partitioned process.
    let proxy = kvtk_tests::FaultProxy::start(&kv_url(kv)?).await;
    let b_client = async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_millis(500)))
        .connect(proxy.url())
        .await?;
    let b = Locks::open(
        &Kv::new(b_client).with_timeout(Duration::from_millis(500)),
        &bucket,
    )
    .await?
    .holder(Holder::named("client-b"));
    let fence = Fence::new(); // lives with the protected resource

    let ma = a.mutex("jobs.reindex")?;
    let mb = b.mutex("jobs.reindex")?;
    let ga = ma.lock().ttl(Duration::from_secs(2)).await?;
    fence.admit(ga.token())?;
    println!(
        "a holds jobs.reindex: token {}, lease valid for {:?} on a's own monotonic clock",
        ga.token(),
        ga.deadline()
            .saturating_duration_since(tokio::time::Instant::now())
    );
    println!(
        "b.try_lock() while a holds it: {}",
        if mb.try_lock().await?.is_none() {
            "busy"
        } else {
            "acquired?!"
        }
    );

    // b queues; a's release wakes exactly b (its watch on the predecessor), no polling.
    let waiting = tokio::spawn(async move { mb.lock().ttl(Duration::from_secs(2)).await });
    let t0 = Instant::now();
    let old = ga.token();
    // Wait until b's entry is queued behind a's (`<lock>._q.<handle>` keys), so the release
    // is a real hand-off.
    until_live(a.bucket(), "jobs.reindex._q.*", 2).await?;
    let released = ga.release().await?;
    let gb = waiting.await??;
    println!(
        "a released ({released:?}); b acquired {:?} after the release was sent, token {}",
        t0.elapsed(),
        gb.token()
    );
    fence.admit(gb.token())?;
    match fence.admit(old) {
        Err(e) if e.kind() == ErrorKind::StaleToken => {
            println!("a late write carrying a's old token {old} is rejected: {e}")
        }
        other => return Err(format!("expected a stale token error, got {other:?}").into()),
    }

    // b is cut off while holding the lock: it can neither renew nor release. It gives the
    // lock up by itself at its local deadline, and a gets it once the server expires b's
    // entry on the server's clock (TTL 2 s).
    proxy.blackhole();
    let t1 = Instant::now();
    let a_waits = tokio::spawn(async move { ma.lock().ttl(Duration::from_secs(2)).await });
    gb.lost().await;
    println!(
        "b, cut off, reported the lock lost after {:.2} s ({:?}), before the server's TTL",
        t1.elapsed().as_secs_f64(),
        gb.loss_reason()
    );
    let ga2 = a_waits.await??;
    println!(
        "a acquired again {:.2} s after the cut (TTL 2 s), token {}",
        t1.elapsed().as_secs_f64(),
        ga2.token()
    );
    drop(gb);
    fence.admit(ga2.token())?;
    if ga2.release().await? != Released::Released {
        return Err("release failed".into());
    }

    // A semaphore: at most 2 holders.
    let s1 = a.semaphore("pool.db", 2)?;
    let s2 = a.semaphore("pool.db", 2)?;
    let s3 = a.semaphore("pool.db", 2)?;
    let (p1, p2) = (s1.acquire().await?, s2.acquire().await?);
    println!(
        "semaphore pool.db (2 permits): held with tokens {} and {}; a third try: {}",
        p1.token(),
        p2.token(),
        if s3.try_acquire().await?.is_none() {
            "busy"
        } else {
            "acquired?!"
        }
    );
    p1.release().await?;
    p2.release().await?;
    a.shutdown().await;
    Ok(())
}

/// The URL the tour's own client uses, for making more clients.
fn kv_url(kv: &Kv) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let info = kv.client().server_info();
    Ok(format!("nats://{}:{}", info.host, info.port))
}

/// kvtk: the same lock from a shell, around a command (scripts/tour.sh builds kvtk beside
/// the tour binary).
async fn cli_tour(kv: &Kv, prefix: &str) -> Res {
    section("kvtk: a command under a lock, from the shell");
    let Some(kvtk) = std::env::current_exe()?
        .parent()
        .map(|d| d.join("kvtk"))
        .filter(|p| p.exists())
    else {
        println!("kvtk is not built (cargo build -p kvtk); skipped");
        return Ok(());
    };
    let bucket = format!("{prefix}_cli");
    let script =
        "echo \"  the command runs under $KVTK_LOCK_NAME, fencing token $KVTK_FENCING_TOKEN\"";
    println!("$ kvtk lock --bucket {bucket} jobs.nightly -- sh -c '{script}'");
    let status = tokio::process::Command::new(&kvtk)
        .args([
            "--server",
            &kv_url(kv)?,
            "lock",
            "--bucket",
            &bucket,
            "jobs.nightly",
        ])
        .args(["--", "sh", "-c", script])
        .status()
        .await?;
    println!("kvtk exited with the command's status: {status}");
    if !status.success() {
        return Err("kvtk lock failed".into());
    }
    Ok(())
}
