//! Layering and validation of [`Settings`].

use std::path::Path;

use toml::{Table, Value};

use super::{DeleteMode, Settings};

const DEFAULTS: &str = include_str!("../../config/default.toml");

/// Environment names that predate (or are shared with) the `CLERK_SYNC_<SECTION>__<KEY>` scheme.
/// Later entries win, so Clerk's current name beats the older `CLERK_WEBHOOK_SECRET`.
const NAMED_ENV: &[(&str, &str, &str)] = &[
    ("DATABASE_URL", "database", "url"),
    ("CLERK_WEBHOOK_SECRET", "clerk", "webhook_signing_secret"),
    ("CLERK_WEBHOOK_SIGNING_SECRET", "clerk", "webhook_signing_secret"),
    ("CLERK_SECRET_KEY", "clerk", "secret_key"),
    ("CLERK_API_URL", "clerk", "api_url"),
    ("CLERK_JWT_KEY", "clerk", "jwt_key"),
    ("CLERK_SYNC_AUTHORIZED_PARTIES", "clerk", "authorized_parties"),
    ("CLERK_SYNC_LISTEN", "server", "listen"),
    ("CLERK_SYNC_METRICS_LISTEN", "server", "metrics_listen"),
    ("CLERK_SYNC_API_TOKENS", "api", "tokens"),
];

/// Invalid configuration: the key (and its environment name) and what is wrong. Exit code 78.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
    #[error("config file {path}: {problem}")]
    File { path: String, problem: String },
}

impl ConfigError {
    /// An invalid key, named with its environment variable so the operator knows where to fix it.
    pub fn invalid(section: &str, key: &str, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key_label(section, key),
            problem: problem.into(),
        }
    }
}

/// `database.url (DATABASE_URL)` or `actors.shards (CLERK_SYNC_ACTORS__SHARDS)`.
fn key_label(section: &str, key: &str) -> String {
    let env = NAMED_ENV
        .iter()
        .rev()
        .find(|(_, s, k)| *s == section && *k == key)
        .map(|(e, _, _)| e.to_string())
        .unwrap_or_else(|| generic_env(section, key));
    format!("{section}.{key} ({env})")
}

fn generic_env(section: &str, key: &str) -> String {
    format!("CLERK_SYNC_{}__{}", section.to_uppercase(), key.to_uppercase())
}

impl Settings {
    /// Loads the layers and validates the result. `env` looks up environment variables (tests pass a map).
    pub fn load(file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let mut table: Table = DEFAULTS.parse().map_err(|e| ConfigError::File {
            path: "config/default.toml (built in)".into(),
            problem: format!("{e}"),
        })?;
        if let Some(path) = file {
            let file_err = |problem: String| ConfigError::File {
                path: path.display().to_string(),
                problem,
            };
            let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
            let overlay: Table = text
                .parse()
                .map_err(|e: toml::de::Error| file_err(e.message().to_string()))?;
            merge(&mut table, overlay);
        }
        apply_env(&mut table, env)?;
        let mut settings: Settings = serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            let (section, key) = path.split_once('.').unwrap_or((path.as_str(), ""));
            ConfigError::invalid(section, key, e.inner().message().to_string())
        })?;
        // Environment files often carry a PEM on one line with literal `\n`s.
        settings.clerk.jwt_key = settings.clerk.jwt_key.replace("\\n", "\n");
        // 0 is "automatic": resolved here, so check-config shows the budget the daemon will use.
        settings.clerk.requests_per_10s = settings.clerk.effective_requests_per_10s();
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let scheme = self.database.url.scheme();
        if !matches!(scheme, "postgres" | "postgresql" | "sqlite") {
            return Err(ConfigError::invalid(
                "database",
                "url",
                format!("unknown backend {scheme:?}: use postgres://… or sqlite://…"),
            ));
        }
        if url::Url::parse(self.database.url.expose()).is_err() && !self.database.url.expose().starts_with("sqlite:") {
            return Err(ConfigError::invalid("database", "url", "not a valid URL"));
        }
        if self.database.is_postgres() {
            if let Some(name) = super::unread_secret_params(self.database.url.expose()).first() {
                return Err(ConfigError::invalid(
                    "database",
                    "url",
                    format!(
                        "query parameter {name:?} is not one the Postgres driver reads: it would be ignored, and \
                         its value written to the log; remove it (the password goes in ?password= or user:password@)"
                    ),
                ));
            }
        }
        let secret = &self.clerk.webhook_signing_secret;
        if secret.is_set() {
            if let Err(e) = svix::webhooks::Webhook::new(secret.expose()) {
                return Err(ConfigError::invalid(
                    "clerk",
                    "webhook_signing_secret",
                    format!("does not decode ({e}): expected whsec_ followed by base64, as shown in Clerk's dashboard"),
                ));
            }
        }
        if !self.clerk.jwt_key.trim().is_empty()
            && jsonwebtoken::DecodingKey::from_rsa_pem(self.clerk.jwt_key.as_bytes()).is_err()
        {
            return Err(ConfigError::invalid(
                "clerk",
                "jwt_key",
                "is not an RSA public key in PEM form (-----BEGIN PUBLIC KEY----- …)",
            ));
        }
        if !matches!(self.clerk.api_url.scheme(), "http" | "https") {
            return Err(ConfigError::invalid("clerk", "api_url", "must be an http(s) URL"));
        }
        if self.webhooks.delivery_retention_hours < 48 {
            return Err(ConfigError::invalid(
                "webhooks",
                "delivery_retention_hours",
                "must be at least 48: Svix retries a delivery for about 27 hours",
            ));
        }
        super::forward::validate(self)?;
        if !(0.0..=1.0).contains(&self.prune.max_share) {
            return Err(ConfigError::invalid(
                "prune",
                "max_share",
                "must be between 0 and 1 (0.1 is a tenth of the live rows)",
            ));
        }
        if let Err(e) = self.reconcile.every() {
            return Err(ConfigError::invalid("reconcile", "interval", e));
        }
        let positive = [
            ("database", "max_connections", self.database.max_connections as u64),
            ("actors", "shards", self.actors.shards as u64),
            ("writer", "max_batch", self.writer.max_batch as u64),
            ("writer", "in_flight", self.writer.in_flight as u64),
            ("webhooks", "answer_timeout_ms", self.webhooks.answer_timeout_ms),
            ("webhooks", "prune_interval_secs", self.webhooks.prune_interval_secs),
            ("clerk", "request_timeout_ms", self.clerk.request_timeout_ms),
            ("cache", "capacity", self.cache.capacity),
            ("server", "header_read_timeout_ms", self.server.header_read_timeout_ms),
            ("server", "body_read_timeout_ms", self.server.body_read_timeout_ms),
            ("server", "max_connections", self.server.max_connections as u64),
            ("changes", "retention_hours", self.changes.retention_hours),
            ("changes", "prune_interval_secs", self.changes.prune_interval_secs),
            ("changes", "max_streams", self.changes.max_streams as u64),
            ("forward", "timeout_ms", self.forward.timeout_ms),
            ("forward", "max_backoff_secs", self.forward.max_backoff_secs),
        ];
        if let Some((section, key, _)) = positive.iter().find(|(_, _, v)| *v == 0) {
            return Err(ConfigError::invalid(section, key, "must be greater than 0"));
        }
        Ok(())
    }

    pub fn hard_delete(&self) -> bool {
        self.webhooks.delete_mode == DeleteMode::Hard
    }
}

