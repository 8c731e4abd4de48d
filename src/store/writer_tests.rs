//! The writer's scheduling, over a store that answers at the test's command.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::{Writer, WriterOptions};
use crate::store::{
    Change, Entity, Lookup, MembersOf, MembershipCursor, MembershipRow, Outcome, Source, Store, StoreError, UserData,
};

/// Holds any batch holding `user_stuck` until `release` is notified; every other batch commits at once.
#[derive(Default)]
struct Stuck {
    release: Notify,
}

impl Store for Stuck {
    async fn apply(&self, batch: &[Change]) -> Result<Vec<Outcome>, StoreError> {
        if batch.iter().any(|c| c.clerk_id() == Some("user_stuck")) {
            self.release.notified().await;
        }
        Ok(vec![Outcome::Created; batch.len()])
    }
    async fn lookup(&self, _: &str) -> Result<Lookup, StoreError> {
        Ok(Lookup::Missing)
    }
    async fn memberships(
        &self,
        _: MembersOf<'_>,
        _: Option<&MembershipCursor>,
        _: i64,
    ) -> Result<Vec<MembershipRow>, StoreError> {
        Ok(Vec::new())
    }
    async fn check_ready(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn prune_deliveries(&self, _: Duration) -> Result<u64, StoreError> {
        Ok(0)
    }
}

fn user(clerk_id: &str) -> Change {
    Change::Upsert {
        entity: Entity::User(UserData {
            clerk_id: clerk_id.to_owned(),
            clerk_updated_at: 1,
            ..UserData::default()
        }),
        via: Source::Webhook,
        delivery: None,
    }
}

/// A batch that does not come back (a locked row, a distant database) holds the next one back only briefly: the
/// writer waits for a running batch to fold what queues meanwhile into one, but not for a stuck one.
#[tokio::test]
async fn a_stuck_batch_does_not_hold_the_next_one() {
    let store = Arc::new(Stuck::default());
    let options = WriterOptions {
        max_batch: 128,
        in_flight: 2,
        store_payload: false,
    };
    let (writer, _task) = Writer::spawn(store.clone(), options);
    let stuck = tokio::spawn({
        let writer = writer.clone();
        async move { writer.submit(user("user_stuck")).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Bounded generously: this checks that it commits beside the stuck batch at all, not how fast.
    let next = tokio::time::timeout(Duration::from_secs(5), writer.submit(user("user_next"))).await;
    assert_eq!(
        next,
        Ok(Ok(Outcome::Created)),
        "the next batch waited for the stuck one"
    );
    assert!(!stuck.is_finished(), "the stuck batch was let go early");
    store.release.notify_one();
    assert_eq!(stuck.await.ok(), Some(Ok(Outcome::Created)));
}
