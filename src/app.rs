//! Building and running the daemon.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::actors::{Actors, UserArgs};
use crate::cache::UserCache;
use crate::clerk::pin::{InstancePin, PinError};
use crate::clerk::{ClerkClient, JwtVerifier};
use crate::config::Settings;
use crate::http::{router, AppState, Shared};
use crate::store::writer::{Writer, WriterOptions};
use crate::store::{Db, StoreError};
use crate::webhook::Verifier;

mod upkeep;

use upkeep::{prune_changes, prune_deliveries, upkeep};

/// Why the daemon could not start (or stopped); [`StartError::exit_code`] maps it to a process exit code.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{key}: cannot listen on {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("database.url (DATABASE_URL): {0}")]
    Database(StoreError),
    #[error("{0}")]
    Adopt(String),
    #[error("migrations failed: {0}")]
    Migrate(StoreError),
    #[error("clerk.webhook_signing_secret (CLERK_WEBHOOK_SIGNING_SECRET): {0}")]
    Secret(String),
    #[error("clerk: {0}")]
    Clerk(String),
    /// CLERK_SECRET_KEY belongs to another Clerk instance than the one the database mirrors.
    #[error("clerk.secret_key (CLERK_SECRET_KEY): {0}")]
    Pin(String),
    #[error("actor system: {0}")]
    Actors(String),
    #[error("server: {0}")]
    Serve(std::io::Error),
}

impl StartError {
    /// 78 (EX_CONFIG) for configuration the operator must fix, 69 (EX_UNAVAILABLE) for an unreachable
    /// database, 70 (EX_SOFTWARE) otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Bind { .. } | StartError::Secret(_) | StartError::Adopt(_) | StartError::Pin(_) => 78,
            StartError::Database(_) => 69,
            _ => 70,
        }
    }
}

/// A built daemon: listener bound, database migrated, actors and writer running.
pub struct Application {
    listener: TcpListener,
    port: u16,
    metrics_listener: TcpListener,
    metrics_port: u16,
    metrics: PrometheusHandle,
    settings: Settings,
    db: Arc<Db>,
    state: AppState,
    writer_task: JoinHandle<()>,
    supervisor_task: JoinHandle<()>,
    /// The feed follower; stopped at the shutdown signal, which also ends the open change streams.
    feed_task: Option<JoinHandle<()>>,
    clerk: Arc<ClerkClient>,
}

impl Application {
    /// Binds the listener first (so a busy address fails fast), then connects, migrates and starts the actors.
    pub async fn build(settings: Settings) -> Result<Application, StartError> {
        let addr = settings.server.listen;
        let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind {
            key: "server.listen (CLERK_SYNC_LISTEN)",
            addr,
            source,
        })?;
        let port = listener.local_addr().map_err(StartError::Serve)?.port();
        let metrics_addr = settings.server.metrics_listen;
        let metrics_listener = TcpListener::bind(metrics_addr)
            .await
            .map_err(|source| StartError::Bind {
                key: "server.metrics_listen (CLERK_SYNC_METRICS_LISTEN)",
                addr: metrics_addr,
                source,
            })?;
        let metrics_port = metrics_listener.local_addr().map_err(StartError::Serve)?.port();
        let metrics = crate::telemetry::metrics::install();

        let verifier = match settings.clerk.webhook_signing_secret.is_set() {
            true => Some(Arc::new(
                Verifier::new(settings.clerk.webhook_signing_secret.expose())
                    .map_err(|e| StartError::Secret(e.to_string()))?,
            )),
            false => {
                tracing::warn!(
                    "CLERK_WEBHOOK_SIGNING_SECRET is not set: webhooks will be answered with 503 until it is configured"
                );
                None
            }
        };

        let mut db = Db::connect(&settings.database).await.map_err(StartError::Database)?;
        db.set_feed(settings.changes.enabled);
        let db = Arc::new(db);
        db.migrate(settings.supabase.rls).await.map_err(|e| match e {
            StoreError::Adopt(msg) => StartError::Adopt(msg),
            other => StartError::Migrate(other),
        })?;

