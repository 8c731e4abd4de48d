//! `--prune` never tombstones a user Clerk still has, never many at once, and what it tombstones is not final:
//! the rails of `src/backfill/prune.rs` and the lifting of `src/store/sql/lift.rs`, on both backends.

use std::sync::atomic::Ordering;
use std::time::Duration;

use clerk_sync::backfill::{BackfillError, Options, Summary};

use crate::clerk::{now_ms, svix_id, ClerkUser};
use crate::fake_users::{mount, prune, users, FakeList};
use crate::helpers::{spawn_app_with_clerk, TestApp, SERVICE_TOKEN};

/// A user the webhooks brought that Clerk no longer has (its `user.deleted` was lost).
pub async fn only_in_the_table(app: &TestApp) -> ClerkUser {
    let user = ClerkUser::new(now_ms() - 7_200_000);
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    user
}

pub async fn live(app: &TestApp, user: &ClerkUser) -> bool {
    app.db.user(&user.id).await.is_some_and(|row| row.deleted_at.is_none())
}

/// The prune run a user's tombstone names (`None`: no tombstone, or one Clerk announced).
pub async fn run_of(app: &TestApp, clerk_id: &str) -> Option<String> {
    app.db
        .string(&format!(
            "SELECT prune_run FROM clerk_sync_tombstones WHERE clerk_id = '{clerk_id}'"
        ))
        .await
}

async fn pruned(app: &TestApp, options: Options) -> Summary {
    app.backfill(options).await.expect("the prune runs")
}

both_backends!(
    a_user_who_signs_up_during_the_walk_is_not_pruned,
    |backend| async move {
        let app = spawn_app_with_clerk(backend, &[]).await;
        let all = users(30);
        let list = mount(&app, &all, vec![], 500).await;
        // Clerk's page takes a while to arrive; the user signs up meanwhile, after the page was made.
        *list.delay.lock().expect("lock") = Some(Duration::from_millis(1500));
        let backfill = {
            let app = &app;
            async move { app.backfill(prune()).await }
        };
        let signup = async {
            // Once the walk has asked for its page (it started before that), while the page is on its way.
            while list.served.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let late = ClerkUser::new(now_ms());
            app.expect_outcome(&late.created(), &svix_id(), "applied").await;
            late
        };
        let (summary, late) = tokio::join!(backfill, signup);
        let summary = summary.expect("the prune runs");
        assert_eq!(summary.users.pruned, 0, "{summary:?}");
        assert!(
            live(&app, &late).await,
            "created after the walk started: not the walk's to prune"
        );
        assert_eq!(app.db.count_all_users().await, 31);
    }
);

// Clerk refuses the cursor; a user deleted during the walk shifts the offset pages, so the walk never reads one
// live user. Clerk, asked about it, still has it: it is not pruned.
both_backends!(
    the_offset_walk_skipping_a_live_user_does_not_prune_it,
    |backend| async move {
        let app = spawn_app_with_clerk(backend, &[]).await;
        let all = users(1000);
        let list = mount(&app, &all, vec![], 500).await;
        list.refuse_cursor.store(true, Ordering::SeqCst);
        app.backfill(Options::default()).await.expect("first walk");
        assert_eq!(app.db.count_all_users().await, 1000);
        list.delete_after_request(list.served.load(Ordering::SeqCst), &all[10].id);
        let summary = pruned(&app, prune()).await;
        assert_eq!(summary.users.pruned, 0, "{summary:?}");
        assert!(
            live(&app, &all[500]).await,
            "skipped by the shifted page, but Clerk has it"
        );
        assert!(list.filtered.load(Ordering::SeqCst) >= 1, "Clerk was asked about it");
    }
);

