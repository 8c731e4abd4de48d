//! The main listener: webhooks, the `/v1` API and health checks.

mod auth;
mod change_stream;
mod changes;
mod error;
mod health;
mod json_errors;
pub mod openapi;
mod organizations;
pub mod serve;
mod users;
mod webhooks;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::{Extension, Router};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

pub use error::ApiError;
pub use users::Counters;

use crate::actors::Actors;
use crate::cache::UserCache;
use crate::clerk::JwtVerifier;
use crate::config::Secret;
use crate::store::writer::Writer;

use crate::store::Db;
use crate::webhook::Verifier;

/// Largest webhook body accepted; Clerk's user events are a few KiB.
pub const WEBHOOK_BODY_LIMIT: usize = 256 * 1024;

/// What the handlers share, behind one `Arc`: axum clones the state for every request, and one reference count
/// is much cheaper on the hot path than the dozen inside.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[derive(Debug)]
pub struct Shared {
    pub db: Arc<Db>,
    pub writer: Writer,
    pub actors: Actors,
    /// `None` when no signing secret is configured: webhooks then answer 503.
    pub verifier: Option<Arc<Verifier>>,
    pub cache: UserCache,
    /// Verifies end users' Clerk session tokens (`/v1/me`).
    pub jwt: Arc<JwtVerifier>,
    /// Bearer tokens of service callers.
    pub api_tokens: Arc<Vec<Secret>>,
    pub retry_after_secs: u64,
    /// Longest a webhook waits for its commit before it is answered 503.
    pub answer_timeout: std::time::Duration,
    pub counters: Counters,
    /// The change feed as this replica follows it; `None` with `changes.enabled = false`.
    pub feed: Option<crate::feed::FeedHandle>,
    /// One permit per open change stream (`changes.max_streams`).
    pub streams: Arc<tokio::sync::Semaphore>,
    /// The Clerk instance the database mirrors: webhooks of another are not applied.
    pub pin: Arc<crate::clerk::pin::InstancePin>,
    /// Webhooks refused for their signature, counted for `clerk-sync doctor` without a write per request.
    pub refusals: Arc<crate::store::refusals::Refusals>,
}

/// Every route with its description: the router and the OpenAPI document are both made from this.
fn routes() -> OpenApiRouter<AppState> {
    use utoipa::OpenApi;
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::livez))
        .routes(routes!(health::readyz))
        .routes(routes!(webhooks::clerk).layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT)))
        .routes(routes!(users::get_user))
        .routes(routes!(users::sync_user))
        .routes(routes!(users::me))
        .routes(routes!(organizations::user_memberships))
        .routes(routes!(organizations::get_organization))
        .routes(routes!(organizations::sync_organization))
        .routes(routes!(organizations::organization_memberships))
        .routes(routes!(changes::changes))
        .routes(routes!(openapi::document))
}

/// The OpenAPI document of the main listener, as `GET /v1/openapi.json` serves it.
pub fn openapi_json() -> String {
    openapi::render(&routes().into_openapi())
}

pub fn router(state: AppState) -> Router {
    let (router, document) = routes().split_for_parts();
    let served = openapi::Served(openapi::render(&document).into());
    router
        .layer(Extension(served))
        // Axum's own refusals (no such route, wrong method, body too large or unreadable) as `Error` bodies too.
        .layer(middleware::from_fn(json_errors::json_errors))
        // After routing, so the middleware sees the route template; unmatched paths get it too.
        .layer(middleware::from_fn(crate::telemetry::http::observe))
        .with_state(state)
}

/// The parameters of a request's query string (the last of a repeated one wins).
fn query_params(query: Option<String>) -> std::collections::HashMap<String, String> {
    query
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}
