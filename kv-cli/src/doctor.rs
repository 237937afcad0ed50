//! `kvtk doctor [BUCKET]`: can this deployment keep the toolkit's promises? The findings of
//! `kvtk_doctor`, one line each, or as JSON; exit 3 when any is an error.

use std::time::Duration;

use kvtk_core::lease::LeaseConfig;
use kvtk_core::ErrorKind;
use kvtk_doctor::{Doctor, Finding, Intent, Recipe, Report};

use crate::connect::{connect, system_client, ConnectArgs, SystemArgs};
use crate::error::{code, CliError, Result};
use crate::util::parse_duration;

/// Check a bucket and the servers hosting it for what the toolkit needs.
///
/// Prints a summary line per bucket and one line per finding: severity, code, message and
/// fix. Without BUCKET it checks kvtk's own buckets that exist (KVTK_LOCK_BUCKET or locks,
/// KVTK_ELECTION_BUCKET or elections, KVTK_CONFIG_BUCKET or config). The servers'
/// sync_interval is read only through a system-account user (--system-*); without one the
/// report says it could not check.
#[derive(clap::Args)]
#[command(
    after_help = "Exit codes: 0 no finding is an error; 3 a finding is an error; 1 the bucket cannot be read; 69 connection or permission error."
)]
pub(crate) struct DoctorArgs {
    /// The bucket (default: kvtk's lock, election and config buckets that exist)
    bucket: Option<String>,
    /// What the bucket is used for (comma-separated or repeated); known for kvtk's own buckets
    #[arg(long = "for", value_name = "RECIPE", value_enum, value_delimiter = ',')]
    recipes: Vec<RecipeArg>,
    /// The shortest lease TTL the bucket's holders, leaders or members use (default renewal
    /// and margin): on a replicated bucket, checked to ride through a stream-leader election
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    lease_ttl: Option<Duration>,
    #[command(flatten)]
    system: SystemArgs,
    /// Print the report as JSON (an array of reports without BUCKET)
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RecipeArg {
    Locks,
    Elections,
    Config,
    Membership,
}

impl From<RecipeArg> for Recipe {
    fn from(r: RecipeArg) -> Recipe {
        match r {
            RecipeArg::Locks => Recipe::Locks,
            RecipeArg::Elections => Recipe::Elections,
            RecipeArg::Config => Recipe::Config,
            RecipeArg::Membership => Recipe::Membership,
        }
    }
}

/// kvtk's own buckets: where its commands keep their state, and for what.
fn own_buckets() -> [(String, Recipe); 3] {
    let name = |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.into());
    [
        (name(crate::lock::ENV_BUCKET, "locks"), Recipe::Locks),
        (name("KVTK_ELECTION_BUCKET", "elections"), Recipe::Elections),
        (name("KVTK_CONFIG_BUCKET", "config"), Recipe::Config),
    ]
}

pub(crate) async fn run(args: DoctorArgs, conn: &ConnectArgs) -> Result<u8> {
    let targets = targets(&args)?;
    let kv = connect(conn).await?;
    let mut doctor = Doctor::new(&kv);
    if let Some(sys) = system_client(conn, &args.system).await? {
        doctor = doctor.system_account(sys);
    }
    let mut reports = Vec::new();
    for (bucket, intent) in &targets {
        match doctor.check(bucket, intent).await {
            Ok(r) => reports.push(r),
            // Without BUCKET, kvtk's buckets that were never made are not there to check.
            Err(e) if args.bucket.is_none() && e.kind() == ErrorKind::BucketNotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    if reports.is_empty() {
        let names: Vec<&str> = targets.iter().map(|(b, _)| b.as_str()).collect();
        return Err(CliError::msg(format!(
            "none of kvtk's buckets ({}) exists; name the bucket to check",
            names.join(", ")
        )));
    }
    print(&reports, args.bucket.is_some(), args.json)?;
    let safe = reports.iter().all(Report::is_safe);
    Ok(if safe { 0 } else { code::UNSAFE })
}

/// The buckets to check and what each is for.
fn targets(args: &DoctorArgs) -> Result<Vec<(String, Intent)>> {
    let lease = args.lease_ttl.map(LeaseConfig::new).transpose()?;
    let intent = |recipes: Vec<Recipe>| {
        let i = Intent::new(recipes);
        match lease {
            Some(l) => i.lease(l),
            None => i,
        }
    };
    let given: Vec<Recipe> = args.recipes.iter().map(|&r| r.into()).collect();
    let Some(bucket) = &args.bucket else {
        return Ok(own_buckets()
            .into_iter()
            .map(|(b, r)| (b, intent(vec![r])))
            .collect());
    };
    let known = own_buckets().into_iter().find(|(b, _)| b == bucket);
    match (given.is_empty(), known) {
        (false, _) => Ok(vec![(bucket.clone(), intent(given))]),
        (true, Some((_, r))) => Ok(vec![(bucket.clone(), intent(vec![r]))]),
        (true, None) => Err(CliError::new(
            code::USAGE,
            format!("say what bucket {bucket} is for: --for locks|elections|config|membership"),
        )),
    }
}

/// The reports, as lines or JSON (the report itself when `one` bucket was named, else an
/// array).
fn print(reports: &[Report], one: bool, json: bool) -> Result<()> {
    if json {
        let text = match reports {
            [r] if one => serde_json::to_string_pretty(r)?,
            _ => serde_json::to_string_pretty(reports)?,
        };
        println!("{text}");
        return Ok(());
    }
    for r in reports {
        let text = r.to_string();
        println!("{}", text.lines().next().unwrap_or(&r.bucket));
        for f in &r.findings {
            println!("{}", line(f));
        }
    }
    Ok(())
}

/// `error sync-not-always: <message> (fix: <fix>)`, on one line whatever the texts hold.
fn line(f: &Finding) -> String {
    let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    format!(
        "{} {}: {} (fix: {})",
        f.severity,
        f.code,
        flat(&f.message),
        flat(&f.fix)
    )
}