        let clerk = ClerkClient::new(&settings.clerk).map_err(|e| StartError::Clerk(e.to_string()))?;
        let pin = InstancePin::load(db.clone()).await.map_err(StartError::Database)?;
        if settings.clerk.secret_key.is_set() {
            check_pin(&pin, &clerk).await?;
        } else {
            tracing::warn!("CLERK_SECRET_KEY is not set: users missing from the database cannot be fetched from Clerk");
        }
        let jwt = JwtVerifier::new(&settings.clerk, clerk.clone()).map_err(|e| StartError::Clerk(e.to_string()))?;
        let cache = UserCache::new(&settings.cache);
        // SQLite has one writer: batches in flight would only wait on each other's file lock.
        let in_flight = if settings.database.is_postgres() {
            settings.writer.in_flight
        } else {
            1
        };
        let options = WriterOptions {
            max_batch: settings.writer.max_batch,
            in_flight,
            store_payload: settings.sync.store_payload,
        };
        let (writer, writer_task) = Writer::spawn(db.clone(), options);
        let args = UserArgs {
            db: db.clone(),
            writer: writer.clone(),
            cache: cache.clone(),
            clerk: clerk.clone(),
            hard_delete: settings.hard_delete(),
        };
        let (actors, supervisor_task) = Actors::start(args, settings.actors.shards)
            .await
            .map_err(|e| StartError::Actors(e.to_string()))?;

