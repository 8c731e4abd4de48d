//! Backfill and reconciliation: walk Clerk's users, organizations and memberships and make the tables right.
//!
//! The walks run in that order (organizations before their memberships; `--only` picks some). Pages of up to
//! 500 go through the same batch logic as webhooks (ordering guard, tombstones never resurrected,
//! `created_via = 'backfill'`), one transaction per page. A backfill needs no actor per record: the statements
//! are conflict-safe on their own and take the same row locks, so a webhook for the same record, in this
//! process or another, is ordered against it by `updated_at` alone. Each walk checkpoints its cursor and the
//! ids it has seen under its own name after every page, so an interrupted run resumes; memory holds one page
//! whatever the number of records. `--prune` tombstones the live records a walk did not see, only after that
//! walk read the whole list.

pub mod progress;
pub mod reconcile;

pub use prune::{new_run_id, Brake};

mod cursor;
mod organizations;
mod page;
mod prune;
mod run;
mod users;

use std::sync::Arc;
use std::time::Duration;

use crate::cache::UserCache;
use crate::clerk::pin::{InstancePin, PinError};
use crate::clerk::{ClerkClient, ClerkError};
use crate::config::Settings;
use crate::store::{Db, Kind, StoreError};

/// The walks, in the order a run takes them.
pub const WALKS: [Kind; 3] = [Kind::User, Kind::Organization, Kind::Membership];

/// Which walks a run takes (`--only`); all by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Only {
    walks: [bool; 3],
    /// Named with `--only`: a walk asked for by name that Clerk cannot serve (organizations on an instance
    /// without them) fails the run; taken by default, it is skipped.
    named: bool,
}

impl Only {
    pub const ALL: Only = Only {
        walks: [true; 3],
        named: false,
    };

    /// These walks; none named means all.
    pub fn of(kinds: &[Kind]) -> Only {
        if kinds.is_empty() {
            return Only::ALL;
        }
        let mut only = Only {
            walks: [false; 3],
            named: true,
        };
        for kind in kinds {
            only.walks[index(*kind)] = true;
        }
        only
    }

    pub fn contains(self, kind: Kind) -> bool {
        self.walks[index(kind)]
    }

    /// Whether `kind` was asked for by name (`--only`), not taken by default.
    pub fn names(self, kind: Kind) -> bool {
        self.named && self.contains(kind)
    }

    /// The walks named as `--only` takes them: `users`, `organizations` or `memberships` (singular too).
    pub fn parse_walk(name: &str) -> Result<Kind, String> {
        match name.trim().to_ascii_lowercase().as_str() {
            "users" | "user" => Ok(Kind::User),
            "organizations" | "organization" | "orgs" => Ok(Kind::Organization),
            "memberships" | "membership" => Ok(Kind::Membership),
            other => Err(format!("{other:?}: expected users, organizations or memberships")),
        }
    }
}

impl Default for Only {
    fn default() -> Self {
        Only::ALL
    }
}

fn index(kind: Kind) -> usize {
    match kind {
        Kind::User => 0,
        Kind::Organization => 1,
        Kind::Membership => 2,
    }
}

/// The plural a walk is named by (its checkpoint name, `--only`, progress and summary lines).
pub fn walk_name(kind: Kind) -> &'static str {
    match kind {
        Kind::User => "users",
        Kind::Organization => "organizations",
        Kind::Membership => "memberships",
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub prune: bool,
    pub dry_run: bool,
    pub restart: bool,
    pub only: Only,
    /// `--max-prune N`: this run may tombstone up to N records of each kind, whatever the brake says.
    pub max_prune: Option<u64>,
}

/// Whether and how a run took one walk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Walked {
    /// Not asked for (`--only`).
    #[default]
    No,
    /// Read from the start.
    Fresh,
    /// Continued an interrupted walk from its checkpoint.
    Resumed,
    /// Completed by the interrupted run this one continues: not walked again.
    Earlier,
    /// Skipped: the Clerk instance has organizations turned off (most B2C apps), so there is nothing to walk.
    NotEnabled,
}

/// What one walk did (or, with `--dry-run`, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    pub walked: Walked,
    pub scanned: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub pruned: u64,
    pub skipped_tombstoned: u64,
    pub failed: u64,
    /// Clerk's own count of the records at the walk's start, when it gave one: a walk that read clearly fewer
    /// never prunes.
    #[serde(skip)]
    pub clerk_count: Option<u64>,
}

