//! The HTTP server: one hyper server (HTTP/1.1 and HTTP/2, optional TLS) on every listening
//! socket, carrying rmcp's Streamable HTTP service (stateful and stateless), the legacy
//! HTTP+SSE transport, and `/healthz`, `/readyz`, `/metrics`. It also owns connection limits,
//! idle exit and graceful shutdown.

pub mod access;
pub mod auth;
pub mod legacy_sse;
pub mod router;
pub mod tls;

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService,
    session::{local::LocalSessionManager, never::NeverSessionManager},
};
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{config::Config, metrics, tools::SysomServer};
pub use legacy_sse::Body;

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

type Stateful = StreamableHttpService<SysomServer, LocalSessionManager>;
type Stateless = StreamableHttpService<SysomServer, NeverSessionManager>;

/// Everything a request handler needs. Parts that SIGHUP reloads sit behind `ArcSwap`.
pub struct State {
    pub config: ArcSwap<Config>,
    pub tokens: ArcSwap<auth::Tokens>,
    pub tls: ArcSwap<Option<TlsAcceptor>>,
    server: SysomServer,
    /// Stateful sessions on 2025-11-25 or later (with SSE priming events)...
    stateful: Stateful,
    /// ...and the same sessions for older protocol versions (without them).
    stateful_unprimed: Stateful,
    stateless: Stateless,
    sessions: Arc<LocalSessionManager>,
    /// The sessions of `stateful_unprimed` (rmcp fixes priming per session at its creation).
    sessions_unprimed: Arc<LocalSessionManager>,
    pub legacy: Arc<legacy_sse::Registry>,
    /// Cancelled when the server shuts down: ends every stream and session.
    pub shutdown: CancellationToken,
    connections: AtomicUsize,
    /// MCP POSTs whose response has not been produced yet (drained on shutdown).
    posts: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Whether every listening socket is loopback-only (tokens are optional then).
    loopback_only: bool,
    tools_list_json: String,
}

fn streamable_config(
    config: &Config,
    shutdown: &CancellationToken,
    stateless: bool,
    priming: bool,
) -> StreamableHttpServerConfig {
    // Host and Origin are checked by our router (with the admin's lists), so rmcp's
    // loopback-only default, which 403s every remote client, is switched off.
    StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_sse_keep_alive(Some(config.server.sse_keep_alive))
        .with_max_request_body_bytes(config.server.max_body_bytes)
        .with_cancellation_token(shutdown.child_token())
        .with_legacy_session_mode(!stateless)
        .with_json_response(stateless)
        .with_sse_retry(priming.then_some(SSE_RETRY))
}

/// The `retry:` of SSE priming events (rmcp's default).
const SSE_RETRY: std::time::Duration = std::time::Duration::from_secs(3);

/// The first protocol version whose clients expect SSE priming events (an event with an id and
/// `retry:` but no data); older clients parse the empty data as JSON and fail.
const PRIMING_SINCE: &str = "2025-11-25";

/// The protocol version an `initialize` request asks for, put in the request's extensions by
/// the router (the session has no `MCP-Protocol-Version` header yet).
#[derive(Debug, Clone)]
pub struct InitializeVersion(pub String);

/// Whether a new session gets priming events: by the `MCP-Protocol-Version` header, or the
/// version its `initialize` asks for. Neither: a 2025-03-26 client (no header): no priming.
fn wants_priming<B>(req: &Request<B>) -> bool {
    let version = req
        .headers()
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            req.extensions()
                .get::<InitializeVersion>()
                .map(|v| v.0.as_str())
        });
    // Versions are dates, so text order is time order.
    version.is_some_and(|v| v >= PRIMING_SINCE)
}

impl State {
    pub fn new(
        config: Config,
        tokens: auth::Tokens,
        tls: Option<TlsAcceptor>,
        server: SysomServer,
        loopback_only: bool,
    ) -> Arc<Self> {
        // As rmcp answers pre-2026-07-28 clients: without the newer `resultType` field.
        let mut tools_list = serde_json::to_value(rmcp::model::ListToolsResult::with_all_items(
            server.tool_list(),
        ))
        .expect("the tool list serialises");
        if let Some(obj) = tools_list.as_object_mut() {
            obj.remove("resultType");
        }
        let tools_list_json = tools_list.to_string();
        let shutdown = CancellationToken::new();
        let manager = |priming: bool| {
            let mut manager = LocalSessionManager::default();
            manager.session_config.keep_alive = Some(config.limits.session_idle_timeout);
            manager.session_config.sse_retry = priming.then_some(SSE_RETRY);
            Arc::new(manager)
        };
        let sessions = manager(true);
        let sessions_unprimed = manager(false);
        let factory_server = server.clone();
        let stateful = StreamableHttpService::new(
            move || Ok(factory_server.clone()),
            sessions.clone(),
            streamable_config(&config, &shutdown, false, true),
        );
        // Sessions of pre-2025-11-25 clients, served without priming events.
        let factory_server = server.clone();
        let stateful_unprimed = StreamableHttpService::new(
            move || Ok(factory_server.clone()),
            sessions_unprimed.clone(),
            streamable_config(&config, &shutdown, false, false),
        );
        let factory_server = server.clone();
        let stateless = StreamableHttpService::new(
            move || Ok(factory_server.clone()),
            Arc::new(NeverSessionManager::default()),
            streamable_config(&config, &shutdown, true, true),
        );
        Arc::new(Self {
            config: ArcSwap::from_pointee(config),
            tokens: ArcSwap::from_pointee(tokens),
            tls: ArcSwap::from_pointee(tls),
            server,
            stateful,
            stateful_unprimed,
            stateless,
            sessions,
            sessions_unprimed,
            legacy: Arc::new(legacy_sse::Registry::default()),
            shutdown,
            connections: AtomicUsize::new(0),
            posts: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            loopback_only,
            tools_list_json,
        })
    }

