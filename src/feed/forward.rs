//! Forwarding: POST every change of the feed to the application, one at a time in seq order, signed the
//! Standard Webhooks way, until it answers 2xx. At least once: the cursor is saved after each acknowledged
//! change, so a crash between the answer and the save repeats that one change (same `webhook-id`) and loses
//! none. One forwarder runs at a time across replicas (a Postgres advisory lock); the others wait to take over.
//! A forwarder confirms it still holds the lock before every attempt and the saved cursor only moves forward, so
//! one that lost its lock (its session ended) sends at most the change in flight after another took over.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::FeedHandle;
use crate::config::ForwardSettings;
use crate::store::backfill::Exclusive;
use crate::store::changes::FeedChange;
use crate::store::{Db, Lookup, Store};
use crate::telemetry::metrics;

/// The cursor's name in `clerk_sync_forward` and the lock's across replicas.
pub const NAME: &str = "forward";
/// Changes read per query.
const PAGE: i64 = 100;

/// Why a forwarder stopped forwarding (to compete for the lock again).
enum Pause {
    /// Its lock's database session ended: another replica may forward now.
    LockLost,
    /// The saved cursor stood past this forwarder's: another one forwards.
    Overtaken,
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The application answered, but not 2xx.
    #[error("the application answered HTTP {0}")]
    Status(u16),
    /// No answer: connection refused, timeout.
    #[error("no answer: {0}")]
    Unreachable(String),
}

pub struct Forwarder {
    db: Arc<Db>,
    feed: FeedHandle,
    http: reqwest::Client,
    url: String,
    signer: svix::webhooks::Webhook,
    max_backoff: Duration,
}

