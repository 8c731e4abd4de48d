//! The doctor's findings and how they are shown: one line per check (✓ ok, ! warning, ✗ failure) with what to do,
//! or one JSON document for scripts.

use serde::Serialize;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One check's finding. The field names are the JSON keys scripts rely on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable id (`signing_secret`, `database`, …).
    pub check: &'static str,
    pub status: Status,
    /// What was found. Never a secret.
    pub detail: String,
    /// What to do about it (none when all is well).
    pub hint: Option<String>,
}

impl Check {
    pub fn ok(check: &'static str, detail: impl Into<String>) -> Check {
        Check {
            check,
            status: Status::Ok,
            detail: detail.into(),
            hint: None,
        }
    }

    pub fn warn(check: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            check,
            status: Status::Warn,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn fail(check: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            check,
            status: Status::Fail,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
}

/// Every check the doctor ran, in the order it shows them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// No check failed (warnings allowed).
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(checks: Vec<Check>) -> Report {
        Report {
            ok: checks.iter().all(|c| c.status != Status::Fail),
            checks,
        }
    }

    /// 0 when no check failed, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.ok {
            0
        } else {
            1
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"ok\": false, \"error\": \"{e}\"}}"))
    }

    pub fn text(&self) -> String {
        let width = self.checks.iter().map(|c| label(c.check).len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            let mark = match c.status {
                Status::Ok => "✓",
                Status::Warn => "!",
                Status::Fail => "✗",
            };
            out.push_str(&format!("{mark} {:<width$}  {}\n", label(c.check), c.detail));
            if let Some(hint) = &c.hint {
                out.push_str(&format!("  {:<width$}  → {hint}\n", ""));
            }
        }
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        let (failed, warned) = (count(Status::Fail), count(Status::Warn));
        let warnings = match warned {
            0 => String::new(),
            1 => ", 1 warning".into(),
            n => format!(", {n} warnings"),
        };
        match failed {
            0 => out.push_str(&format!("all checks passed{warnings}\n")),
            1 => out.push_str(&format!("1 check failed{warnings}\n")),
            n => out.push_str(&format!("{n} checks failed{warnings}\n")),
        }
        out
    }
}

/// How a check is named on a terminal.
fn label(check: &str) -> &str {
    match check {
        "config" => "configuration",
        "signing_secret" => "signing secret",
        "users_table" => "users table",
        "last_webhook" => "last webhook",
        "bad_signatures" => "bad signatures",
        "other_instance" => "other instance",
        "creations" => "creations (24 h)",
        "clerk_key" => "Clerk key",
        "jwks" => "JWKS",
        "user_count" => "user count",
        "feed" => "change feed",
        "prune" => "reconcile prune",
        other => other,
    }
}

/// `secs` ago, in the unit a person would use.
pub fn ago(secs: f64) -> String {
    let secs = secs.max(0.0).round() as u64;
    match secs {
        0..90 => format!("{secs} s ago"),
        90..5400 => format!("{} min ago", (secs + 30) / 60),
        5400..172_800 => format!("{} h ago", (secs + 1800) / 3600),
        _ => format!("{} days ago", (secs + 43_200) / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_fails_the_report_and_a_warning_does_not() {
        let warned = Report::new(vec![Check::ok("database", "up"), Check::warn("creations", "x", "y")]);
        assert_eq!(warned.exit_code(), 0);
        assert!(
            warned.text().ends_with("all checks passed, 1 warning\n"),
            "{}",
            warned.text()
        );
        let failed = Report::new(vec![
            Check::fail("database", "down", "start it"),
            Check::ok("feed", "ok"),
        ]);
        assert_eq!(failed.exit_code(), 1);
        let text = failed.text();
        assert!(text.contains("✗ database     down\n"), "{text}");
        assert!(text.contains("→ start it\n"), "{text}");
        assert!(text.ends_with("1 check failed\n"), "{text}");
    }

    #[test]
    fn json_has_the_stable_keys() {
        let report = Report::new(vec![Check::fail("jwks", "down", "fix")]);
        let value: serde_json::Value = serde_json::from_str(&report.json()).expect("JSON");
        assert_eq!(value["ok"], false);
        assert_eq!(
            value["checks"][0],
            serde_json::json!({"check": "jwks", "status": "fail", "detail": "down", "hint": "fix"})
        );
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(ago(4.2), "4 s ago");
        assert_eq!(ago(600.0), "10 min ago");
        assert_eq!(ago(3.0 * 3600.0), "3 h ago");
        assert_eq!(ago(3.0 * 86_400.0), "3 days ago");
    }
}
