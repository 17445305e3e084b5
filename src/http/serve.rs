//! The accept side: listening sockets, the accept loop with the TLS handshake, one hyper
//! connection per client, and the drain on shutdown.
//!
//! One peer cannot hold connections for ever: hyper's `header_read_timeout` bounds slow
//! HTTP/1 headers (and a keep-alive connection's wait for its next request), [`idle`] closes a
//! connection that sends no request in time or has none in flight for the idle timeout (the
//! first bytes and HTTP/2 have no deadline in hyper), a connection over its client's limit is
//! answered 429 and closed, and past the descriptor budget ([`limits::connection_budget`]) a
//! connection is closed unanswered. A spare descriptor is held so that when `accept` fails
//! for want of one (EMFILE), the waiting connection is accepted and closed instead of spinning
//! on it.

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::Request;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::{TcpListener, UnixListener},
};
use tokio_util::sync::CancellationToken;

use super::{State, idle, limits, router};
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

/// How long a connection over its client's limit may take to be answered 429 before it is
/// closed.
const OVER_LIMIT_GRACE: Duration = Duration::from_secs(2);
/// HTTP/2 pings find peers that vanished while a stream was open.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

type BoxedAnswer =
    std::pin::Pin<Box<dyn Future<Output = Result<http::Response<super::Body>, Infallible>> + Send>>;

/// Serves one accepted connection (after TLS, if any) until it ends, goes idle or the server
/// drains. `over_limit`: its client has too many connections; it only gets a 429.
fn serve_connection<S>(
    state: &Arc<State>,
    graceful: &GracefulShutdown,
    stream: S,
    peer: Option<SocketAddr>,
    guard: limits::ConnectionGuard,
    over_limit: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (header_timeout, idle_timeout) = {
        let config = state.config.load();
        (
            config.limits.header_read_timeout,
            config.limits.connection_idle_timeout,
        )
    };
    let activity = idle::Activity::new();
    let st = state.clone();
    let act = activity.clone();
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let st = st.clone();
        let in_flight = act.request();
        // Boxed: hyper keeps the allocation of its service's future for the whole connection,
        // and the router's future is several KiB; a box is freed once the answer is produced
        // (issue 16: an open SSE stream would keep it for as long as it stays open).
        let answer: BoxedAnswer = Box::pin(async move {
            let resp = if over_limit {
                limits::too_many_connections()
            } else {
                router::handle(st, peer, req).await
            };
            Ok::<_, Infallible>(in_flight.until_sent(resp))
        });
        answer
    });
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(!over_limit);
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let watcher = graceful.watcher();
    let conn = async move {
        let (stream, h2) = Prefixed::read_version(stream).await?;
        let io = TokioIo::new(stream);
        // Each protocol's connection boxed at its own size (an enum of both, as hyper_util's
        // auto connection is, takes HTTP/2's size for every HTTP/1 connection).
        if h2 {
            Box::pin(watcher.watch(http2.serve_connection(io, service))).await
        } else {
            Box::pin(watcher.watch(http1.serve_connection(io, service))).await
        }
        .map_err(std::io::Error::other)
    };
    let first = if over_limit {
        header_timeout.min(OVER_LIMIT_GRACE)
    } else {
        header_timeout
    };
    tokio::spawn(async move {
        tokio::select! {
            ended = conn => if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            },
            () = activity.expired(first, idle_timeout) => {
                tracing::debug!(?peer, "closing an idle connection");
            }
            () = over_limit_deadline(over_limit) => {
                tracing::debug!(?peer, "closing a connection over its client's limit");
            }
        }
        drop(guard);
    });
}

