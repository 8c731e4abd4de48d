//! Assertions shared by the `/v1` API tests: the user JSON, error bodies, and that nothing internal leaks.

use reqwest::StatusCode;
use serde_json::Value;

use crate::clerk::{ClerkUser, CLERK_SECRET_KEY};
use crate::helpers::ApiAnswer;
use crate::test_db::UserRow;

/// The keys of a user answer, and nothing else is required (extra keys are allowed).
pub const USER_KEYS: [&str; 14] = [
    "id",
    "clerk_id",
    "email",
    "first_name",
    "last_name",
    "name",
    "username",
    "image_url",
    "created_via",
    "updated_via",
    "clerk_updated_at",
    "deleted_at",
    "created_at",
    "updated_at",
];

/// Text that must never appear in an answer: driver and SQL details, paths, secrets.
const LEAKS: [&str; 14] = [
    "sqlx",
    "SELECT ",
    "INSERT ",
    "UPDATE users",
    "ON CONFLICT",
    "postgres",
    "sqlite",
    "pg_",
    "error returned from database",
    "panicked",
    "backtrace",
    "clerk_sync::",
    "127.0.0.1",
    CLERK_SECRET_KEY,
];

/// The body says nothing about the daemon's internals.
pub fn assert_no_leak(answer: &ApiAnswer, context: &str) {
    let lower = answer.body.to_lowercase();
    for leak in LEAKS {
        assert!(
            !lower.contains(&leak.to_lowercase()),
            "{context}: the body leaks internals ({leak:?}): {}",
            answer.body
        );
    }
}

/// `status` with a JSON `{"error": code, "message": "<non-empty>"}` body that leaks nothing.
pub fn assert_error(answer: &ApiAnswer, status: StatusCode, code: &str, context: &str) {
    assert_eq!(
        answer.status, status,
        "{context}: expected {status} {code:?}, got {} {}",
        answer.status, answer.body
    );
    assert_eq!(
        answer.json["error"].as_str(),
        Some(code),
        "{context}: error code; body: {}",
        answer.body
    );
    assert!(
        answer.json["message"].as_str().is_some_and(|m| !m.trim().is_empty()),
        "{context}: an error needs a human message; body: {}",
        answer.body
    );
    assert_no_leak(answer, context);
}

/// A 503 with a JSON error and a positive `Retry-After` in seconds.
pub fn assert_unavailable(answer: &ApiAnswer, context: &str) {
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{context}: expected 503, got {} {}",
        answer.status,
        answer.body
    );
    assert!(
        answer.json["error"].as_str().is_some_and(|c| !c.is_empty()),
        "{context}: a 503 must be a JSON error: {}",
        answer.body
    );
    assert!(
        answer.json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{context}: {}",
        answer.body
    );
    let retry_after = answer
        .retry_after
        .as_deref()
        .unwrap_or_else(|| panic!("{context}: a 503 must carry Retry-After; body {}", answer.body));
    assert!(
        retry_after.parse::<u64>().is_ok_and(|s| s > 0),
        "{context}: Retry-After must be a positive number of seconds: {retry_after:?}"
    );
    assert_no_leak(answer, context);
}

/// `json` is `user` as clerk-sync stores it, with these `created_via` / `updated_via`.
pub fn assert_user_json(json: &Value, user: &ClerkUser, created_via: &str, updated_via: &str) {
    for key in USER_KEYS {
        assert!(json.get(key).is_some(), "the user answer lacks {key:?}: {json}");
    }
    assert!(
        json["id"].as_str().is_some_and(|s| !s.is_empty()),
        "id must be a non-empty string: {json}"
    );
    assert_eq!(json["clerk_id"].as_str(), Some(user.id.as_str()), "{json}");
    assert_eq!(json["email"].as_str(), user.primary_email().as_deref(), "{json}");
    assert_eq!(json["first_name"].as_str(), user.first_name.as_deref(), "{json}");
    assert_eq!(json["last_name"].as_str(), user.last_name.as_deref(), "{json}");
    let name = [user.first_name.as_deref(), user.last_name.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(json["name"].as_str(), Some(name.as_str()), "{json}");
    assert_eq!(json["username"].as_str(), user.username.as_deref(), "{json}");
    assert_eq!(json["image_url"].as_str(), user.image_url.as_deref(), "{json}");
    assert_eq!(json["created_via"].as_str(), Some(created_via), "{json}");
    assert_eq!(json["updated_via"].as_str(), Some(updated_via), "{json}");
    assert_eq!(json["clerk_updated_at"].as_i64(), Some(user.updated_at), "{json}");
    assert!(json["deleted_at"].is_null(), "deleted_at must be null: {json}");
    assert!(json["created_at"].is_string(), "created_at: {json}");
    assert!(json["updated_at"].is_string(), "updated_at: {json}");
}

/// The answer describes exactly this row (timestamps compared only for presence: formats differ).
pub fn assert_matches_row(json: &Value, row: &UserRow) {
    assert_eq!(json["id"].as_str(), row.id.as_deref(), "id: {json} vs {row:?}");
    assert_eq!(
        json["clerk_id"].as_str(),
        Some(row.clerk_id.as_str()),
        "{json} vs {row:?}"
    );
    assert_eq!(json["email"].as_str(), row.email.as_deref(), "{json} vs {row:?}");
    assert_eq!(
        json["first_name"].as_str(),
        row.first_name.as_deref(),
        "{json} vs {row:?}"
    );
    assert_eq!(
        json["last_name"].as_str(),
        row.last_name.as_deref(),
        "{json} vs {row:?}"
    );
    assert_eq!(json["name"].as_str(), row.name.as_deref(), "{json} vs {row:?}");
    assert_eq!(json["username"].as_str(), row.username.as_deref(), "{json} vs {row:?}");
    assert_eq!(
        json["image_url"].as_str(),
        row.image_url.as_deref(),
        "{json} vs {row:?}"
    );
    assert_eq!(
        json["created_via"].as_str(),
        Some(row.created_via.as_str()),
        "{json} vs {row:?}"
    );
    assert_eq!(
        json["updated_via"].as_str(),
        row.updated_via.as_deref(),
        "{json} vs {row:?}"
    );
    assert_eq!(
        json["clerk_updated_at"].as_i64(),
        row.clerk_updated_at,
        "{json} vs {row:?}"
    );
    assert_eq!(
        json["deleted_at"].is_null(),
        row.deleted_at.is_none(),
        "{json} vs {row:?}"
    );
}
