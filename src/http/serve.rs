//! The accept side: listening sockets, the accept loop with the TLS handshake, one hyper
//! connection per client, and the drain on shutdown.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http::Request;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use super::{State, limits, router};
use crate::metrics;

/// A socket to serve on.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    pub fn describe(&self) -> String {
        match self {
            Self::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "tcp".into()),
            Self::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix".into()),
        }
    }
}

/// True when every listener only accepts local connections.
pub fn loopback_only(listeners: &[Listener]) -> bool {
    listeners.iter().all(|l| match l {
        Listener::Tcp(t) => t
            .local_addr()
            .map(|a| a.ip().is_loopback())
            .unwrap_or(false),
        Listener::Unix(_) => true,
    })
}

/// Serves one accepted connection (after TLS, if any) until it ends or the server drains.
fn serve_connection<S>(
    state: &Arc<State>,
    graceful: &GracefulShutdown,
    stream: S,
    peer: Option<SocketAddr>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limit = state.config.load().limits.max_connections_per_ip;
    let guard = state
        .counters
        .connection_opened(peer.map(|p| p.ip()), limit);
    let st = state.clone();
    let over_limit = guard.is_none();
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let st = st.clone();
        async move {
            if over_limit {
                return Ok::<_, Infallible>(limits::too_many_connections());
            }
            Ok(router::handle(st, peer, req).await)
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let conn = graceful.watch(conn.into_owned());
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
        drop(guard);
    });
}

/// Accepts on `listener` until `stop` fires.
async fn accept_loop(
    state: Arc<State>,
    listener: Listener,
    graceful: Arc<GracefulShutdown>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = accept(&listener) => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let tls = state.tls.load_full();
        match (&*tls, stream) {
            (Some(acceptor), Accepted::Tcp(tcp)) => {
                let acceptor = acceptor.clone();
                let state = state.clone();
                let graceful = graceful.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(tls_stream)) => serve_connection(&state, &graceful, tls_stream, peer),
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
            (_, Accepted::Tcp(tcp)) => serve_connection(&state, &graceful, tcp, peer),
            (_, Accepted::Unix(unix)) => serve_connection(&state, &graceful, unix, None),
        }
    }
}

enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<(Accepted, Option<SocketAddr>)> {
    match listener {
        Listener::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((Accepted::Tcp(s), Some(peer)))
        }
        Listener::Unix(l) => {
            let (s, _) = l.accept().await?;
            Ok((Accepted::Unix(s), None))
        }
    }
}

/// Serves until `stop` fires, then drains: in-flight tool calls get `grace` to finish, then
/// streams are closed and connections shut down.
pub async fn serve(
    state: Arc<State>,
    listeners: Vec<Listener>,
    stop: CancellationToken,
    grace: Duration,
) {
    let graceful = Arc::new(GracefulShutdown::new());
    let accepting = CancellationToken::new();
    let mut loops = Vec::new();
    for listener in listeners {
        loops.push(tokio::spawn(accept_loop(
            state.clone(),
            listener,
            graceful.clone(),
            accepting.clone(),
        )));
    }
    stop.cancelled().await;
    accepting.cancel();
    for l in loops {
        let _ = l.await;
    }
    crate::systemd::notify::stopping(grace);
    let deadline = tokio::time::Instant::now() + grace;
    let busy = || metrics::running_tool_calls() > 0 || state.counters.posts_in_flight() > 0;
    while busy() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A finished tool call's answer may still be on its way into a response or SSE stream;
    // cancelling now would turn it into an error. Give it a moment (bounded by the grace).
    if !busy() {
        tokio::time::sleep(
            Duration::from_millis(200)
                .min(deadline.saturating_duration_since(tokio::time::Instant::now())),
        )
        .await;
    }
    if metrics::running_tool_calls() > 0 {
        tracing::warn!(
            running = metrics::running_tool_calls(),
            "grace period over; cancelling tool calls"
        );
    }
    state.shutdown.cancel();
    let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| GracefulShutdown::new());
    if tokio::time::timeout(Duration::from_secs(3), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("some connections did not close in time");
    }
}
