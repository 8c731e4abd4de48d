//! `GET /livez` (the process is up) and `GET /readyz` (database reachable, migrations applied, writes going
//! through, lanes running).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::store::Store;

pub async fn livez() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// A write in flight for longer than this means writes are stuck (a locked table, say).
const WRITES_STUCK_AFTER: Duration = Duration::from_secs(5);

pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if let Some(trouble) = state.writer.trouble(WRITES_STUCK_AFTER) {
        tracing::warn!(trouble, "not ready");
        return Err(ApiError {
            retry_after: Some(state.retry_after_secs),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", trouble)
        });
    }
    if !state.actors.running() {
        return Err(ApiError {
            retry_after: Some(state.retry_after_secs),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the user lanes have stopped",
            )
        });
    }
    match tokio::time::timeout(Duration::from_secs(5), state.db.check_ready()).await {
        Ok(Ok(())) => Ok(Json(json!({"status": "ready"}))),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready");
            Err(ApiError {
                retry_after: Some(state.retry_after_secs),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    "the database is not ready",
                )
            })
        }
        Err(_) => Err(ApiError {
            retry_after: Some(state.retry_after_secs),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the database did not answer in time",
            )
        }),
    }
}
