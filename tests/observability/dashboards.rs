//! The Grafana dashboard and the alerting rules, checked against the metric names the daemon exports, with
//! `promtool` and `docker-compose` (no daemon).

use std::process::Command;

use clerk_sync::telemetry::metrics::ALL;
use promql_parser::parser::{self, Expr};
use serde_json::Value;

use crate::common::{repo_path, require_tool};

pub fn dashboard() -> Value {
    let path = repo_path("dashboards/clerk-sync.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel, including those nested in collapsed rows.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("dashboard without panels") {
        all.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested);
        }
    }
    all
}

fn datasource_type(target: &Value, panel: &Value) -> String {
    let of = |v: &Value| v["datasource"]["type"].as_str().map(str::to_owned);
    of(target).or_else(|| of(panel)).unwrap_or_default()
}

/// (panel title, expression) of every Prometheus target.
pub fn prometheus_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("<untitled>").to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if datasource_type(target, panel) == "prometheus" {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {title:?}: target without expr"));
                exprs.push((title.clone(), expr.to_owned()));
            }
        }
    }
    exprs
}

/// The dashboard's PostgreSQL table panel's `rawSql`.
pub fn created_via_sql(dashboard: &Value) -> String {
    panels(dashboard)
        .into_iter()
        .filter(|p| p["type"] == "table")
        .flat_map(|p| p["targets"].as_array().into_iter().flatten().map(move |t| (p, t)))
        .find(|(p, t)| datasource_type(t, p).contains("postgres") && t["rawSql"].is_string())
        .map(|(_, t)| t["rawSql"].as_str().unwrap_or_default().to_owned())
        .expect("no table panel with a PostgreSQL rawSql target")
}

/// Grafana's variables replaced so the expression is plain PromQL.
pub fn substitute(expr: &str, rate_interval: &str, range: &str) -> String {
    expr.replace("$__rate_interval", rate_interval)
        .replace("$__range", range)
        .replace("$job", ".*")
        .replace("$instance", ".*")
}

/// (alert name, expression) of every rule in `dashboards/alerts.yml`, by line parsing (`expr: |` and the
/// more-indented lines after it, or an inline `expr: …`).
pub fn alert_exprs() -> Vec<(String, String)> {
    let path = repo_path("dashboards/alerts.yml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let indent = |line: &str| line.len() - line.trim_start().len();
    let lines: Vec<&str> = text.lines().collect();
    let (mut alerts, mut name) = (Vec::new(), String::from("<no alert name>"));
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start().trim_start_matches("- ");
        if let Some(alert) = trimmed.strip_prefix("alert:") {
            name = alert.trim().to_owned();
        } else if let Some(rest) = trimmed.strip_prefix("expr:") {
            let rest = rest.trim();
            if !rest.starts_with('|') && !rest.starts_with('>') {
                alerts.push((name.clone(), rest.trim_matches(|c| c == '"' || c == '\'').to_owned()));
                continue;
            }
            let body: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || indent(l) > indent(line))
                .map(|l| l.trim())
                .collect();
            alerts.push((name.clone(), body.join("\n").trim().to_owned()));
        }
    }
    alerts
}

fn collect_names(expr: &Expr, names: &mut Vec<String>) {
    let selector_name = |vs: &parser::VectorSelector| {
        vs.name.clone().or_else(|| {
            let matchers = vs
                .matchers
                .matchers
                .iter()
                .chain(vs.matchers.or_matchers.iter().flatten());
            matchers
                .filter(|m| m.name == "__name__")
                .map(|m| m.value.clone())
                .next()
        })
    };
    match expr {
        Expr::Aggregate(a) => {
            collect_names(&a.expr, names);
            if let Some(param) = &a.param {
                collect_names(param, names);
            }
        }
        Expr::Unary(u) => collect_names(&u.expr, names),
        Expr::Binary(b) => {
            collect_names(&b.lhs, names);
            collect_names(&b.rhs, names);
        }
        Expr::Paren(p) => collect_names(&p.expr, names),
        Expr::Subquery(s) => collect_names(&s.expr, names),
        Expr::VectorSelector(vs) => names.push(selector_name(vs).unwrap_or_default()),
        Expr::MatrixSelector(ms) => names.push(selector_name(&ms.vs).unwrap_or_default()),
        Expr::Call(call) => call.args.args.iter().for_each(|arg| collect_names(arg, names)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// The metric names an expression selects, histogram suffixes (of `*_seconds`) stripped. Panics if it does not parse.
pub fn metric_names(context: &str, expr: &str) -> Vec<String> {
    let ast = parser::parse(expr).unwrap_or_else(|e| panic!("{context}: does not parse as PromQL: {e}\n{expr}"));
    let mut names = Vec::new();
    collect_names(&ast, &mut names);
    names
        .into_iter()
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s).filter(|base| base.ends_with("_seconds")))
                .map_or(n.clone(), str::to_owned)
        })
        .collect()
}

