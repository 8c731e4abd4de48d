//! In-memory caches in front of the database: existing users (the hot path of every API call) and ids Clerk
//! recently said do not exist. Only a user's actor fills or clears its entry, after its own reads and
//! commits, so on one replica a read never returns data older than a committed write.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use crate::config::CacheSettings;
use crate::store::UserRow;

#[derive(Clone, Debug)]
pub struct UserCache {
    users: Cache<String, Arc<UserRow>>,
    not_found: Cache<String, ()>,
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

    pub async fn get(&self, clerk_id: &str) -> Option<Arc<UserRow>> {
        self.users.get(clerk_id).await
    }

    pub async fn put(&self, row: Arc<UserRow>) {
        self.not_found.invalidate(&row.clerk_id).await;
        self.users.insert(row.clerk_id.clone(), row).await;
    }

    pub async fn invalidate(&self, clerk_id: &str) {
        self.users.invalidate(clerk_id).await;
        self.not_found.invalidate(clerk_id).await;
    }

    /// Whether Clerk said "no such user" for this id within `not_found_ttl_secs`.
    pub async fn known_missing(&self, clerk_id: &str) -> bool {
        self.not_found.contains_key(clerk_id)
    }

    pub async fn remember_missing(&self, clerk_id: &str) {
        self.not_found.insert(clerk_id.to_owned(), ()).await;
    }

    /// Settles moka's pending bookkeeping and publishes `clerk_sync_cache_entries`.
    pub async fn report(&self) {
        self.users.run_pending_tasks().await;
        metrics::gauge!(crate::telemetry::metrics::CACHE_ENTRIES).set(self.users.entry_count() as f64);
    }
}
