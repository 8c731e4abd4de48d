//! Users' actors: created on demand, gone when idle, one job at a time per user, drained on shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http::HeaderMap;
use svix::webhooks::Webhook;

use super::*;
use crate::config::{DatabaseSettings, DatabaseUrl};
use crate::store::writer::{Writer, WriterOptions};
use crate::store::{Db, SqliteStore};
use crate::webhook::{sample, Verifier};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn verified_event(svix_id: &str, kind: sample::SampleType, user_id: &str) -> VerifiedEvent {
    verified_body(svix_id, sample::event(kind, user_id))
}

fn verified_body(svix_id: &str, body: serde_json::Value) -> VerifiedEvent {
    let body = body.to_string();
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

async fn start(dir: &std::path::Path) -> (Actors, Arc<Db>) {
    let settings = DatabaseSettings {
        url: DatabaseUrl::new(format!("sqlite://{}", dir.join("a.db").display())),
        max_connections: 2,
        acquire_timeout_ms: 2000,
        busy_timeout_ms: 2000,
        lock_timeout_ms: 2000,
        statement_timeout_ms: 2000,
    };
    let db = Arc::new(Db::Sqlite(SqliteStore::connect(&settings).await.expect("connect")));
    db.migrate(false).await.expect("migrate");
    let options = WriterOptions {
        max_batch: 16,
        in_flight: 1,
        store_payload: true,
    };
    let (writer, _writer_task) = Writer::spawn(db.clone(), options);
    let clerk_settings = crate::config::Settings::load(None, &|_| None).expect("defaults").clerk;
    let args = UserArgs {
        db: db.clone(),
        writer,
        cache: crate::cache::UserCache::new(&crate::config::CacheSettings {
            capacity: 100,
            ttl_secs: 60,
            not_found_ttl_secs: 30,
        }),
        clerk: crate::clerk::ClerkClient::new(&clerk_settings).expect("client"),
        hard_delete: false,
    };
    let (actors, _shards) = Actors::start(args, 2).await.expect("shards start");
    (actors, db)
}

type Answer = tokio::sync::oneshot::Receiver<Result<Outcome, WriteError>>;

/// Sends `user`'s `n`th webhook (created first, then updated, each newer) to its shard without waiting: the order of
/// these calls is the order the shard receives them.
fn queue(actors: &Actors, user: &str, n: i64, svix_id: &str) -> Answer {
    let kind = if n == 0 {
        sample::SampleType::Created
    } else {
        sample::SampleType::Updated
    };
    let mut body = sample::event(kind, user);
    body["data"]["updated_at"] = serde_json::json!(1_700_000_000_000_i64 + n);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job = Job::Webhook {
        event: Box::new(verified_body(svix_id, body)),
        reply: tx.into(),
    };
    send(actors, user, job);
    rx
}

/// Hands `job` to `user`'s shard without waiting for it.
fn send(actors: &Actors, user: &str, job: Job) {
    actors
        .shard(user)
        .send_message(ShardMsg::Run {
            clerk_id: user.into(),
            job,
        })
        .expect("shard running");
}

#[tokio::test]
async fn a_users_actor_exists_only_while_it_has_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (actors, _db) = start(dir.path()).await;
    for (i, user) in ["user_a1", "user_b2", "user_c3"].iter().enumerate() {
        let event = verified_event(&format!("msg_{i}"), sample::SampleType::Created, user);
        let outcome = actors.apply_webhook(user.to_string(), event).await.expect("applied");
        assert_eq!(outcome, Outcome::Created);
    }
    // The actor retires once it reports idle, just after the answer.
    let mut live = usize::MAX;
    for _ in 0..50 {
        live = actors.live().await;
        if live == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(live, 0, "an idle user keeps no actor");

    let event = verified_event("msg_again", sample::SampleType::Deleted, "user_a1");
    assert_eq!(
        actors.apply_webhook("user_a1".into(), event).await,
        Ok(Outcome::Deleted)
    );
    assert!(actors.running());
    assert!(actors.drain(Duration::from_secs(5)).await, "drains on shutdown");
}

#[tokio::test]
async fn one_users_jobs_run_one_at_a_time_in_arrival_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (actors, _db) = start(dir.path()).await;
    let user = "user_serial1";
    // Queued in this order without waiting: if two ran at once, a newer one could commit first and make an
    // older one stale, or two could both insert.
    let mut answers = Vec::new();
    for i in 0..20 {
        answers.push(queue(&actors, user, i, &format!("msg_serial_{i}")));
    }
    let mut outcomes = Vec::new();
    for rx in answers {
        outcomes.push(rx.await.expect("answered").expect("committed"));
    }
    assert_eq!(outcomes[0], Outcome::Created, "{outcomes:?}");
    assert!(
        outcomes[1..].iter().all(|o| *o == Outcome::Updated),
        "every later event is newer and applies in order: {outcomes:?}"
    );
}

/// Waits (up to a second) for every user's actor to retire.
async fn retired(actors: &Actors) -> usize {
    let mut live = usize::MAX;
    for _ in 0..100 {
        live = actors.live().await;
        if live == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    live
}

#[tokio::test]
async fn a_panic_in_one_users_job_fails_that_actor_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (actors, _db) = start(dir.path()).await;
    let user = "user_panics1";
    let send = |job: Job| send(&actors, user, job);
    // A webhook queued behind the panicking job loses its answer (its caller answers 503; Clerk retries).
    send(Job::Panic);
    let (tx, queued) = tokio::sync::oneshot::channel();
    send(Job::Webhook {
        event: Box::new(verified_event("msg_behind", sample::SampleType::Created, user)),
        reply: tx.into(),
    });
    assert!(
        queued.await.is_err(),
        "the queued job's reply port went with the failed actor"
    );
    assert_eq!(retired(&actors).await, 0, "the failed actor left its shard's map");
    assert!(actors.running(), "the shard survived its child's failure");
    // The same user's next job gets a new actor; another user was never affected.
    let event = verified_event("msg_after", sample::SampleType::Created, user);
    assert_eq!(actors.apply_webhook(user.into(), event).await, Ok(Outcome::Created));
    let event = verified_event("msg_other", sample::SampleType::Created, "user_calm1");
    assert_eq!(
        actors.apply_webhook("user_calm1".into(), event).await,
        Ok(Outcome::Created)
    );
    assert!(actors.drain(Duration::from_secs(5)).await, "drains on shutdown");
}

#[tokio::test]
async fn a_burst_over_many_users_is_answered_in_order_and_every_actor_retires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (actors, _db) = start(dir.path()).await;
    // 40 users, 10 events each, all sent at once: actors are spawned, fed while they run, asked to retire while
    // jobs are still in their mailboxes (the shard must refuse those), and retired at the end.
    let mut answers = Vec::new();
    for n in 0..10_i64 {
        for u in 0..40 {
            let user = format!("user_burst{u}");
            answers.push((n, queue(&actors, &user, n, &format!("msg_burst_{u}_{n}"))));
            // Let some actors finish and ask to retire between sends.
            if u % 7 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    for (n, answer) in answers {
        let outcome = answer.await.expect("answered").expect("committed");
        // Sent in order, so each user's events reach its actor in order: none is stale.
        let expected = if n == 0 { Outcome::Created } else { Outcome::Updated };
        assert_eq!(outcome, expected, "event {n}");
    }
    assert_eq!(retired(&actors).await, 0, "every user's actor retired");
    assert!(actors.drain(Duration::from_secs(5)).await, "drains on shutdown");
}