fn assert_known_metrics(context: &str, expr: &str) {
    let names = metric_names(context, expr);
    assert!(!names.is_empty(), "{context}: selects no metric: {expr}");
    for name in names {
        assert!(
            name == "up" || ALL.contains(&name.as_str()),
            "{context}: selects {name:?}, which clerk-sync does not export (telemetry::metrics::ALL): {expr}"
        );
    }
}

fn compact(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The checks below are only as good as the walk: it must see every selector.
#[test]
fn the_selector_walk_sees_every_metric() {
    let expr = r#"-(sum by (le) (rate(a_seconds_bucket{x="1"}[1m])) / on() group_left topk(scalar(b), {__name__="c"}))
        or max_over_time((d_total + e offset 5m)[10m:1m]) and histogram_quantile(0.9, f_seconds_count)"#;
    let names = metric_names("self-test", expr);
    assert_eq!(
        names,
        ["a_seconds", "c", "b", "d_total", "e", "f_seconds"],
        "from {expr}"
    );
    let alerts = alert_exprs();
    let names = |alert: &str| {
        let (_, expr) = alerts.iter().find(|(n, _)| n == alert).expect("alert in alerts.yml");
        metric_names(alert, expr)
    };
    assert_eq!(names("ClerkSyncNotReady"), ["clerk_sync_ready", "up"]);
    assert_eq!(
        names("ClerkSyncFallbackWithoutWebhooks"),
        ["clerk_sync_users_created_total", "clerk_sync_users_created_total"]
    );
}

#[test]
fn dashboard_is_portable_and_documented() {
    let d = dashboard();
    assert_eq!(
        d["uid"], "clerk-sync",
        "the dashboard needs a stable uid (links and provisioning use it)"
    );
    assert!(
        d.get("__inputs").is_none(),
        "__inputs makes the dashboard import-only; use a datasource variable"
    );
    let vars = d["templating"]["list"].as_array().expect("no templating.list");
    let var = |name: &str| vars.iter().find(|v| v["name"] == name);
    let ds = var("datasource").expect("no `datasource` template variable");
    assert_eq!(ds["type"], "datasource", "`datasource` must be a datasource variable");
    assert_eq!(
        ds["query"], "prometheus",
        "`datasource` must list Prometheus datasources"
    );
    assert!(var("job").is_some(), "no `job` template variable");
    assert!(var("instance").is_some(), "no `instance` template variable");
    for panel in panels(&d).into_iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap_or("<untitled>");
        let description = panel["description"].as_str().unwrap_or_default();
        assert!(!description.trim().is_empty(), "panel {title:?} has no description");
        let unit = panel["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or_default();
        assert!(!unit.is_empty(), "panel {title:?} has no fieldConfig.defaults.unit");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if datasource_type(target, panel) == "prometheus" {
                let uid = target["datasource"]["uid"]
                    .as_str()
                    .or(panel["datasource"]["uid"].as_str());
                assert_eq!(
                    uid,
                    Some("${datasource}"),
                    "panel {title:?}: use the $datasource variable"
                );
            }
        }
    }
}

