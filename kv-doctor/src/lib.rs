#![doc = include_str!("../README.md")]
//!
//! ## What it checks
//!
//! [`check`] (or a [`Doctor`] with a system-account connection) inspects one bucket and the
//! servers hosting it and returns a [`Report`] of typed [`Finding`]s — a [`Severity`], a
//! stable [`Code`], a message and the fix. What is unsafe depends on what the bucket is for
//! ([`Intent`]): revisions are fencing tokens for locks and terms for elections, so a lost
//! log tail that lets the server issue a revision twice is an error there, and a warning for
//! configuration or membership.
//!
//! | code | when | severity |
//! | --- | --- | --- |
//! | `server-too-old` | a hosting server is below 2.12.4 (Jepsen's 2.12.1 analysis) | error |
//! | `sync-not-always` | `sync_interval` is not `always`: R1 with locks/elections · R1 otherwise · R3 | error · warning · info |
//! | `sync-unchecked` | no system-account connection, or VARZ refused: R1 with locks/elections · otherwise | warning · info |
//! | `few-replicas` | fewer than 3 replicas for locks or elections | warning |
//! | `memory-storage` | memory storage: with locks/elections · otherwise | error · warning |
//! | `persist-async` | `persist_mode: async`: with locks/elections · otherwise | error · warning |
//! | `per-key-ttl-off` | `allow_msg_ttl` off: locks, elections, membership · config (fleet acks) | error · info |
//! | `atomic-batches-off` | `allow_atomic` off: locks (multi-locks, KV fence) or config (prefix writes) | warning |
//! | `history-not-one` | more than one revision per key on a bucket of leases | error |
//! | `lease-ttl-below-election` | replicated bucket, the lease does not ride through a stream-leader election ([`LeaseConfig::rides_through_election`](kvtk_core::lease::LeaseConfig::rides_through_election)) | warning |
//! | `lease-ttl-unchecked` | replicated bucket, no lease given | info |
//! | `mirror` | the bucket is a read-only mirror (only the version and its own expiry are checked on it) | info |
//! | `mirror-expires` | a mirror with per-key TTLs or a max age removes keys without the origin's markers | error |
//!
//! The doctor only reads and never fails on what it finds: anything it can see about a
//! bucket it could read is a finding; only an unreadable bucket is an error. It reads the
//! bucket's stream through [`Kv::stream_info`](kvtk_core::Kv::stream_info) and sends no other
//! JetStream request.
//!
//! ## The system account
//!
//! The servers' `sync_interval` is visible only to the system account
//! (`$SYS.REQ.SERVER.PING.VARZ`): give the doctor a second [`Kv`](kvtk_core::Kv) logged into
//! it, or the report says it could not check.
//!
//! ```no_run
//! use kvtk_core::lease::{LeaseConfig, REPLICATED_TTL};
//! use kvtk_core::{Connect, Kv};
//! use kvtk_doctor::{Doctor, Intent, Recipe, Severity};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let kv = Kv::connect("nats://127.0.0.1:4222").await?;
//! let sys = Connect::new()
//!     .server("nats://127.0.0.1:4222")
//!     .user_password("sys", "secret")
//!     .connect()
//!     .await?;
//! let intent = Intent::new([Recipe::Elections, Recipe::Config]).lease(LeaseConfig::new(REPLICATED_TTL)?);
//! let report = Doctor::new(&kv).system_account(sys).check("app", &intent).await?;
//! for finding in report.of(Severity::Error) {
//!     println!("{}: {}", finding.code, finding.fix);
//! }
//! if !report.is_safe() {
//!     eprintln!("{}", serde_json::to_string_pretty(&report)?);
//! }
//! # Ok(()) }
//! ```
//
// The rules are pure (`rules.rs`, table-tested); `probe.rs` gathers what they look at, with
// `varz.rs` asking each server through the system account; `doctor.rs` joins the two.
// Doc examples define `async fn demo(..)` bodies that are compiled, not called.
#![doc(test(attr(deny(warnings), allow(dead_code))))]
// docs.rs (nightly) marks items that need a feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod doctor;
mod intent;
mod probe;
mod report;
mod rules;
mod varz;

pub use doctor::{check, Doctor};
pub use intent::{Intent, Recipe};
pub use report::{Code, Finding, Report, ServerFacts, Severity, SyncSetting};
pub use rules::{CONSUMER_LIMIT_SERVER, DEFAULT_MAX_CONSUMERS, FIXED_SERVER};
