//! The doctor: can this deployment keep the toolkit's promises?
//!
//! [`check`] (or a [`Doctor`] with a system-account client) inspects one bucket and the
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
//! | `sync-unchecked` | no system-account client, or VARZ refused: R1 with locks/elections · otherwise | warning · info |
//! | `few-replicas` | fewer than 3 replicas for locks or elections | warning |
//! | `memory-storage` | memory storage: with locks/elections · otherwise | error · warning |
//! | `persist-async` | `persist_mode: async`: with locks/elections · otherwise | error · warning |
//! | `per-key-ttl-off` | `allow_msg_ttl` off: locks, elections, membership · config (fleet acks) | error · info |
//! | `atomic-batches-off` | `allow_atomic` off: locks (multi-locks, KV fence) or config (prefix writes) | warning |
//! | `history-not-one` | more than one revision per key on a bucket of leases | error |
//! | `lease-ttl-below-election` | replicated bucket, the lease does not ride through a stream-leader election ([`LeaseConfig::rides_through_election`](crate::lease::LeaseConfig::rides_through_election)) | warning |
//! | `lease-ttl-unchecked` | replicated bucket, no lease given | info |
//! | `mirror` | the bucket is a read-only mirror (only the version and its own expiry are checked on it) | info |
//! | `mirror-expires` | a mirror with per-key TTLs or a max age removes keys without the origin's markers | error |
//!
//! The servers' `sync_interval` is visible only to the system account (`$SYS.REQ.SERVER.PING.VARZ`):
//! give the doctor a second client logged into it, or the report says it could not check.
//!
//! ```no_run
//! use std::time::Duration;
//! use kvtk_core::doctor::{self, Doctor, Intent, Recipe, Severity};
//! use kvtk_core::Kv;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let kv = Kv::connect("nats://127.0.0.1:4222").await?;
//! let lease = kvtk_core::lease::LeaseConfig::new(Duration::from_secs(30))?;
//! let report = doctor::check(&kv, "locks", &Intent::locks().lease(lease)).await?;
//! println!("{report}");
//! if !report.is_safe() {
//!     eprintln!("{}", serde_json::to_string_pretty(&report)?);
//! }
//!
//! // With the system account, the servers' sync_interval is checked too.
//! let sys = async_nats::ConnectOptions::with_user_and_password("sys".into(), "secret".into())
//!     .connect("nats://127.0.0.1:4222")
//!     .await?;
//! let report = Doctor::new(&kv)
//!     .system_account(sys)
//!     .check("app", &Intent::new([Recipe::Elections, Recipe::Config]))
//!     .await?;
//! for finding in report.of(Severity::Error) {
//!     println!("{}: {}", finding.code, finding.fix);
//! }
//! # Ok(()) }
//! ```
//
// The rules are pure (`rules.rs`, table-tested); `probe.rs` gathers what they look at.

mod intent;
mod probe;
mod report;
mod rules;

use std::fmt;

pub use intent::{Intent, Recipe};
pub use report::{Code, Finding, Report, ServerFacts, Severity, SyncSetting};
pub use rules::FIXED_SERVER;

use crate::client::Kv;
use crate::error::Error;

/// Checks `bucket` for `intent` over `kv`'s connection, without a system-account client (the
/// servers' `sync_interval` is then reported as unchecked). See the [module docs](self).
///
/// # Errors
/// When the bucket cannot be read: [`ErrorKind::BucketNotFound`](crate::ErrorKind::BucketNotFound),
/// an invalid name, a timeout or a lost connection. Everything the doctor finds about a
/// bucket it could read is a finding, never an error.
///
/// # Cancel safety
/// Cancel safe: it only reads.
pub async fn check(kv: &Kv, bucket: &str, intent: &Intent) -> Result<Report, Error> {
    Doctor::new(kv).check(bucket, intent).await
}

/// The doctor with its connections: the bucket's (a [`Kv`]) and, optionally, one logged into
/// the system account, through which it reads every hosting server's version and
/// `sync_interval`. Cheap to clone.
#[derive(Clone)]
pub struct Doctor {
    kv: Kv,
    system: Option<async_nats::Client>,
}

impl fmt::Debug for Doctor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Doctor")
            .field("kv", &self.kv)
            .field("system_account", &self.system.is_some())
            .finish()
    }
}

impl Doctor {
    /// A doctor that reads buckets through `kv`.
    pub fn new(kv: &Kv) -> Doctor {
        Doctor {
            kv: kv.clone(),
            system: None,
        }
    }

    /// Reads the servers' VARZ (version, `sync_interval`) through `client`, which must be
    /// logged into the system account (`system_account` in the server configuration).
    pub fn system_account(mut self, client: async_nats::Client) -> Doctor {
        self.system = Some(client);
        self
    }

    /// Checks `bucket` for `intent`. See [`check`] for the errors.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn check(&self, bucket: &str, intent: &Intent) -> Result<Report, Error> {
        let facts = probe::facts(&self.kv, self.system.as_ref(), bucket).await?;
        Ok(Report {
            findings: rules::findings(&facts, intent),
            bucket: facts.bucket,
            intent: intent.clone(),
            replicas: facts.replicas,
            storage: facts.storage,
            mirror_of: facts.mirror_of,
            servers: facts.servers,
        })
    }
}
