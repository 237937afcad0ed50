//! What a bucket is used for, which decides what is unsafe about it.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

/// How long a replicated bucket may take to elect a new stream leader, by default: the
/// server's Raft election timeout is randomised in roughly 4–9 s, and 5.8–9.7 s were measured
/// on this project's machines after killing the stream leader. No write lands meanwhile, lease
/// renewals included.
pub const STREAM_LEADER_ELECTION: Duration = Duration::from_secs(10);

/// A recipe that keeps its state in the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Recipe {
    /// kv-locks: mutexes, semaphores, read-write and multi-locks. Fencing tokens are
    /// revisions; multi-locks and the KV fence need atomic batches.
    Locks,
    /// kv-leader: elections. Terms are revisions.
    Elections,
    /// kv-config: configuration documents; prefix-mode multi-field writes need atomic
    /// batches, fleet acknowledgements are leases.
    Config,
    /// kv-membership: group members are leases.
    Membership,
}

impl Recipe {
    /// Whether the recipe hands out revisions as fencing tokens or terms, so that a lost
    /// log tail (the same revision issued twice) breaks its promise.
    pub fn fences(self) -> bool {
        matches!(self, Recipe::Locks | Recipe::Elections)
    }

    /// Whether the recipe cannot work without per-key TTLs (its state is leases).
    pub fn needs_per_key_ttl(self) -> bool {
        matches!(self, Recipe::Locks | Recipe::Elections | Recipe::Membership)
    }

    /// The name used in messages and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Recipe::Locks => "locks",
            Recipe::Elections => "elections",
            Recipe::Config => "config",
            Recipe::Membership => "membership",
        }
    }
}

impl std::fmt::Display for Recipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a bucket is for: its recipes and, when known, the lease TTL its holders use.
///
/// ```
/// use std::time::Duration;
/// use kv_core::doctor::{Intent, Recipe};
/// let intent = Intent::locks()
///     .and(Recipe::Elections)
///     .lease_ttl(Duration::from_secs(15));
/// assert!(intent.uses(Recipe::Locks) && intent.uses(Recipe::Elections));
/// assert!(!intent.uses(Recipe::Config));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Intent {
    recipes: BTreeSet<Recipe>,
    #[serde(serialize_with = "super::report::opt_secs")]
    lease_ttl: Option<Duration>,
    #[serde(
        rename = "stream_leader_election",
        serialize_with = "super::report::secs"
    )]
    election_time: Duration,
}

impl Intent {
    /// A bucket used by these recipes.
    pub fn new(recipes: impl IntoIterator<Item = Recipe>) -> Intent {
        Intent {
            recipes: recipes.into_iter().collect(),
            lease_ttl: None,
            election_time: STREAM_LEADER_ELECTION,
        }
    }

    /// A bucket for locks.
    pub fn locks() -> Intent {
        Intent::new([Recipe::Locks])
    }

    /// A bucket for elections.
    pub fn elections() -> Intent {
        Intent::new([Recipe::Elections])
    }

    /// A bucket for configuration.
    pub fn config() -> Intent {
        Intent::new([Recipe::Config])
    }

    /// A bucket for group membership.
    pub fn membership() -> Intent {
        Intent::new([Recipe::Membership])
    }

    /// Adds a recipe.
    pub fn and(mut self, recipe: Recipe) -> Intent {
        self.recipes.insert(recipe);
        self
    }

    /// The lease TTL the bucket's holders, leaders or members use (the shortest one, when
    /// they differ). Without it the doctor cannot compare it with a stream-leader election
    /// and says so.
    pub fn lease_ttl(mut self, ttl: Duration) -> Intent {
        self.lease_ttl = Some(ttl);
        self
    }

    /// How long a stream-leader election may take on this deployment (default
    /// [`STREAM_LEADER_ELECTION`]). Set it from your own measurement.
    pub fn stream_leader_election(mut self, time: Duration) -> Intent {
        self.election_time = time;
        self
    }

    /// Whether `recipe` uses the bucket.
    pub fn uses(&self, recipe: Recipe) -> bool {
        self.recipes.contains(&recipe)
    }

    /// The recipes, in a fixed order.
    pub fn recipes(&self) -> impl Iterator<Item = Recipe> + '_ {
        self.recipes.iter().copied()
    }

    /// The lease TTL, when given.
    pub fn current_lease_ttl(&self) -> Option<Duration> {
        self.lease_ttl
    }

    /// The stream-leader election time compared with the lease TTL.
    pub fn election_time(&self) -> Duration {
        self.election_time
    }

    /// Whether any recipe hands out revisions as fencing tokens or terms.
    pub(crate) fn fences(&self) -> bool {
        self.recipes().any(Recipe::fences)
    }

    /// The recipes for which `pred` holds, for messages ("locks and elections").
    pub(crate) fn named(&self, pred: impl Fn(Recipe) -> bool) -> String {
        let names: Vec<&str> = self
            .recipes()
            .filter(|r| pred(*r))
            .map(Recipe::as_str)
            .collect();
        names.join(" and ")
    }

    /// Whether the recipes keep leases (so a lease TTL matters).
    pub(crate) fn holds_leases(&self) -> bool {
        !self.recipes.is_empty()
    }
}
