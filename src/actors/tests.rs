//! The actor lifecycle: spawn on demand, retire when idle, survive child stops, respawn on the next message.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http::HeaderMap;
use svix::webhooks::Webhook;

use super::*;
use crate::config::{DatabaseSettings, DatabaseUrl};
use crate::store::{Db, SqliteStore};
use crate::webhook::{sample, Verifier};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn verified_event(svix_id: &str, kind: sample::SampleType, user_id: &str) -> VerifiedEvent {
    let body = sample::event(kind, user_id).to_string();
    let now = std::time::UNIX_EPOCH.elapsed().expect("clock").as_secs() as i64;
    let signature = Webhook::new(SECRET)
        .expect("secret")
        .sign(svix_id, now, body.as_bytes())
        .expect("sign");
    let mut headers = HeaderMap::new();
    headers.insert("svix-id", svix_id.parse().expect("header"));
    headers.insert("svix-timestamp", now.to_string().parse().expect("header"));
    headers.insert("svix-signature", signature.parse().expect("header"));
    let verifier = Verifier::new(SECRET).expect("secret");
    verifier
        .verify(&headers, Bytes::from(body))
        .expect("verifies")
        .parse()
        .expect("parses")
}

async fn live_after(actors: &Actors, wait: Duration) -> usize {
    tokio::time::sleep(wait).await;
    actors.live().await
}

#[tokio::test]
async fn idle_actors_stop_and_the_supervisor_respawns_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = DatabaseSettings {
        url: DatabaseUrl::new(format!("sqlite://{}", dir.path().join("a.db").display())),
        max_connections: 2,
        acquire_timeout_ms: 2000,
        busy_timeout_ms: 2000,
    };
    let db = Arc::new(Db::Sqlite(SqliteStore::connect(&settings).await.expect("connect")));
    db.migrate().await.expect("migrate");
    let (writer, _writer_task) = Writer::spawn(db.clone(), 16);
    let clerk_settings = crate::config::Settings::load(None, &|_| None).expect("defaults").clerk;
    let (actors, _sup) = Actors::start(UserArgs {
        db: db.clone(),
        writer,
        cache: crate::cache::UserCache::new(&crate::config::CacheSettings {
            capacity: 100,
            ttl_secs: 60,
            not_found_ttl_secs: 30,
        }),
        clerk: crate::clerk::ClerkClient::new(&clerk_settings).expect("client"),
        idle_timeout: Duration::from_millis(150),
        hard_delete: false,
    })
    .await
    .expect("supervisor starts");

    for (i, user) in ["user_a1", "user_b2", "user_c3"].iter().enumerate() {
        let event = verified_event(&format!("msg_{i}"), sample::SampleType::Created, user);
        let outcome = actors.apply_webhook(user.to_string(), event).await.expect("applied");
        assert_eq!(outcome, Outcome::Created);
    }
    assert_eq!(actors.live().await, 3, "one actor per user");

    // Idle for longer than the timeout (checks run at most one timeout apart): all retired.
    assert_eq!(
        live_after(&actors, Duration::from_millis(600)).await,
        0,
        "idle actors stop"
    );

    // The supervisor survived its children's stops and spawns a fresh actor for the next message.
    let event = verified_event("msg_again", sample::SampleType::Deleted, "user_a1");
    assert_eq!(
        actors.apply_webhook("user_a1".into(), event).await,
        Ok(Outcome::Deleted)
    );
    assert_eq!(actors.live().await, 1);
    assert!(actors.drain(Duration::from_secs(5)).await, "drains on shutdown");
}
