//! One file per metric: what it runs on every system and the ratios it reports.

pub mod config;
pub mod core_ops;
pub mod counter;
pub mod election_herd;
pub mod failover;
pub mod handoff;
pub mod held_locks;
pub mod lock;
