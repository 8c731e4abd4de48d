//! `POST /webhooks/clerk`: verify, parse, hand to the user's actor, answer 2xx only after commit.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};
use tracing::Instrument;

use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::store::writer::WriteError;
use crate::store::{Outcome, RecordOnly};
use crate::telemetry::metrics::{self, event_type_label, outcome};
use crate::webhook::{EventKind, VerifiedEvent};

/// Counts the delivery in `clerk_sync_webhook_events_total{event_type, outcome}`.
fn count(event_type: &str, outcome: &'static str) {
    ::metrics::counter!(metrics::WEBHOOK_EVENTS, "event_type" => event_type_label(event_type), "outcome" => outcome)
        .increment(1);
}

#[utoipa::path(
    post,
    path = "/webhooks/clerk",
    tag = "webhooks",
    operation_id = "clerkWebhook",
    summary = "Clerk's webhook endpoint (Svix deliveries)",
    description = "Verifies the Svix signature on the raw body (`svix-*` or `webhook-*` headers, ±5 minutes), then \
        applies the event. 2xx only after commit; anything else makes Svix retry. Body at most 256 KiB.",
    params(
        ("svix-id" = Option<String>, Header, nullable = false, description = "The message id (or `webhook-id`)."),
        ("svix-timestamp" = Option<String>, Header, nullable = false, description = "Unix seconds (or `webhook-timestamp`)."),
        ("svix-signature" = Option<String>, Header, nullable = false, description = "`v1,<base64>`, space-separated (or \
            `webhook-signature`)."),
    ),
    request_body(content = crate::webhook::Envelope, content_type = "application/json",
        description = "A Clerk event, exactly as Svix delivers it."),
    responses(
        (status = 200, description = "Processed; `outcome` says what it changed.",
            body = super::openapi::WebhookAnswer),
        (status = 400, description = "`invalid_payload`: verified, but not a well-formed Clerk event (recorded), \
            or `bad_request`: the body could not be read.", body = ErrorBody),
        (status = 401, description = "`invalid_signature`: missing headers, bad signature or timestamp.",
            body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body was not received within \
            `server.body_read_timeout_ms`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: body over 256 KiB.", body = ErrorBody),
        (status = 500, description = "`failed`: the database refused the change (see the daemon's logs).",
            body = ErrorBody),
        (status = 503, description = "`not_configured` (no signing secret) or `unavailable` (the database, or no \
            commit within `webhooks.answer_timeout_ms`): nothing acknowledged.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
pub async fn clerk(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Json<Value>, ApiError> {
    let Some(verifier) = state.verifier.as_deref() else {
        count("unknown", outcome::FAILED);
        return Err(ApiError {
            retry_after: Some(state.retry_after_secs),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_configured",
                "the webhook signing secret is not configured (set CLERK_WEBHOOK_SIGNING_SECRET)",
            )
        });
    };
    let verified = tracing::debug_span!("verify_signature").in_scope(|| verifier.verify(&headers, body));
    let verified = verified.map_err(|e| {
        tracing::warn!(error = %e, "webhook refused: signature did not verify");
        count("unknown", outcome::INVALID_SIGNATURE);
        state.refusals.bad_signature();
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "missing or invalid webhook signature",
        )
    })?;
    tracing::Span::current().record("svix_id", verified.svix_id());
    let event = match verified.parse() {
        Ok(event) => event,
        Err(invalid) => {
            tracing::warn!(
                svix_id = invalid.svix_id,
                reason = invalid.reason,
                "webhook payload is not a Clerk event"
            );
            let (event_type, reason) = (invalid.event_type.clone(), invalid.reason.clone());
            // Recorded so the delivery can be found later; a failure to record still answers non-2xx.
            if let Err(e) = bounded(&state, state.writer.submit(invalid.into_change())).await {
                count(&event_type, outcome::FAILED);
                return Err(ApiError::from_write(e, state.retry_after_secs));
            }
            count(&event_type, outcome::INVALID_PAYLOAD);
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_payload", reason));
        }
    };
    let (event_type, event_ms) = (event.event_type().to_owned(), event.timestamp_ms());
    // Kept for the webhook's log line; `event` goes to the user's actor.
    let (svix_id, clerk_id) = (event.svix_id().to_owned(), event.clerk_id().map(str::to_owned));
    if let Some(clerk_id) = &clerk_id {
        tracing::Span::current().record("clerk_id", clerk_id.as_str());
    }
    if let Some(instance) = event.instance_id() {
        let admitted = state.pin.admits_webhook(instance).await.map_err(|e| {
            tracing::warn!(event_type, error = %e, "cannot read the pinned Clerk instance; answering 503");
            count(&event_type, outcome::FAILED);
            ApiError::unavailable(state.retry_after_secs)
        })?;
        if !admitted {
            return other_instance(&state, event).await;
        }
    }
    let outcome = bounded(&state, apply(&state, event)).await.map_err(|e| {
        tracing::warn!(event_type, error = %e, "webhook not applied");
        count(&event_type, outcome::FAILED);
        ApiError::from_write(e, state.retry_after_secs)
    })?;
    let answer = match &outcome {
        // A redelivery of a payload we refused gets the same refusal.
        Outcome::Duplicate(prior) if prior == "invalid_payload" => {
            count(&event_type, outcome::INVALID_PAYLOAD);
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_payload",
                "this delivery was refused before",
            ));
        }
        Outcome::Duplicate(_) => outcome::DUPLICATE,
        Outcome::Created | Outcome::Updated | Outcome::Deleted => {
            observe_lag(event_ms);
            outcome::APPLIED
        }
        Outcome::Stale | Outcome::Tombstoned => outcome::STALE,
        Outcome::Recorded(_) => outcome::IGNORED,
    };
    count(&event_type, answer);
    // The one line a webhook leaves at `info`: which record this path created or changed (or why not).
    tracing::info!(
        event_type = %event_type,
        clerk_id = %clerk_id.as_deref().unwrap_or("-"),
        outcome = %change(&outcome),
        svix_id = %svix_id,
        "webhook"
    );
    let body = match &outcome {
        Outcome::Duplicate(_) => "duplicate",
        other => other.delivery_outcome(),
    };
    Ok(Json(json!({"outcome": body})))
}