/// Refuses environment variables shaped like `CLERK_SYNC_<SECTION>__<KEY>` that name no setting (a typo such as
/// `CLERK_SYNC_WEBHOOKS__DELETEMODE` would otherwise be silently ignored), as unknown keys in a `--config` file
/// are. `names` are the variables set to a non-empty value. The known keys are those of the built-in defaults,
/// which hold every setting (`Settings` has no serde defaults), so new settings are known without a list here.
pub fn check_env_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), ConfigError> {
    let defaults: Table = DEFAULTS.parse().map_err(|e| ConfigError::File {
        path: "config/default.toml (built in)".into(),
        problem: format!("{e}"),
    })?;
    for name in names {
        let Some((section, key)) = name.strip_prefix("CLERK_SYNC_").and_then(|rest| rest.split_once("__")) else {
            continue;
        };
        let keys = defaults
            .iter()
            .find(|(s, _)| generic_env(s, "") == format!("CLERK_SYNC_{section}__"))
            .and_then(|(s, v)| v.as_table().map(|t| (s, t)));
        let problem = match keys {
            None => format!(
                "no such configuration section {:?} (sections: {})",
                section.to_lowercase(),
                defaults.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            Some((s, t)) if !t.keys().any(|k| generic_env(s, k) == name) => format!(
                "no such configuration key {s}.{} (keys of [{s}]: {})",
                key.to_lowercase(),
                t.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            Some(_) => continue,
        };
        return Err(ConfigError::Invalid {
            key: name.to_string(),
            problem,
        });
    }
    Ok(())
}

/// Deep-merges `overlay` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut Table, overlay: Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Applies `CLERK_SYNC_<SECTION>__<KEY>` for every known key, then the named variables.
fn apply_env(table: &mut Table, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    let keys: Vec<(String, String)> = table
        .iter()
        .filter_map(|(s, v)| v.as_table().map(|t| (s, t)))
        .flat_map(|(s, t)| t.keys().map(move |k| (s.clone(), k.clone())))
        .collect();
    let named = NAMED_ENV
        .iter()
        .map(|(e, s, k)| (e.to_string(), s.to_string(), k.to_string()));
    let generic = keys.into_iter().map(|(s, k)| (generic_env(&s, &k), s, k));
    for (name, section, key) in generic.chain(named) {
        let Some(raw) = env(&name).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        let Some(Value::Table(sect)) = table.get_mut(&section) else {
            continue;
        };
        let value = typed(sect.get(&key), &raw).map_err(|problem| ConfigError::invalid(&section, &key, problem))?;
        sect.insert(key, value);
    }
    Ok(())
}

/// Reads an environment string as the type of the key's default.
fn typed(default: Option<&Value>, raw: &str) -> Result<Value, String> {
    let raw = raw.trim();
    match default {
        Some(Value::Integer(_)) => raw
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("{raw:?} is not a whole number")),
        Some(Value::Boolean(_)) => raw
            .parse::<bool>()
            .map(Value::Boolean)
            .map_err(|_| format!("{raw:?} is not true or false")),
        Some(Value::Array(_)) => Ok(Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )),
        _ => Ok(Value::String(raw.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::load(None, &|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_load() {
        let s = load(&[]).expect("defaults are valid");
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:3000");
        assert_eq!(s.database.url.expose(), "sqlite://clerk-sync.db");
        assert!(!s.clerk.webhook_signing_secret.is_set());
    }

    #[test]
    fn env_layers_override() {
        let s = load(&[
            ("CLERK_SYNC_ACTORS__SHARDS", "3"),
            ("CLERK_SYNC_API_TOKENS", "a, b"),
            ("CLERK_WEBHOOK_SECRET", "whsec_b2xk"),
            ("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_bmV3"),
        ])
        .expect("valid");
        assert_eq!(s.actors.shards, 3);
        assert_eq!(s.api.tokens.len(), 2);
        assert_eq!(s.clerk.webhook_signing_secret.expose(), "whsec_bmV3");
    }

    #[test]
    fn one_line_pem_keys_are_accepted() {
        let pem = include_str!("../../tests/fixtures/jwt_test_key.pub.pem");
        let one_line = pem.trim_end().replace('\n', "\\n");
        let s = load(&[("CLERK_JWT_KEY", one_line.as_str())]).expect("valid");
        assert_eq!(s.clerk.jwt_key, pem.trim_end());
    }

    #[test]
    fn secret_query_parameters_the_driver_ignores_are_refused() {
        let e = load(&[("DATABASE_URL", "postgres://app@db/app?sslpassword=swordfish")]).expect_err("refused");
        assert!(e.to_string().contains("sslpassword"), "{e}");
        assert!(!e.to_string().contains("swordfish"), "{e}");
        load(&[(
            "DATABASE_URL",
            "postgres://app@db/app?password=pw&sslkey=/k.pem&sslmode=require",
        )])
        .expect("parameters the driver reads are fine");
    }

    #[test]
    fn unknown_environment_keys_are_refused() {
        let e = check_env_names(["PATH", "CLERK_SYNC_WEBHOOKS__DELETEMODE"]).expect_err("unknown key");
        assert!(e.to_string().starts_with("CLERK_SYNC_WEBHOOKS__DELETEMODE: "), "{e}");
        assert!(e.to_string().contains("delete_mode"), "the known keys are listed: {e}");
        let e = check_env_names(["CLERK_SYNC_WEBHOOK__DELETE_MODE"]).expect_err("unknown section");
        assert!(e.to_string().contains("CLERK_SYNC_WEBHOOK__DELETE_MODE"), "{e}");
        let e = check_env_names(["CLERK_SYNC_webhooks__delete_mode"]).expect_err("not applied, so refused");
        assert!(e.to_string().contains("CLERK_SYNC_webhooks__delete_mode"), "{e}");
        // Every key of the defaults is known, named variables and other programs' variables are not checked.
        let defaults: Table = DEFAULTS.parse().expect("defaults");
        let all: Vec<String> = defaults
            .iter()
            .filter_map(|(s, v)| v.as_table().map(|t| (s, t)))
            .flat_map(|(s, t)| t.keys().map(move |k| generic_env(s, k)))
            .collect();
        assert!(all.len() > 20, "{all:?}");
        check_env_names(all.iter().map(String::as_str)).expect("every default key is known");
        check_env_names([
            "CLERK_SYNC_LISTEN",
            "CLERK_SYNC_LOG_FORMAT",
            "CLERK_SYNC_CONFIG",
            "HOME",
        ])
        .expect("ignored");
    }

    #[test]
    fn errors_name_the_key_and_variable() {
        let e = load(&[("CLERK_SYNC_LISTEN", "not an address")]).expect_err("invalid");
        assert!(e.to_string().starts_with("server.listen (CLERK_SYNC_LISTEN):"), "{e}");
        let e = load(&[("DATABASE_URL", "mysql://x")]).expect_err("invalid");
        assert!(e.to_string().contains("database.url (DATABASE_URL)"), "{e}");
        let e = load(&[("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_!!!")]).expect_err("invalid");
        assert!(e.to_string().contains("CLERK_WEBHOOK_SIGNING_SECRET"), "{e}");
        assert!(!e.to_string().contains("!!!"), "{e}");
        let e = load(&[("CLERK_SYNC_WEBHOOKS__DELIVERY_RETENTION_HOURS", "24")]).expect_err("invalid");
        assert!(e.to_string().contains("at least 48"), "{e}");
        let e = load(&[("CLERK_SYNC_WEBHOOKS__DELETE_MODE", "maybe")]).expect_err("invalid");
        assert!(e.to_string().contains("webhooks.delete_mode"), "{e}");
    }
}