impl Tally {
    /// The walk continued an interrupted one.
    pub fn resumed(&self) -> bool {
        self.walked == Walked::Resumed
    }
}

/// What a run did, per walk.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub users: Tally,
    pub organizations: Tally,
    pub memberships: Tally,
    /// The id of this run's prune (`--prune`, not a dry run): what `clerk-sync undo-prune` takes back.
    pub prune_run: Option<String>,
    #[serde(skip)]
    pub duration: Duration,
}

impl Summary {
    pub fn of(&self, kind: Kind) -> &Tally {
        match kind {
            Kind::User => &self.users,
            Kind::Organization => &self.organizations,
            Kind::Membership => &self.memberships,
        }
    }

    fn of_mut(&mut self, kind: Kind) -> &mut Tally {
        match kind {
            Kind::User => &mut self.users,
            Kind::Organization => &mut self.organizations,
            Kind::Membership => &mut self.memberships,
        }
    }

    /// Records the database refused, over every walk.
    pub fn failed(&self) -> u64 {
        WALKS.iter().map(|k| self.of(*k).failed).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("Clerk: {0}")]
    Clerk(#[from] ClerkError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Setup(String),
    /// Clerk's list does not move on (a cursor ignored, far more records than it counted): the walk cannot end.
    #[error("{0}")]
    Stalled(String),
    /// `--prune` held back by its rails: nothing of that kind was tombstoned.
    #[error("{0}")]
    PruneRefused(String),
    /// The key belongs to another Clerk instance than the one the database mirrors (or Clerk cannot say which).
    #[error("{0}")]
    Pin(#[from] PinError),
    /// A walk named with `--only` that the Clerk instance does not offer.
    #[error("{0}")]
    NotEnabled(String),
}

/// Told of progress: when a walk starts (with Clerk's total, when known) and after every page.
pub trait Progress: Send {
    fn start(&mut self, _kind: Kind, _total: Option<u64>) {}
    fn page(&mut self, _kind: Kind, _tally: &Tally) {}
}

/// No progress reporting (reconciliation inside `serve` logs its summary instead).
pub struct Quiet;
impl Progress for Quiet {}

pub struct Backfill {
    pub db: Arc<Db>,
    pub clerk: Arc<ClerkClient>,
    /// Inside `serve`: entries of changed records are dropped after each page commits.
    pub cache: Option<UserCache>,
    /// `sync.store_payload`: keep the whole Clerk object in `data`.
    pub store_payload: bool,
    /// How much one prune run may tombstone (`[prune]`).
    pub brake: Brake,
    /// The Clerk instance the database mirrors: a key of another writes nothing.
    pub pin: Arc<InstancePin>,
}

impl Backfill {
    /// Connects to the configured database (applying pending migrations) and Clerk, for the CLI.
    pub async fn connect(settings: &Settings) -> Result<Backfill, BackfillError> {
        if !settings.clerk.secret_key.is_set() {
            return Err(BackfillError::Setup(
                "clerk.secret_key (CLERK_SECRET_KEY): not set; backfill reads Clerk's lists with it".into(),
            ));
        }
        let mut db = Db::connect(&settings.database).await?;
        // Its changes go to the feed like the daemon's, so every daemon drops them from its cache.
        db.set_feed(settings.changes.enabled);
        db.migrate(settings.supabase.rls).await?;
        let clerk = ClerkClient::new(&settings.clerk).map_err(|e| BackfillError::Setup(e.to_string()))?;
        let db = Arc::new(db);
        let pin = InstancePin::load(db.clone()).await?;
        Ok(Backfill {
            db,
            pin,
            clerk,
            cache: None,
            store_payload: settings.sync.store_payload,
            brake: Brake::from(&settings.prune),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_the_walks() {
        assert_eq!(Only::of(&[]), Only::ALL);
        let only = Only::of(&[Kind::Organization, Kind::Membership]);
        assert!(!only.contains(Kind::User));
        assert!(only.contains(Kind::Organization) && only.contains(Kind::Membership));
        assert_eq!(Only::parse_walk(" Organizations"), Ok(Kind::Organization));
        assert_eq!(Only::parse_walk("membership"), Ok(Kind::Membership));
        assert_eq!(Only::parse_walk("users"), Ok(Kind::User));
        assert!(Only::parse_walk("sessions").is_err());
        assert!(only.names(Kind::Organization) && !only.names(Kind::User));
        assert!(!Only::ALL.names(Kind::Organization), "taken by default, not named");
        assert_eq!(WALKS.map(walk_name), ["users", "organizations", "memberships"]);
    }
}