async fn over_limit_deadline(over_limit: bool) {
    if over_limit {
        tokio::time::sleep(OVER_LIMIT_GRACE).await;
    } else {
        std::future::pending::<()>().await;
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection and the first bytes read from it to tell HTTP/2's preface from HTTP/1, as
/// hyper_util's auto builder does; but a read gets those bytes *and* whatever else has arrived
/// (the auto builder hands back only its prefix, so hyper's next read found its 8 KiB buffer
/// short by those bytes and doubled it: 16 KiB per connection, issue 16).
struct Prefixed<S> {
    pre: [u8; H2_PREFACE.len()],
    start: usize,
    end: usize,
    /// An error of the read that followed the prefix, for the next read.
    error: Option<std::io::Error>,
    inner: S,
}

impl<S: AsyncRead + Unpin> Prefixed<S> {
    /// Reads until the bytes are not HTTP/2's preface (or the connection ends): HTTP/1, or
    /// the whole preface: HTTP/2 (`true`).
    async fn read_version(mut inner: S) -> std::io::Result<(Self, bool)> {
        let mut pre = [0u8; H2_PREFACE.len()];
        let mut end = 0;
        let mut h2 = true;
        while end < pre.len() {
            let n = inner.read(&mut pre[end..]).await?;
            if n == 0 || pre[end..end + n] != H2_PREFACE[end..end + n] {
                end += n;
                h2 = false;
                break;
            }
            end += n;
        }
        let prefixed = Self {
            pre,
            start: 0,
            end,
            error: None,
            inner,
        };
        Ok((prefixed, h2))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(e) = this.error.take() {
            return Poll::Ready(Err(e));
        }
        if this.start == this.end {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = (this.end - this.start).min(buf.remaining());
        buf.put_slice(&this.pre[this.start..this.start + n]);
        this.start += n;
        if this.start == this.end && buf.remaining() > 0 {
            // Whatever else has arrived, in the same read; nothing yet is no error.
            if let Poll::Ready(Err(e)) = Pin::new(&mut this.inner).poll_read(cx, buf) {
                this.error = Some(e);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Registers a connection against the limits; `None` if it is to be closed unanswered.
fn admit(
    state: &State,
    peer: Option<SocketAddr>,
    budget: usize,
) -> Option<(limits::ConnectionGuard, bool)> {
    let per_ip = state.config.load().limits.max_connections_per_ip;
    match state
        .counters
        .try_connection_opened(peer.map(|p| p.ip()), per_ip, budget)
    {
        Ok(guard) => Some((guard, false)),
        Err(limits::OverLimit::PerIp(guard)) => Some((guard, true)),
        Err(limits::OverLimit::Total) => None,
    }
}

/// A descriptor held in reserve for accepting (and closing) a connection when the process has
/// none left.
struct SpareFd(Option<std::fs::File>);

impl SpareFd {
    fn new() -> Self {
        Self(std::fs::File::open("/dev/null").ok())
    }

    /// Frees the spare so that one `accept` can succeed; `false` if there was none.
    fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    fn restore(&mut self) {
        if self.0.is_none() {
            self.0 = std::fs::File::open("/dev/null").ok();
        }
    }
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_errno) if libc_errno == nix::libc::EMFILE || libc_errno == nix::libc::ENFILE
    )
}

/// Accepts on `listener` until `stop` fires.
async fn accept_loop(
    state: Arc<State>,
    listener: Listener,
    graceful: Arc<GracefulShutdown>,
    stop: CancellationToken,
    budget: usize,
) {
    let mut spare = SpareFd::new();
    let mut last_warning: Option<tokio::time::Instant> = None;
    let mut warn = |message: &str, e: Option<&std::io::Error>| {
        // At most one warning every ten seconds: a flood must not flood the journal too.
        if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            last_warning = Some(tokio::time::Instant::now());
            match e {
                Some(e) => tracing::warn!(error = %e, budget, "{message}"),
                None => tracing::warn!(budget, "{message}"),
            }
        }
    };
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = accept(&listener) => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) if out_of_descriptors(&e) && spare.release() => {
                // Take the waiting connection with the spare descriptor and close it, so that
                // it neither waits in the queue nor makes every accept fail again at once.
                warn("out of file descriptors; closing new connections", Some(&e));
                drop(accept(&listener).await);
                spare.restore();
                continue;
            }
            Err(e) => {
                // EMFILE without a spare, and friends: back off instead of spinning.
                warn("accept failed", Some(&e));
                tokio::time::sleep(Duration::from_millis(100)).await;
                spare.restore();
                continue;
            }
        };
        let Some((guard, over_limit)) = admit(&state, peer, budget) else {
            warn(
                "connection limit reached (descriptor budget); closing new connections",
                None,
            );
            continue;
        };
        let tls = state.tls.load_full();
        match (&*tls, stream) {
            (Some(acceptor), Accepted::Tcp(tcp)) => {
                let acceptor = acceptor.clone();
                let state = state.clone();
                let graceful = graceful.clone();
                let handshake = state.config.load().limits.header_read_timeout;
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                        Ok(Ok(tls_stream)) => {
                            serve_connection(&state, &graceful, tls_stream, peer, guard, over_limit)
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
            (_, Accepted::Tcp(tcp)) => {
                serve_connection(&state, &graceful, tcp, peer, guard, over_limit)
            }
            (_, Accepted::Unix(unix)) => {
                serve_connection(&state, &graceful, unix, None, guard, over_limit)
            }
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
    let budget = limits::connection_budget();
    tracing::debug!(budget, "connection budget from the descriptor limit");
    let mut loops = Vec::new();
    for listener in listeners {
        loops.push(tokio::spawn(accept_loop(
            state.clone(),
            listener,
            graceful.clone(),
            accepting.clone(),
            budget,
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
            "grace period over; answering the running tool calls with 'server shutting down'"
        );
        // Their error answers go out through the normal response path; give them a moment
        // (bounded) before the transports close.
        crate::tools::shutdown::grace_over();
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        while busy() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
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

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn a_read_after_the_version_prefix_returns_everything_that_has_arrived() {
        let request = b"GET /mcp/unified HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(request).await.unwrap();
        let (mut io, h2) = Prefixed::read_version(server).await.unwrap();
        assert!(!h2);
        // hyper reads into an 8 KiB buffer: the whole request must come in one read, or its
        // next read doubles the buffer.
        let mut buf = vec![0u8; 8192];
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], request);
        drop(client);
        assert_eq!(io.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn the_http2_preface_is_recognised_even_a_byte_at_a_time() {
        let (mut client, server) = tokio::io::duplex(1024);
        let reader = tokio::spawn(Prefixed::read_version(server));
        for b in H2_PREFACE {
            client.write_all(&[*b]).await.unwrap();
            tokio::task::yield_now().await;
        }
        client.write_all(b"\0\0\0\x04").await.unwrap();
        let (mut io, h2) = reader.await.unwrap().unwrap();
        assert!(h2);
        let mut buf = [0u8; 64];
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], [H2_PREFACE, b"\0\0\0\x04"].concat());
        let (_client, server) = tokio::io::duplex(64);
        drop(_client);
        let (_, h2) = Prefixed::read_version(server).await.unwrap();
        assert!(!h2, "a connection that ends at once is not HTTP/2");
    }
}
