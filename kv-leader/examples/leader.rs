//! kvtk-leader: three processes elect a leader; killing the leader's process fails over within
//! the TTL plus about a second, a graceful stop hands over within milliseconds.
//!
//! Run with `cargo run -p kvtk-leader --example leader`. Uses `NATS_URL` when set, else a
//! throwaway nats-server. The example starts three copies of itself (`leader child <id>`)
//! and watches the election from the parent.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use kvtk_core::Kv;
use kvtk_leader::{Election, ElectorEvent, Observed};
use tokio::process::{Child, Command};
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(3);

async fn election(url: &str) -> Result<Election, Box<dyn std::error::Error>> {
    let kv = Kv::connect(url).await?;
    let bucket = kv.create_or_open(Election::bucket_config("demo")).await?;
    Ok(Election::new(bucket, "scheduler", TTL)?)
}

/// A child process: run as leader until stdin closes (the graceful shutdown signal).
async fn child(url: &str, id: &str) -> Result<(), Box<dyn std::error::Error>> {
    let election = election(url).await?;
    let me = id.to_string();
    election
        .elector(id)
        .value(format!("pid {}", std::process::id()))
        .on_event(move |ev| match ev {
            ElectorEvent::StartedLeading { term } => {
                println!("[{me}] started leading, term {term}")
            }
            ElectorEvent::StoppedLeading { term, reason } => {
                println!("[{me}] stopped leading term {term}: {reason:?}")
            }
            _ => {}
        })
        .run(|ctx| async move {
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = ctx.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {
                        n += 1;
                        // Rejected by the server once this term is over.
                        if ctx.fencing().put("scheduler.tick", n.to_string()).await.is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .with_graceful_shutdown(async {
            // stdin reaching EOF (the parent closed it) is the shutdown signal. The blocking
            // read ends with it.
            let _ = tokio::task::spawn_blocking(|| {
                let mut buf = [0u8; 1];
                std::io::Read::read(&mut std::io::stdin(), &mut buf)
            })
            .await;
        })
        .await?;
    Ok(())
}

fn spawn_child(url: &str, id: &str) -> Result<Child, Box<dyn std::error::Error>> {
    Ok(Command::new(std::env::current_exe()?)
        .args(["child", id])
        .env("NATS_URL", url)
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?)
}

async fn next_leader(
    obs: &mut kvtk_leader::Observer,
) -> Result<kvtk_leader::LeaderInfo, Box<dyn std::error::Error>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), obs.next()).await? {
            Some(Observed::Leader(l)) if l.transfer_to.is_none() => return Ok(l),
            Some(Observed::Leader(_)) => {}
            Some(Observed::NoLeader) => println!("(no leader)"),
            None => return Err("observer ended".into()),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let url = std::env::var("NATS_URL")?;
        let id = args.get(2).ok_or("child needs an id")?;
        return child(&url, id).await;
    }

    // Keep the throwaway server alive until the end of main.
    let mut _server = None;
    let url = match std::env::var("NATS_URL") {
        Ok(u) => u,
        Err(_) => {
            let s = kvtk_tests::NatsServer::start().await;
            let u = s.client_url();
            _server = Some(s);
            u
        }
    };
    let election = election(&url).await?;
    let mut obs = election.observe().await?;

    let mut children: HashMap<String, Child> = HashMap::new();
    for id in ["alpha", "beta", "gamma"] {
        children.insert(id.to_string(), spawn_child(&url, id)?);
    }
    let first = next_leader(&mut obs).await?;
    println!(
        "leader: {} ({}), term {}",
        first.id, first.value, first.term
    );

    // Crash: SIGKILL the leader's process. Nobody resigns; the lease expires.
    let mut victim = children.remove(&first.id).ok_or("unknown leader")?;
    let t0 = Instant::now();
    victim.kill().await?;
    let second = next_leader(&mut obs).await?;
    println!(
        "killed {}; {} leads (term {}) after {:?} (TTL {TTL:?})",
        first.id,
        second.id,
        second.term,
        t0.elapsed()
    );
    println!("candidates now: {:?}", election.candidates().await?);

    // Graceful: close the leader's stdin; it stops its work and resigns.
    let mut leaving = children.remove(&second.id).ok_or("unknown leader")?;
    let t1 = Instant::now();
    drop(leaving.stdin.take());
    let third = next_leader(&mut obs).await?;
    println!(
        "{} stopped gracefully; {} leads (term {}) after {:?}",
        second.id,
        third.id,
        third.term,
        t1.elapsed()
    );
    leaving.wait().await?;

    // Stop the last one gracefully too: "no leader".
    for (_, mut c) in children {
        drop(c.stdin.take());
        c.wait().await?;
    }
    while let Some(o) = tokio::time::timeout(Duration::from_secs(10), obs.next()).await? {
        if o == Observed::NoLeader {
            println!("(no leader): everyone stopped");
            break;
        }
    }
    Ok(())
}