impl Forwarder {
    /// `None` when forwarding is off (no `forward.url`). The configuration has checked the secret.
    pub fn new(db: Arc<Db>, feed: FeedHandle, settings: &ForwardSettings) -> Result<Option<Forwarder>, String> {
        if !settings.url.is_set() {
            return Ok(None);
        }
        let url = settings.url.expose();
        let signer = svix::webhooks::Webhook::new(settings.signing_secret.expose())
            .map_err(|e| format!("forward.signing_secret does not decode: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .user_agent(concat!("clerk-sync/", env!("CARGO_PKG_VERSION")))
            // A redirect is a failed attempt: followed, a 302 turns the POST into a bodiless GET whose 2xx would
            // count as delivered, and a 307 sends the signed change to whatever host the redirect names.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Some(Forwarder {
            db,
            feed,
            http,
            url: url.to_owned(),
            signer,
            max_backoff: Duration::from_secs(settings.max_backoff_secs.max(1)),
        }))
    }

    /// Forwards until the task is dropped (shutdown). Waits its turn while another replica forwards.
    pub async fn run(self) {
        loop {
            let lock = match self.db.try_exclusive(NAME).await {
                Ok(Some(lock)) => lock,
                Ok(None) => {
                    // Another replica forwards; take over if it goes away.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "forwarding: cannot take the lock; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            tracing::info!(to = %origin(&self.url), "forwarding changes");
            let mut lock = lock;
            match self.forward_all(&mut lock).await {
                Ok(Pause::LockLost) => tracing::warn!("forwarding paused: the lock's database session ended"),
                Ok(Pause::Overtaken) => {
                    tracing::warn!("forwarding paused: another replica's forwarder has moved the cursor further")
                }
                Err(e) => tracing::warn!(error = %e, "forwarding paused: the database is unavailable"),
            }
            // This replica no longer forwards: its lag says nothing now (the one that takes over reports).
            ::metrics::gauge!(metrics::FORWARD_LAG).set(0.0);
            lock.release().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Forwards from the saved cursor on, for as long as the database answers and `lock` is held (returns when it
    /// is lost, so that two replicas never forward at once for long).
    async fn forward_all(&self, lock: &mut Exclusive) -> Result<Pause, crate::store::StoreError> {
        let mut cursor = self.db.forward_cursor(NAME).await?;
        let mut head = self.feed.subscribe();
        loop {
            if !lock.is_held().await {
                return Ok(Pause::LockLost);
            }
            let pruned = self.db.feed_pruned_through().await?;
            if cursor < pruned {
                tracing::error!(
                    cursor,
                    pruned,
                    "forwarding fell further behind than changes.retention_hours: changes up to seq {pruned} were \
                     pruned before they were forwarded"
                );
                cursor = pruned;
            }
            let upto = *head.borrow_and_update();
            let page = self.db.changes_after(cursor, PAGE, upto).await?;
            let Some(oldest) = page.first() else {
                ::metrics::gauge!(metrics::FORWARD_LAG).set(0.0);
                // Woken by the follower when anything commits; the timeout bounds a missed wake-up.
                let _ = tokio::time::timeout(Duration::from_secs(1), head.changed()).await;
                continue;
            };
            set_lag(oldest);
            for change in &page {
                set_lag(change);
                if !self.deliver(change, lock).await {
                    return Ok(Pause::LockLost);
                }
                cursor = change.seq;
                if !self.db.save_forward_cursor(NAME, cursor).await? {
                    return Ok(Pause::Overtaken);
                }
            }
        }
    }

    /// Delivers one change, retrying with exponential backoff until the application acknowledges it. `false`
    /// when `lock` was lost first: another replica may be forwarding from the saved cursor by now, so this one
    /// must send nothing more (its retries would interleave old changes with the other one's).
    async fn deliver(&self, change: &FeedChange, lock: &mut Exclusive) -> bool {
        let data = self.current_row(&change.clerk_id).await;
        let body = json!({
            "type": format!("{}.{}", change.kind, change.op),
            "change": change,
            "data": data,
        })
        .to_string();
        let id = format!("chg_{}", change.seq);
        let mut backoff = Duration::from_millis(500);
        loop {
            if !lock.is_held().await {
                return false;
            }
            match self.attempt(&id, &body).await {
                Ok(()) => {
                    ::metrics::counter!(metrics::FORWARD_DELIVERIES, "outcome" => "delivered").increment(1);
                    return true;
                }
                Err(failure) => {
                    let outcome = match failure {
                        Failure::Status(_) => "rejected",
                        Failure::Unreachable(_) => "unreachable",
                    };
                    ::metrics::counter!(metrics::FORWARD_DELIVERIES, "outcome" => outcome).increment(1);
                    tracing::warn!(seq = change.seq, %failure, retry_in = ?backoff, "forwarding a change failed");
                    set_lag(change);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
    }

    /// The record as `GET /v1` shows it now, or null when it no longer exists (deleted, or never stored).
    async fn current_row(&self, clerk_id: &str) -> Value {
        loop {
            match self.db.lookup(clerk_id).await {
                Ok(Lookup::Found(row)) => return serde_json::to_value(row.as_ref()).unwrap_or(Value::Null),
                Ok(Lookup::Tombstoned | Lookup::Pruned | Lookup::Missing) => return Value::Null,
                Err(e) => {
                    tracing::warn!(error = %e, "forwarding: cannot read the changed record; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn attempt(&self, id: &str, body: &str) -> Result<(), Failure> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let signature = self
            .signer
            .sign(id, timestamp, body.as_bytes())
            .map_err(|e| Failure::Unreachable(format!("cannot sign: {e}")))?;
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| Failure::Unreachable(describe(e)))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(Failure::Status(response.status().as_u16()))
        }
    }
}

/// What went wrong with a request, for the log: never the URL, whose path or query may hold a token (reqwest's
/// own text names it). The causes say why: "connection refused", a TLS or DNS failure.
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Scheme, host and port of `url`: its path, query or user info may hold a token, which must not reach the logs.
fn origin(url: &str) -> String {
    url::Url::parse(url).map_or_else(
        |_| "(unparseable URL)".into(),
        |u| {
            format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""))
                + &u.port().map_or(String::new(), |p| format!(":{p}"))
        },
    )
}

/// `clerk_sync_forward_lag_seconds`: how long the oldest unforwarded change has waited.
fn set_lag(oldest: &FeedChange) {
    let at = chrono_free_parse(&oldest.at);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    ::metrics::gauge!(metrics::FORWARD_LAG).set(at.map_or(0.0, |at| (now - at).max(0.0)));
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp as the feed writes it (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
fn chrono_free_parse(at: &str) -> Option<f64> {
    let (date, time) = at.trim_end_matches('Z').split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.splitn(3, ':');
    let (hh, mm) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let ss: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60) as f64 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_origin_is_logged() {
        assert_eq!(
            origin("https://user:pw@app.example.com:8443/hooks?token=s3cret"),
            "https://app.example.com:8443"
        );
        assert_eq!(origin("http://127.0.0.1/x"), "http://127.0.0.1");
    }

    #[test]
    fn feed_timestamps_parse() {
        assert_eq!(chrono_free_parse("1970-01-01T00:00:00.000Z"), Some(0.0));
        assert_eq!(chrono_free_parse("2023-11-14T22:13:20.456Z"), Some(1_700_000_000.456));
        assert_eq!(chrono_free_parse("2000-03-01T00:00:01Z"), Some(951_868_801.0));
        assert_eq!(chrono_free_parse("garbage"), None);
    }
}
