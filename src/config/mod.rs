//! Typed settings: built-in `config/default.toml` < optional `--config` file < environment.
//!
//! Secrets are wrapped in [`Secret`], whose `Debug` and `Serialize` never show the value, so neither logs nor
//! `check-config` can leak them.

mod clerk;
mod forward;
mod load;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

pub use forward::{ForwardSettings, ForwardUrl};
pub use load::{check_env_names, ConfigError};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub clerk: ClerkSettings,
    pub webhooks: WebhookSettings,
    pub cache: CacheSettings,
    pub actors: ActorSettings,
    pub writer: WriterSettings,
    pub api: ApiSettings,
    pub reconcile: ReconcileSettings,
    pub sync: SyncSettings,
    pub supabase: SupabaseSettings,
    pub changes: ChangesSettings,
    pub forward: ForwardSettings,
    pub prune: PruneSettings,
}

/// The brake on `backfill --prune` and `reconcile.prune`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PruneSettings {
    /// A run tombstones at most this share of a kind's live rows (rounded up), never all of them.
    pub max_share: f64,
    /// And at most this many of a kind.
    pub max_count: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesSettings {
    /// Whether committed changes are written to the feed (`clerk_sync_changes`).
    pub enabled: bool,
    pub retention_hours: u64,
    pub prune_interval_secs: u64,
    /// How often followers look for new changes when no notification came (Postgres NOTIFY; SQLite has none).
    pub poll_interval_ms: u64,
    /// Most Server-Sent Events streams of `GET /v1/changes` open at once; they do not count as connections.
    pub max_streams: usize,
}

impl ChangesSettings {
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_hours.saturating_mul(3600))
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(10))
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSettings {
    /// Keep the whole Clerk object in each row's `data` column.
    pub store_payload: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupabaseSettings {
    /// `migrate` enables row-level security on the synced tables, with read policies for `authenticated`.
    pub rls: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub shutdown_timeout_ms: u64,
    pub retry_after_secs: u64,
    pub header_read_timeout_ms: u64,
    pub body_read_timeout_ms: u64,
    pub max_connections: usize,
}

impl ServerSettings {
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: DatabaseUrl,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    pub busy_timeout_ms: u64,
    pub lock_timeout_ms: u64,
    pub statement_timeout_ms: u64,
}

impl DatabaseSettings {
    pub fn is_postgres(&self) -> bool {
        self.url.scheme() == "postgres" || self.url.scheme() == "postgresql"
    }

    /// `postgres` or `sqlite`, for messages.
    pub fn backend(&self) -> &'static str {
        if self.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClerkSettings {
    pub webhook_signing_secret: Secret,
    pub secret_key: Secret,
    pub api_url: url::Url,
    pub api_version: String,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub retry_budget_ms: u64,
    /// 0 in the files means automatic; [`Settings::load`] resolves it (see `clerk.rs`).
    pub requests_per_10s: u32,
    pub jwt_key: String,
    pub authorized_parties: Vec<String>,
    pub jwt_leeway_secs: u64,
    pub jwks_refetch_interval_ms: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    pub capacity: u64,
    pub ttl_secs: u64,
    pub not_found_ttl_secs: u64,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeleteMode {
    Soft,
    Hard,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub delete_mode: DeleteMode,
    pub delivery_retention_hours: u64,
    pub prune_interval_secs: u64,
    pub answer_timeout_ms: u64,
}

impl WebhookSettings {
    pub fn answer_timeout(&self) -> Duration {
        Duration::from_millis(self.answer_timeout_ms)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActorSettings {
    pub shards: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WriterSettings {
    pub max_batch: usize,
    pub in_flight: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSettings {
    pub interval: String,
    pub prune: bool,
}

impl ReconcileSettings {
    /// `None` when off; `Err` with the reason when the text is not a duration.
    pub fn every(&self) -> Result<Option<Duration>, String> {
        parse_interval(&self.interval)
    }
}

/// "off" (or "0"), or a number followed by s, m, h or d: "90s", "30m", "24h", "7d".
pub fn parse_interval(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") || text == "0" {
        return Ok(None);
    }
    let unit = text.chars().last().ok_or("empty: use off or a duration such as 24h")?;
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(format!("{text:?}: use off or a number followed by s, m, h or d (24h)")),
    };
    let n: u64 = text[..text.len() - 1]
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: use off or a number followed by s, m, h or d (24h)"))?;
    match n.checked_mul(secs) {
        Some(0) => Ok(None),
        Some(s) => Ok(Some(Duration::from_secs(s))),
        None => Err(format!("{text:?} is too long")),
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    pub tokens: Vec<Secret>,
}

/// A secret value: shown as `[redacted]` (or `""` when unset) everywhere but [`Secret::expose`].
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() { "[redacted]" } else { "[unset]" })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.is_set() { "[redacted]" } else { "" })
    }
}

/// A database URL, which may carry a password: displayed and serialized with the password redacted.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(value: impl Into<String>) -> Self {
        DatabaseUrl(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn scheme(&self) -> &str {
        self.0.split_once(':').map(|(s, _)| s).unwrap_or_default()
    }
}

/// `url` with every secret-bearing part shown as `[redacted]`: the password of `user:password@`, and the value
/// of any query parameter whose name mentions a pass(word), secret, token or key (sqlx reads `?password=` and
/// `?sslpassword=`; the others are redacted in case a driver, proxy or application reads them).
fn redact_url(url: &str) -> String {
    let with_userinfo = match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some(REDACTED));
            u.to_string()
        }
        _ => url.to_string(),
    };
    redact_query(&with_userinfo)
}

