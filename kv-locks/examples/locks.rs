//! kvtk-locks across processes: two worker processes contend for one lock, a holder process is
//! killed (SIGKILL) and replaced once the server expires its lease, and the dead holder's
//! stale fencing token is rejected by the protected resource.
//!
//! `cargo run -p kvtk-locks --example locks` (starts a throwaway server when `NATS_URL` is
//! unset). The example runs copies of itself as the worker processes.

use std::process::Stdio;
use std::time::{Duration, Instant};

use kvtk_core::Kv;
use kvtk_locks::{Holder, KvFence, Locks, Token};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

type Res<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const BUCKET: &str = "example-locks";
const LOCK: &str = "jobs.reindex";
const TTL: Duration = Duration::from_secs(2);

/// The protected resource: a key written only through a KV-backed fence, so every process
/// shares the highest token seen.
fn fence(locks: &Locks) -> KvFence {
    KvFence::new(locks.bucket().clone(), "resource.fence")
}

#[tokio::main]
async fn main() -> Res {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("worker") if args.len() == 5 => return worker(&args[2], &args[3], &args[4]).await,
        _ => {}
    }
    let (_server, url) = match std::env::var("NATS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let s = kvtk_tests::NatsServer::start().await;
            let url = s.client_url();
            (Some(s), url)
        }
    };
    let kv = Kv::connect(&url).await?;
    let _ = kv.delete_bucket(BUCKET).await;
    let locks = Locks::open(&kv, BUCKET)
        .await?
        .holder(Holder::named("parent"));

    // 1. Two processes contend: each takes the lock three times and writes through the fence.
    println!("── two worker processes contend for {LOCK}");
    let mut a = spawn(&url, "a", "rounds")?;
    let mut b = spawn(&url, "b", "rounds")?;
    let (ra, rb) = tokio::join!(echo(&mut a), echo(&mut b));
    ra?;
    rb?;
    a.wait().await?;
    b.wait().await?;

    // 2. A holder process dies without releasing. The parent waits in the queue and gets the
    //    lock once the server expires the dead holder's entry (TTL 2 s, server clock).
    println!("── a holder process is killed with SIGKILL while holding {LOCK}");
    let mut c = spawn(&url, "c", "hold")?;
    let stale = until_holding(&mut c).await?;
    let waiting = {
        let m = locks.mutex(LOCK)?;
        tokio::spawn(async move { m.lock().ttl(TTL).await })
    };
    c.start_kill()?;
    let killed = Instant::now();
    c.wait().await?;
    let guard = waiting.await??;
    println!(
        "parent acquired {:.2} s after the kill (TTL {} s), token {}",
        killed.elapsed().as_secs_f64(),
        TTL.as_secs(),
        guard.token()
    );
    let fence = fence(&locks);
    fence
        .write(guard.token(), "resource.data", "written by the parent")
        .await?;

    // 3. The dead holder's late write (its token is stale) is rejected by the resource.
    match fence
        .write(stale, "resource.data", "late write from c")
        .await
    {
        Err(e) => println!("a late write carrying c's token {stale} is rejected: {e}"),
        Ok(_) => return Err("a stale token was accepted".into()),
    }
    guard.release().await?;
    locks.shutdown().await;
    kv.delete_bucket(BUCKET).await?;
    Ok(())
}

/// Starts a copy of this example as a worker process; it dies with its handle.
fn spawn(url: &str, name: &str, mode: &str) -> Res<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .args(["worker", url, name, mode])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?)
}

/// Prints a worker's output until it exits.
async fn echo(child: &mut Child) -> Res {
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(out).lines();
    while let Some(line) = lines.next_line().await? {
        println!("  {line}");
    }
    Ok(())
}

/// Prints a worker's output until it reports holding the lock; returns its token.
async fn until_holding(child: &mut Child) -> Res<Token> {
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(out).lines();
    while let Some(line) = lines.next_line().await? {
        println!("  {line}");
        if let Some(t) = line.strip_prefix("c holds the lock, token ") {
            return Ok(Token::from_u64(t.trim().parse()?).ok_or("bad token")?);
        }
    }
    Err("worker exited before holding the lock".into())
}

/// A worker process.
async fn worker(url: &str, name: &str, mode: &str) -> Res {
    let kv = Kv::connect(url).await?;
    let locks = Locks::open(&kv, BUCKET)
        .await?
        .holder(Holder::named(format!("worker-{name}")));
    let mutex = locks.mutex(LOCK)?;
    let fence = fence(&locks);
    if mode == "hold" {
        let guard = mutex.lock().ttl(TTL).await?;
        fence
            .write(guard.token(), "resource.data", format!("written by {name}"))
            .await?;
        println!("{name} holds the lock, token {}", guard.token());
        // Hold (and renew) until killed.
        guard.lost().await;
        return Ok(());
    }
    for round in 1..=3 {
        let waited = Instant::now();
        let guard = mutex.lock().ttl(TTL).await?;
        fence
            .write(
                guard.token(),
                "resource.data",
                format!("{name} round {round}"),
            )
            .await?;
        println!(
            "{name}: round {round}, acquired after {:?}, token {}",
            waited.elapsed(),
            guard.token()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        guard.release().await?;
    }
    locks.shutdown().await;
    Ok(())
}
