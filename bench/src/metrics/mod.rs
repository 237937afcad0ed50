//! One file per metric: what it runs on every system and the ratios it reports.

pub(crate) mod config;
pub(crate) mod core_ops;
pub(crate) mod counter;
pub(crate) mod election_herd;
pub(crate) mod failover;
pub(crate) mod fanout;
pub(crate) mod handoff;
pub(crate) mod held_locks;
pub(crate) mod lock;
pub(crate) mod r3;
pub(crate) mod ui;
