//! What deleting an organization or a user does to its memberships (they go with it, on the change feed, and
//! no later membership event brings one back), and how a membership event's embedded copy of its organization
//! meets the organization's own events.

use std::sync::Arc;

use tokio::task::JoinSet;

use crate::clerk::{deleted, now_ms, svix_id, user_id};
use crate::clerk_orgs::{ClerkMembership, ClerkOrganization};
use crate::helpers::{spawn_app, spawn_app_with, TestApp};

async fn membership_text(app: &TestApp, clerk_id: &str, column: &str) -> Option<String> {
    app.db
        .string(&format!(
            "SELECT CAST({column} AS TEXT) FROM organization_memberships WHERE clerk_id = '{clerk_id}'"
        ))
        .await
}

async fn org_text(app: &TestApp, clerk_id: &str, column: &str) -> Option<String> {
    app.db
        .string(&format!(
            "SELECT CAST({column} AS TEXT) FROM organizations WHERE clerk_id = '{clerk_id}'"
        ))
        .await
}

async fn last_seq(app: &TestApp) -> i64 {
    app.db
        .int("SELECT CAST(coalesce(max(seq), 0) AS BIGINT) FROM clerk_sync_changes")
        .await
}

/// The feed after `seq`, as "kind clerk_id op via", in seq order.
async fn feed_after(app: &TestApp, seq: i64) -> Vec<String> {
    app.db
        .strings(&format!(
            "SELECT kind || ' ' || clerk_id || ' ' || op || ' ' || via FROM clerk_sync_changes \
             WHERE seq > {seq} ORDER BY seq"
        ))
        .await
        .into_iter()
        .flatten()
        .collect()
}

fn line(kind: &str, clerk_id: &str, op: &str) -> String {
    format!("{kind} {clerk_id} {op} webhook")
}

/// `first`, then `rest` in clerk id order (the order the cascade writes them in).
fn then_sorted(first: String, mut rest: Vec<String>) -> Vec<String> {
    rest.sort();
    std::iter::once(first).chain(rest).collect()
}

async fn live_memberships_of_user(app: &TestApp, user: &str) -> i64 {
    app.db
        .int(&format!(
            "SELECT count(*) FROM organization_memberships WHERE user_clerk_id = '{user}' AND deleted_at IS NULL"
        ))
        .await
}

both_backends!(deleting_an_organization_deletes_its_memberships, |backend| async move {
    let app = spawn_app(backend).await;
    let t = now_ms() - 60_000;
    let org = ClerkOrganization::new(t);
    let other = ClerkOrganization::new(t);
    let a = ClerkMembership::new(&org, t);
    let b = ClerkMembership::new(&org, t);
    let mut elsewhere = ClerkMembership::new(&other, t);
    elsewhere.user_id = a.user_id.clone();
    for m in [&a, &b, &elsewhere] {
        app.expect_outcome(&m.created(), &svix_id(), "applied").await;
    }
    let before = last_seq(&app).await;

    app.expect_outcome(&org.deleted(t + 1_000), &svix_id(), "applied").await;
    for m in [&a, &b] {
        assert_eq!(
            membership_text(&app, &m.id, "deleted_at").await,
            org_text(&app, &org.id, "deleted_at").await,
            "the membership is deleted when its organization is"
        );
        assert_eq!(
            membership_text(&app, &m.id, "updated_via").await.as_deref(),
            Some("webhook")
        );
        assert_eq!(
            app.db.tombstone(&m.id).await,
            None,
            "the organization's tombstone covers its memberships"
        );
    }
    assert_eq!(membership_text(&app, &elsewhere.id, "deleted_at").await, None);
    assert_eq!(
        feed_after(&app, before).await,
        then_sorted(
            line("organization", &org.id, "deleted"),
            vec![
                line("membership", &a.id, "deleted"),
                line("membership", &b.id, "deleted")
            ]
        ),
        "every membership the delete took is on the feed"
    );

    // Nothing brings a membership of the deleted organization back, nor makes a new one.
    let before = last_seq(&app).await;
    let late = ClerkMembership::new(&org, t + 2_000);
    let late_id = svix_id();
    app.expect_outcome(&late.created(), &late_id, "stale").await;
    assert_eq!(
        app.db.delivery(&late_id).await.map(|d| d.outcome).as_deref(),
        Some("stale")
    );
    assert_eq!(membership_text(&app, &late.id, "clerk_id").await, None);
    app.expect_outcome(&a.at(t + 3_000, "org:admin").updated(), &svix_id(), "stale")
        .await;
    assert_eq!(
        membership_text(&app, &a.id, "role").await.as_deref(),
        Some("org:member")
    );
    assert!(membership_text(&app, &a.id, "deleted_at").await.is_some());
    assert_eq!(feed_after(&app, before).await, Vec::<String>::new(), "nothing changed");
});

