//! `GET /livez` (the process is up) and `GET /readyz` (database reachable, migrations applied, writes going
//! through, user actors' shards running).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::{ApiError, AppState};
use crate::store::Store;

/// The body of a health check that passed.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` from `/livez`, `ready` from `/readyz`.
    #[schema(schema_with = health_status)]
    pub status: &'static str,
}

fn health_status() -> utoipa::openapi::Object {
    crate::store::string_enum(&["ok", "ready"], false)
}

#[utoipa::path(
    get,
    path = "/livez",
    tag = "health",
    operation_id = "livez",
    summary = "The process is up",
    description = "Answers as long as the process serves requests; checks nothing else (for a liveness probe).",
    responses((status = 200, description = "The process is up: `{\"status\": \"ok\"}`.", body = Health)),
)]
pub async fn livez() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// A write in flight for longer than this means writes are stuck (a locked table, say).
const WRITES_STUCK_AFTER: Duration = Duration::from_secs(5);

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    operation_id = "readyz",
    summary = "The daemon can take webhooks",
    description = "Database reachable, migrations applied, writes going through, user actors' shards running (for a readiness \
        probe and load balancers).",
    responses(
        (status = 200, description = "Ready: `{\"status\": \"ready\"}`.", body = Health),
        (status = 503, description = "`not_ready`: the database is unreachable, not migrated or not answering in \
            time, writes are stuck, or the shards of the user actors stopped; the message says which.",
            body = super::error::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
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
                "the shards of the user actors have stopped",
            )
        });
    }
    match tokio::time::timeout(Duration::from_secs(5), state.db.check_ready()).await {
        Ok(Ok(())) => Ok(Json(Health { status: "ready" })),
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
