//! Property: whatever order Svix delivers a user's history in — shuffled, retried, partly concurrent — the
//! `users` table ends as an oracle says: a user with any delete is deleted (soft) and never resurrected;
//! otherwise its row is the version with the greatest `data.updated_at`; never more than one row per user.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::StatusCode;
use tokio::task::JoinSet;

use crate::clerk::{now_ms, svix_id, ClerkUser};
use crate::helpers::{spawn_app, Backend, TestApp};

/// Cases per backend; each runs against the same daemon with fresh user ids.
const CASES: u32 = 32;

/// One user's history: a `user.created` (true) or `user.updated` (false) per version — version `i` has
/// `updated_at = base + i s` — and how many `user.deleted` events.
#[derive(Debug, Clone)]
struct UserPlan {
    versions: Vec<bool>,
    deletes: usize,
}

#[derive(Debug, Clone)]
struct Scenario {
    users: Vec<UserPlan>,
    /// A permutation of all events: the delivery order.
    order: Vec<usize>,
    /// Redeliveries: (which event, where in the order to insert it).
    retries: Vec<(Index, Index)>,
    /// Deliveries are sent in waves of these sizes (cycled); a wave's deliveries are concurrent.
    waves: Vec<usize>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let plan = (prop::collection::vec(any::<bool>(), 0..=5), 0usize..=2)
        .prop_map(|(versions, deletes)| UserPlan { versions, deletes });
    prop::collection::vec(plan, 1..=3).prop_flat_map(|users| {
        let n: usize = users.iter().map(|u| u.versions.len() + u.deletes).sum();
        (
            Just(users),
            Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
            prop::collection::vec((any::<Index>(), any::<Index>()), 0..=4),
            prop::collection::vec(1usize..=4, 1..=6),
        )
            .prop_map(|(users, order, retries, waves)| Scenario {
                users,
                order,
                retries,
                waves,
            })
    })
}

/// One event to deliver, under its own svix id.
#[derive(Debug, Clone)]
struct Event {
    user: usize,
    svix_id: String,
    body: String,
}

fn version(user: &ClerkUser, base: i64, i: usize) -> ClerkUser {
    let mut v = user.at(base + 1_000 * i as i64);
    v.first_name = Some(format!("V{i}"));
    v = v.with_primary_email_second(&format!("v{i}@example.com"), "old@example.com");
    v
}

fn events(scenario: &Scenario, users: &[ClerkUser], base: i64) -> Vec<Event> {
    let mut events = Vec::new();
    for (u, (plan, user)) in scenario.users.iter().zip(users).enumerate() {
        for (i, &created) in plan.versions.iter().enumerate() {
            let v = version(user, base, i);
            let body = if created { v.created() } else { v.updated() };
            events.push(Event {
                user: u,
                svix_id: svix_id(),
                body,
            });
        }
        for d in 0..plan.deletes {
            events.push(Event {
                user: u,
                svix_id: svix_id(),
                body: user.deleted(base + 500 + d as i64),
            });
        }
    }
    events
}

async fn run_case(app: &Arc<TestApp>, scenario: Scenario) -> Result<(), TestCaseError> {
    let base = now_ms() - 3_600_000;
    let users: Vec<ClerkUser> = scenario.users.iter().map(|_| ClerkUser::new(base)).collect();
    let events = events(&scenario, &users, base);
    let mut deliveries: Vec<Event> = scenario.order.iter().map(|&i| events[i].clone()).collect();
    if !events.is_empty() {
        for (which, at) in &scenario.retries {
            let retry = events[which.index(events.len())].clone();
            deliveries.insert(at.index(deliveries.len() + 1), retry);
        }
    }

    let mut rest = deliveries.as_slice();
    for &size in scenario.waves.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (wave, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        let mut set = JoinSet::new();
        for event in wave.iter().cloned() {
            let app = Arc::clone(app);
            set.spawn(async move { (app.deliver(&event.body, &event.svix_id).await, event) });
        }
        while let Some(done) = set.join_next().await {
            let ((status, json), event) = done.expect("a delivery task panicked");
            prop_assert_eq!(status, StatusCode::OK, "delivery {} answered {}", event.svix_id, json);
            let outcome = json["outcome"].as_str().unwrap_or_default();
            prop_assert!(
                ["applied", "stale", "tombstoned", "duplicate"].contains(&outcome),
                "delivery {} answered {}",
                event.svix_id,
                json
            );
        }
    }

    for (u, (plan, user)) in scenario.users.iter().zip(&users).enumerate() {
        let row = app.db.user(&user.id).await;
        prop_assert!(app.db.count_users(&user.id).await <= 1, "two rows for {}", user.id);
        let distinct = events.iter().filter(|e| e.user == u).count() as i64;
        let recorded = app
            .db
            .int(&format!(
                "SELECT count(*) FROM clerk_sync_deliveries WHERE clerk_id = '{}'",
                user.id
            ))
            .await;
        prop_assert_eq!(recorded, distinct, "deliveries recorded for user {}", u);
        let newest = plan.versions.len().checked_sub(1);
        if plan.deletes > 0 {
            prop_assert!(
                app.db.tombstone(&user.id).await.is_some(),
                "user {} has no tombstone",
                u
            );
            if let Some(row) = &row {
                prop_assert!(row.deleted_at.is_some(), "user {} resurrected: {:?}", u, row);
                // A soft-deleted row keeps one of the versions Clerk sent, whole.
                let i = (row.clerk_updated_at.unwrap_or_default() - base) / 1_000;
                prop_assert!(i >= 0 && (i as usize) < plan.versions.len(), "{:?}", row);
                prop_assert_eq!(row.first_name.clone(), Some(format!("V{i}")));
                prop_assert_eq!(row.email.clone(), Some(format!("v{i}@example.com")));
            }
        } else if let Some(newest) = newest {
            let row = row.ok_or_else(|| TestCaseError::fail(format!("user {u} was never stored")))?;
            prop_assert_eq!(row.deleted_at.clone(), None);
            prop_assert_eq!(row.clerk_updated_at, Some(base + 1_000 * newest as i64), "{:?}", row);
            prop_assert_eq!(row.first_name.clone(), Some(format!("V{newest}")));
            prop_assert_eq!(row.email.clone(), Some(format!("v{newest}@example.com")));
            prop_assert_eq!(row.created_via.as_str(), "webhook");
        } else {
            prop_assert!(row.is_none(), "user {} had no events but has a row", u);
        }
    }
    Ok(())
}

async fn check(backend: Backend) {
    let app = Arc::new(spawn_app(backend).await);
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let handle = tokio::runtime::Handle::current();
    let result =
        tokio::task::block_in_place(|| runner.run(&scenario(), |scenario| handle.block_on(run_case(&app, scenario))));
    if let Err(e) = result {
        panic!("{backend:?}: {e}");
    }
}

both_backends!(users_table_matches_the_oracle_for_any_delivery_order, |backend| check(
    backend
));