both_backends!(deleting_a_user_deletes_their_memberships, |backend| async move {
    let app = spawn_app(backend).await;
    let t = now_ms() - 60_000;
    let (one, two) = (ClerkOrganization::new(t), ClerkOrganization::new(t));
    let user = user_id();
    let mut mine = Vec::new();
    for org in [&one, &two] {
        let mut m = ClerkMembership::new(org, t);
        m.user_id = user.clone();
        mine.push(m);
    }
    let colleague = ClerkMembership::new(&one, t);
    for m in mine.iter().chain([&colleague]) {
        app.expect_outcome(&m.created(), &svix_id(), "applied").await;
    }
    let before = last_seq(&app).await;

    // The user never had a row (a membership does not make one); the delete takes the memberships all the same.
    app.expect_outcome(&deleted(&user, t + 1_000), &svix_id(), "applied")
        .await;
    assert_eq!(live_memberships_of_user(&app, &user).await, 0);
    assert_eq!(membership_text(&app, &colleague.id, "deleted_at").await, None);
    assert_eq!(
        feed_after(&app, before).await,
        then_sorted(
            line("user", &user, "deleted"),
            mine.iter().map(|m| line("membership", &m.id, "deleted")).collect()
        )
    );

    // A later membership of the deleted user is stale, in a live organization too.
    let mut late = ClerkMembership::new(&ClerkOrganization::new(t), t + 2_000);
    late.user_id = user.clone();
    app.expect_outcome(&late.created(), &svix_id(), "stale").await;
    assert_eq!(membership_text(&app, &late.id, "clerk_id").await, None);
    assert_eq!(live_memberships_of_user(&app, &user).await, 0);
});

both_backends!(in_hard_mode_memberships_are_removed_too, |backend| async move {
    let app = spawn_app_with(backend, &[("CLERK_SYNC_WEBHOOKS__DELETE_MODE", "hard")]).await;
    let t = now_ms() - 60_000;
    let org = ClerkOrganization::new(t);
    let of_org = ClerkMembership::new(&org, t);
    let other = ClerkOrganization::new(t);
    let of_user = ClerkMembership::new(&other, t);
    let stays = ClerkMembership::new(&other, t);
    for m in [&of_org, &of_user, &stays] {
        app.expect_outcome(&m.created(), &svix_id(), "applied").await;
    }
    let before = last_seq(&app).await;
    app.expect_outcome(&org.deleted(t + 1_000), &svix_id(), "applied").await;
    app.expect_outcome(&deleted(&of_user.user_id, t + 1_000), &svix_id(), "applied")
        .await;
    assert_eq!(
        org_text(&app, &org.id, "clerk_id").await,
        None,
        "the organization is removed"
    );
    for m in [&of_org, &of_user] {
        assert_eq!(
            membership_text(&app, &m.id, "clerk_id").await,
            None,
            "removed with its parent"
        );
    }
    assert_eq!(
        membership_text(&app, &stays.id, "clerk_id").await,
        Some(stays.id.clone())
    );
    assert_eq!(
        feed_after(&app, before).await,
        vec![
            line("organization", &org.id, "deleted"),
            line("membership", &of_org.id, "deleted"),
            line("user", &of_user.user_id, "deleted"),
            line("membership", &of_user.id, "deleted"),
        ]
    );
    // The parent's tombstone keeps them out.
    app.expect_outcome(&of_org.at(t + 2_000, "org:admin").updated(), &svix_id(), "stale")
        .await;
    assert_eq!(membership_text(&app, &of_org.id, "clerk_id").await, None);
});

both_backends!(
    a_membership_racing_its_users_delete_never_stays_live,
    |backend| async move {
        let app = Arc::new(spawn_app(backend).await);
        let t = now_ms() - 60_000;
        for round in 0..4 {
            let user = user_id();
            // Each membership in an organization of its own: no two share a lane, nor a lock with the delete.
            let mut bodies: Vec<String> = (0..24)
                .map(|_| {
                    let mut m = ClerkMembership::new(&ClerkOrganization::new(t), t);
                    m.user_id = user.clone();
                    m.created()
                })
                .collect();
            bodies.insert(12, deleted(&user, t + 1_000));
            let mut set = JoinSet::new();
            for body in bodies {
                let app = Arc::clone(&app);
                set.spawn(async move { app.deliver(&body, &svix_id()).await });
            }
            while let Some(answer) = set.join_next().await {
                let (status, json) = answer.expect("a delivery task panicked");
                assert!(
                    status.is_success() && ["applied", "stale"].contains(&json["outcome"].as_str().unwrap_or("")),
                    "round {round}: {status} {json}"
                );
            }
            assert_eq!(
                live_memberships_of_user(&app, &user).await,
                0,
                "round {round}: a membership of the deleted user is live"
            );
        }
    }
);

