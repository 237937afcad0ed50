//! `kv-member URL BUCKET GROUP ID [TTL_SECS] [METADATA]`: registers instance `ID` in `GROUP`
//! and keeps it registered while the process lives; Ctrl-C (SIGINT) leaves the group.
//!
//! A sidecar for processes that cannot link the library, and the member process that the
//! crate's tests SIGKILL. Prints `joined <group>.<id> <joined_at>` once registered.

use std::time::Duration;

use kvtk_core::Kv;
use kvtk_membership::Membership;

type BoxError = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, bucket, group, id, rest @ ..] = args.as_slice() else {
        return Err("usage: kv-member URL BUCKET GROUP ID [TTL_SECS] [METADATA]".into());
    };
    // Without TTL_SECS the bucket's default: DEFAULT_TTL on one server, 30 s replicated.
    let ttl = match rest.first() {
        Some(s) => Some(Duration::from_secs(s.parse()?)),
        None => None,
    };
    let metadata = rest.get(1).cloned().unwrap_or_default();
    let kv = Kv::connect(url).await?;
    let group = Membership::open(&kv, bucket).await?.group(group.as_str())?;
    let join = group.join(id.as_str(), metadata);
    let member = match ttl {
        Some(ttl) => join.ttl(ttl).await?,
        None => join.await?,
    };
    println!(
        "joined {}.{} {}",
        group.name(),
        member.id(),
        member.joined_at()
    );
    tokio::select! {
        why = member.lost() => return Err(format!("registration lost: {why}").into()),
        r = tokio::signal::ctrl_c() => r?,
    }
    member.leave().await?;
    Ok(())
}