const REDACTED: &str = "[redacted]";

/// Redacts the values of secret-bearing query parameters, leaving the rest of `url` as written.
fn redact_query(url: &str) -> String {
    let Some((base, rest)) = url.split_once('?') else {
        return url.to_string();
    };
    let (query, fragment) = match rest.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (rest, None),
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if is_secret_param(name) => format!("{name}={REDACTED}"),
            _ => param.to_string(),
        })
        .collect();
    let mut out = format!("{base}?{}", params.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Secret-bearing query parameters of a Postgres URL that sqlx does not read: it ignores them with a warning
/// that logs their value, so they must never reach it.
fn unread_secret_params(url: &str) -> Vec<String> {
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(name, _)| name.into_owned())
        .filter(|name| is_secret_param(name) && !matches!(name.as_str(), "password" | "sslkey" | "ssl-key"))
        .collect()
}

fn is_secret_param(name: &str) -> bool {
    // Names may be percent-encoded (`pass%77ord`); decode before matching.
    let name = url::form_urlencoded::parse(format!("{name}=").as_bytes())
        .next()
        .map(|(n, _)| n.to_ascii_lowercase())
        .unwrap_or_default();
    ["pass", "secret", "token", "key"]
        .iter()
        .any(|word| name.contains(word))
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&redact_url(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("whsec_c2VjcmV0");
        assert_eq!(format!("{s:?}"), "[redacted]");
        let url = DatabaseUrl::new("postgres://app:hunter2@db.example.com:5432/postgres");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert!(format!("{url:?}").contains("db.example.com"));
    }

    #[test]
    fn secret_query_parameters_never_print() {
        let url = DatabaseUrl::new(
            "postgres://app@db.example.com:5432/postgres?sslmode=require&password=hunter2&sslpassword=s3cr3t\
             &pass%77ord=enc0ded&auth_token=t0k&sslkey=/k.pem&application_name=clerk",
        );
        let shown = format!("{url:?}");
        for secret in ["hunter2", "s3cr3t", "enc0ded", "t0k", "/k.pem"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("password=[redacted]"), "{shown}");
        assert!(shown.contains("sslmode=require"), "{shown}");
        assert!(shown.contains("application_name=clerk"), "{shown}");
        let both = DatabaseUrl::new("postgres://app:pw1@h/db?password=pw2");
        let serialized = serde_json::to_string(&both).expect("serializes");
        for shown in [format!("{both:?}"), serialized] {
            assert!(!shown.contains("pw1") && !shown.contains("pw2"), "{shown}");
        }
    }
}
