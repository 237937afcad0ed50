//! The Buckets view: every bucket's settings, size, history depth, replicas and placement,
//! and the doctor's findings for the buckets the console shows as locks, elections,
//! configuration or members.
//!
//! Stream state is something the server reports only when asked, so this feed asks, on one
//! `tokio::time::interval` owned by its task: every [`POLL`] for the settings and sizes,
//! every [`DOCTOR_EVERY`] polls for the doctor's findings. A slow round delays the next
//! rather than bunching the missed ones; the task stops with the server's token.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use kvtk_core::BucketInfo;
use kvtk_doctor::Intent;
use serde_json::{json, Value};
use tokio::time::MissedTickBehavior;

use super::Ctx;
use crate::hub::View;

/// How often the buckets are read.
pub(crate) const POLL: Duration = Duration::from_secs(5);

/// Every how many polls the doctor runs again.
const DOCTOR_EVERY: u32 = 6;

/// Runs until `ctx.cancel` fires. `intents` names what each known bucket is for.
///
/// # Cancel safety
/// Cancel safe: it only reads.
pub(crate) async fn run(ctx: Ctx, intents: BTreeMap<String, Intent>) {
    let mut findings: BTreeMap<String, Value> = BTreeMap::new();
    let mut every = tokio::time::interval(POLL);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut round: u32 = 0;
    loop {
        let refresh_doctor = round.is_multiple_of(DOCTOR_EVERY);
        tokio::select! {
            () = ctx.cancel.cancelled() => return,
            _ = every.tick() => {}
        }
        tokio::select! {
            () = ctx.cancel.cancelled() => return,
            () = poll(&ctx, &intents, &mut findings, refresh_doctor) => {}
        }
        round = round.wrapping_add(1);
    }
}

async fn poll(
    ctx: &Ctx,
    intents: &BTreeMap<String, Intent>,
    findings: &mut BTreeMap<String, Value>,
    refresh_doctor: bool,
) {
    let infos = match ctx.kv.buckets().await {
        Ok(b) => b,
        Err(e) => {
            ctx.hub.status(
                View::Buckets,
                json!({"state": "error", "message": format!("cannot list the buckets: {e}")}),
            );
            return;
        }
    };
    for (name, intent) in intents {
        if !infos.iter().any(|b| &b.name == name) {
            findings.remove(name);
            continue;
        }
        if !refresh_doctor && findings.contains_key(name) {
            continue;
        }
        let report = match kvtk_doctor::check(&ctx.kv, name, intent).await {
            Ok(r) => serde_json::to_value(&r).unwrap_or(Value::Null),
            Err(e) => json!({"error": e.to_string()}),
        };
        findings.insert(name.clone(), report);
    }
    let names: HashSet<String> = infos.iter().map(|b| b.name.clone()).collect();
    ctx.hub.retain(View::Buckets, &|id| names.contains(id));
    for b in &infos {
        let mut item = bucket_json(b);
        item["doctor"] = findings.get(&b.name).cloned().unwrap_or(Value::Null);
        item["role"] = json!(intents
            .get(&b.name)
            .map(|i| i.recipes().map(|r| r.as_str()).collect::<Vec<_>>()));
        ctx.hub.put(View::Buckets, &b.name, item);
    }
    ctx.hub.status(
        View::Buckets,
        json!({"state": "live", "message": format!("{} buckets, read every {} s", infos.len(), POLL.as_secs())}),
    );
}

/// The JSON item of one bucket.
fn bucket_json(b: &BucketInfo) -> Value {
    serde_json::to_value(b).unwrap_or(Value::Null)
}