#[test]
fn dashboard_answers_the_operators_questions() {
    let d = dashboard();
    let exprs: Vec<(String, String)> = prometheus_exprs(&d)
        .into_iter()
        .map(|(t, e)| (t, compact(&e)))
        .collect();
    // Panels by title: all their expressions joined, so multi-query panels (p50 + p99) count as one.
    let mut by_panel: Vec<(String, String)> = Vec::new();
    for (title, expr) in exprs {
        match by_panel.iter_mut().find(|(t, _)| *t == title) {
            Some((_, all)) => all.push_str(&format!(" ;; {expr}")),
            None => by_panel.push((title, expr)),
        }
    }
    let questions: &[(&str, &[&str])] = &[
        (
            "users created per path",
            &["sumby(source)", "rate(clerk_sync_users_created_total"],
        ),
        (
            "fallback share",
            &["source=\"fallback\"", "clerk_sync_users_created_total", ")/"],
        ),
        (
            "webhook events by outcome",
            &["by(outcome)", "clerk_sync_webhook_events_total"],
        ),
        (
            "signature failures",
            &["clerk_sync_webhook_events_total", "outcome=\"invalid_signature\""],
        ),
        (
            "webhook lag p50 and p99",
            &[
                "histogram_quantile(0.5,",
                "histogram_quantile(0.99,",
                "clerk_sync_webhook_lag_seconds_bucket",
            ],
        ),
        (
            "fallback results",
            &["by(result)", "clerk_sync_fallback_requests_total"],
        ),
        ("cache hit ratio", &["result=\"cache_hit\"", ")/"]),
        (
            "Clerk API request rate",
            &["rate(clerk_sync_clerk_api_requests_total", "status"],
        ),
        (
            "Clerk API latency",
            &[
                "histogram_quantile(",
                "clerk_sync_clerk_api_request_duration_seconds_bucket",
            ],
        ),
        ("Clerk 429s", &["clerk_sync_clerk_api_requests_total", "status=\"429\""]),
        (
            "HTTP latency by route",
            &[
                "histogram_quantile(",
                "http_server_request_duration_seconds_bucket",
                "http_route",
            ],
        ),
        ("live actors", &["clerk_sync_user_actors"]),
        (
            "organizations created per path",
            &["sumby(source)", "rate(clerk_sync_organizations_created_total"],
        ),
        (
            "memberships created per path",
            &["sumby(source)", "rate(clerk_sync_memberships_created_total"],
        ),
        (
            "organization events by type",
            &[
                "sumby(event_type)",
                "clerk_sync_webhook_events_total",
                "event_type=~\"organization[.].*\"",
                "outcome=\"applied\"",
            ],
        ),
        (
            "membership events by type",
            &[
                "sumby(event_type)",
                "clerk_sync_webhook_events_total",
                "event_type=~\"organizationMembership",
                "outcome=\"applied\"",
            ],
        ),
    ];
    for (question, needles) in questions {
        assert!(
            by_panel.iter().any(|(_, e)| needles.iter().all(|n| e.contains(n))),
            "no panel answers {question:?} (an expression containing all of {needles:?}); panels: {:#?}",
            by_panel
        );
    }
    let sql = created_via_sql(&d).to_lowercase();
    for needle in ["count(", "created_via", "from users", "group by created_via"] {
        assert!(
            sql.contains(needle),
            "the PostgreSQL table panel's rawSql lacks {needle:?}: {sql}"
        );
    }
}

/// Grafana keeps panels apart by `gridPos` and tells them apart by `id`: a clash hides a panel or mixes up
/// links and edits.
#[test]
fn dashboard_layout_has_unique_ids_and_no_overlap() {
    let d = dashboard();
    let all = panels(&d);
    let mut ids: Vec<i64> = all
        .iter()
        .map(|p| p["id"].as_i64().expect("panel without id"))
        .collect();
    ids.sort_unstable();
    let count = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), count, "panel ids must be unique");
    let rect = |p: &Value| {
        let g = &p["gridPos"];
        let n = |k: &str| {
            g[k].as_i64()
                .unwrap_or_else(|| panic!("panel {}: no gridPos.{k}", p["title"]))
        };
        (n("x"), n("y"), n("w"), n("h"))
    };
    // Panels nested in a collapsed row are laid out when it opens, over the space below it: check each set alone.
    let mut sets: Vec<Vec<&Value>> = vec![d["panels"].as_array().expect("panels").iter().collect()];
    sets.extend(
        all.iter()
            .filter_map(|p| p["panels"].as_array())
            .map(|n| n.iter().collect()),
    );
    for set in sets {
        for (i, a) in set.iter().enumerate() {
            let (ax, ay, aw, ah) = rect(a);
            assert!(
                ax >= 0 && aw > 0 && ah > 0 && ax + aw <= 24,
                "panel {}: gridPos out of the grid",
                a["title"]
            );
            for b in &set[i + 1..] {
                let (bx, by, bw, bh) = rect(b);
                let apart = ax + aw <= bx || bx + bw <= ax || ay + ah <= by || by + bh <= ay;
                assert!(apart, "panels {} and {} overlap", a["title"], b["title"]);
            }
        }
    }
}