/// A webhook of another Clerk instance than the database mirrors: recorded (so its retries are duplicates), counted,
/// answered 200 so Svix stops retrying it, never applied. If the pin is the wrong one, `clerk-sync pin --replace`
/// and a backfill bring what these webhooks carried.
async fn other_instance(state: &AppState, event: VerifiedEvent) -> Result<Json<Value>, ApiError> {
    let event_type = event.event_type().to_owned();
    let pinned = state.pin.pinned().map(|p| p.instance_id).unwrap_or_default();
    tracing::warn!(
        event_type,
        instance_id = event.instance_id().unwrap_or_default(),
        pinned = pinned.as_str(),
        "webhook of another Clerk instance than this database mirrors: not applied (check which endpoint's signing \
         secret CLERK_WEBHOOK_SIGNING_SECRET holds; `clerk-sync pin` shows the pinned instance)"
    );
    let recorded = bounded(state, state.writer.submit(event.into_record(RecordOnly::WrongInstance))).await;
    if let Err(e) = recorded {
        count(&event_type, outcome::FAILED);
        return Err(ApiError::from_write(e, state.retry_after_secs));
    }
    count(&event_type, outcome::WRONG_INSTANCE);
    Ok(Json(json!({"outcome": "wrong_instance"})))
}

/// Svix counts an answer slower than 15 s as a failure: past `webhooks.answer_timeout_ms` the delivery is
/// answered 503 (so it is retried) while its change goes on in the user's actor. If that change commits after
/// all, the retry finds its svix id and answers `duplicate`.
async fn bounded(
    state: &AppState,
    work: impl std::future::Future<Output = Result<Outcome, WriteError>>,
) -> Result<Outcome, WriteError> {
    match tokio::time::timeout(state.answer_timeout, work).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(timeout = ?state.answer_timeout, "webhook not committed in time; answering 503");
            Err(WriteError::Unavailable)
        }
    }
}

async fn apply(state: &AppState, event: VerifiedEvent) -> Result<Outcome, WriteError> {
    match event.kind() {
        EventKind::Other { .. } => state.writer.submit(event.into_changes(false).0).await,
        EventKind::Ignored { reason } => {
            // A change Clerk made that the tables will not show: the operator should be able to see why.
            tracing::warn!(event_type = event.event_type(), reason, "webhook ignored");
            state.writer.submit(event.into_changes(false).0).await
        }
        _ => {
            let clerk_id = event.clerk_id().unwrap_or_default().to_owned();
            let span = tracing::debug_span!(target: crate::telemetry::SPAN_TARGET, "record_actor", clerk_id);
            state.actors.apply_webhook(clerk_id, event).instrument(span).await
        }
    }
}

/// What the webhook did to its record, for its log line: `created`, `updated`, `deleted`, `stale`, `tombstoned`,
/// `duplicate`, `ignored`, `invalid_payload` or `wrong_instance`.
fn change(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Created => "created",
        Outcome::Updated => "updated",
        Outcome::Deleted => "deleted",
        Outcome::Stale => "stale",
        Outcome::Tombstoned => "tombstoned",
        Outcome::Duplicate(_) => "duplicate",
        Outcome::Recorded(RecordOnly::Ignored) => "ignored",
        Outcome::Recorded(RecordOnly::InvalidPayload) => "invalid_payload",
        Outcome::Recorded(RecordOnly::WrongInstance) => "wrong_instance",
    }
}

/// `clerk_sync_webhook_lag_seconds`: commit time minus the event's own timestamp.
fn observe_lag(event_ms: i64) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let lag = now_ms.saturating_sub(event_ms).max(0) as f64 / 1000.0;
    ::metrics::histogram!(metrics::WEBHOOK_LAG).record(lag);
}
