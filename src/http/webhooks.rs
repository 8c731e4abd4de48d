//! `POST /webhooks/clerk`: verify, parse, hand to the user's actor, answer 2xx only after commit.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::store::Outcome;

pub async fn clerk(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Json<Value>, ApiError> {
    let Some(verifier) = state.verifier.as_deref() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            "the webhook signing secret is not configured (set CLERK_WEBHOOK_SIGNING_SECRET)",
        ));
    };
    let verified = verifier.verify(&headers, body).map_err(|e| {
        tracing::warn!(error = %e, "webhook refused: signature did not verify");
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "missing or invalid webhook signature",
        )
    })?;
    let event = match verified.parse() {
        Ok(event) => event,
        Err(invalid) => {
            tracing::warn!(
                svix_id = invalid.svix_id,
                reason = invalid.reason,
                "webhook payload is not a Clerk event"
            );
            let reason = invalid.reason.clone();
            // Recorded so the delivery can be found later; a failure to record still answers non-2xx.
            state
                .writer
                .submit(invalid.into_change())
                .await
                .map_err(|e| ApiError::from_write(e, state.retry_after_secs))?;
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_payload", reason));
        }
    };
    let svix_id = event.svix_id().to_owned();
    let event_type = event.event_type().to_owned();
    let outcome = match event.kind() {
        crate::webhook::EventKind::Other { .. } => state.writer.submit(event.into_change(false)).await,
        _ => {
            let clerk_id = event.clerk_id().unwrap_or_default().to_owned();
            state.actors.apply_webhook(clerk_id, event).await
        }
    }
    .map_err(|e| {
        tracing::warn!(svix_id, event_type, error = %e, "webhook not applied");
        ApiError::from_write(e, state.retry_after_secs)
    })?;
    let answer = match &outcome {
        // A redelivery of a payload we refused gets the same refusal.
        Outcome::Duplicate(prior) if prior == "invalid_payload" => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_payload",
                "this delivery was refused before",
            ))
        }
        Outcome::Duplicate(_) => "duplicate",
        other => other.delivery_outcome(),
    };
    tracing::info!(svix_id, event_type, outcome = ?outcome, "webhook processed");
    Ok(Json(json!({"outcome": answer})))
}
