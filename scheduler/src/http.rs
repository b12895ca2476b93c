//! Serving a router on a public listener: HTTP/1 with the limits `axum::serve` leaves out.
//!
//! - **Header-read timeout**: a connection that has not sent a whole request head within
//!   [`HttpLimits::header_read_timeout`] is closed (slowloris).
//! - **Body timeout**: a request body that has not arrived within [`HttpLimits::body_timeout`]
//!   fails with 408, so a slow upload cannot hold a connection and its buffer for ever.
//! - **Connection limit**: at most [`HttpLimits::max_connections`] connections are served at
//!   once; further ones wait in the kernel's accept backlog until one closes. HTTP/1 serves one
//!   request at a time per connection, so this also bounds the requests in flight.
//! - **No Nagle delay**: `TCP_NODELAY` on every connection, so streamed events leave at once.
//! - **Graceful stop**: on shutdown, no new connections; open ones finish their request within
//!   [`HttpLimits::drain`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The limits of one listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Longest wait for a request's head (request line and headers).
    pub header_read_timeout: Duration,
    /// Longest wait for a request's whole body.
    pub body_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long open connections get to finish on shutdown.
    pub drain: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(120),
            max_connections: 1024,
            drain: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(limits.body_timeout));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: the listener itself is fine, so
                    // wait a moment rather than spin or stop serving.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Small writes go out at once: an event on a Server-Sent Events stream must not wait
        // for the client's delayed ACK of the one before (Nagle's algorithm: ~40 ms each).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.drain) => tracing::warn!("connections still open after the drain period"),
    }
    Ok(())
}
