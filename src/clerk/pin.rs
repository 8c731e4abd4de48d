//! The Clerk instance a database mirrors, and the rail that keeps another instance's data out of it.
//!
//! A development key pointed at the production database, or the key of another application, answers with
//! another instance's users: a backfill would write them in, and `--prune` would tombstone every user of the
//! right one. So the database records which instance it mirrors the first time the daemon talks to Clerk with a
//! key (`GET /v1/instance`) or applies a webhook (its envelope's `instance_id`), and afterwards:
//!
//! - a key of another instance is refused before anything it brings is written: `serve` does not start,
//!   `backfill` and reconcile stop — and a key whose prefix names another environment than the pinned one
//!   (`sk_test_` on a production pin) is refused without asking Clerk;
//! - a webhook of another instance is not applied (recorded as `wrong_instance`);
//! - `clerk-sync pin --replace` re-pins, deliberately.
//!
//! The fallback needs no check: it asks Clerk for one id, and ids are unique across instances, so another
//! instance's key finds nothing to write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use super::{ClerkClient, ClerkError, ClerkInstance};
use crate::store::instance::Pinned;
use crate::store::{Db, StoreError};

/// Why the key (or the configuration) may not write to this database.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "this database mirrors Clerk instance {pinned} ({pinned_env}), but CLERK_SECRET_KEY belongs to instance \
         {key_instance} ({key_env}); nothing was written. Use the key of {pinned}, or, if this database is to mirror \
         {key_instance} from now on, run `clerk-sync pin --replace`"
    )]
    OtherInstance {
        pinned: String,
        pinned_env: String,
        key_instance: String,
        key_env: String,
    },
    #[error(
        "this database mirrors Clerk instance {pinned} ({pinned_env}), but CLERK_SECRET_KEY is a {key_env} key \
         ({prefix}…); nothing was written. Use the {pinned_env} key of {pinned}, or, if this database is to mirror \
         another instance from now on, run `clerk-sync pin --replace` with that instance's key"
    )]
    OtherEnvironment {
        pinned: String,
        pinned_env: String,
        key_env: &'static str,
        prefix: &'static str,
    },
    #[error("cannot tell which Clerk instance CLERK_SECRET_KEY belongs to: {0}")]
    Clerk(#[from] ClerkError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
}

/// The pin as this process knows it. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct InstancePin {
    db: Arc<Db>,
    pinned: RwLock<Option<Pinned>>,
    /// The key was checked against the pin (cleared when the pin changes).
    key_checked: AtomicBool,
    /// Held while a webhook pins the instance: the deliveries that arrive before it is known wait for that one
    /// write instead of each racing the writer for the database (SQLite has one writer).
    pinning: tokio::sync::Mutex<()>,
}

impl InstancePin {
    /// Reads the pin from the database.
    pub async fn load(db: Arc<Db>) -> Result<Arc<InstancePin>, StoreError> {
        let pinned = db.pinned_instance().await?;
        Ok(Arc::new(InstancePin {
            db,
            pinned: RwLock::new(pinned),
            key_checked: AtomicBool::new(false),
            pinning: tokio::sync::Mutex::new(()),
        }))
    }

    /// The pinned instance, as last read.
    pub fn pinned(&self) -> Option<Pinned> {
        self.pinned.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// Reads the pin again (another process may have pinned or re-pinned it); a changed pin is checked against
    /// the key again.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let now = self.db.pinned_instance().await?;
        self.set(now);
        Ok(())
    }

    fn set(&self, now: Option<Pinned>) {
        if let Ok(mut pinned) = self.pinned.write() {
            if pinned.as_ref().map(|p| &p.instance_id) != now.as_ref().map(|p| &p.instance_id) {
                self.key_checked.store(false, Ordering::Release);
            }
            *pinned = now;
        }
    }

    /// Checks, before anything `clerk` brings is written, that its key belongs to the pinned instance (pinning it
    /// when nothing is pinned). One `GET /v1/instance` per process, unless the pin changes.
    pub async fn check_key(&self, clerk: &ClerkClient) -> Result<(), PinError> {
        if self.key_checked.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(refusal) = self
            .pinned()
            .and_then(|pin| environment_refusal(&pin, clerk.key_environment()))
        {
            return Err(refusal);
        }
        let instance = clerk.instance().await?;
        let stands = self
            .db
            .pin_instance(&instance.id, Some(&instance.environment_type), "key")
            .await?;
        if let Some(refusal) = instance_refusal(&stands, &instance) {
            self.set(Some(stands));
            return Err(refusal);
        }
        self.set(Some(stands));
        self.key_checked.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether a webhook of instance `instance_id` may be applied: it is the pinned one (pinned now when nothing
    /// is). An in-memory comparison once the pin is known.
    pub async fn admits_webhook(&self, instance_id: &str) -> Result<bool, StoreError> {
        let known = || {
            self.pinned
                .read()
                .ok()
                .and_then(|p| p.as_ref().map(|p| p.instance_id == instance_id))
        };
        if let Some(admitted) = known() {
            return Ok(admitted);
        }
        let _pinning = self.pinning.lock().await;
        if let Some(admitted) = known() {
            return Ok(admitted);
        }
        let stands = self.db.pin_instance(instance_id, None, "webhook").await?;
        let admitted = stands.instance_id == instance_id;
        self.set(Some(stands));
        Ok(admitted)
    }
}

/// The refusal a key whose prefix names environment `key_env` meets on a database pinned to `pin`, known without
/// asking Clerk (`clerk-sync doctor` asks the same).
pub fn environment_refusal(pin: &Pinned, key_env: Option<&'static str>) -> Option<PinError> {
    let (pinned_env, key_env) = (pin.environment.as_deref()?, key_env?);
    is_other_environment(pinned_env, key_env).then(|| PinError::OtherEnvironment {
        pinned: pin.instance_id.clone(),
        pinned_env: pinned_env.to_owned(),
        key_env,
        prefix: if key_env == "development" {
            "sk_test_"
        } else {
            "sk_live_"
        },
    })
}

/// The refusal a key of `instance` meets on a database pinned to `pin`.
pub fn instance_refusal(pin: &Pinned, instance: &ClerkInstance) -> Option<PinError> {
    (pin.instance_id != instance.id).then(|| PinError::OtherInstance {
        pinned: pin.instance_id.clone(),
        pinned_env: pin.environment.clone().unwrap_or_else(|| "environment unknown".into()),
        key_instance: instance.id.clone(),
        key_env: instance.environment_type.clone(),
    })
}

/// Development and production are told apart by the key's prefix; any other environment Clerk names is not.
fn is_other_environment(pinned: &str, key: &str) -> bool {
    matches!(
        (pinned, key),
        ("production", "development") | ("development", "production")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environments_the_prefix_tells_apart() {
        assert!(is_other_environment("production", "development"));
        assert!(is_other_environment("development", "production"));
        assert!(!is_other_environment("production", "production"));
        assert!(!is_other_environment("staging", "production"), "not told by a prefix");
    }

    #[test]
    fn the_refusal_names_both_instances_and_the_way_out() {
        let e = PinError::OtherInstance {
            pinned: "ins_prod".into(),
            pinned_env: "production".into(),
            key_instance: "ins_dev".into(),
            key_env: "development".into(),
        };
        let text = e.to_string();
        for part in [
            "ins_prod (production)",
            "ins_dev (development)",
            "nothing was written",
            "clerk-sync pin --replace",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
    }
}
