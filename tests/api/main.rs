//! Black-box tests of the daemon over HTTP, every case on Postgres and on SQLite.

#[path = "../support/ids.rs"]
mod ids;
#[macro_use]
mod helpers;
mod api_checks;
mod clerk;
mod test_db;

mod adoption;
mod api_auth;
mod availability;
mod concurrency;
mod deletes;
mod fallback;
mod fallback_concurrency;
mod hostile;
mod properties;
mod replicas;
mod session;
mod signatures;
mod sync;
mod webhooks;