    /// Configured tokens are always enforced. Without tokens, only loopback listeners or an
    /// explicit opt-out serve openly; otherwise every request is refused (fail closed, e.g. if a
    /// reload left the token list empty).
    pub fn auth_required(&self) -> bool {
        !self.tokens.load().is_empty()
            || !(self.loopback_only || self.config.load().auth.allow_unauthenticated)
    }

    pub async fn session_count(&self) -> usize {
        self.legacy.len() + self.streamable_sessions().await
    }

    /// The `tools/list` result, serialised once.
    pub fn tools_list_json(&self) -> &str {
        &self.tools_list_json
    }

    /// Open stateful Streamable HTTP sessions.
    pub async fn streamable_sessions(&self) -> usize {
        self.sessions.sessions.read().await.len()
            + self.sessions_unprimed.sessions.read().await.len()
    }

    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn posts_in_flight(&self) -> usize {
        self.posts.load(Ordering::Relaxed)
    }

    /// Counts an MCP POST as in flight until the guard drops (its response is ready).
    pub fn post_started(&self) -> PostGuard<'_> {
        self.posts.fetch_add(1, Ordering::Relaxed);
        PostGuard(&self.posts)
    }

    async fn at_session_limit(&self) -> bool {
        self.session_count().await >= self.config.load().limits.max_sessions
    }

    async fn stateful<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::fmt::Display,
    {
        let creates_session =
            req.method() == http::Method::POST && !req.headers().contains_key("mcp-session-id");
        if creates_session && self.at_session_limit().await {
            return router::overloaded(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many open MCP sessions; retry later",
            );
        }
        // A session stays with the manager that created it; a new one goes by its version.
        let primed = match req
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            Some(id) => !self
                .sessions_unprimed
                .sessions
                .read()
                .await
                .contains_key(id),
            None => wants_priming(&req),
        };
        let mut svc = if primed {
            self.stateful.clone()
        } else {
            self.stateful_unprimed.clone()
        };
        match tower_service::Service::call(&mut svc, req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }

    async fn stateless<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::fmt::Display,
    {
        let mut svc = self.stateless.clone();
        match tower_service::Service::call(&mut svc, req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }

    async fn open_legacy(self: &Arc<Self>, peer: Option<SocketAddr>) -> Response<Body> {
        if self.at_session_limit().await {
            return router::overloaded(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many open MCP sessions; retry later",
            );
        }
        let config = self.config.load();
        self.legacy.open(
            self.server.for_client(peer),
            &format!("{}/messages", config.server.path),
            config.server.sse_keep_alive,
            config.limits.session_idle_timeout,
            self.shutdown.clone(),
        )
    }

    fn readiness(&self) -> Response<Body> {
        let creds = self.server.credentials_configured();
        let body = serde_json::json!({
            "status": if creds { "ready" } else { "not ready" },
            "config": "loaded",
            "credentials": if creds { "configured" } else { "missing: set ACCESS_KEY_ID/ACCESS_KEY_SECRET or credential files" },
            "tokens": self.tokens.load().len(),
        });
        let status = if creds {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
                Bytes::from(body.to_string()),
            )))
            .expect("static response parts are valid")
    }

    /// Registers a connection from `ip`; `None` when that client is over its limit.
    fn connection_opened(self: &Arc<Self>, ip: Option<IpAddr>) -> Option<ConnectionGuard> {
        if let Some(ip) = ip {
            let limit = self.config.load().limits.max_connections_per_ip;
            let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(ip).or_default();
            if *n >= limit {
                return None;
            }
            *n += 1;
        }
        self.connections.fetch_add(1, Ordering::Relaxed);
        Some(ConnectionGuard {
            state: self.clone(),
            ip,
        })
    }
}

/// See [`State::post_started`].
pub struct PostGuard<'a>(&'a AtomicUsize);

impl Drop for PostGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decrements the connection counters when a connection ends.
struct ConnectionGuard {
    state: Arc<State>,
    ip: Option<IpAddr>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.state.connections.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut map = self.state.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

fn too_many_connections() -> Response<Body> {
    let mut resp = router::overloaded(
        StatusCode::TOO_MANY_REQUESTS,
        "too many connections from your address",
    );
    resp.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp
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
    let guard = state.connection_opened(peer.map(|p| p.ip()));
    let st = state.clone();
    let over_limit = guard.is_none();
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let st = st.clone();
        async move {
            if over_limit {
                return Ok::<_, Infallible>(too_many_connections());
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
    let busy = || metrics::running_tool_calls() > 0 || state.posts_in_flight() > 0;
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
