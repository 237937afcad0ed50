//! What operations cost the client, counted rather than timed: requests sent, CPU time and
//! allocations. Load on the machine moves latencies a lot and these counts little.
//!
//! The process's allocator counts every allocation (two atomic additions each, in every
//! process of the bench alike), so a loop's allocations and the heap bytes a process holds
//! are known without relying on what the allocator returns to the kernel.

use std::alloc::System;

use serde_json::{json, Value};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static ALLOC: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes on the heap now: allocated − freed, whatever the allocator keeps or returns.
pub(crate) fn heap_bytes() -> i64 {
    // A reallocation's growth counts as allocated, its shrink as freed.
    let s = ALLOC.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

/// User + system CPU time of this process (every thread), in microseconds.
pub(crate) fn cpu_us() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let Ok(u) = getrusage(UsageWho::RUSAGE_SELF) else {
        return 0.0;
    };
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e6 + t.tv_usec() as f64;
    us(u.user_time()) + us(u.system_time())
}

/// Counts from its start: the requests `client` sent (every message it published: a JetStream
/// write or read is one request, and nothing else goes out as a message), this process's CPU
/// time and allocations.
pub(crate) struct Meter {
    client: async_nats::Client,
    sent0: u64,
    cpu0: f64,
    region: Region<'static, System>,
}

impl Meter {
    pub(crate) fn start(client: &async_nats::Client) -> Meter {
        Meter {
            client: client.clone(),
            sent0: sent(client),
            cpu0: cpu_us(),
            region: Region::new(ALLOC),
        }
    }

    /// Requests sent since the start.
    pub(crate) fn requests(&self) -> u64 {
        sent(&self.client) - self.sent0
    }

    /// Adds what was counted since the start, for `ops` operations, to `t`.
    pub(crate) fn add_to(&self, t: &mut Tally, ops: u64) {
        let (cpu, a) = (cpu_us() - self.cpu0, self.region.change());
        t.ops += ops;
        t.requests += self.requests();
        t.cpu_us += cpu;
        t.allocs += (a.allocations + a.reallocations) as u64;
        t.alloc_bytes += a.bytes_allocated as u64;
    }
}

/// What a run of operations cost, summed over the blocks it was counted in.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    ops: u64,
    requests: u64,
    cpu_us: f64,
    allocs: u64,
    alloc_bytes: u64,
}

impl Tally {
    /// Everything counted, per operation.
    pub(crate) fn per_op(&self) -> Value {
        let per = |x: f64| x / self.ops.max(1) as f64;
        json!({
            "ops": self.ops,
            "requests_per_op": per(self.requests as f64),
            "cpu_us_per_op": per(self.cpu_us),
            "allocs_per_op": per(self.allocs as f64),
            "alloc_bytes_per_op": per(self.alloc_bytes as f64),
        })
    }
}

/// Messages the client has published so far (async-nats' own count of what it sent).
fn sent(client: &async_nats::Client) -> u64 {
    client
        .statistics()
        .out_messages
        .load(std::sync::atomic::Ordering::Relaxed)
}
