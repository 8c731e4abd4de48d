//! The rails of `--prune` for organizations and memberships: a pruned organization takes its memberships and
//! comes back with them (a newer event, `undo-prune`), and a deletion Clerk announces stays final — both backends.

use clerk_sync::backfill::Summary;

use crate::backfill_organizations::{members, membership_row, membership_rows, mount, organizations, sorted, FakeOrgs};
use crate::clerk::{now_ms, svix_id};
use crate::clerk_orgs::{ClerkMembership, ClerkOrganization};
use crate::fake_users::prune;
use crate::helpers::{spawn_app_with_clerk, TestApp};
use crate::prune_safety::run_of;

async fn organization_live(app: &TestApp, id: &str) -> bool {
    app.db
        .int(&format!(
            "SELECT count(*) FROM organizations WHERE clerk_id = '{id}' AND deleted_at IS NULL"
        ))
        .await
        == 1
}

/// Twenty organizations Clerk lists, and one only in the table (Clerk answers 404 for it) with two members.
async fn gone_with_members(app: &TestApp) -> (ClerkOrganization, Vec<ClerkMembership>, Summary) {
    let gone = ClerkOrganization::new(now_ms() - 7_200_000);
    app.expect_outcome(&gone.created(), &svix_id(), "applied").await;
    let its = members(&gone, 2);
    for m in &its {
        app.expect_outcome(&m.created(), &svix_id(), "applied").await;
    }
    mount(app, FakeOrgs::new(organizations(20), Vec::new())).await;
    let summary = app.backfill(prune()).await.expect("prune");
    assert_eq!(summary.organizations.pruned, 1, "{summary:?}");
    assert!(!organization_live(app, &gone.id).await);
    let run = summary.prune_run.clone();
    for m in &its {
        assert_eq!(
            run_of(app, &m.id).await,
            run,
            "taken with its organization, by the same run"
        );
    }
    assert_eq!(
        membership_rows(app).await,
        sorted(its.iter().map(|m| membership_row(m, "webhook", "deleted")).collect())
    );
    (gone, its, summary)
}

both_backends!(
    a_pruned_organization_comes_back_with_its_members,
    |backend| async move {
        let app = spawn_app_with_clerk(backend, &[]).await;
        let (gone, its, _) = gone_with_members(&app).await;
        let back = gone.at(gone.updated_at + 1_000, "Acme Again");
        app.expect_outcome(&back.updated(), &svix_id(), "applied").await;
        assert!(organization_live(&app, &gone.id).await);
        assert_eq!(
            membership_rows(&app).await,
            sorted(its.iter().map(|m| membership_row(m, "webhook", "live")).collect()),
            "its members come back with it"
        );
        for m in &its {
            assert_eq!(app.db.tombstone(&m.id).await, None);
            let ops = app
                .db
                .strings(&format!(
                    "SELECT op FROM clerk_sync_changes WHERE clerk_id = '{}' ORDER BY seq",
                    m.id
                ))
                .await;
            assert_eq!(
                ops.last().cloned().flatten().as_deref(),
                Some("updated"),
                "followers learn it is back: {ops:?}"
            );
        }
    }
);

both_backends!(
    undo_prune_brings_back_an_organization_with_its_members,
    |backend| async move {
        let app = spawn_app_with_clerk(backend, &[]).await;
        let (gone, its, summary) = gone_with_members(&app).await;
        let db = app.connect_db().await;
        let mut restored = db
            .undo_prune(summary.prune_run.as_deref().expect("run"))
            .await
            .expect("undo");
        db.close().await;
        restored.sort();
        let mut expected: Vec<String> = its.iter().map(|m| m.id.clone()).chain([gone.id.clone()]).collect();
        expected.sort();
        assert_eq!(restored, expected);
        assert!(organization_live(&app, &gone.id).await);
        assert_eq!(
            membership_rows(&app).await,
            sorted(its.iter().map(|m| membership_row(m, "webhook", "live")).collect())
        );
    }
);

both_backends!(
    an_organization_deletion_clerk_announces_after_a_prune_is_final,
    |backend| async move {
        let app = spawn_app_with_clerk(backend, &[]).await;
        let (gone, its, summary) = gone_with_members(&app).await;
        app.expect_outcome(&gone.deleted(now_ms()), &svix_id(), "applied").await;
        assert_eq!(run_of(&app, &gone.id).await, None, "made final");
        let db = app.connect_db().await;
        let restored = db
            .undo_prune(summary.prune_run.as_deref().expect("run"))
            .await
            .expect("undo");
        db.close().await;
        assert!(restored.is_empty(), "{restored:?}");
        assert!(!organization_live(&app, &gone.id).await);
        assert_eq!(
            membership_rows(&app).await,
            sorted(its.iter().map(|m| membership_row(m, "webhook", "deleted")).collect())
        );
        let newer = gone.at(now_ms(), "Not Back");
        app.expect_outcome(&newer.updated(), &svix_id(), "tombstoned").await;
    }
);

both_backends!(a_pruned_membership_is_lifted_by_a_newer_event, |backend| async move {
    let app = spawn_app_with_clerk(backend, &[]).await;
    let orgs = organizations(1);
    let listed = members(&orgs[0], 9);
    let removed = ClerkMembership::new(&orgs[0], now_ms() - 7_200_000);
    app.expect_outcome(&removed.created(), &svix_id(), "applied").await;
    mount(&app, FakeOrgs::new(orgs.clone(), listed)).await;
    let summary = app.backfill(prune()).await.expect("prune");
    assert_eq!(summary.memberships.pruned, 1, "{summary:?}");
    app.expect_outcome(&removed.updated(), &svix_id(), "tombstoned").await;
    let back = removed.at(removed.updated_at + 1_000, "org:admin");
    app.expect_outcome(&back.updated(), &svix_id(), "applied").await;
    assert!(membership_rows(&app)
        .await
        .contains(&membership_row(&back, "webhook", "live")));
});
