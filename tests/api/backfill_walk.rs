//! The users walk against a Clerk list that misbehaves: a cursor ignored, a list far longer than Clerk's count,
//! a cursor whose user is deleted between two pages or before a resume. A walk that cannot end fails (and so
//! never prunes); a deleted cursor neither ends the walk early nor fails it.

use std::sync::atomic::Ordering;

use clerk_sync::backfill::{BackfillError, Options};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::clerk::{now_ms, svix_id, ClerkUser};
use crate::fake_users::{mount, prune, users};
use crate::helpers::{spawn_app_with_clerk, TestApp};

/// A live user in the table that Clerk does not list: a wrongly ended walk would prune it.
async fn bystander(app: &TestApp) -> ClerkUser {
    let user = ClerkUser::new(now_ms() - 7_200_000);
    app.expect_outcome(&user.created(), &svix_id(), "applied").await;
    user
}

async fn live(app: &TestApp, user: &ClerkUser) -> bool {
    app.db.user(&user.id).await.is_some_and(|row| row.deleted_at.is_none())
}

both_backends!(a_clerk_ignoring_the_cursor_fails_the_walk, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let unseen = bystander(&app).await;
    let list = mount(&app, &users(1200), vec![], 500).await;
    list.ignore_cursor.store(true, Ordering::SeqCst);
    let failed = app.backfill(prune()).await;
    assert!(matches!(failed, Err(BackfillError::Stalled(_))), "{failed:?}");
    assert!(
        list.served.load(Ordering::SeqCst) <= 3,
        "it stops at once: {} requests",
        list.served.load(Ordering::SeqCst)
    );
    assert!(live(&app, &unseen).await, "a failed walk prunes no one");
});

/// A list that never ends: every page holds 500 users never seen before, while Clerk counts 1,200.
struct Endless;

impl Respond for Endless {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let t = now_ms() - 3_600_000;
        let page: Vec<_> = (0..500).map(|_| ClerkUser::new(t).data()).collect();
        ResponseTemplate::new(200).set_body_json(page)
    }
}

both_backends!(a_list_far_longer_than_clerk_counted_fails, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let unseen = bystander(&app).await;
    Mock::given(method("GET"))
        .and(path("/v1/users/count"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"object": "total_count", "total_count": 1200})))
        .mount(app.clerk())
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/users"))
        .respond_with(Endless)
        .mount(app.clerk())
        .await;
    let failed = app.backfill(prune()).await;
    match failed {
        Err(BackfillError::Stalled(why)) => assert!(why.contains("Clerk counted 1200"), "{why}"),
        other => panic!("an endless list must fail the walk: {other:?}"),
    }
    assert!(
        app.db.count_all_users().await <= 3500,
        "it stops within a few pages of the count"
    );
    assert!(live(&app, &unseen).await, "a failed walk prunes no one");
});

// The user a cursor names is deleted right after its page was read; Clerk answers the next request with an empty
// page or refuses the cursor. Either way the walk reads everyone after it and ends only at the real end.
both_backends!(a_cursor_deleted_between_pages_is_stepped_over, |backend| async move {
    for unknown in [None, Some(404), Some(400), Some(422)] {
        let app = spawn_app_with_clerk(backend, &[]).await;
        let unseen = bystander(&app).await;
        let all = users(1200);
        let list = mount(&app, &all, vec![], 500).await;
        *list.unknown_cursor.lock().expect("lock") = unknown;
        list.delete_after_request(0, &all[499].id);
        let summary = app
            .backfill(prune())
            .await
            .unwrap_or_else(|e| panic!("{unknown:?}: {e}"));
        for user in &all[500..] {
            assert!(live(&app, user).await, "{unknown:?}: {} never read", user.id);
        }
        assert_eq!(summary.users.failed, 0);
        assert!(!live(&app, &unseen).await, "{unknown:?}: the walk did end: {summary:?}");
    }
});

// The list is a whole number of pages and its last user is deleted once read: the empty page after it is
// confirmed as the end, not mistaken for a deleted cursor forever.
both_backends!(the_end_of_a_list_of_whole_pages_is_found, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let all = users(1000);
    let list = mount(&app, &all, vec![], 500).await;
    list.delete_after_request(1, &all[999].id);
    let summary = app.backfill(Options::default()).await.expect("walk");
    assert_eq!(summary.users.created, 1000, "{summary:?}");
    assert!(
        list.served.load(Ordering::SeqCst) <= 6,
        "a few probes, not a loop: {}",
        list.served.load(Ordering::SeqCst)
    );
});

// A run stops after its first page; the user its checkpoint names is deleted in Clerk before the run is resumed.
both_backends!(a_resume_whose_cursor_was_deleted_continues, |backend| async move {
    let env = [("CLERK_SYNC_CLERK__RETRY_BUDGET_MS", "500")];
    let app = spawn_app_with_clerk(backend, &env).await;
    let all = users(1200);
    let list = mount(&app, &all, (1..=1000).collect(), 500).await;
    assert!(
        app.backfill(Options::default()).await.is_err(),
        "the first run fails after a page"
    );
    assert_eq!(app.db.count_all_users().await, 500);
    list.delete(&all[499].id);
    list.heal();
    for unknown in [Some(404), None] {
        *list.unknown_cursor.lock().expect("lock") = unknown;
        let summary = app.backfill(Options::default()).await.expect("resumed");
        assert!(summary.users.resumed() || unknown.is_none(), "{summary:?}");
        assert_eq!(app.db.count_all_users().await, 1200, "{unknown:?}: every user read");
    }
    // A user created since, listed last, is read by the next run too.
    let late = ClerkUser::new(now_ms());
    list.add(&late);
    app.backfill(Options::default()).await.expect("third run");
    assert!(live(&app, &late).await);
});
