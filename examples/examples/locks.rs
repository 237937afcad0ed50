//! kv-locks in action: two clients contend for a lock, a holder that dies is replaced
//! within its TTL, and its stale fencing token is rejected.
//!
//! `cargo run -p kv-examples --example locks` (starts a throwaway server when `NATS_URL` is
//! unset).

use std::time::{Duration, Instant};

use kv_core::Kv;
use kv_locks::{Fence, Holder, Locks};
use kv_tests::{FaultProxy, NatsServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (_server, url) = match std::env::var("NATS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let s = NatsServer::start().await;
            let url = s.client_url();
            (Some(s), url)
        }
    };
    // Client "b" reaches the server through a proxy we can cut, to play a crashed process.
    let proxy = FaultProxy::start(&url).await;
    let client = |url: String| async move {
        let c = async_nats::ConnectOptions::new()
            .request_timeout(Some(Duration::from_millis(500)))
            .connect(url)
            .await?;
        Ok::<_, async_nats::ConnectError>(Kv::new(c).with_timeout(Duration::from_millis(500)))
    };
    let a = Locks::open(&client(url.clone()).await?, "example-locks")
        .await?
        .holder(Holder::named("client-a"));
    let b = Locks::open(&client(proxy.url()).await?, "example-locks")
        .await?
        .holder(Holder::named("client-b"));
    let fence = Fence::new(); // the protected resource's validator

    // 1. Contention: a holds, b waits and gets it when a releases.
    let ma = a.mutex("jobs.reindex")?;
    let mb = b.mutex("jobs.reindex")?;
    let ga = ma.lock().ttl(Duration::from_secs(2)).await?;
    fence.admit(ga.token())?;
    println!("a holds jobs.reindex with token {}", ga.token());
    assert!(mb.try_lock().await?.is_none());
    let waiting = tokio::spawn(async move { mb.lock().ttl(Duration::from_secs(2)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    ga.release().await?;
    let gb = waiting.await??;
    println!(
        "b took over after a's release in {:?}, token {}",
        t0.elapsed(),
        gb.token()
    );
    fence.admit(gb.token())?;

    // 2. b "crashes": its connection is gone, it can neither renew nor release. a waits and
    //    gets the lock once the server expires b's entry (TTL 2 s).
    let stale = gb.token();
    let a_waits = tokio::spawn(async move { ma.lock().ttl(Duration::from_secs(2)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    proxy.cut();
    let ga = a_waits.await??;
    println!(
        "b died; a acquired after {:?} with token {}",
        t0.elapsed(),
        ga.token()
    );
    gb.lost().await; // b's own guard noticed, before the server expired it
    println!(
        "b's guard reports: {}",
        gb.loss_reason().unwrap_or_default()
    );

    // 3. b's late write carries its old token: the resource rejects it.
    fence.admit(ga.token())?;
    match fence.admit(stale) {
        Err(e) => println!("b's stale write rejected: {e}"),
        Ok(()) => unreachable!("a stale token must be rejected"),
    }
    ga.release().await?;
    drop(gb);
    a.shutdown().await;
    Ok(())
}