        // Every replica follows the feed, to drop what another one changed from its cache.
        let (feed, feed_task) = if settings.changes.enabled {
            let (feed, task) = crate::feed::follow(
                db.clone(),
                actors.clone(),
                settings.changes.poll_interval(),
                std::future::pending(),
            );
            (Some(feed), Some(task))
        } else {
            (None, None)
        };
        let state = AppState::new(Shared {
            db: db.clone(),
            writer,
            actors,
            verifier,
            cache,
            jwt: Arc::new(jwt),
            api_tokens: Arc::new(settings.api.tokens.clone()),
            retry_after_secs: settings.server.retry_after_secs,
            answer_timeout: settings.webhooks.answer_timeout(),
            counters: crate::http::Counters::new(),
            feed,
            streams: Arc::new(tokio::sync::Semaphore::new(settings.changes.max_streams)),
            pin,
            refusals: Arc::new(crate::store::refusals::Refusals::new()),
        });
        Ok(Application {
            listener,
            port,
            metrics_listener,
            metrics_port,
            metrics,
            settings,
            db,
            state,
            writer_task,
            supervisor_task,
            feed_task,
            clerk,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Port of the metrics listener (`GET /metrics`).
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests and queued actor work
    /// finish (bounded by `server.shutdown_timeout_ms`), and closes the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let Application {
            listener,
            metrics_listener,
            metrics,
            settings,
            db,
            state,
            writer_task,
            supervisor_task,
            feed_task,
            clerk,
            ..
        } = self;
        let timeout = settings.server.shutdown_timeout();
        let pruner = tokio::spawn(prune_deliveries(
            db.clone(),
            Duration::from_secs(settings.webhooks.delivery_retention_hours * 3600),
            Duration::from_secs(settings.webhooks.prune_interval_secs),
        ));
        let changes_pruner = settings.changes.enabled.then(|| {
            tokio::spawn(prune_changes(
                db.clone(),
                settings.changes.retention(),
                Duration::from_secs(settings.changes.prune_interval_secs),
            ))
        });
        let forwarder = match &state.feed {
            Some(feed) => match crate::feed::forward::Forwarder::new(db.clone(), feed.clone(), &settings.forward) {
                Ok(forwarder) => forwarder.map(|f| tokio::spawn(f.run())),
                Err(e) => {
                    tracing::error!(error = e, "forwarding is off");
                    None
                }
            },
            None => None,
        };
        let actors = state.actors.clone();
        let reconcile = match settings.reconcile.every() {
            Ok(Some(every)) if settings.clerk.secret_key.is_set() => {
                let backfill = crate::backfill::Backfill {
                    db: db.clone(),
                    clerk: clerk.clone(),
                    cache: Some(state.cache.clone()),
                    store_payload: settings.sync.store_payload,
                    brake: crate::backfill::Brake::from(&settings.prune),
                    pin: state.pin.clone(),
                };
                Some(tokio::spawn(crate::backfill::reconcile::every(
                    backfill,
                    every,
                    settings.reconcile.prune,
                )))
            }
            Ok(Some(_)) => {
                tracing::warn!("reconcile.interval is set but CLERK_SECRET_KEY is not: reconciliation is off");
                None
            }
            _ => None,
        };
        let refusals = state.refusals.clone();
        let upkeep = tokio::spawn(upkeep(
            metrics.clone(),
            state.cache.clone(),
            db.clone(),
            state.pin.clone(),
            refusals.clone(),
        ));
        let metrics_server = tokio::spawn(async move {
            let router = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || std::future::ready(metrics.render())),
            );
            if let Err(e) = axum::serve(metrics_listener, router).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
        tracing::info!(
            listen = %listener.local_addr().map_err(StartError::Serve)?,
            backend = settings.database.backend(),
            "clerk-sync is serving"
        );

        // One deadline for the whole shutdown, counted from the signal: in-flight requests, then queued actor
        // work and the writer share what is left of it.
        let (until_tx, until_rx) = tokio::sync::watch::channel(None::<tokio::time::Instant>);
        let feed_stop = feed_task.as_ref().map(JoinHandle::abort_handle);
        let graceful = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            // Open change streams end with the follower; they would otherwise hold the shutdown to its deadline.
            if let Some(feed) = feed_stop {
                feed.abort();
            }
            let _ = until_tx.send(Some(tokio::time::Instant::now() + timeout));
        };
        let server = crate::http::serve::serve(listener, router(state), (&settings.server).into(), graceful);
        let mut stopping = until_rx.clone();
        let deadline = async move {
            match stopping.wait_for(Option::is_some).await.map(|until| *until) {
                Ok(Some(until)) => tokio::time::sleep_until(until).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            served = server => served.map_err(StartError::Serve)?,
            () = deadline => tracing::warn!(?timeout, "in-flight requests did not finish in time; stopping anyway"),
        }
        let until = (*until_rx.borrow()).unwrap_or_else(|| tokio::time::Instant::now() + timeout);

        pruner.abort();
        upkeep.abort();
        for task in [changes_pruner, forwarder, feed_task].into_iter().flatten() {
            task.abort();
        }
        if let Some(reconcile) = reconcile {
            reconcile.abort();
        }
        metrics_server.abort();
        if !actors
            .drain(until.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            tracing::warn!("user actors did not drain in time");
        }
        drop(actors);
        if tokio::time::timeout_at(until, supervisor_task).await.is_err() {
            tracing::warn!("the shards did not stop in time");
        }
        // Every writer handle is gone with the router and the user actors: the writer drains its queue and ends.
        if tokio::time::timeout_at(until, writer_task).await.is_err() {
            tracing::warn!("the writer did not finish in time");
        }
        // Refusals counted since the last write would otherwise be lost with the process; within the same deadline.
        match tokio::time::timeout_at(until, refusals.write(&db, true)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not record refused webhooks"),
            Err(_) => tracing::warn!("no time left to record refused webhooks"),
        }
        db.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// A serve whose key belongs to another instance than the database mirrors does not start. When Clerk cannot be
/// asked now, the reconcile (and any backfill) asks before it writes; webhooks are checked by their own
/// `instance_id`, and the fallback needs no check (ids are unique across instances).
async fn check_pin(pin: &InstancePin, clerk: &ClerkClient) -> Result<(), StartError> {
    match tokio::time::timeout(Duration::from_secs(10), pin.check_key(clerk)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e @ (PinError::OtherInstance { .. } | PinError::OtherEnvironment { .. }))) => {
            Err(StartError::Pin(e.to_string()))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot check which Clerk instance CLERK_SECRET_KEY belongs to now; a reconcile checks before it writes");
            Ok(())
        }
        Err(_) => {
            tracing::warn!("Clerk did not say within 10 s which instance CLERK_SECRET_KEY belongs to; a reconcile checks before it writes");
            Ok(())
        }
    }
}
