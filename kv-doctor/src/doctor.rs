//! The doctor with its connections: probe, then rules.

use std::fmt;

use kvtk_core::{Error, Kv};
use tracing::Instrument as _;

use crate::intent::Intent;
use crate::probe;
use crate::report::Report;
use crate::rules;

/// Checks `bucket` for `intent` over `kv`'s connection, without a system-account connection
/// (the servers' `sync_interval` is then reported as unchecked). See the
/// [crate docs](crate).
///
/// # Errors
/// When the bucket cannot be read: [`ErrorKind::BucketNotFound`](kvtk_core::ErrorKind::BucketNotFound),
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
/// `sync_interval`. Every request it sends is bounded by the bucket connection's
/// [timeout](Kv::timeout). Cheap to clone.
#[derive(Clone)]
pub struct Doctor {
    kv: Kv,
    system: Option<Kv>,
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

    /// Reads the servers' VARZ (version, `sync_interval`) through `system`, a connection
    /// logged into the system account (`system_account` in the server configuration), made
    /// like any other with [`Connect`](kvtk_core::Connect) or [`Kv::new`]. The doctor uses it
    /// for core requests only: the system account needs no JetStream.
    pub fn system_account(mut self, system: Kv) -> Doctor {
        self.system = Some(system);
        self
    }

    /// Checks `bucket` for `intent`. See [`check`] for the errors.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn check(&self, bucket: &str, intent: &Intent) -> Result<Report, Error> {
        let span = tracing::debug_span!("doctor.check", bucket = %bucket);
        let facts = probe::facts(&self.kv, self.system.as_ref(), bucket)
            .instrument(span)
            .await?;
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
