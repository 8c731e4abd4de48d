//! What a backfill page writes over rows already stored: the ordering guard, the outcomes, the feed rows and the
//! stored payload, as the webhook path has them (SQLite writes such a page through its own statement).

use clerk_sync::backfill::Options;

use crate::clerk::{svix_id, ClerkUser};
use crate::fake_users::{mount, users};
use crate::helpers::spawn_app_with_clerk;

both_backends!(
    a_page_over_stored_rows_writes_only_what_is_newer,
    |backend| async move {
        let app = spawn_app_with_clerk(backend, &[]).await;
        let all = users(5);
        let stored = |u: &ClerkUser, shift: i64, name: &str| {
            let mut u = u.at(u.updated_at + shift);
            u.first_name = Some(name.into());
            u
        };
        // 0: stored older; 1: stored newer; 3: stored as new; 2 and 4: not stored.
        for user in [
            stored(&all[0], -1_000, "Older"),
            stored(&all[1], 1_000, "Newer"),
            stored(&all[3], 0, "Same"),
        ] {
            app.expect_outcome(&user.created(), &svix_id(), "applied").await;
        }
        mount(&app, &all, vec![], 500).await;
        let summary = app.backfill(Options::default()).await.expect("backfill");
        assert_eq!(
            (summary.users.created, summary.users.updated, summary.users.unchanged),
            (2, 1, 2),
            "{summary:?}"
        );
        let first = |i: usize| {
            let id = all[i].id.clone();
            let db = &app.db;
            async move { db.user(&id).await.expect("row").first_name }
        };
        assert_eq!(first(0).await, all[0].first_name, "older row replaced");
        assert_eq!(first(1).await.as_deref(), Some("Newer"), "newer row kept");
        assert_eq!(first(3).await.as_deref(), Some("Same"), "as new: kept");
        let row = app.db.user(&all[2].id).await.expect("created");
        assert_eq!(
            (row.created_via.as_str(), row.email),
            ("backfill", all[2].primary_email())
        );

        // One feed row per row written, none for the others.
        let mut feed: Vec<String> = app
            .db
            .strings("SELECT clerk_id || ' ' || op FROM clerk_sync_changes WHERE via = 'backfill'")
            .await
            .into_iter()
            .flatten()
            .collect();
        feed.sort();
        let mut expected = vec![
            format!("{} updated", all[0].id),
            format!("{} created", all[2].id),
            format!("{} created", all[4].id),
        ];
        expected.sort();
        assert_eq!(feed, expected);

        // The payload is Clerk's object.
        let data = app
            .db
            .string(&format!(
                "SELECT CAST(data AS TEXT) FROM users WHERE clerk_id = '{}'",
                all[4].id
            ))
            .await
            .expect("data stored");
        let data: serde_json::Value = serde_json::from_str(&data).expect("JSON");
        assert_eq!(data, all[4].data());
    }
);
