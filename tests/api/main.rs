//! Black-box tests of the daemon over HTTP, every case on Postgres and on SQLite.

#[path = "../support/ids.rs"]
mod ids;
#[macro_use]
mod helpers;
mod api_checks;
mod clerk;
mod clerk_orgs;
mod fake_users;
mod forward_receiver;
mod test_db;

mod adoption;
mod adoption_edge_cases;
mod api_auth;
mod availability;
mod backfill;
mod backfill_b2c;
mod backfill_organizations;
mod backfill_pages;
mod backfill_walk;
mod concurrency;
mod contract;
mod deletes;
mod fallback;
mod fallback_concurrency;
mod faults;
mod feed;
mod feed_capacity;
mod forward;
mod forward_safety;
mod hostile;
mod ordered_ids;
mod organizations;
mod organizations_cascade;
mod pin;
mod profile;
mod properties;
mod prune_orgs;
mod prune_safety;
mod refusals;
mod replicas;
mod rls;
mod rls_closed;
mod session;
mod signatures;
mod slow_clients;
mod spec_payloads;
mod sync;
mod webhooks;
mod write_batch;
mod write_path;
