//! kvtk-membership: three member processes register in a group; one is SIGKILLed and leaves
//! after its TTL, one leaves gracefully, one changes its metadata. The parent watches.
//!
//! Run with `cargo run -p kvtk-membership --example membership`. Uses `NATS_URL` when set,
//! else a throwaway nats-server. The members are copies of this example (`membership child
//! <id>`), so that one of them can really be killed.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use kvtk_core::Kv;
use kvtk_membership::{Group, Json, Membership, MembershipEvent, MembershipWatch};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error>;

const TTL: Duration = Duration::from_secs(2);

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Info {
    pid: u32,
    load: u32,
}

async fn group(url: &str) -> Result<Group, BoxError> {
    let kv = Kv::connect(url).await?;
    kv.create_or_open(Membership::bucket_config("example-members"))
        .await?;
    Ok(Membership::open(&kv, "example-members")
        .await?
        .group("workers")?)
}

/// A member process: joins, reports load 7 after its first line on stdin, leaves when
/// stdin closes.
async fn child(url: &str, id: &str) -> Result<(), BoxError> {
    let pid = std::process::id();
    let member = group(url)
        .await?
        .join(id, Json(Info { pid, load: 0 }))
        .ttl(TTL)
        .await?;
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut line = String::new();
    while tokio::io::AsyncBufReadExt::read_line(&mut stdin, &mut line).await? > 0 {
        member.update(Json(Info { pid, load: 7 })).await?;
        line.clear();
    }
    member.leave().await?;
    Ok(())
}

fn spawn_child(url: &str, id: &str) -> Result<Child, BoxError> {
    Ok(Command::new(std::env::current_exe()?)
        .args(["child", id])
        .env("NATS_URL", url)
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?)
}

async fn next(w: &mut MembershipWatch, start: Instant) -> Result<MembershipEvent, BoxError> {
    let ev = tokio::time::timeout(Duration::from_secs(20), w.next())
        .await?
        .ok_or("watch ended")??;
    let t = start.elapsed().as_secs_f64();
    match &ev {
        MembershipEvent::Joined(m) => {
            let info: Info = m.decode()?;
            println!(
                "{t:6.2}s joined  {} (pid {}, since revision {})",
                m.id(),
                info.pid,
                m.joined_at()
            );
        }
        MembershipEvent::Updated(m) => {
            println!(
                "{t:6.2}s updated {} (load {})",
                m.id(),
                m.decode::<Info>()?.load
            )
        }
        MembershipEvent::Left { member, reason, .. } => {
            println!("{t:6.2}s left    {} ({reason:?})", member.id())
        }
        other => println!("{t:6.2}s {other:?}"),
    }
    Ok(ev)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let url = std::env::var("NATS_URL")?;
        return child(&url, args.get(2).ok_or("child needs an id")?).await;
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
    let workers = group(&url).await?;
    let mut w = workers.watch().await?;
    let start = Instant::now();
    while !matches!(next(&mut w, start).await?, MembershipEvent::InitialDone) {}

    let mut children: HashMap<&str, Child> = HashMap::new();
    for id in ["w1", "w2", "w3"] {
        children.insert(id, spawn_child(&url, id)?);
        next(&mut w, start).await?;
    }
    println!(
        "members: {:?}",
        workers
            .members()
            .await?
            .iter()
            .map(|m| m.id().to_string())
            .collect::<Vec<_>>()
    );

    if let Some(stdin) = children.get_mut("w2").and_then(|c| c.stdin.as_mut()) {
        stdin.write_all(b"report\n").await?;
    }
    next(&mut w, start).await?; // w2 updated

    println!("SIGKILL w1 (TTL {TTL:?})");
    if let Some(c) = children.get_mut("w1") {
        c.start_kill()?;
    }
    next(&mut w, start).await?; // w1 left: Expired

    println!("w3 leaves gracefully");
    if let Some(mut c) = children.remove("w3") {
        drop(c.stdin.take());
        c.wait().await?;
    }
    next(&mut w, start).await?; // w3 left: Left

    for (_, mut c) in children {
        drop(c.stdin.take());
        c.wait().await?;
    }
    next(&mut w, start).await?; // w2 left: Left
    println!("members: {}", workers.members().await?.len());
    Ok(())
}
