//! In-memory caches in front of the database: existing users (the hot path of every API call) and ids Clerk
//! recently said do not exist. Only a user's actor fills or clears its entry, after its own reads and commits,
//! so on one replica a read never returns data older than a committed write.
//!
//! A user is cached as the JSON the API answers with, serialized once: a hit costs a lookup and a reference
//! count, and one compact buffer per user is the least memory a full cache can take.

use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache;

use crate::config::CacheSettings;
use crate::store::Row;

/// A user as the API shows it: its JSON, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserJson(Bytes);

impl UserJson {
    pub fn from_row(row: &Row) -> Self {
        // A struct of strings and integers always serializes.
        UserJson(serde_json::to_vec(row).map(Bytes::from).unwrap_or_default())
    }

    pub fn bytes(&self) -> Bytes {
        self.0.clone()
    }
}

/// Why Clerk has no record: never had it (or not yet), or the record was pruned and Clerk confirmed it gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Absent {
    Missing,
    Gone,
}

#[derive(Clone, Debug)]
pub struct UserCache {
    users: Cache<String, UserJson>,
    not_found: Cache<String, Absent>,
}

impl UserCache {
    pub fn new(settings: &CacheSettings) -> Self {
        UserCache {
            users: Cache::builder()
                .max_capacity(settings.capacity)
                .time_to_live(Duration::from_secs(settings.ttl_secs))
                .build(),
            not_found: Cache::builder()
                .max_capacity(settings.capacity)
                .time_to_live(Duration::from_secs(settings.not_found_ttl_secs))
                .build(),
        }
    }

    pub async fn get(&self, clerk_id: &str) -> Option<UserJson> {
        self.users.get(clerk_id).await
    }

    pub async fn put(&self, clerk_id: &str, user: UserJson) {
        self.not_found.invalidate(clerk_id).await;
        self.users.insert(clerk_id.to_owned(), user).await;
    }

    /// [`UserCache::invalidate`] when there is anything to drop: checking is much cheaper than invalidating,
    /// and most records another replica (or this one) changes are not cached here.
    pub async fn invalidate_if_present(&self, clerk_id: &str) {
        if self.users.contains_key(clerk_id) || self.not_found.contains_key(clerk_id) {
            self.invalidate(clerk_id).await;
        }
    }

    pub async fn invalidate(&self, clerk_id: &str) {
        self.users.invalidate(clerk_id).await;
        self.not_found.invalidate(clerk_id).await;
    }

    /// Whether (and why) Clerk said "no such user" for this id within `not_found_ttl_secs`.
    pub async fn known_absent(&self, clerk_id: &str) -> Option<Absent> {
        self.not_found.get(clerk_id).await
    }

    pub async fn remember_absent(&self, clerk_id: &str, why: Absent) {
        self.not_found.insert(clerk_id.to_owned(), why).await;
    }

    /// Settles moka's pending bookkeeping and publishes `clerk_sync_cache_entries`.
    pub async fn report(&self) {
        self.users.run_pending_tasks().await;
        self.not_found.run_pending_tasks().await;
        metrics::gauge!(crate::telemetry::metrics::CACHE_ENTRIES).set(self.users.entry_count() as f64);
    }
}
