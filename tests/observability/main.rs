//! Observability tests: the Grafana dashboard and alerting rules against the exported metric names, the
//! `/metrics` endpoint of a real daemon process, a real Prometheus scraping it, and OTLP trace export.
//!
//! Every test runs the daemon as a separate process (`clerk-sync serve`) and talks to it over loopback only.
//! They need PostgreSQL (`TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`),
//! `prometheus`, `promtool` and `docker-compose` (Debian: `apt-get install prometheus docker-compose`); a
//! missing one fails the test with a message saying how to provide it. Nothing is skipped.

mod backfill_cli;
mod common;
mod daemon;
mod dashboards;
mod doctor;
mod forwarding;
#[path = "../support/ids.rs"]
mod ids;
mod logs;
mod metrics_endpoint;
mod otlp;
mod prometheus;
mod secrets;
