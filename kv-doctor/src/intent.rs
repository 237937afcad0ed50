//! What a bucket is used for, which decides what is unsafe about it.

use std::collections::BTreeSet;

use serde::{Serialize, Serializer};

use kvtk_core::lease::LeaseConfig;

/// A recipe that keeps its state in the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Recipe {
    /// kvtk-locks: mutexes, semaphores, read-write and multi-locks. Fencing tokens are
    /// revisions; multi-locks and the KV fence need atomic batches.
    Locks,
    /// kvtk-leader: elections. Terms are revisions.
    Elections,
    /// kvtk-config: configuration documents; prefix-mode multi-field writes need atomic
    /// batches, fleet acknowledgements are leases.
    Config,
    /// kvtk-membership: group members are leases.
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

/// What a bucket is for: its recipes and, when known, the lease its holders use.
///
/// ```
/// use std::time::Duration;
/// use kvtk_doctor::{Intent, Recipe};
/// use kvtk_core::lease::LeaseConfig;
/// let intent = Intent::locks()
///     .and(Recipe::Elections)
///     .lease(LeaseConfig::new(Duration::from_secs(30))?);
/// assert!(intent.uses(Recipe::Locks) && intent.uses(Recipe::Elections));
/// assert!(!intent.uses(Recipe::Config));
/// # Ok::<(), kvtk_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Intent {
    recipes: BTreeSet<Recipe>,
    #[serde(serialize_with = "lease_json")]
    lease: Option<LeaseConfig>,
}

/// `{"ttl": 30.0, "renew_every": 10.0, "margin": 2.0}` (seconds), or `null`.
fn lease_json<S: Serializer>(lease: &Option<LeaseConfig>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap as _;
    let Some(l) = lease else {
        return s.serialize_none();
    };
    let mut m = s.serialize_map(Some(3))?;
    m.serialize_entry("ttl", &l.ttl().as_duration().as_secs_f64())?;
    m.serialize_entry("renew_every", &l.renew_every().as_secs_f64())?;
    m.serialize_entry("margin", &l.margin().as_secs_f64())?;
    m.end()
}

impl Intent {
    /// A bucket used by these recipes.
    pub fn new(recipes: impl IntoIterator<Item = Recipe>) -> Intent {
        Intent {
            recipes: recipes.into_iter().collect(),
            lease: None,
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

    /// The lease the bucket's holders, leaders or members use (the shortest one, when they
    /// differ). On a replicated bucket the doctor checks that it rides through a
    /// stream-leader election ([`LeaseConfig::rides_through_election`]); without it, it says
    /// it could not.
    pub fn lease(mut self, lease: LeaseConfig) -> Intent {
        self.lease = Some(lease);
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

    /// The lease, when given.
    pub fn current_lease(&self) -> Option<&LeaseConfig> {
        self.lease.as_ref()
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
