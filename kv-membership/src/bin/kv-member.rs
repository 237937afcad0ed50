//! `kv-member [--session] URL BUCKET GROUP ID [TTL_SECS] [METADATA]`: registers instance `ID`
//! in `GROUP` and keeps it registered while the process lives; Ctrl-C (SIGINT) leaves the
//! group. With `--session` the member is bound to a session of this process
//! ([`Membership::bind_to_session`]; `TTL_SECS` is then the session's TTL): no renewal of its
//! own, and it ends with the session.
//!
//! A sidecar for processes that cannot link the library, and the member process that the
//! crate's tests SIGKILL. Prints `joined <group>.<id> <joined_at>` once registered, followed
//! by ` session <id>` when bound.

use std::time::Duration;

use kvtk_core::lease::LeaseConfig;
use kvtk_core::Kv;
use kvtk_membership::Membership;

type BoxError = Box<dyn std::error::Error>;

const USAGE: &str = "usage: kv-member [--session] URL BUCKET GROUP ID [TTL_SECS] [METADATA]";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let bound = args.first().is_some_and(|a| a == "--session");
    if bound {
        args.remove(0);
    }
    let [url, bucket, group, id, rest @ ..] = args.as_slice() else {
        return Err(USAGE.into());
    };
    // Without TTL_SECS the bucket's default: DEFAULT_TTL on one server, 30 s replicated.
    let ttl = match rest.first() {
        Some(s) => Some(Duration::from_secs(s.parse()?)),
        None => None,
    };
    let metadata = rest.get(1).cloned().unwrap_or_default();
    let kv = Kv::connect(url).await?;
    let membership = Membership::open(&kv, bucket).await?;
    let membership = match (bound, ttl) {
        (false, _) => membership,
        (true, None) => membership.bind_to_session(),
        (true, Some(ttl)) => membership.bind_to_session_with(LeaseConfig::new(ttl)?),
    };
    let group = membership.group(group.as_str())?;
    let join = group.join(id.as_str(), metadata);
    let member = match ttl.filter(|_| !bound) {
        Some(ttl) => join.ttl(ttl).await?,
        None => join.await?,
    };
    let session = member
        .session()
        .map(|s| format!(" session {s}"))
        .unwrap_or_default();
    println!(
        "joined {}.{} {}{session}",
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
