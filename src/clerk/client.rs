//! Clerk Backend API client: timeouts, bounded jittered retries, `Retry-After` on 429, and a client-side
//! request budget so a storm of lookups cannot spend the application's whole Clerk quota.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use super::{ClerkOrganization, ClerkUser};
use crate::config::{ClerkSettings, Secret};
use crate::telemetry::metrics;

/// Why a Backend API call gave no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClerkError {
    /// 404 `resource_not_found`: Clerk has no such object.
    #[error("Clerk has no such resource")]
    NotFound,
    #[error("CLERK_SECRET_KEY is not configured")]
    NotConfigured,
    /// Connection error, timeout or 5xx, after the retry budget.
    #[error("Clerk is unavailable: {0}")]
    Unavailable(String),
    /// 429 (or our own request budget), with the wait Clerk asked for.
    #[error("Clerk rate limit reached")]
    RateLimited(Option<Duration>),
    /// Any other 4xx: retrying cannot help (a wrong secret key, say). `code` is the first error code of Clerk's
    /// `{"errors": [{"code": …}]}` body, when it sent one (`organization_not_enabled_in_instance`, say).
    #[error("Clerk refused the request with HTTP {status}{}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Refused { status: u16, code: Option<String> },
    #[error("Clerk sent an unexpected response: {0}")]
    Malformed(String),
}

impl ClerkError {
    fn is_retryable(&self) -> bool {
        matches!(self, ClerkError::Unavailable(_) | ClerkError::RateLimited(_))
    }

    /// How long a caller should wait before trying again, when that is known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClerkError::RateLimited(after) => *after,
            _ => None,
        }
    }
}

/// The instance a secret key belongs to (`GET /v1/instance`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct ClerkInstance {
    pub id: String,
    /// `development`, `production`, or another environment Clerk may add.
    pub environment_type: String,
}

/// A Clerk Backend API client. Cheap to share behind an `Arc`.
pub struct ClerkClient {
    http: reqwest::Client,
    base: String,
    secret_key: Secret,
    api_version: String,
    budget: DefaultDirectRateLimiter,
    retry_budget: Duration,
}

impl std::fmt::Debug for ClerkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClerkClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl ClerkClient {
    pub fn new(settings: &ClerkSettings) -> Result<Arc<Self>, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .timeout(Duration::from_millis(settings.request_timeout_ms))
            .user_agent(concat!("clerk-sync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let per_10s = NonZeroU32::new(settings.effective_requests_per_10s()).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(Duration::from_secs(10) / per_10s.get())
            .unwrap_or_else(|| Quota::per_second(per_10s))
            .allow_burst(per_10s);
        Ok(Arc::new(ClerkClient {
            http,
            base: settings.api_url.as_str().trim_end_matches('/').to_owned(),
            secret_key: settings.secret_key.clone(),
            api_version: settings.api_version.clone(),
            budget: RateLimiter::direct(quota),
            retry_budget: Duration::from_millis(settings.retry_budget_ms),
        }))
    }

    /// `GET /v1/users/{id}`.
    pub async fn get_user(&self, id: &str) -> Result<ClerkUser, ClerkError> {
        let raw: Box<serde_json::value::RawValue> = self.get_json("get_user", &format!("/v1/users/{id}")).await?;
        ClerkUser::from_raw(&raw).map_err(|e| ClerkError::Malformed(e.to_string()))
    }

    /// `GET /v1/organizations/{id}`, with its members count.
    pub async fn get_organization(&self, id: &str) -> Result<ClerkOrganization, ClerkError> {
        let path = format!("/v1/organizations/{id}?include_members_count=true");
        let raw: Box<serde_json::value::RawValue> = self.get_json("get_organization", &path).await?;
        ClerkOrganization::from_raw(&raw).map_err(|e| ClerkError::Malformed(e.to_string()))
    }

    /// `GET /v1/instance`: which Clerk instance the secret key belongs to.
    pub async fn instance(&self) -> Result<ClerkInstance, ClerkError> {
        self.get_json("instance", "/v1/instance").await
    }

    /// The environment the secret key's prefix names (`sk_test_`: development, `sk_live_`: production), when it
    /// names one: known without asking Clerk.
    pub fn key_environment(&self) -> Option<&'static str> {
        let key = self.secret_key.expose();
        if key.starts_with("sk_test_") {
            Some("development")
        } else if key.starts_with("sk_live_") {
            Some("production")
        } else {
            None
        }
    }

