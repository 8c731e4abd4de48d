//! `clerk-sync backfill` of users against a fake Clerk list endpoint, on both backends.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use clerk_sync::backfill::{Only, Options, Summary};

use crate::clerk::{now_ms, svix_id, ClerkUser};
use crate::fake_users::{mount, users};
use crate::helpers::{spawn_app_with_clerk, TestApp};

const PRUNE: Options = Options {
    prune: true,
    dry_run: false,
    restart: false,
    only: Only::ALL,
    max_prune: None,
};

async fn run(app: &TestApp, options: Options) -> Summary {
    app.backfill(options).await.expect("backfill succeeds")
}

both_backends!(empty_list, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    mount(&app, &[], vec![], 500).await;
    let summary = run(&app, Options::default()).await;
    assert_eq!((summary.users.scanned, summary.users.created), (0, 0), "{summary:?}");
    assert_eq!(app.db.count_all_users().await, 0);
});

both_backends!(pages_of_every_shape_are_walked_whole, |backend| async move {
    for n in [1, 500, 1000, 1234] {
        let app = spawn_app_with_clerk(backend, &[]).await;
        let all = users(n);
        mount(&app, &all, vec![], 500).await;
        let summary = run(&app, Options::default()).await;
        assert_eq!(summary.users.scanned, n as u64, "{n}: {summary:?}");
        assert_eq!(summary.users.created, n as u64, "{n}: {summary:?}");
        assert_eq!(summary.users.failed, 0);
        assert_eq!(app.db.count_all_users().await, n as i64);
        let row = app.db.user(&all[n - 1].id).await.expect("last user stored");
        assert_eq!(row.created_via, "backfill");
        assert_eq!(row.email, all[n - 1].primary_email());

        // A second run changes nothing.
        let again = run(&app, Options::default()).await;
        assert_eq!(
            (again.users.created, again.users.updated, again.users.unchanged),
            (0, 0, n as u64),
            "{again:?}"
        );
    }
});

both_backends!(
    an_instance_refusing_the_cursor_is_walked_by_offset,
    |backend| async move {
        let app = spawn_app_with_clerk(backend, &[]).await;
        let all = users(1100);
        let list = mount(&app, &all, vec![], 500).await;
        list.refuse_cursor.store(true, Ordering::SeqCst);
        let summary = run(&app, Options::default()).await;
        assert_eq!(
            (summary.users.scanned, summary.users.created),
            (1100, 1100),
            "{summary:?}"
        );
        assert_eq!(app.db.count_all_users().await, 1100);
    }
);

both_backends!(a_429_mid_run_is_waited_out, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let all = users(1200);
    mount(&app, &all, vec![1], 429).await;
    let summary = run(&app, Options::default()).await;
    assert_eq!(summary.users.created, 1200, "{summary:?}");
});

both_backends!(a_failing_clerk_stops_the_run_and_it_resumes, |backend| async move {
    let env = [("CLERK_SYNC_CLERK__RETRY_BUDGET_MS", "500")];
    let app = spawn_app_with_clerk(backend, &env).await;
    let all = users(1200);
    // Every list request after the first fails until healed, so the run fails after one page.
    let list = mount(&app, &all, (1..=1000).collect(), 500).await;
    let failed = app.backfill(PRUNE).await;
    assert!(failed.is_err(), "a run that cannot read the list fails: {failed:?}");
    assert_eq!(app.db.count_all_users().await, 500, "the first page was committed");
    list.heal();

    // Resumed: it continues after the first page (not from the start) and prunes nothing it did not see.
    let served_before = list.served.load(Ordering::SeqCst);
    let summary = run(&app, PRUNE).await;
    assert!(summary.users.resumed(), "{summary:?}");
    assert_eq!(summary.users.created, 700, "only the rest is written: {summary:?}");
    assert_eq!(summary.users.scanned, 1200, "{summary:?}");
    assert_eq!(summary.users.pruned, 0);
    assert_eq!(app.db.count_all_users().await, 1200);
    assert!(list.served.load(Ordering::SeqCst) > served_before);

    // --restart reads from the start again.
    let restarted = run(
        &app,
        Options {
            restart: true,
            ..Options::default()
        },
    )
    .await;
    assert!(!restarted.users.resumed());
    assert_eq!(restarted.users.scanned, 1200);
});

