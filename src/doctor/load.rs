//! The configuration as `serve` reads it (`--config` file, environment), for the doctor: a signing secret that
//! does not decode is one failed check, not the end of the diagnosis.

use std::path::Path;

use crate::config::{check_env_names, ConfigError, Secret, Settings};

/// The variable that wins over every other source of the signing secret (see `config::load`).
const SECRET_VAR: &str = "CLERK_WEBHOOK_SIGNING_SECRET";
/// A secret that decodes, standing in while the rest of the configuration is read; never used for anything.
const STAND_IN: &str = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// What the doctor could make of the configuration.
#[derive(Debug)]
pub struct Loaded {
    /// The settings, or why there are none.
    pub settings: Result<Settings, ConfigError>,
    /// Why the signing secret was refused, when the rest loaded (its value is then unset in `settings`).
    pub secret_problem: Option<String>,
}

/// Loads the settings as `main` does for every command; `set_vars` are the names of the variables set (to check
/// for typos), `env` looks them up.
pub fn load(file: Option<&Path>, set_vars: &[String], env: &dyn Fn(&str) -> Option<String>) -> Loaded {
    if let Err(e) = check_env_names(set_vars.iter().map(String::as_str)) {
        return Loaded {
            settings: Err(e),
            secret_problem: None,
        };
    }
    match Settings::load(file, env) {
        Err(ConfigError::Invalid { key, problem }) if key.starts_with("clerk.webhook_signing_secret") => {
            let stand_in = |name: &str| match name {
                SECRET_VAR => Some(STAND_IN.to_owned()),
                other => env(other),
            };
            let settings = Settings::load(file, &stand_in).map(|mut settings| {
                settings.clerk.webhook_signing_secret = Secret::default();
                settings
            });
            Loaded {
                settings,
                secret_problem: Some(problem),
            }
        }
        settings => Loaded {
            settings,
            secret_problem: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load_with(vars: &[(&str, &str)]) -> Loaded {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let names: Vec<String> = map.keys().cloned().collect();
        load(None, &names, &|k| map.get(k).cloned())
    }

    #[test]
    fn a_secret_that_does_not_decode_leaves_the_rest_loaded() {
        let loaded = load_with(&[
            ("CLERK_WEBHOOK_SECRET", "whsec_!!!"),
            ("DATABASE_URL", "sqlite://elsewhere.db"),
        ]);
        let settings = loaded.settings.expect("the rest loads");
        assert_eq!(settings.database.url.expose(), "sqlite://elsewhere.db");
        assert!(
            !settings.clerk.webhook_signing_secret.is_set(),
            "the stand-in is not kept"
        );
        assert!(
            loaded.secret_problem.is_some_and(|p| p.contains("does not decode")),
            "the problem is kept"
        );
    }

    #[test]
    fn other_problems_are_not_hidden() {
        let loaded = load_with(&[
            ("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_!!!"),
            ("CLERK_SYNC_ACTORS__SHARDS", "0"),
        ]);
        let e = loaded.settings.expect_err("shards = 0 is invalid");
        assert!(e.to_string().contains("actors.shards"), "{e}");
        let typo = load_with(&[("CLERK_SYNC_WEBHOOKS__DELETEMODE", "hard")]);
        assert!(typo.settings.is_err());
    }
}
