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
use crate::clerk::{ClerkClient, JwtVerifier};
use crate::config::Settings;
use crate::http::{router, AppState};
use crate::store::writer::Writer;
use crate::store::{Db, Store, StoreError};
use crate::webhook::Verifier;

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
            StartError::Bind { .. } | StartError::Secret(_) | StartError::Adopt(_) => 78,
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

        let db = Arc::new(Db::connect(&settings.database).await.map_err(StartError::Database)?);
        db.migrate().await.map_err(|e| match e {
            StoreError::Adopt(msg) => StartError::Adopt(msg),
            other => StartError::Migrate(other),
        })?;

        let clerk = ClerkClient::new(&settings.clerk).map_err(|e| StartError::Clerk(e.to_string()))?;
        if !settings.clerk.secret_key.is_set() {
            tracing::warn!("CLERK_SECRET_KEY is not set: users missing from the database cannot be fetched from Clerk");
        }
        let jwt = JwtVerifier::new(&settings.clerk, clerk.clone()).map_err(|e| StartError::Clerk(e.to_string()))?;
        let cache = UserCache::new(&settings.cache);
        let (writer, writer_task) = Writer::spawn(db.clone(), settings.writer.max_batch);
        let (actors, supervisor_task) = Actors::start(UserArgs {
            db: db.clone(),
            writer: writer.clone(),
            cache: cache.clone(),
            clerk,
            idle_timeout: Duration::from_millis(settings.actors.idle_timeout_ms),
            hard_delete: settings.hard_delete(),
        })
        .await
        .map_err(|e| StartError::Actors(e.to_string()))?;

        let state = AppState {
            db: db.clone(),
            writer,
            actors,
            verifier,
            cache,
            jwt: Arc::new(jwt),
            api_tokens: Arc::new(settings.api.tokens.clone()),
            retry_after_secs: settings.server.retry_after_secs,
        };
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
            ..
        } = self;
        let timeout = settings.server.shutdown_timeout();
        let pruner = tokio::spawn(prune_deliveries(
            db.clone(),
            Duration::from_secs(settings.webhooks.delivery_retention_hours * 3600),
            Duration::from_secs(settings.webhooks.prune_interval_secs),
        ));
        let actors = state.actors.clone();
        let upkeep = tokio::spawn(upkeep(metrics.clone(), state.cache.clone(), db.clone()));
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

        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let graceful = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stopping_tx.send(());
        };
        let server = crate::http::serve::serve(listener, router(state), (&settings.server).into(), graceful);
        let deadline = async move {
            match stopping_rx.await {
                Ok(()) => tokio::time::sleep(timeout).await,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            served = server => served.map_err(StartError::Serve)?,
            () = deadline => tracing::warn!(?timeout, "in-flight requests did not finish in time; stopping anyway"),
        }

        pruner.abort();
        upkeep.abort();
        metrics_server.abort();
        // Queued actor work and the writer share one more shutdown period.
        let until = tokio::time::Instant::now() + timeout;
        if !actors.drain(timeout).await {
            tracing::warn!("user actors did not drain in time");
        }
        drop(actors);
        if tokio::time::timeout_at(until, supervisor_task).await.is_err() {
            tracing::warn!("the supervisor did not stop in time");
        }
        // Every writer handle is gone with the router and the actors: the writer drains its queue and ends.
        if tokio::time::timeout_at(until, writer_task).await.is_err() {
            tracing::warn!("the writer did not finish in time");
        }
        db.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Keeps the exporter's histograms bounded and the gauges that are sampled rather than pushed current.
async fn upkeep(handle: PrometheusHandle, cache: UserCache, db: Arc<Db>) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        handle.run_upkeep();
        cache.report().await;
        let ready = tokio::time::timeout(Duration::from_secs(4), db.check_ready()).await;
        let ready = matches!(ready, Ok(Ok(())));
        metrics::gauge!(crate::telemetry::metrics::READY).set(if ready { 1.0 } else { 0.0 });
    }
}

/// Forgets processed svix ids after the retention, keeping the deliveries table small.
async fn prune_deliveries(db: Arc<Db>, retention: Duration, interval: Duration) {
    let mut every = tokio::time::interval(interval);
    loop {
        every.tick().await;
        match db.prune_deliveries(retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "pruned old delivery records"),
            Err(e) => tracing::warn!(error = %e, "could not prune delivery records"),
        }
    }
}
