//! Black-box tests of the daemon over HTTP, every case on Postgres and on SQLite.

#[path = "../support/ids.rs"]
mod ids;
#[macro_use]
mod helpers;
mod api_checks;
mod clerk;
mod test_db;

mod adoption;
mod adoption_edge_cases;
mod api_auth;
mod availability;
mod backfill;
mod concurrency;
mod deletes;
mod fallback;
mod fallback_concurrency;
mod faults;
mod hostile;
mod properties;
mod replicas;
mod session;
mod signatures;
mod slow_clients;
mod sync;
mod webhooks;
mod write_path;
