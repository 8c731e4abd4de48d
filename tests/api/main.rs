//! Black-box tests of the daemon over HTTP, every case on Postgres and on SQLite.

#[macro_use]
mod helpers;
mod clerk;
mod test_db;

mod adoption;
mod availability;
mod concurrency;
mod deletes;
mod signatures;
mod webhooks;