both_backends!(only_a_walk_that_may_prune_keeps_the_ids_it_saw, |backend| async move {
    let env = [("CLERK_SYNC_CLERK__RETRY_BUDGET_MS", "500")];
    let app = spawn_app_with_clerk(backend, &env).await;
    let gone = ClerkUser::new(now_ms() - 7_200_000);
    app.expect_outcome(&gone.created(), &svix_id(), "applied").await;
    let all = users(1200);
    let seen = "SELECT count(*) FROM clerk_sync_backfill_seen";

    // A run without --prune fails after its first page: it wrote the page but no seen ids.
    let list = mount(&app, &all, (1..=1000).collect(), 500).await;
    assert!(app.backfill(Options::default()).await.is_err());
    assert_eq!(app.db.count_all_users().await, 501, "the first page and the one user");
    assert_eq!(app.db.int(seen).await, 0, "a walk that does not prune records no ids");
    list.heal();

    // --prune cannot continue that walk (it would take the first page's users for absent): it walks again.
    let summary = run(&app, PRUNE).await;
    assert!(!summary.users.resumed(), "{summary:?}");
    assert_eq!(summary.users.scanned, 1200, "{summary:?}");
    assert_eq!(
        (summary.users.created, summary.users.unchanged),
        (700, 500),
        "{summary:?}"
    );
    assert_eq!(summary.users.pruned, 1, "only the user Clerk lacks: {summary:?}");
    assert!(app.db.user(&gone.id).await.expect("row").deleted_at.is_some());
    assert!(app.db.user(&all[0].id).await.expect("row").deleted_at.is_none());
    assert_eq!(app.db.int(seen).await, 0, "a complete walk forgets its ids");

    // A --prune run interrupted keeps its ids, and a run without --prune continues it, still keeping them.
    list.fail_after_next();
    assert!(app.backfill(PRUNE).await.is_err());
    assert_eq!(app.db.int(seen).await, 500);
    list.heal();
    let summary = run(&app, Options::default()).await;
    assert!(summary.users.resumed(), "{summary:?}");
    assert_eq!(summary.users.scanned, 1200, "{summary:?}");
    assert_eq!(app.db.int(seen).await, 0, "complete: forgotten");
});

both_backends!(prune_tombstones_only_after_a_whole_read, |backend| async move {
    let env = [("CLERK_SYNC_CLERK__RETRY_BUDGET_MS", "500")];
    let app = spawn_app_with_clerk(backend, &env).await;
    let gone = ClerkUser::new(now_ms() - 7_200_000);
    app.expect_outcome(&gone.created(), &svix_id(), "applied").await;
    let all = users(600);

    // A partial read never prunes.
    let list = mount(&app, &all, (1..=1000).collect(), 500).await;
    let partial = app.backfill(PRUNE).await;
    assert!(partial.is_err());
    assert!(
        app.db.user(&gone.id).await.expect("row").deleted_at.is_none(),
        "pruned on a partial read"
    );

    list.heal();
    let summary = run(&app, PRUNE).await;
    assert_eq!(summary.users.pruned, 1, "{summary:?}");
    let row = app.db.user(&gone.id).await.expect("row");
    assert!(row.deleted_at.is_some(), "absent from Clerk: tombstoned {row:?}");
    assert_eq!(row.updated_via.as_deref(), Some("backfill"));
    assert!(app.db.tombstone(&gone.id).await.is_some());
});

both_backends!(dry_run_writes_nothing, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let all = users(700);
    let t = now_ms();
    app.expect_outcome(&all[0].at(t).created(), &svix_id(), "applied").await;
    app.expect_outcome(&all[1].at(all[1].updated_at - 1_000).created(), &svix_id(), "applied")
        .await;
    mount(&app, &all, vec![], 500).await;
    let summary = run(
        &app,
        Options {
            dry_run: true,
            prune: true,
            ..Options::default()
        },
    )
    .await;
    assert_eq!(summary.users.scanned, 700);
    assert_eq!(
        (summary.users.created, summary.users.updated, summary.users.unchanged),
        (698, 1, 1),
        "{summary:?}"
    );
    let gone = ClerkUser::new(t);
    app.expect_outcome(&gone.created(), &svix_id(), "applied").await;
    let summary = run(
        &app,
        Options {
            dry_run: true,
            prune: true,
            ..Options::default()
        },
    )
    .await;
    assert_eq!(
        summary.users.pruned, 1,
        "one live user is absent from Clerk: {summary:?}"
    );
    assert!(
        app.db.user(&gone.id).await.expect("row").deleted_at.is_none(),
        "but not tombstoned"
    );
    assert_eq!(app.db.count_all_users().await, 3, "a dry run writes nothing");
    assert_eq!(
        app.db.int("SELECT count(*) FROM clerk_sync_backfill").await,
        0,
        "no checkpoint either"
    );
});

