//! The OpenAPI 3.1 document of everything a client calls: `GET /v1/openapi.json` serves it, `clerk-sync openapi`
//! prints it, and `openapi.json` at the repository root is a copy a test keeps equal.
//!
//! Each operation is described by the `#[utoipa::path]` annotation on its handler, and the router registers the
//! handler from that same annotation (`utoipa_axum::routes!` in `mod.rs`): a route cannot be served under a path
//! or method its description does not name. Bodies are described by the types that serialize them.

use axum::body::Bytes;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi, ToSchema};

use super::changes::ChangesPage;
use super::error::ErrorBody;
use super::health::Health;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "clerk-sync",
        description = "Keeps an application's `users`, `organizations` and `organization_memberships` tables in \
            sync with Clerk. Service callers (the application's backend) send one of `CLERK_SYNC_API_TOKENS`; end \
            users send their Clerk session token to `/v1/me`. Every error answer is an `Error` body.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    components(schemas(ErrorBody, Health, ChangesPage, WebhookAnswer)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "users", description = "Users: get-or-create from Clerk, and re-sync."),
        (name = "organizations", description = "Organizations: get-or-create from Clerk, and re-sync."),
        (name = "memberships", description = "Organization memberships, from the database."),
        (name = "changes", description = "The change feed, as JSON pages or Server-Sent Events."),
        (name = "webhooks", description = "The endpoint Clerk (Svix) delivers webhooks to."),
        (name = "health", description = "Liveness and readiness probes."),
        (name = "meta", description = "This document."),
    ),
)]
pub struct ApiDoc;

/// The two kinds of bearer token: service tokens and Clerk session tokens.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let service = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("One of `CLERK_SYNC_API_TOKENS`, for the application's backend."))
            .build();
        let session = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "A Clerk session token (what `getToken()` returns), for end users.",
            ))
            .build();
        components.add_security_scheme("service_token", SecurityScheme::Http(service));
        components.add_security_scheme("session_token", SecurityScheme::Http(session));
    }
}

/// The answer to a webhook that was processed: what it changed.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the `json!` answer of `webhooks::clerk`; never built.
pub struct WebhookAnswer {
    /// `applied`: committed; `duplicate`: this `svix-id` was processed before; `stale`: older than the stored row
    /// (or a membership of a deleted organization or user); `tombstoned`: the record is deleted; `ignored`: an
    /// event type clerk-sync does not handle, or nothing to apply.
    #[schema(schema_with = webhook_outcome)]
    outcome: String,
}

fn webhook_outcome() -> utoipa::openapi::Object {
    crate::store::string_enum(
        &[
            "applied",
            "duplicate",
            "stale",
            "tombstoned",
            "ignored",
            "wrong_instance",
        ],
        false,
    )
}

/// Response bodies whose every key is always present: the rows and pages serialize every field (an empty one as
/// `null`), so generated client types need no optional fields.
const ALWAYS_COMPLETE: &[&str] = &[
    "User",
    "Organization",
    "Membership",
    "Change",
    "ChangesPage",
    "Error",
    "Health",
    "WebhookAnswer",
];

/// The document as served and committed, pretty JSON with a final newline, with what the annotations cannot
/// say: the keys of [`ALWAYS_COMPLETE`] bodies are required, and so is `Retry-After` wherever it is documented
/// (every 503 carries it).
pub fn render(document: &Document) -> String {
    let mut json = match serde_json::to_value(document) {
        Ok(json) => json,
        // Maps of strings and numbers: cannot fail; an empty document would fail the contract test loudly.
        Err(_) => return "{}\n".to_owned(),
    };
    for name in ALWAYS_COMPLETE {
        if let Some(schema) = json.pointer_mut(&format!("/components/schemas/{name}")) {
            let keys: Vec<Value> = schema["properties"]
                .as_object()
                .map(|p| p.keys().map(|k| Value::from(k.as_str())).collect())
                .unwrap_or_default();
            schema["required"] = Value::Array(keys);
        }
    }
    let operations = json["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut());
    for operation in operations.flat_map(|item| item.as_object_mut().into_iter().flat_map(|m| m.values_mut())) {
        let responses = operation["responses"]
            .as_object_mut()
            .into_iter()
            .flat_map(|r| r.values_mut());
        for response in responses {
            if let Some(retry_after) = response.pointer_mut("/headers/Retry-After") {
                retry_after["required"] = Value::Bool(true);
            }
        }
    }
    let mut text = serde_json::to_string_pretty(&json).unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    text
}

/// The document, serialized once when the router is built.
#[derive(Clone)]
pub struct Served(pub Bytes);

#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    operation_id = "getOpenApi",
    summary = "This document",
    description = "The OpenAPI 3.1 description of every route. No token needed: it describes the API, not data.",
    responses((status = 200, description = "The OpenAPI document.", content_type = "application/json",
        body = Object)),
)]
pub async fn document(Extension(served): Extension<Served>) -> Response {
    let content_type = [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    (content_type, served.0).into_response()
}