both_backends!(
    a_membership_events_organization_brings_the_members_count,
    |backend| async move {
        let app = spawn_app(backend).await;
        let t = now_ms() - 60_000;
        // As in Clerk's examples: the membership's copy of the organization has the new count, same updated_at.
        let mut org = ClerkOrganization::new(t);
        org.members_count = Some(1);
        app.expect_outcome(&org.created(), &svix_id(), "applied").await;
        let mut copy = org.clone();
        copy.members_count = Some(2);
        let before = last_seq(&app).await;
        app.expect_outcome(&ClerkMembership::new(&copy, t + 5).created(), &svix_id(), "applied")
            .await;
        assert_eq!(org_text(&app, &org.id, "members_count").await.as_deref(), Some("2"));
        assert_eq!(org_text(&app, &org.id, "name").await.as_deref(), Some("Acme Inc"));
        let organization_changes = |feed: Vec<String>| {
            feed.into_iter()
                .filter(|l| l.starts_with("organization "))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            organization_changes(feed_after(&app, before).await),
            vec![line("organization", &org.id, "updated")]
        );

        // The same count again changes nothing; an older copy's count is not applied.
        let before = last_seq(&app).await;
        app.expect_outcome(&ClerkMembership::new(&copy, t + 6).created(), &svix_id(), "applied")
            .await;
        let mut older = org.at(t - 1, "Acme Old");
        older.members_count = Some(9);
        app.expect_outcome(&ClerkMembership::new(&older, t + 7).created(), &svix_id(), "applied")
            .await;
        assert_eq!(org_text(&app, &org.id, "members_count").await.as_deref(), Some("2"));
        assert_eq!(org_text(&app, &org.id, "name").await.as_deref(), Some("Acme Inc"));
        assert_eq!(
            organization_changes(feed_after(&app, before).await),
            Vec::<String>::new()
        );
    }
);

both_backends!(
    an_organizations_own_event_wins_over_an_embedded_copy_of_the_same_updated_at,
    |backend| async move {
        let app = spawn_app(backend).await;
        let t = now_ms() - 60_000;
        let mut org = ClerkOrganization::new(t);
        org.members_count = Some(2);
        // The membership event comes first and makes the row from its copy.
        let membership = ClerkMembership::new(&org, t + 5);
        app.expect_outcome(&membership.updated(), &svix_id(), "applied").await;
        assert_eq!(org_text(&app, &org.id, "name").await.as_deref(), Some("Acme Inc"));

        // The organization's own event with the same updated_at (a rename) is not stale; the count the copy
        // brought stays, since the own event cannot be told newer than it.
        let mut renamed = org.at(t, "Acme Renamed");
        renamed.members_count = Some(1);
        app.expect_outcome(&renamed.updated(), &svix_id(), "applied").await;
        assert_eq!(org_text(&app, &org.id, "name").await.as_deref(), Some("Acme Renamed"));
        assert_eq!(org_text(&app, &org.id, "members_count").await.as_deref(), Some("2"));

        // Now the row is the organization's own: another own event of that updated_at is stale, and a copy of
        // that updated_at brings only its count.
        app.expect_outcome(&org.at(t, "Acme Again").updated(), &svix_id(), "stale")
            .await;
        let mut copy = org.clone();
        copy.members_count = Some(3);
        app.expect_outcome(&membership.at(t + 10, "org:admin").updated(), &svix_id(), "applied")
            .await;
        app.expect_outcome(&ClerkMembership::new(&copy, t + 5).created(), &svix_id(), "applied")
            .await;
        assert_eq!(org_text(&app, &org.id, "name").await.as_deref(), Some("Acme Renamed"));
        assert_eq!(org_text(&app, &org.id, "members_count").await.as_deref(), Some("3"));
        // A newer copy is applied whole.
        let mut newer = org.at(t + 100, "Acme Newer");
        newer.members_count = None;
        app.expect_outcome(&ClerkMembership::new(&newer, t + 100).created(), &svix_id(), "applied")
            .await;
        assert_eq!(org_text(&app, &org.id, "name").await.as_deref(), Some("Acme Newer"));
        assert_eq!(
            org_text(&app, &org.id, "members_count").await.as_deref(),
            Some("3"),
            "a copy without a count keeps the stored one"
        );
    }
);
