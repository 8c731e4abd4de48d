//! The client-side budget of Clerk Backend API requests, which follows the limit of the kind of instance the
//! secret key belongs to: Clerk allows 1000 requests per 10 s in production and 100 in development.

use super::ClerkSettings;

/// The budget with a production key (`sk_live_…`), or none: room is left for the application's own calls
/// on the same key.
pub const PRODUCTION_REQUESTS_PER_10S: u32 = 900;
/// The budget with a development key (`sk_test_…`): the same share of a development instance's limit, so the
/// fallback waits its turn instead of leaning on Clerk's 429s.
pub const DEVELOPMENT_REQUESTS_PER_10S: u32 = 90;

impl ClerkSettings {
    /// `requests_per_10s` when configured (non-zero), else the budget of the secret key's kind of instance.
    pub fn effective_requests_per_10s(&self) -> u32 {
        match self.requests_per_10s {
            0 if self.secret_key.expose().starts_with("sk_test_") => DEVELOPMENT_REQUESTS_PER_10S,
            0 => PRODUCTION_REQUESTS_PER_10S,
            configured => configured,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::config::Settings;

    fn budget(vars: &[(&str, &str)]) -> u32 {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::load(None, &|k| map.get(k).cloned())
            .expect("valid")
            .clerk
            .requests_per_10s
    }

    #[test]
    fn a_development_key_gets_the_development_budget_unless_one_is_set() {
        assert_eq!(budget(&[]), 900);
        assert_eq!(budget(&[("CLERK_SECRET_KEY", "sk_live_abc")]), 900);
        assert_eq!(budget(&[("CLERK_SECRET_KEY", "sk_test_abc")]), 90);
        assert_eq!(
            budget(&[
                ("CLERK_SECRET_KEY", "sk_test_abc"),
                ("CLERK_SYNC_CLERK__REQUESTS_PER_10S", "500")
            ]),
            500,
            "an explicit value wins"
        );
        assert_eq!(
            budget(&[
                ("CLERK_SECRET_KEY", "sk_live_abc"),
                ("CLERK_SYNC_CLERK__REQUESTS_PER_10S", "40")
            ]),
            40
        );
        assert_eq!(
            budget(&[
                ("CLERK_SECRET_KEY", "sk_test_abc"),
                ("CLERK_SYNC_CLERK__REQUESTS_PER_10S", "0")
            ]),
            90,
            "0 asks for the automatic budget"
        );
    }

    #[test]
    fn a_config_file_value_wins_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("clerk-sync.toml");
        std::fs::write(&path, "[clerk]\nrequests_per_10s = 900\n").expect("write");
        let settings = Settings::load(Some(&path), &|k| {
            (k == "CLERK_SECRET_KEY").then(|| "sk_test_abc".into())
        })
        .expect("valid");
        assert_eq!(settings.clerk.requests_per_10s, 900);
    }
}