both_backends!(an_empty_clerk_prunes_no_one, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let mut mine = Vec::new();
    for _ in 0..20 {
        mine.push(only_in_the_table(&app).await);
    }
    let list = mount(&app, &[], vec![], 500).await;
    match app.backfill(prune()).await {
        Err(BackfillError::PruneRefused(why)) => {
            assert!(why.contains("would tombstone 20 of 20 live users"), "{why}");
            assert!(
                why.contains("clerk-sync backfill --prune --max-prune 20"),
                "how to allow it: {why}"
            );
        }
        other => panic!("an empty answer must not prune every user: {other:?}"),
    }
    for user in &mine {
        assert!(live(&app, user).await, "{} tombstoned", user.id);
    }
    assert_eq!(
        list.filtered.load(Ordering::SeqCst),
        0,
        "refused before asking Clerk about each"
    );

    // Allowed for one run, it prunes what Clerk confirms gone.
    let allowed = Options {
        max_prune: Some(20),
        ..prune()
    };
    let summary = pruned(&app, allowed).await;
    assert_eq!(summary.users.pruned, 20, "{summary:?}");
    // And the next run has the brake again.
    only_in_the_table(&app).await;
    only_in_the_table(&app).await;
    assert!(matches!(
        app.backfill(prune()).await,
        Err(BackfillError::PruneRefused(_))
    ));
});

both_backends!(a_walk_short_of_clerks_count_never_prunes, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let all = users(1000);
    let list = mount(&app, &all, vec![], 500).await;
    app.backfill(Options::default()).await.expect("first walk");
    let gone = only_in_the_table(&app).await;
    // Clerk counts 1,000 but its list shows 900.
    list.hidden
        .lock()
        .expect("lock")
        .extend(all[..100].iter().map(|u| u.id.clone()));
    match app.backfill(prune()).await {
        Err(BackfillError::PruneRefused(why)) => {
            assert!(why.contains("read 900 users where Clerk counted 1000"), "{why}")
        }
        other => panic!("a short walk must not prune: {other:?}"),
    }
    assert!(live(&app, &gone).await);
    assert!(live(&app, &all[0]).await);
});

both_backends!(a_run_under_the_brake_prunes_and_names_its_run, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let all = users(30);
    mount(&app, &all, vec![], 500).await;
    let gone = only_in_the_table(&app).await;
    let summary = pruned(&app, prune()).await;
    assert_eq!(summary.users.pruned, 1, "{summary:?}");
    let run = summary.prune_run.expect("a run id");
    assert!(run.starts_with("prune-"), "{run}");
    assert!(!live(&app, &gone).await);
    assert_eq!(run_of(&app, &gone.id).await.as_deref(), Some(run.as_str()));
});

/// 30 users in Clerk and the table, and one only in the table, pruned.
async fn one_pruned(app: &TestApp) -> (ClerkUser, std::sync::Arc<FakeList>) {
    let list = mount(app, &users(30), vec![], 500).await;
    let gone = only_in_the_table(app).await;
    let summary = pruned(app, prune()).await;
    assert_eq!(summary.users.pruned, 1, "{summary:?}");
    assert!(!live(app, &gone).await);
    (gone, list)
}

both_backends!(a_pruned_user_is_lifted_by_a_newer_webhook, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let (gone, _) = one_pruned(&app).await;
    // A retry of the event the prune saw proves nothing.
    app.expect_outcome(&gone.updated(), &svix_id(), "tombstoned").await;
    assert!(!live(&app, &gone).await);
    let mut newer = gone.at(gone.updated_at + 1_000);
    newer.first_name = Some("Back".into());
    app.expect_outcome(&newer.updated(), &svix_id(), "applied").await;
    let row = app.db.user(&gone.id).await.expect("row");
    assert!(row.deleted_at.is_none(), "lifted: {row:?}");
    assert_eq!(row.first_name.as_deref(), Some("Back"));
    assert_eq!(app.db.tombstone(&gone.id).await, None);
    let answer = app.get_user(&gone.id, SERVICE_TOKEN).await;
    assert_eq!(answer.status, reqwest::StatusCode::OK, "{}", answer.body);
});

both_backends!(a_pruned_user_is_lifted_by_a_later_walk, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let (gone, list) = one_pruned(&app).await;
    // Clerk lists it again (the walk missed it, or its deletion was undone in Clerk): same updated_at.
    list.add(&gone);
    let summary = app.backfill(Options::default()).await.expect("walk");
    assert_eq!(summary.users.updated, 1, "{summary:?}");
    assert!(live(&app, &gone).await);
    assert_eq!(app.db.tombstone(&gone.id).await, None);
});

