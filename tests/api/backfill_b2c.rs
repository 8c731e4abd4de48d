//! Backfill on a Clerk instance without organizations (most B2C apps): Clerk answers every organizations
//! endpoint 403 `organization_not_enabled_in_instance`, and that is a normal instance, on both backends.

use clerk_sync::backfill::{BackfillError, Only, Options, Walked};
use clerk_sync::clerk::ClerkError;
use clerk_sync::store::Kind;
use serde_json::json;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, ResponseTemplate};

use crate::clerk::{now_ms, svix_id, ClerkUser};
use crate::clerk_orgs::ClerkOrganization;
use crate::fake_users::{mount_on, prune, users, Orgs};
use crate::helpers::{spawn_app_with_clerk, TestApp};

async fn checkpoints(app: &TestApp) -> i64 {
    app.db.int("SELECT count(*) FROM clerk_sync_backfill").await
}

both_backends!(
    a_backfill_writes_the_users_and_skips_organizations,
    |backend| async move {
        let app = spawn_app_with_clerk(backend, &[]).await;
        let all = users(700);
        mount_on(&app, &all, vec![], 500, Orgs::Off).await;
        let summary = app
            .backfill(Options::default())
            .await
            .expect("an instance without organizations is normal");
        assert_eq!(
            (summary.users.scanned, summary.users.created),
            (700, 700),
            "{summary:?}"
        );
        assert_eq!(summary.organizations.walked, Walked::NotEnabled, "{summary:?}");
        assert_eq!(summary.memberships.walked, Walked::NotEnabled, "{summary:?}");
        assert_eq!(app.db.count_all_users().await, 700);
        assert_eq!(
            checkpoints(&app).await,
            0,
            "the run is complete: nothing left to resume"
        );
        assert_eq!(
            app.clerk_requests("/v1/organizations").await,
            1,
            "one refused request tells; the memberships walk does not ask again"
        );

        // And again: a second run is a normal run too.
        let again = app.backfill(Options::default()).await.expect("second run");
        assert_eq!(
            (again.users.unchanged, again.users.walked),
            (700, Walked::Fresh),
            "{again:?}"
        );
        assert_eq!(again.organizations.walked, Walked::NotEnabled);
    }
);

both_backends!(prune_works_without_organizations, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    // From when the instance had organizations: without a walk of them nothing says they are gone.
    let organization = ClerkOrganization::new(now_ms() - 7_200_000);
    app.expect_outcome(&organization.created(), &svix_id(), "applied").await;
    let gone = ClerkUser::new(now_ms() - 7_200_000);
    app.expect_outcome(&gone.created(), &svix_id(), "applied").await;
    let all = users(3);
    mount_on(&app, &all, vec![], 500, Orgs::Off).await;
    let summary = app
        .backfill(prune())
        .await
        .expect("prune on an instance without organizations");
    assert_eq!((summary.users.created, summary.users.pruned), (3, 1), "{summary:?}");
    assert!(
        app.db.user(&gone.id).await.expect("row").deleted_at.is_some(),
        "absent from Clerk: pruned"
    );
    let live_organizations = app
        .db
        .int("SELECT count(*) FROM organizations WHERE deleted_at IS NULL")
        .await;
    assert_eq!(live_organizations, 1, "organizations not walked are not pruned");
});

both_backends!(only_organizations_fails_with_the_reason, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    mount_on(&app, &users(2), vec![], 500, Orgs::Off).await;
    let only = Options {
        only: Only::of(&[Kind::Organization]),
        ..Options::default()
    };
    match app.backfill(only).await {
        Err(BackfillError::NotEnabled(sentence)) => assert!(
            sentence.contains("organizations are not enabled on this Clerk instance")
                && sentence.contains("organization_not_enabled_in_instance"),
            "{sentence}"
        ),
        other => panic!("--only organizations on an instance without them must fail: {other:?}"),
    }
    assert_eq!(app.db.count_all_users().await, 0, "users were not asked for");
    // Users asked for by name, organizations by default: the run succeeds.
    let users_only = Options {
        only: Only::of(&[Kind::User]),
        ..Options::default()
    };
    let summary = app.backfill(users_only).await.expect("--only users");
    assert_eq!((summary.users.created, summary.organizations.walked), (2, Walked::No));
});

// How else an instance may refuse its organizations list: each skips the walk on the first page.
both_backends!(
    every_refusal_of_the_first_organizations_page_skips_the_walk,
    |backend| async move {
        let answers = [
            (404, Some("resource_not_found")),
            (422, Some("feature_not_enabled")),
            (422, Some("some_code_clerk_may_add")),
            (400, None),
            (402, None),
        ];
        for (status, code) in answers {
            let app = spawn_app_with_clerk(backend, &[]).await;
            let all = users(2);
            mount_on(&app, &all, vec![], 500, Orgs::Empty).await;
            let body = match code {
                Some(code) => json!({"errors": [{"code": code, "message": "refused"}]}),
                None => json!({}),
            };
            Mock::given(method("GET"))
                .and(path_regex("^/v1/organizations"))
                .respond_with(ResponseTemplate::new(status).set_body_json(body))
                .with_priority(1)
                .mount(app.clerk())
                .await;
            let summary = app
                .backfill(Options::default())
                .await
                .unwrap_or_else(|e| panic!("HTTP {status} {code:?}: {e}"));
            assert_eq!(summary.organizations.walked, Walked::NotEnabled, "{status} {code:?}");
            assert_eq!(summary.users.created, 2);
        }
    }
);

both_backends!(a_key_clerk_refuses_stays_an_error, |backend| async move {
    // A wrong key on the users list.
    let app = spawn_app_with_clerk(backend, &[]).await;
    Mock::given(method("GET"))
        .and(path("/v1/users"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"errors": [{"code": "authentication_invalid", "message": "unauthorized"}]})),
        )
        .mount(app.clerk())
        .await;
    let failed = app.backfill(Options::default()).await;
    assert!(
        matches!(
            failed,
            Err(BackfillError::Clerk(ClerkError::Refused { status: 401, .. }))
        ),
        "{failed:?}"
    );

    // A 401 on the organizations list is not "organizations off" either.
    let app = spawn_app_with_clerk(backend, &[]).await;
    mount_on(&app, &users(1), vec![], 500, Orgs::Empty).await;
    Mock::given(method("GET"))
        .and(path("/v1/organizations"))
        .respond_with(ResponseTemplate::new(401))
        .with_priority(1)
        .mount(app.clerk())
        .await;
    let failed = app.backfill(Options::default()).await;
    assert!(
        matches!(
            failed,
            Err(BackfillError::Clerk(ClerkError::Refused { status: 401, .. }))
        ),
        "{failed:?}"
    );
});

// An instance whose organizations were turned off after some were stored: `--only memberships` reads the stored
// organizations and asks Clerk for their members; Clerk's "not enabled" skips the walk, and by name it fails.
both_backends!(memberships_of_organizations_turned_off, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let organization = ClerkOrganization::new(now_ms() - 7_200_000);
    app.expect_outcome(&organization.created(), &svix_id(), "applied").await;
    mount_on(&app, &users(1), vec![], 500, Orgs::Off).await;
    let summary = app.backfill(Options::default()).await.expect("default run");
    assert_eq!(summary.memberships.walked, Walked::NotEnabled, "{summary:?}");
    let only = Options {
        only: Only::of(&[Kind::Membership]),
        ..Options::default()
    };
    let failed = app.backfill(only).await;
    assert!(matches!(failed, Err(BackfillError::NotEnabled(_))), "{failed:?}");
});
