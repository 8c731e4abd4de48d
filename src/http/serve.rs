//! Serving the main listener. `axum::serve` has no read timeouts: a client that sends its headers or body slowly,
//! or not at all, would hold a connection and a task forever, and enough of them exhaust file descriptors. So the
//! connections are driven here, with hyper directly:
//!
//! - headers: hyper's `header_read_timeout` closes a connection whose request head is not complete in time (and
//!   so also a keep-alive connection idle for that long);
//! - body: the request body is wrapped in [`Deadline`], which fails once reading it takes longer than the body
//!   timeout; the request is then answered 408 and its connection closed;
//! - connections: a semaphore caps live connections; while every permit is taken one more connection is
//!   accepted but not served, and further ones wait in the kernel's accept backlog. A slot is taken before the
//!   request is known, so a webhook or a health check could wait behind connections that do nothing for anyone:
//!   when a connection is waiting for a slot, idle keep-alive connections are closed and the others close after
//!   their current request, instead of keeping their slot until the header timeout;
//! - long-lived answers: a response marked [`LongLived`] (a change stream, with a budget of its own) gives its
//!   connection's permit back and closes the connection when it ends, so open streams never hold the slots
//!   that webhooks need.
//!
//! On shutdown it stops accepting, lets each connection finish its in-flight request, then waits for them.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::ApiError;
use crate::config::ServerSettings;

/// The listener's bounds, from `[server]`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
}

impl From<&ServerSettings> for Limits {
    fn from(s: &ServerSettings) -> Self {
        Limits {
            header_read_timeout: s.header_read_timeout(),
            body_read_timeout: s.body_read_timeout(),
            max_connections: s.max_connections,
        }
    }
}

/// Marks a response that outlives its request (a Server-Sent Events stream): its connection stops counting
/// against `server.max_connections` and closes when the response ends, so it serves no further request outside
/// the cap. Whoever marks a response bounds such responses another way.
#[derive(Clone, Copy, Debug)]
pub struct LongLived;

/// A connection's permit, until the connection ends or its response turns out [`LongLived`].
struct Slot(std::sync::Mutex<Option<OwnedSemaphorePermit>>);

impl Slot {
    fn release(&self) {
        if let Ok(mut permit) = self.0.lock() {
            permit.take();
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves and every connection has finished.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Bumped to make every connection close once idle: when a slot is needed, and at shutdown.
    let (wind_down, _) = watch::channel(0u64);
    let mut connections = JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Finished connections are reaped here, so the set holds only live ones.
        while connections.try_join_next().is_some() {}
        let free = match permits.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(TryAcquireError::NoPermits) => None,
            Err(TryAcquireError::Closed) => break,
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        // With every slot taken, this one connection waits here unserved (the others in the backlog), and the
        // connections holding a slot wind down: idle keep-alive ones close now, the others after their request.
        let permit = match free {
            Some(permit) => permit,
            None => {
                wind_down.send_modify(|n| *n = n.wrapping_add(1));
                tokio::select! {
                    () = &mut shutdown => break,
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                }
            }
        };
        // Small answers go out at once instead of waiting for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let body_timeout = limits.body_read_timeout;
        // The service lives as long as the connection, and with it the permit (unless released earlier).
        let slot = Arc::new(Slot(std::sync::Mutex::new(Some(permit))));
        let service = hyper::service::service_fn(move |req| handle(router.clone(), req, body_timeout, slot.clone()));
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let mut close = wind_down.subscribe();
        connections.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                done = conn.as_mut() => return log_connection_end(done),
                // Idle: closes now; busy: after the response in flight (a stream runs to its end).
                _ = close.changed() => conn.as_mut().graceful_shutdown(),
            }
            log_connection_end(conn.await);
        });
    }
    drop(listener);
    wind_down.send_modify(|n| *n = n.wrapping_add(1));
    while connections.join_next().await.is_some() {}
    Ok(())
}

fn log_connection_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        // Timeouts and clients going away are routine; nothing for the operator to act on.
        tracing::debug!(error = %e, "connection closed with an error");
    }
}

/// Like `axum::serve`: errors of one connection are skipped; others (too many open files, say) are logged and
/// accepting pauses briefly, so the loop does not spin.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One request through the router, its body bounded by `body_timeout`.
async fn handle(
    router: Router,
    req: hyper::Request<Incoming>,
    body_timeout: Duration,
    slot: Arc<Slot>,
) -> Result<Response, Infallible> {
    let expired = Arc::new(AtomicBool::new(false));
    let req: Request = req.map(|inner| {
        Body::new(Deadline {
            inner,
            timeout: body_timeout,
            sleep: None,
            expired: expired.clone(),
        })
    });
    let mut response = router.oneshot(req).await?;
    if response.extensions().get::<LongLived>().is_some() {
        slot.release();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if !expired.load(Ordering::Relaxed) {
        return Ok(response);
    }
    // The handler saw a body error and answered 400; the real cause is the client's slowness.
    tracing::info!(?body_timeout, "request body not received in time; answered 408");
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        "the request body was not received in time",
    )
    .into_response();
    // The rest of the body may still be on its way: the connection cannot be reused.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Ok(response)
}

/// A request body that fails once reading it takes longer than `timeout`, counted from the first read, so time a
/// handler spends before reading (waiting for the database, say) is not charged to the client.
struct Deadline {
    inner: Incoming,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    expired: Arc<AtomicBool>,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let timeout = this.timeout;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        // Data already received is taken even past the deadline; only waiting for more is cut short.
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(BoxError::from))),
            Poll::Pending => match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.expired.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err("request body read timed out".into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
