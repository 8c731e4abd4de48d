//! Parsing a verified body into a Clerk event.

use serde::Deserialize;

use super::VerifiedBody;
use crate::clerk::{is_user_id, ClerkUser};
use crate::store::{Change, Delivery, RecordOnly, Source, UserData};

/// A Clerk event that arrived with a valid signature. Constructed only by [`VerifiedBody::parse`].
#[derive(Debug)]
pub struct VerifiedEvent {
    svix_id: String,
    event_type: String,
    /// When Clerk says the event happened (envelope `timestamp`, else the svix timestamp), ms since the epoch.
    timestamp_ms: i64,
    kind: EventKind,
}

/// What an event asks of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// `user.created` / `user.updated`.
    Upsert(UserData),
    /// `user.deleted`, ordered by the envelope timestamp (ms).
    Delete { clerk_id: String, deleted_at_ms: i64 },
    /// Any other type: recorded as ignored. `clerk_id` when the payload names a user.
    Other { clerk_id: Option<String> },
}

/// A verified body that is not a well-formed Clerk event.
#[derive(Debug)]
pub struct InvalidEvent {
    pub svix_id: String,
    /// The `type` field when it could be read, else `unknown`.
    pub event_type: String,
    pub reason: String,
}

impl InvalidEvent {
    pub fn into_change(self) -> Change {
        Change::Record {
            delivery: Delivery {
                svix_id: self.svix_id,
                event_type: self.event_type,
                clerk_id: None,
            },
            outcome: RecordOnly::InvalidPayload,
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    event_type: String,
    data: serde_json::Map<String, serde_json::Value>,
    /// Milliseconds per Clerk's docs; some examples show seconds.
    timestamp: Option<i64>,
}

#[derive(Deserialize)]
struct Deleted {
    id: String,
}

/// The sane range of Clerk timestamps, in ms since the epoch: 2000-01-01 to 2100-01-01. Anything outside is
/// refused as an invalid payload, on both backends alike (SQLite cannot format a date past year 9999, so an
/// absurd delete time would otherwise leave a deleted user live there).
pub const SANE_MS: std::ops::RangeInclusive<i64> = 946_684_800_000..=4_102_444_800_000;

/// Envelope timestamps under 10^12 are seconds (10^12 ms is 2001; 10^12 s is far in the future).
fn to_millis(ts: i64) -> i64 {
    if ts < 1_000_000_000_000 {
        ts.saturating_mul(1000)
    } else {
        ts
    }
}

impl VerifiedBody {
    pub fn parse(self) -> Result<VerifiedEvent, InvalidEvent> {
        let svix_id = self.svix_id().to_owned();
        let invalid = |event_type: &str, reason: String| InvalidEvent {
            svix_id: svix_id.clone(),
            event_type: event_type.to_owned(),
            reason,
        };
        let envelope: Envelope =
            serde_json::from_slice(self.body()).map_err(|e| invalid("unknown", format!("not a Clerk event: {e}")))?;
        let data = serde_json::Value::Object(envelope.data);
        let timestamp_ms = to_millis(envelope.timestamp.unwrap_or(self.timestamp_secs()));
        let kind = match envelope.event_type.as_str() {
            "user.created" | "user.updated" => {
                let user: ClerkUser = serde_json::from_value(data)
                    .map_err(|e| invalid(&envelope.event_type, format!("bad user object: {e}")))?;
                EventKind::Upsert(user.into_user_data())
            }
            "user.deleted" => {
                let deleted: Deleted = serde_json::from_value(data)
                    .map_err(|e| invalid(&envelope.event_type, format!("bad deleted object: {e}")))?;
                EventKind::Delete {
                    clerk_id: deleted.id,
                    deleted_at_ms: timestamp_ms,
                }
            }
            _ => EventKind::Other {
                clerk_id: ["user_id", "id"]
                    .iter()
                    .filter_map(|k| data.get(*k).and_then(|v| v.as_str()))
                    .find(|id| is_user_id(id))
                    .map(str::to_owned),
            },
        };
        let ordered_by = match &kind {
            EventKind::Upsert(user) => Some(user.clerk_updated_at),
            EventKind::Delete { deleted_at_ms, .. } => Some(*deleted_at_ms),
            EventKind::Other { .. } => None,
        };
        if let Some(ms) = ordered_by.filter(|ms| !SANE_MS.contains(ms)) {
            return Err(invalid(
                &envelope.event_type,
                format!("timestamp {ms} ms is outside 2000-01-01 .. 2100-01-01"),
            ));
        }
        if let EventKind::Upsert(UserData { clerk_id, .. }) | EventKind::Delete { clerk_id, .. } = &kind {
            if !is_user_id(clerk_id) {
                return Err(invalid(
                    &envelope.event_type,
                    format!("{clerk_id:?} is not a Clerk user id"),
                ));
            }
        }
        Ok(VerifiedEvent {
            svix_id,
            event_type: envelope.event_type,
            timestamp_ms,
            kind,
        })
    }
}

impl VerifiedEvent {
    pub fn svix_id(&self) -> &str {
        &self.svix_id
    }

    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    pub fn timestamp_ms(&self) -> i64 {
        self.timestamp_ms
    }

    pub fn kind(&self) -> &EventKind {
        &self.kind
    }

    /// The user this event is about, if any; it picks the actor.
    pub fn clerk_id(&self) -> Option<&str> {
        match &self.kind {
            EventKind::Upsert(u) => Some(&u.clerk_id),
            EventKind::Delete { clerk_id, .. } => Some(clerk_id),
            EventKind::Other { clerk_id } => clerk_id.as_deref(),
        }
    }

    /// The change to commit for this event.
    pub fn into_change(self, hard_delete: bool) -> Change {
        let delivery = Delivery {
            clerk_id: self.clerk_id().map(str::to_owned),
            svix_id: self.svix_id,
            event_type: self.event_type,
        };
        match self.kind {
            EventKind::Upsert(user) => Change::Upsert {
                user,
                via: Source::Webhook,
                delivery: Some(delivery),
            },
            EventKind::Delete {
                clerk_id,
                deleted_at_ms,
            } => Change::Delete {
                clerk_id,
                deleted_at_ms,
                via: Source::Webhook,
                hard: hard_delete,
                delivery: Some(delivery),
            },
            EventKind::Other { .. } => Change::Record {
                delivery,
                outcome: RecordOnly::Ignored,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_timestamps_in_seconds_or_millis() {
        assert_eq!(to_millis(1_700_000_000), 1_700_000_000_000);
        assert_eq!(to_millis(1_700_000_000_123), 1_700_000_000_123);
    }
}
