//! Serves the sandbox's router one connection at a time with hyper, so a handler can make
//! the server hang up without answering: how `drop_rate` loses a response for real.
//!
//! Transport only: it must not know routes, faults or state, and never logs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::Service;

/// Pause after a failed accept (out of file descriptors, most likely) so the loop does not
/// spin while connections close.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Put in every request's extensions: closes the request's connection, unanswered.
#[derive(Debug, Clone)]
pub(crate) struct Hangup(Arc<Notify>);

impl Hangup {
    /// Closes the connection. Never resolves: the connection, and this future with it,
    /// is dropped before any byte of an answer is written.
    pub(crate) async fn close(self) -> Response {
        self.0.notify_one();
        std::future::pending().await
    }
}

/// Accepts connections until `stop`, then closes them all; counts each accepted in
/// `accepted`.
pub(crate) async fn accept(
    listener: TcpListener,
    router: Router,
    accepted: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            next = listener.accept() => match next {
                Ok((stream, _)) => {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(connection(stream, router.clone()));
                }
                Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
            },
        }
    }
    connections.shutdown().await;
}

/// Serves one HTTP/1.1 connection (keep-alive included) until the client leaves or a
/// handler asks to hang up.
async fn connection(stream: TcpStream, router: Router) {
    // Small JSON answers: do not let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let hangup = Arc::new(Notify::new());
    let handle = Hangup(Arc::clone(&hangup));
    let service = service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(handle.clone());
        router.clone().call(request)
    });
    let serving = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        biased;
        // Dropping `serving` drops the socket with nothing written for this request.
        () = hangup.notified() => {}
        _ = serving => {}
    }
}