both_backends!(tombstoned_users_stay_tombstoned, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let all = users(3);
    app.expect_outcome(&all[1].deleted(now_ms()), &svix_id(), "applied")
        .await;
    mount(&app, &all, vec![], 500).await;
    let summary = run(&app, Options::default()).await;
    assert_eq!(
        (summary.users.created, summary.users.skipped_tombstoned),
        (2, 1),
        "{summary:?}"
    );
    assert_eq!(app.db.count_users(&all[1].id).await, 0, "no row for a deleted user");
});

both_backends!(
    backfill_racing_webhooks_ends_in_the_newest_state,
    |backend| async move {
        let app = Arc::new(spawn_app_with_clerk(backend, &[]).await);
        let all = users(1000);
        mount(&app, &all, vec![], 500).await;
        let webhooks = {
            let app = Arc::clone(&app);
            let newer: Vec<ClerkUser> = all
                .iter()
                .step_by(3)
                .map(|u| {
                    let mut n = u.at(u.updated_at + 10_000);
                    n.first_name = Some("Newer".into());
                    n
                })
                .collect();
            tokio::spawn(async move {
                for user in newer {
                    // On SQLite the backfill's page transaction can hold the file past the test's 300 ms busy timeout:
                    // the webhook is answered 503 and retried, as Svix would.
                    let id = svix_id();
                    let mut answer = app.deliver(&user.updated(), &id).await;
                    for _ in 0..50 {
                        if answer.0 != reqwest::StatusCode::SERVICE_UNAVAILABLE {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        answer = app.deliver(&user.updated(), &id).await;
                    }
                    assert_eq!(answer.0, reqwest::StatusCode::OK, "{}", answer.1);
                }
            })
        };
        let summary = run(&app, Options::default()).await;
        webhooks.await.expect("webhook task");
        assert_eq!(summary.users.scanned, 1000);
        for (i, user) in all.iter().enumerate() {
            let row = app.db.user(&user.id).await.expect("row");
            let expected = if i % 3 == 0 { "Newer" } else { "Ada" };
            assert_eq!(row.first_name.as_deref(), Some(expected), "{row:?}");
        }
        assert_eq!(app.db.count_all_users().await, 1000);
    }
);

// `reconcile.interval` makes `serve` run the same walk: a user the webhooks missed appears, created by the
// backfill path, and the drift shows in the metrics.
both_backends!(serve_reconciles_on_its_interval, |backend| async move {
    let env = [("CLERK_SYNC_RECONCILE__INTERVAL", "1s")];
    let app = spawn_app_with_clerk(backend, &env).await;
    let all = users(3);
    app.expect_outcome(&all[0].created(), &svix_id(), "applied").await;
    mount(&app, &all, vec![], 500).await;
    let mut found = None;
    for _ in 0..100 {
        found = app.db.user(&all[2].id).await;
        if found.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let row = found.expect("the reconcile created the missed user");
    assert_eq!(row.created_via, "backfill");
    assert_eq!(app.db.user(&all[0].id).await.expect("row").created_via, "webhook");
});

// One reconcile at a time across replicas: the lock is exclusive until released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconcile_lock_is_exclusive_across_connections() {
    let app = spawn_app_with_clerk(crate::helpers::Backend::Postgres, &[]).await;
    let db = app.connect_db().await;
    let first = db.try_exclusive("test lock").await.expect("query").expect("granted");
    assert!(
        db.try_exclusive("test lock").await.expect("query").is_none(),
        "held by the first"
    );
    first.release().await;
    let again = db.try_exclusive("test lock").await.expect("query");
    assert!(again.is_some(), "released");
    drop(again);
    db.close().await;
}

// A backfill run from another process (here: its own connection and writer, as `clerk-sync backfill` has) writes
// the change feed, so the daemon drops the users it changed from its cache within a second.
both_backends!(a_backfill_elsewhere_refreshes_the_daemons_cache, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let old = ClerkUser::new(now_ms() - 600_000);
    app.expect_outcome(&old.created(), &svix_id(), "applied").await;
    let token = crate::helpers::SERVICE_TOKEN;
    for _ in 0..2 {
        let cached = app.get_user(&old.id, token).await;
        assert_eq!(cached.json["first_name"], "Ada", "{}", cached.body);
    }
    let mut renamed = old.at(old.updated_at + 1_000);
    renamed.first_name = Some("Grace".into());
    mount(&app, std::slice::from_ref(&renamed), vec![], 500).await;
    let summary = run(&app, Options::default()).await;
    assert_eq!(summary.users.updated, 1, "{summary:?}");
    let done = std::time::Instant::now();
    loop {
        let answer = app.get_user(&old.id, token).await;
        if answer.json["first_name"] == "Grace" {
            break;
        }
        assert!(
            done.elapsed() < std::time::Duration::from_secs(1),
            "the daemon still serves the cached row {:?} after the backfill committed: {}",
            done.elapsed(),
            answer.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
});
