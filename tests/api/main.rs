//! Black-box tests of the daemon over HTTP, every case on Postgres and on SQLite.

#[path = "../support/ids.rs"]
mod ids;
#[macro_use]
mod helpers;
mod api_checks;
mod clerk;
mod clerk_orgs;
mod test_db;

mod adoption;
mod adoption_edge_cases;
mod api_auth;
mod availability;
mod backfill;
mod backfill_organizations;
mod concurrency;
mod deletes;
mod fallback;
mod fallback_concurrency;
mod faults;
mod feed;
mod feed_capacity;
mod forward;
mod hostile;
mod organizations;
mod profile;
mod properties;
mod replicas;
mod rls;
mod session;
mod signatures;
mod slow_clients;
mod sync;
mod webhooks;
mod write_path;