    /// `GET /v1/jwks`: the keys session tokens are signed with.
    pub async fn jwks(&self) -> Result<jsonwebtoken::jwk::JwkSet, ClerkError> {
        self.get_json("jwks", "/v1/jwks").await
    }

    #[tracing::instrument(name = "clerk_api", skip(self), fields(operation))]
    pub(super) async fn get_json<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
    ) -> Result<T, ClerkError> {
        if !self.secret_key.is_set() {
            return Err(ClerkError::NotConfigured);
        }
        let url = format!("{}{path}", self.base);
        let deadline = Instant::now() + self.retry_budget;
        let backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(5)
            .with_total_delay(Some(self.retry_budget));
        (|| self.attempt::<T>(operation, &url, deadline))
            .retry(backoff)
            .when(ClerkError::is_retryable)
            // 429: wait what Clerk asks, but never past our own budget (the caller then gets a 503).
            .adjust(move |e, delay| {
                let wait = e.retry_after().or(delay)?.min(MAX_RETRY_AFTER);
                Instant::now()
                    .checked_add(wait)
                    .is_some_and(|until| until < deadline)
                    .then_some(wait)
            })
            .notify(|e, wait| tracing::warn!(error = %e, ?wait, "Clerk request failed; retrying"))
            .await
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        url: &str,
        deadline: Instant,
    ) -> Result<T, ClerkError> {
        // Our own budget: wait for a slot, but not past the deadline.
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, self.budget.until_ready()).await.is_err() {
            return Err(ClerkError::RateLimited(Some(Duration::from_secs(1))));
        }
        let started = Instant::now();
        let sent = self
            .http
            .get(url)
            .bearer_auth(self.secret_key.expose())
            .header("Clerk-API-Version", &self.api_version)
            .send()
            .await;
        let status_label = match &sent {
            Ok(r) => r.status().as_str().to_owned(),
            Err(e) if e.is_timeout() => "timeout".to_owned(),
            Err(_) => "error".to_owned(),
        };
        ::metrics::counter!(metrics::CLERK_API_REQUESTS, "operation" => operation, "status" => status_label)
            .increment(1);
        ::metrics::histogram!(metrics::CLERK_API_DURATION, "operation" => operation)
            .record(started.elapsed().as_secs_f64());
        let response = sent.map_err(|e| ClerkError::Unavailable(describe(&e)))?;
        let status = response.status();
        match status {
            s if s.is_success() => {
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| ClerkError::Unavailable(describe(&e)))?;
                serde_json::from_slice(&bytes).map_err(|e| ClerkError::Malformed(e.to_string()))
            }
            StatusCode::TOO_MANY_REQUESTS => Err(ClerkError::RateLimited(retry_after(&response))),
            s if s.is_server_error() => Err(ClerkError::Unavailable(format!("HTTP {}", s.as_u16()))),
            s => {
                let code = error_code(&response.bytes().await.unwrap_or_default());
                match (s, code) {
                    (StatusCode::NOT_FOUND, Some(code)) if code == "resource_not_found" => Err(ClerkError::NotFound),
                    (s, code) => Err(ClerkError::Refused {
                        status: s.as_u16(),
                        code,
                    }),
                }
            }
        }
    }
}

/// The first `code` of Clerk's error body `{"errors": [{"code": "…", "message": "…"}]}`, if it is one. Only the
/// code is kept: messages may quote what the request carried.
fn error_code(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: String,
    }
    let errors: Errors = serde_json::from_slice(body).ok()?;
    let code = errors.errors.into_iter().next()?.code;
    // A code is a short identifier; anything else is not one.
    (code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')).then_some(code)
}

/// The longest `Retry-After` believed. A larger value (a misbehaving proxy, or `u64::MAX`) would otherwise be
/// passed on to API callers as is, and added to an `Instant` it overflows.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// `Retry-After` in seconds (the form Clerk sends), at most [`MAX_RETRY_AFTER`].
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value)
}

fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All digits: too many of them for a u64 is still "very long".
    let secs = value.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// The error without the URL (which is not secret, but noisy) and with its cause.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        e.to_string()
    }
}
