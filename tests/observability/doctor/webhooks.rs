//! The doctor on what webhooks, the fallback and the daemon left in the database: all well, webhook trouble
//! (refused signatures, another instance, the fallback doing the work, drift, stuck forwarding), a refused prune.

use std::time::{Duration, Instant};

use super::{
    doctor, execute, expect, fake_clerk, names, post_bad_signatures, report, sqlite_url, user_created, INSTANCE, OTHER,
};
use crate::common::{clerk_knows, clerk_user, free_port, new_secret, now_ms, svix_id, user_id};
use crate::daemon::{Daemon, PgDatabase};

/// Two users by webhook, Clerk counting two: every check passes, in text and in JSON.
async fn a_healthy_setup_passes(database_url: &str) {
    let clerk = fake_clerk(INSTANCE, 2).await;
    let daemon = Daemon::start(database_url, &clerk.uri(), &[]).await;
    for _ in 0..2 {
        let (status, body) = daemon.post_webhook(&user_created(Some(INSTANCE)), &svix_id()).await;
        assert_eq!(status.as_u16(), 200, "{body}");
    }
    let secret = daemon.secret.clone();
    daemon.stop().await;
    let uri = clerk.uri();
    let vars = [
        ("DATABASE_URL", database_url),
        ("CLERK_WEBHOOK_SIGNING_SECRET", secret.as_str()),
        ("CLERK_SECRET_KEY", "sk_test_x"),
        ("CLERK_API_URL", uri.as_str()),
        ("CLERK_SYNC_RECONCILE__PRUNE", "true"),
    ];
    let report = report(&vars);
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(
        names(&report),
        [
            "signing_secret",
            "database",
            "migrations",
            "users_table",
            "last_webhook",
            "bad_signatures",
            "other_instance",
            "creations",
            "clerk_key",
            "jwks",
            "user_count",
            "feed",
            "prune"
        ]
    );
    for c in report["checks"].as_array().expect("checks") {
        assert_eq!(c["status"], "ok", "{report:#}");
    }
    expect(&report, "last_webhook", "ok", "user.created (applied)");
    expect(&report, "creations", "ok", "webhook 2, fallback 0, backfill 0");
    expect(
        &report,
        "clerk_key",
        "ok",
        &format!("instance {INSTANCE} (development), the one this database mirrors"),
    );
    expect(&report, "user_count", "ok", "Clerk has 2 users, the table 2 live");
    expect(&report, "feed", "ok", "head seq 2");

    let (code, out, err) = doctor(&vars, false);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.ends_with("all checks passed\n"), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("✓ ")).count(), 13, "{out}");
    assert!(out.contains("✓ last webhook"), "{out}");
    assert!(
        !out.contains("sk_test_x") && !out.contains(&secret),
        "no secret printed: {out}"
    );
}

