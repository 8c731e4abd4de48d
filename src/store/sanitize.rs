//! Making a change fit to write on either backend: U+0000 out of every text and JSON value, and the Clerk object
//! out of `data` when `sync.store_payload` is off.

use super::{Change, Delivery, Entity, UserData};

/// Postgres text cannot hold U+0000 (SQLite can): a user's own data must never make its writes fail for ever,
/// so NULs are dropped from every text the daemon writes, on both backends alike.
fn strip_nul(s: &mut String) {
    if s.contains('\0') {
        s.retain(|c| c != '\0');
    }
}

fn strip_nul_opt(s: &mut Option<String>) {
    if let Some(s) = s {
        strip_nul(s);
    }
}

/// The same for JSON (`jsonb` refuses `\u0000` too), in every string and every key. serde_json's recursion
/// limit bounds the depth of what was parsed.
fn strip_nul_json(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::String(s) => strip_nul(s),
        Value::Array(items) => items.iter_mut().for_each(strip_nul_json),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(mut k, v)| {
                        strip_nul(&mut k);
                        (k, v)
                    })
                    .collect();
            }
            map.values_mut().for_each(strip_nul_json);
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn strip_nul_json_opt(v: &mut Option<super::RawJson>) {
    if let Some(v) = v {
        v.strip_nul(strip_nul_json);
    }
}

impl UserData {
    pub fn strip_nul(&mut self) {
        strip_nul(&mut self.clerk_id);
        for field in [
            &mut self.email,
            &mut self.first_name,
            &mut self.last_name,
            &mut self.username,
            &mut self.image_url,
            &mut self.phone_number,
            &mut self.external_id,
        ] {
            strip_nul_opt(field);
        }
        strip_nul_json_opt(&mut self.public_metadata);
        strip_nul_json_opt(&mut self.data);
    }
}

impl Entity {
    /// Drops U+0000 from every text and JSON value (see [`UserData::strip_nul`]).
    pub fn strip_nul(&mut self) {
        match self {
            Entity::User(u) => u.strip_nul(),
            Entity::Organization(o) => {
                strip_nul(&mut o.clerk_id);
                for field in [&mut o.name, &mut o.slug, &mut o.image_url] {
                    strip_nul_opt(field);
                }
                strip_nul_json_opt(&mut o.public_metadata);
                strip_nul_json_opt(&mut o.data);
            }
            Entity::Membership(m) => {
                for field in [&mut m.clerk_id, &mut m.organization_clerk_id, &mut m.user_clerk_id] {
                    strip_nul(field);
                }
                strip_nul_opt(&mut m.role);
                strip_nul_json_opt(&mut m.data);
            }
        }
    }
}

impl Delivery {
    fn strip_nul(&mut self) {
        strip_nul(&mut self.svix_id);
        strip_nul(&mut self.event_type);
        strip_nul_opt(&mut self.clerk_id);
    }
}

impl Change {
    /// Makes the change fit to write on either backend: drops U+0000 from every text (see
    /// [`UserData::strip_nul`]) and, unless `store_payload`, the whole Clerk object kept in `data`.
    pub fn prepare(&mut self, store_payload: bool) {
        match self {
            Change::Upsert { entity, delivery, .. } => {
                if !store_payload {
                    *entity.data_mut() = None;
                }
                entity.strip_nul();
                delivery.iter_mut().for_each(Delivery::strip_nul);
            }
            Change::Delete { clerk_id, delivery, .. } => {
                strip_nul(clerk_id);
                delivery.iter_mut().for_each(Delivery::strip_nul);
            }
            Change::Record { delivery, .. } => delivery.strip_nul(),
        }
    }
}