both_backends!(a_pruned_user_is_lifted_by_its_first_lookup, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let (gone, list) = one_pruned(&app).await;
    list.add(&gone);
    let answer = app.get_user(&gone.id, SERVICE_TOKEN).await;
    assert_eq!(answer.status, reqwest::StatusCode::OK, "Clerk has it: {}", answer.body);
    assert_eq!(answer.json["clerk_id"], gone.id.as_str());
    assert!(live(&app, &gone).await);

    // One Clerk does not have: asked once, then gone.
    let other = only_in_the_table(&app).await;
    let summary = pruned(&app, prune()).await;
    assert_eq!(summary.users.pruned, 1);
    // The daemon follows the feed: once it has read the prune (a page of the feed waits for that), the cache
    // entries it drops for it are dropped, and what the lookups below remember stays remembered.
    let page = app
        .api("GET", "/v1/changes?limit=1", Some(&format!("Bearer {SERVICE_TOKEN}")))
        .await;
    assert_eq!(page.status, reqwest::StatusCode::OK, "{}", page.body);
    let before = app.clerk_requests(&format!("/v1/users/{}", other.id)).await;
    for _ in 0..3 {
        let answer = app.get_user(&other.id, SERVICE_TOKEN).await;
        assert_eq!(answer.status, reqwest::StatusCode::GONE, "{}", answer.body);
    }
    assert_eq!(
        app.clerk_requests(&format!("/v1/users/{}", other.id)).await,
        before + 1,
        "asked once, then remembered"
    );
});

both_backends!(undo_prune_takes_back_exactly_one_run, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    mount(&app, &users(40), vec![], 500).await;
    let (x, w) = (only_in_the_table(&app).await, only_in_the_table(&app).await);
    let first = pruned(&app, prune()).await;
    assert_eq!(first.users.pruned, 2, "{first:?}");
    // Clerk announces W's deletion after the prune: final.
    app.expect_outcome(&w.deleted(now_ms()), &svix_id(), "applied").await;
    assert_eq!(run_of(&app, &w.id).await, None, "made final");
    let y = only_in_the_table(&app).await;
    let second = pruned(&app, prune()).await;
    assert_eq!(second.users.pruned, 1, "{second:?}");

    let db = app.connect_db().await;
    let restored = db
        .undo_prune(first.prune_run.as_deref().expect("run id"))
        .await
        .expect("undo");
    db.close().await;
    assert_eq!(
        restored,
        vec![x.id.clone()],
        "exactly the first run's, less the deletion Clerk announced"
    );
    assert!(live(&app, &x).await);
    assert!(!live(&app, &w).await, "a deletion Clerk announced stays");
    assert!(!live(&app, &y).await, "the other run stands");
    assert_eq!(run_of(&app, &y.id).await, second.prune_run);
    let answer = app.get_user(&x.id, SERVICE_TOKEN).await;
    assert_eq!(answer.status, reqwest::StatusCode::OK, "{}", answer.body);
});

both_backends!(a_deletion_clerk_announced_stays_final, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let all = users(30);
    let list = mount(&app, &all, vec![], 500).await;
    let deleted = ClerkUser::new(now_ms() - 7_200_000);
    app.expect_outcome(&deleted.created(), &svix_id(), "applied").await;
    app.expect_outcome(&deleted.deleted(now_ms()), &svix_id(), "applied")
        .await;
    // A newer webhook, a walk listing it, a lookup Clerk would answer: none brings it back.
    app.expect_outcome(&deleted.at(now_ms()).updated(), &svix_id(), "tombstoned")
        .await;
    list.add(&deleted);
    let summary = app.backfill(prune()).await.expect("walk");
    assert_eq!(summary.users.skipped_tombstoned, 1, "{summary:?}");
    let before = app.clerk_requests(&format!("/v1/users/{}", deleted.id)).await;
    let answer = app.get_user(&deleted.id, SERVICE_TOKEN).await;
    assert_eq!(answer.status, reqwest::StatusCode::GONE);
    assert_eq!(
        app.clerk_requests(&format!("/v1/users/{}", deleted.id)).await,
        before,
        "Clerk is not asked"
    );
    assert!(!live(&app, &deleted).await);
    let db = app.connect_db().await;
    for run in db.prune_runs().await.expect("runs") {
        db.undo_prune(&run.run).await.expect("undo");
    }
    db.close().await;
    assert!(!live(&app, &deleted).await);
    assert_eq!(run_of(&app, &deleted.id).await, None);
});