/// The Organizations row holds the organization and membership panels (the ones listed until the next row).
#[test]
fn organizations_row_holds_the_organization_panels() {
    let d = dashboard();
    let top = d["panels"].as_array().expect("panels");
    let row = top
        .iter()
        .position(|p| p["type"] == "row" && p["title"] == "Organizations")
        .expect("no row titled \"Organizations\"");
    // A collapsed row nests its panels; an open one is followed by them, up to the next row.
    let following: Vec<&Value> = top[row + 1..].iter().take_while(|p| p["type"] != "row").collect();
    let mut inside: Vec<&Value> = top[row]["panels"].as_array().into_iter().flatten().collect();
    inside.extend(&following);
    let mut titles: Vec<&str> = inside.iter().filter_map(|p| p["title"].as_str()).collect();
    titles.sort_unstable();
    assert_eq!(
        titles,
        [
            "Membership events by type",
            "Memberships created per path",
            "Organization events by type",
            "Organizations created per path",
        ]
    );
    let (row_y, below) = (top[row]["gridPos"]["y"].as_i64(), top.get(row + 1 + following.len()));
    for panel in &inside {
        assert!(
            panel["gridPos"]["y"].as_i64() > row_y,
            "{} is above its row",
            panel["title"]
        );
        if let Some(next) = below {
            assert!(
                panel["gridPos"]["y"].as_i64() < next["gridPos"]["y"].as_i64(),
                "{} is below the next row",
                panel["title"]
            );
        }
    }
}

#[test]
fn dashboard_expressions_use_exported_metrics() {
    let d = dashboard();
    let exprs = prometheus_exprs(&d);
    assert!(
        exprs.len() >= 12,
        "expected the dashboard's Prometheus targets, found {}",
        exprs.len()
    );
    for (title, expr) in exprs {
        assert_known_metrics(&format!("panel {title:?}"), &substitute(&expr, "1m", "1h"));
    }
}

#[test]
fn alert_expressions_use_exported_metrics() {
    let alerts = alert_exprs();
    assert_eq!(
        alerts.len(),
        9,
        "expected 9 alert expressions in alerts.yml: {alerts:#?}"
    );
    for (name, expr) in alerts {
        assert!(
            name.starts_with("ClerkSync"),
            "alert {name:?} should be named ClerkSync…"
        );
        assert_known_metrics(&format!("alert {name}"), &expr);
    }
}

fn run_ok(mut command: Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_checks_the_rules() {
    let mut command = Command::new(require_tool("promtool", "prometheus"));
    command.args(["check", "rules"]).arg(repo_path("dashboards/alerts.yml"));
    run_ok(command, "promtool check rules dashboards/alerts.yml");
}

#[test]
fn promtool_unit_tests_of_the_rules_pass() {
    let mut command = Command::new(require_tool("promtool", "prometheus"));
    command
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(repo_path("dashboards"));
    run_ok(command, "promtool test rules alerts_test.yml (in dashboards/)");
}

#[test]
fn compose_file_is_valid() {
    let mut command = Command::new(require_tool("docker-compose", "docker-compose"));
    command
        .arg("-f")
        .arg(repo_path("dashboards/docker-compose.yml"))
        .args(["config", "-q"]);
    run_ok(command, "docker-compose -f dashboards/docker-compose.yml config -q");
}
