//! Parsing a verified body into a Clerk event.

use serde::Deserialize;

use super::VerifiedBody;
use crate::clerk::{
    clerk_ms, is_membership_id, is_organization_id, is_user_id, strip_nul, ClerkMembership, ClerkOrganization,
    ClerkUser,
};
use crate::store::{Change, Delivery, Entity, Kind, OrganizationData, RecordOnly, Source};

/// A Clerk event that arrived with a valid signature. Constructed only by [`VerifiedBody::parse`].
#[derive(Debug)]
pub struct VerifiedEvent {
    svix_id: String,
    event_type: String,
    /// When Clerk says the event happened (envelope `timestamp`, else the svix timestamp), ms since the epoch.
    timestamp_ms: i64,
    /// The Clerk instance that sent it (envelope `instance_id`), when the envelope names one.
    instance_id: Option<String>,
    kind: EventKind,
}

/// What an event asks of the daemon.
// Most events are upserts; boxing them would cost an allocation per event for the sake of the rare others.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// `*.created` / `*.updated` of a user, organization or membership. A membership embeds its organization,
    /// which is applied too (under the same ordering guard, where at an equal `updated_at` the organization's
    /// own event wins and a copy brings only its `members_count`), so the organization row exists and is as new
    /// as the newest copy seen; the member is never made a `users` row (a membership carries too little of it).
    Upsert {
        entity: Entity,
        embedded: Option<OrganizationData>,
    },
    /// `*.deleted`, ordered by the envelope timestamp (ms).
    Delete {
        kind: Kind,
        clerk_id: String,
        deleted_at_ms: i64,
    },
    /// Any other type: recorded as ignored. `clerk_id` when the payload names a user.
    Other { clerk_id: Option<String> },
    /// A synced type whose payload, valid by Clerk's spec, leaves nothing to apply (a deleted object without
    /// its `id`, a membership without its member): recorded as ignored, and logged with `reason`. Refusing it
    /// would only make Svix retry a payload that can never be applied.
    Ignored { reason: &'static str },
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

/// A Clerk webhook event as Svix delivers it, as far as clerk-sync reads it (other keys, such as `object` and
/// `instance_id`, are not read).
// The OpenAPI document's request body of `POST /webhooks/clerk`, so it says what the parser requires.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = ClerkEvent)]
pub struct Envelope {
    /// The event type, such as `user.updated`; types clerk-sync does not sync are acknowledged as `ignored`.
    #[serde(rename = "type")]
    event_type: String,
    /// The record: a user, organization or membership object, or `{id, deleted}` for a deletion.
    // Kept as its text: it is read into the record's fields and written to `data` as it came.
    #[schema(value_type = Object)]
    data: Box<serde_json::value::RawValue>,
    /// When Clerk sent the event: milliseconds per Clerk's docs; some examples show seconds.
    timestamp: Option<i64>,
    instance_id: Option<String>,
}

/// The ids an event of another type may name its user by.
#[derive(Default, Deserialize)]
struct OtherIds {
    user_id: Option<serde_json::Value>,
    id: Option<serde_json::Value>,
}

/// Clerk's `DeletedObject` requires only `object` and `deleted`.
#[derive(Deserialize)]
struct Deleted {
    id: Option<String>,
}

/// The earliest timestamp an event may carry: 2000-01-01T00:00:00Z, in ms since the epoch.
pub const EARLIEST_EVENT_MS: i64 = 946_684_800_000;
/// The first timestamp an event may no longer carry: 2100-01-01T00:00:00Z, in ms since the epoch.
///
/// `data.updated_at` (the ordering guard) and a delete's envelope timestamp (its `deleted_at`) must lie in
/// `EARLIEST_EVENT_MS..LATEST_EVENT_MS`. Outside it the payload is corrupt or hostile, and the backends would not
/// even agree on it (SQLite's `strftime` yields NULL past year 9999, so a delete would leave `deleted_at` NULL):
/// such an event is refused as `invalid_payload` before it reaches either backend.
pub const LATEST_EVENT_MS: i64 = 4_102_444_800_000;

/// Whether `ms` lies in the accepted range of event timestamps.
pub fn is_sane_event_ms(ms: i64) -> bool {
    (EARLIEST_EVENT_MS..LATEST_EVENT_MS).contains(&ms)
}

/// At most 80 characters of `s`, for messages that quote the payload.
fn excerpt(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((end, _)) => format!("{:?}…", &s[..end]),
        None => format!("{s:?}"),
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
        let event_type = strip_nul(envelope.event_type);
        let data = envelope.data;
        if !data.get().starts_with('{') {
            return Err(invalid("unknown", "not a Clerk event: data is not an object".into()));
        }
        // Seconds or milliseconds, by the rule every timestamp of Clerk's is read with.
        let envelope_ms = envelope.timestamp.map(clerk_ms);
        // The svix timestamp verified within ±5 minutes of now, so it is always sane.
        let svix_ms = self.timestamp_secs().saturating_mul(1000);
        let bad = |what: &str, e: serde_json::Error| invalid(&event_type, format!("bad {what} object: {e}"));
        let kind = match event_type.as_str() {
            "user.created" | "user.updated" => EventKind::Upsert {
                entity: Entity::User(ClerkUser::from_raw(&data).map_err(|e| bad("user", e))?.into_user_data()),
                embedded: None,
            },
            "organization.created" | "organization.updated" => EventKind::Upsert {
                entity: Entity::Organization(
                    ClerkOrganization::from_raw(&data)
                        .map_err(|e| bad("organization", e))?
                        .into_data(),
                ),
                embedded: None,
            },
            "organizationMembership.created" | "organizationMembership.updated" => {
                let membership = ClerkMembership::from_raw(&data).map_err(|e| bad("organization membership", e))?;
                match membership.into_data() {
                    Some((membership, organization)) => EventKind::Upsert {
                        entity: Entity::Membership(membership),
                        // An absurd embedded `updated_at` would make the organization stale for ever: the copy
                        // is dropped, the membership still applied.
                        embedded: Some(organization).filter(|o| is_sane_event_ms(o.clerk_updated_at)),
                    },
                    None => EventKind::Ignored {
                        reason: "the membership names no member (no public_user_data): no row can be written",
                    },
                }
            }
            "user.deleted" | "organization.deleted" | "organizationMembership.deleted" => {
                // Clerk sends only `{id, deleted, object}` for some kinds; a full object reads the same way.
                let deleted: Deleted = serde_json::from_str(data.get()).map_err(|e| bad("deleted", e))?;
                match deleted.id {
                    None => EventKind::Ignored {
                        reason: "the deleted object carries no id: nothing to delete",
                    },
                    Some(clerk_id) => {
                        let deleted_at_ms = envelope_ms.unwrap_or(svix_ms);
                        if !is_sane_event_ms(deleted_at_ms) {
                            return Err(invalid(
                                &event_type,
                                format!("timestamp {deleted_at_ms} ms is outside 2000-01-01..2100-01-01"),
                            ));
                        }
                        let kind = match event_type.as_str() {
                            "user.deleted" => Kind::User,
                            "organization.deleted" => Kind::Organization,
                            _ => Kind::Membership,
                        };
                        EventKind::Delete {
                            kind,
                            clerk_id,
                            deleted_at_ms,
                        }
                    }
                }
            }
            _ => {
                // Only the ids, as whatever JSON they are: a type clerk-sync does not sync is acknowledged whatever
                // else its data holds.
                let ids: OtherIds = serde_json::from_str(data.get()).unwrap_or_default();
                EventKind::Other {
                    clerk_id: [ids.user_id, ids.id]
                        .into_iter()
                        .filter_map(|v| v.and_then(|v| v.as_str().map(str::to_owned)))
                        .find(|id| is_user_id(id)),
                }
            }
        };
        check_ids(&kind).map_err(|reason| invalid(&event_type, reason))?;
        Ok(VerifiedEvent {
            svix_id,
            event_type,
            // Only the lag metric reads it for upserts and other types: an absurd envelope timestamp there falls
            // back to the verified svix timestamp instead of refusing an otherwise good event.
            timestamp_ms: envelope_ms.filter(|ms| is_sane_event_ms(*ms)).unwrap_or(svix_ms),
            instance_id: envelope.instance_id.map(strip_nul).filter(|id| !id.is_empty()),
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

    /// The Clerk instance that sent the event, when its envelope names one.
    pub fn instance_id(&self) -> Option<&str> {
        self.instance_id.as_deref()
    }

    /// The event only recorded, as `outcome`, changing no record (a webhook of another instance).
    pub fn into_record(self, outcome: RecordOnly) -> Change {
        Change::Record {
            delivery: Delivery {
                clerk_id: self.clerk_id().map(str::to_owned),
                svix_id: self.svix_id,
                event_type: self.event_type,
            },
            outcome,
        }
    }

    /// The record this event is about, if any; it picks the actor.
    pub fn clerk_id(&self) -> Option<&str> {
        match &self.kind {
            EventKind::Upsert { entity, .. } => Some(entity.clerk_id()),
            EventKind::Delete { clerk_id, .. } => Some(clerk_id),
            EventKind::Other { clerk_id } => clerk_id.as_deref(),
            EventKind::Ignored { .. } => None,
        }
    }

    /// The change to commit for this event, and the embedded organization of a membership event (committed in
    /// the same batch, just before).
    pub fn into_changes(self, hard_delete: bool) -> (Change, Option<Change>) {
        let delivery = Delivery {
            clerk_id: self.clerk_id().map(str::to_owned),
            svix_id: self.svix_id,
            event_type: self.event_type,
        };
        let change = match self.kind {
            EventKind::Upsert { entity, embedded } => {
                let embedded = embedded.map(|organization| Change::Upsert {
                    entity: Entity::Organization(organization),
                    via: Source::Webhook,
                    delivery: None,
                });
                let change = Change::Upsert {
                    entity,
                    via: Source::Webhook,
                    delivery: Some(delivery),
                };
                return (change, embedded);
            }
            EventKind::Delete {
                kind,
                clerk_id,
                deleted_at_ms,
            } => Change::Delete {
                kind,
                clerk_id,
                deleted_at_ms,
                via: Source::Webhook,
                hard: hard_delete,
                delivery: Some(delivery),
                pruned_by: None,
            },
            EventKind::Other { .. } | EventKind::Ignored { .. } => Change::Record {
                delivery,
                outcome: RecordOnly::Ignored,
            },
        };
        (change, None)
    }
}

/// An id, the check it must pass, and what it names (for the message).
type IdCheck<'a> = (&'a str, fn(&str) -> bool, &'static str);

/// Every id an applied event writes must be a Clerk id of the right kind: anything else is refused before it
/// reaches a user's actor, the database or Clerk.
fn check_ids(kind: &EventKind) -> Result<(), String> {
    let mut ids: Vec<IdCheck> = Vec::new();
    match kind {
        EventKind::Upsert { entity, embedded } => {
            match entity {
                Entity::User(u) => ids.push((&u.clerk_id, is_user_id, "user")),
                Entity::Organization(o) => ids.push((&o.clerk_id, is_organization_id, "organization")),
                Entity::Membership(m) => {
                    ids.push((&m.clerk_id, is_membership_id, "organization membership"));
                    ids.push((&m.organization_clerk_id, is_organization_id, "organization"));
                    ids.push((&m.user_clerk_id, is_user_id, "user"));
                }
            }
            if let Some(o) = embedded {
                ids.push((&o.clerk_id, is_organization_id, "organization"));
            }
            if !is_sane_event_ms(entity.clerk_updated_at()) {
                return Err(format!(
                    "data.updated_at {} is outside 2000-01-01..2100-01-01",
                    entity.clerk_updated_at()
                ));
            }
        }
        EventKind::Delete { kind, clerk_id, .. } => ids.push(match kind {
            Kind::User => (clerk_id, is_user_id, "user"),
            Kind::Organization => (clerk_id, is_organization_id, "organization"),
            Kind::Membership => (clerk_id, is_membership_id, "organization membership"),
        }),
        EventKind::Other { .. } | EventKind::Ignored { .. } => {}
    }
    match ids.into_iter().find(|(id, valid, _)| !valid(id)) {
        Some((id, _, what)) => Err(format!("{} is not a Clerk {what} id", excerpt(id))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_range_is_2000_to_2100() {
        assert!(is_sane_event_ms(EARLIEST_EVENT_MS));
        assert!(!is_sane_event_ms(EARLIEST_EVENT_MS - 1));
        assert!(is_sane_event_ms(LATEST_EVENT_MS - 1));
        assert!(!is_sane_event_ms(LATEST_EVENT_MS));
        assert!(is_sane_event_ms(clerk_ms(1_700_000_000)));
        assert!(!is_sane_event_ms(clerk_ms(300_000_000_000_000)));
        assert!(!is_sane_event_ms(clerk_ms(-1)));
    }

    #[test]
    fn excerpts_are_short() {
        assert_eq!(excerpt("user_x"), "\"user_x\"");
        assert!(excerpt(&"é".repeat(10_000)).chars().count() < 90);
    }
}
