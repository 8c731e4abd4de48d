//! clerk-sync: keeps an application's `users` table in sync with Clerk.
//!
//! Data flow: `POST /webhooks/clerk` → [`webhook`] verification (raw bytes → verified event) → the user's
//! actor in [`actors`] → the group-commit [`store::writer`] → Postgres or SQLite.

pub mod actors;
mod app;
pub mod backfill;
pub mod cache;
pub mod clerk;
pub mod commands;
pub mod config;
pub mod doctor;
pub mod feed;
pub mod http;
pub mod store;
pub mod telemetry;
pub mod webhook;

pub use app::{Application, StartError};