/// One webhook, two users by the fallback, one webhook of another instance, three refused signatures; Clerk
/// counts ten; forwarding has not delivered for an hour; no signing secret configured.
async fn webhook_trouble_is_shown(database_url: &str) {
    let clerk = fake_clerk(INSTANCE, 10).await;
    let daemon = Daemon::start(database_url, &clerk.uri(), &[]).await;
    let (status, body) = daemon.post_webhook(&user_created(Some(INSTANCE)), &svix_id()).await;
    assert_eq!(status.as_u16(), 200, "{body}");
    for _ in 0..2 {
        let user = clerk_user(&user_id(), now_ms());
        clerk_knows(&clerk, &user).await;
        let response = daemon.get_user(user["id"].as_str().expect("id")).await;
        assert_eq!(response.status().as_u16(), 201, "the fallback creates it");
    }
    let (status, body) = daemon.post_webhook(&user_created(Some(OTHER)), &svix_id()).await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, r#"{"outcome":"wrong_instance"}"#)
    );
    post_bad_signatures(&daemon, 3).await;
    // The refusals are written at most once a minute, and at shutdown.
    daemon.stop().await;
    let an_hour_ago = if database_url.starts_with("postgres") {
        "UPDATE clerk_sync_changes SET at = now() - interval '1 hour'"
    } else {
        "UPDATE clerk_sync_changes SET at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-3600 seconds')"
    };
    execute(database_url, an_hour_ago).await;

    let (uri, forward) = (clerk.uri(), format!("http://127.0.0.1:{}/hooks", free_port()));
    let forward_secret = new_secret();
    let vars = [
        ("DATABASE_URL", database_url),
        ("CLERK_SECRET_KEY", "sk_test_x"),
        ("CLERK_API_URL", uri.as_str()),
        ("CLERK_SYNC_FORWARD__URL", forward.as_str()),
        ("CLERK_SYNC_FORWARD__SIGNING_SECRET", forward_secret.as_str()),
    ];
    let report = report(&vars);
    assert_eq!(report["ok"], false);
    let hint = expect(
        &report,
        "signing_secret",
        "fail",
        "not set: every webhook is answered 503",
    );
    assert!(hint.contains("Signing Secret"), "{hint}");
    expect(&report, "last_webhook", "ok", "user.created (wrong_instance)");
    let hint = expect(
        &report,
        "bad_signatures",
        "warn",
        "3 refused for a bad signature in the last hour (2 verified)",
    );
    assert!(
        hint.contains("CLERK_WEBHOOK_SIGNING_SECRET must be the Signing Secret"),
        "{hint}"
    );
    let hint = expect(
        &report,
        "other_instance",
        "fail",
        &format!("1 webhook of another Clerk instance in the last 24 h, not applied: this database mirrors {INSTANCE} (development)"),
    );
    assert!(hint.contains("clerk-sync pin --replace"), "{hint}");
    let hint = expect(
        &report,
        "creations",
        "warn",
        "webhook 1, fallback 2, backfill 0: the fallback created more users than the webhook",
    );
    assert!(hint.contains("https://<your host>/webhooks/clerk"), "{hint}");
    expect(&report, "clerk_key", "ok", "accepted");
    expect(&report, "jwks", "ok", "reachable, 1 signing key(s)");
    let hint = expect(
        &report,
        "user_count",
        "fail",
        "Clerk has 10 users, the table 3 live: 7 missing",
    );
    assert!(hint.contains("clerk-sync backfill"), "{hint}");
    let hint = expect(
        &report,
        "forwarding",
        "fail",
        "3 changes not acknowledged, the oldest written 60 min ago",
    );
    assert!(hint.contains("forward.url must answer 2xx"), "{hint}");
    assert!(
        !report.to_string().contains(&forward) && !report.to_string().contains(&forward_secret),
        "forward.url may hold a token: not printed"
    );

    let (code, out, _) = doctor(&vars, false);
    assert_eq!(code, Some(1), "{out}");
    for line in [
        "✗ signing secret",
        "! bad signatures",
        "✗ other instance",
        "! creations (24 h)",
        "✗ user count",
    ] {
        assert!(out.lines().any(|l| l.starts_with(line)), "{line}:\n{out}");
    }
    assert!(out.ends_with("4 checks failed, 2 warnings\n"), "{out}");
}

/// A reconcile whose prune the brake refuses (Clerk lists no one of the three users) is recorded and shown.
async fn a_refused_reconcile_prune_is_shown(database_url: &str) {
    let clerk = fake_clerk(INSTANCE, 3).await;
    let daemon = Daemon::start(database_url, &clerk.uri(), &[]).await;
    for _ in 0..3 {
        let (status, body) = daemon.post_webhook(&user_created(Some(INSTANCE)), &svix_id()).await;
        assert_eq!(status.as_u16(), 200, "{body}");
    }
    daemon.stop().await;
    let daemon = Daemon::start(
        database_url,
        &clerk.uri(),
        &[
            ("CLERK_SYNC_RECONCILE__INTERVAL", "1s"),
            ("CLERK_SYNC_RECONCILE__PRUNE", "true"),
        ],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !daemon
        .metrics()
        .await
        .lines()
        .any(|l| l.starts_with("clerk_sync_prune_refused_total") && !l.ends_with(" 0"))
    {
        assert!(Instant::now() < deadline, "no refused prune within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let secret = daemon.secret.clone();
    daemon.stop().await;
    let uri = clerk.uri();
    let r = report(&[
        ("DATABASE_URL", database_url),
        ("CLERK_WEBHOOK_SIGNING_SECRET", secret.as_str()),
        ("CLERK_SECRET_KEY", "sk_test_x"),
        ("CLERK_API_URL", uri.as_str()),
    ]);
    let hint = expect(&r, "prune", "fail", "reconcile.prune was refused");
    assert!(hint.contains("--max-prune N"), "{hint}");
    expect(&r, "user_count", "ok", "Clerk has 3 users, the table 3 live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_healthy_setup_postgres() {
    let db = PgDatabase::create().await;
    a_healthy_setup_passes(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_healthy_setup_sqlite() {
    let dir = tempfile::TempDir::new().expect("temporary directory");
    a_healthy_setup_passes(&sqlite_url(&dir, "h.db")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_shows_webhook_trouble_postgres() {
    let db = PgDatabase::create().await;
    webhook_trouble_is_shown(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_shows_webhook_trouble_sqlite() {
    let dir = tempfile::TempDir::new().expect("temporary directory");
    webhook_trouble_is_shown(&sqlite_url(&dir, "w.db")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_shows_a_refused_reconcile_prune_postgres() {
    let db = PgDatabase::create().await;
    a_refused_reconcile_prune_is_shown(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_shows_a_refused_reconcile_prune_sqlite() {
    let dir = tempfile::TempDir::new().expect("temporary directory");
    a_refused_reconcile_prune_is_shown(&sqlite_url(&dir, "p.db")).await;
}
