//! The HTTP server: one hyper server (HTTP/1.1 and HTTP/2, optional TLS) on every listening
//! socket, carrying rmcp's Streamable HTTP service (stateful and stateless), the legacy
//! HTTP+SSE transport, and `/healthz`, `/readyz`, `/metrics`. The shared [`State`] lives here;
//! accepting and draining is `serve`, limits are `limits`, rmcp's wire quirks `rmcp_compat`.

pub(crate) mod access;
pub(crate) mod idle;
pub(crate) mod legacy_sse;
pub(crate) mod limits;
pub(crate) mod rmcp_compat;
pub(crate) mod router;
pub(crate) mod serve;
pub(crate) mod session_fast;
pub(crate) mod session_load;
pub(crate) mod stateless_fast;
pub(crate) mod task_listen;
pub(crate) mod tls;
pub(crate) mod trim;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService,
    session::{local::LocalSessionManager, never::NeverSessionManager},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{
        Principal, Scopes,
        authenticate::{AuthFailure, Authenticator},
    },
    config::Config,
    tools::SysomServer,
};
pub(crate) use legacy_sse::Body;
pub(crate) use serve::{Listener, loopback_only, serve};

type Stateful = StreamableHttpService<SysomServer, LocalSessionManager>;
type Stateless = StreamableHttpService<SysomServer, NeverSessionManager>;

/// Everything a request handler needs. Parts that SIGHUP reloads sit behind `ArcSwap`.
pub struct State {
    pub config: ArcSwap<Config>,
    /// Accepted credentials: the tokens file and the OAuth issuer.
    pub auth: ArcSwap<Authenticator>,
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
    /// Connections, POSTs in flight, sessions being opened.
    pub counters: Arc<limits::Counters>,
    /// Whether every listening socket is loopback-only (tokens are optional then).
    loopback_only: bool,
    /// The `tools/list` result for each set of scopes (see [`Scopes::index`]), serialised on
    /// its first use, not at start: the cold start would otherwise pay for every scope set of
    /// both eras (16 serialisations of a 34 KB list) before the first answer (issue 16).
    tools_list_json: Vec<OnceLock<Bytes>>,
    /// ...and as the 2026-07-28 protocol has it (with `resultType` and caching hints).
    tools_list_json_2026: Vec<OnceLock<Bytes>>,
    /// Who opened each stateful Streamable HTTP session: only that principal may use or
    /// delete it.
    owners: Mutex<HashMap<String, Owner>>,
    /// The requests in flight of each stateful session (duplicate ids, per-session bounds).
    in_flight: Arc<session_load::Sessions>,
}

/// The principal that opened a stateful session, and when a request of the session last
/// reached rmcp (which resets rmcp's idle timer; see [`session_fast`]).
struct Owner {
    principal: String,
    forwarded: std::time::Instant,
}

/// The `Mcp-Session-Id` header of a request or response, if it is text.
fn session_id(headers: &http::HeaderMap) -> Option<&str> {
    headers.get("mcp-session-id").and_then(|v| v.to_str().ok())
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
        .with_sse_retry(priming.then_some(rmcp_compat::SSE_RETRY))
}

impl State {
    pub fn new(
        config: Config,
        auth: Authenticator,
        tls: Option<TlsAcceptor>,
        server: SysomServer,
        loopback_only: bool,
    ) -> Arc<Self> {
        // Over HTTP, a call carries the principal its request authenticated as; nothing else.
        let server = server.for_http();
        server.set_limits(&config.limits);
        let tools_list_json = Scopes::every().map(|_| OnceLock::new()).collect();
        let tools_list_json_2026 = Scopes::every().map(|_| OnceLock::new()).collect();
        let shutdown = CancellationToken::new();
        let manager = |priming: bool| {
            let mut manager = LocalSessionManager::default();
            manager.session_config.keep_alive = Some(config.limits.session_idle_timeout);
            manager.session_config.sse_retry = priming.then_some(rmcp_compat::SSE_RETRY);
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
        let legacy = Arc::new(legacy_sse::Registry::with_route(
            config.server.route_id.clone(),
        ));
        Arc::new(Self {
            config: ArcSwap::from_pointee(config),
            auth: ArcSwap::from_pointee(auth),
            tls: ArcSwap::from_pointee(tls),
            server,
            stateful,
            stateful_unprimed,
            stateless,
            sessions,
            sessions_unprimed,
            legacy,
            shutdown,
            counters: Arc::default(),
            loopback_only,
            tools_list_json,
            tools_list_json_2026,
            owners: Mutex::default(),
            in_flight: Arc::default(),
        })
    }

    /// Configured tokens are always enforced. Without tokens, only loopback listeners or an
    /// explicit opt-out serve openly; otherwise every request is refused (fail closed, e.g. if a
    /// reload left the token list empty).
    pub fn auth_required(&self) -> bool {
        !self.auth.load().is_empty()
            || !(self.loopback_only || self.config.load().auth.allow_unauthenticated)
    }

    /// Who the request speaks for: its credential's principal, or the anonymous principal
    /// (every scope) when the server serves without credentials.
    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Principal, AuthFailure> {
        if !self.auth_required() {
            return Ok(Principal::anonymous());
        }
        let auth = self.auth.load_full();
        auth.authenticate(headers).await
    }

    /// The OAuth settings, when an issuer is configured.
    pub fn oauth(&self) -> Option<crate::config::OAuthSettings> {
        self.config.load().auth.oauth.clone()
    }

    pub fn server(&self) -> &SysomServer {
        &self.server
    }

    /// Sessions of every transport, task subscriptions included (they count against the cap).
    pub async fn session_count(&self) -> usize {
        self.legacy.len() + self.streamable_sessions().await + self.counters.subscriptions()
    }

    /// The `tools/list` result for a principal holding `scopes`, serialised once.
    pub fn tools_list_json(&self, scopes: Scopes) -> &Bytes {
        self.tools_list_json[scopes.index()]
            .get_or_init(|| rmcp_compat::tools_list_json(self.server.tool_list_for(scopes)))
    }

    /// The same for the 2026-07-28 protocol.
    pub fn tools_list_json_2026(&self, scopes: Scopes) -> &Bytes {
        self.tools_list_json_2026[scopes.index()]
            .get_or_init(|| rmcp_compat::tools_list_json_2026(self.server.tool_list_for(scopes)))
    }

    /// Whether `principal` may use the stateful session `id`: yes if it opened it, or if the
    /// session is not one this server recorded (rmcp then answers for unknown ids itself).
    fn owns_session(&self, id: &str, principal: &Principal) -> bool {
        let owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        owners
            .get(id)
            .is_none_or(|owner| owner.principal == principal.id())
    }

    /// Whether `principal` is the recorded owner of the session `id` and a request of it
    /// reached rmcp less than `refresh` ago.
    fn owned_and_fresh(&self, id: &str, principal: &Principal, refresh: Duration) -> bool {
        let owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        owners.get(id).is_some_and(|owner| {
            owner.principal == principal.id() && owner.forwarded.elapsed() < refresh
        })
    }

    /// Notes that a request of the session `id` is going to rmcp.
    fn forwarded(&self, id: &str) {
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(owner) = owners.get_mut(id) {
            owner.forwarded = std::time::Instant::now();
        }
    }

    /// Records who opened a session; forgets sessions rmcp no longer holds once the map grows
    /// past the session cap.
    async fn record_owner(&self, id: &str, principal: &Principal) {
        let max = self.config.load().limits.max_sessions;
        let stale: Vec<String> = {
            let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
            owners.insert(
                id.to_string(),
                Owner {
                    principal: principal.id(),
                    forwarded: std::time::Instant::now(),
                },
            );
            if owners.len() <= max {
                return;
            }
            owners.keys().cloned().collect()
        };
        let mut gone = Vec::new();
        for id in stale {
            if !rmcp_compat::has_session(&self.sessions, &id).await
                && !rmcp_compat::has_session(&self.sessions_unprimed, &id).await
            {
                gone.push(id);
            }
        }
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        for id in gone {
            owners.remove(&id);
        }
    }

    /// Open stateful Streamable HTTP sessions.
    pub async fn streamable_sessions(&self) -> usize {
        rmcp_compat::open_sessions(&self.sessions).await
            + rmcp_compat::open_sessions(&self.sessions_unprimed).await
    }

    pub fn open_connections(&self) -> usize {
        self.counters.open_connections()
    }

    async fn reserve_session(&self) -> Option<limits::SessionSlot<'_>> {
        let max = self.config.load().limits.max_sessions;
        self.counters
            .reserve_session(self.session_count(), max)
            .await
    }

    async fn stateful<B>(&self, req: Request<B>, principal: &Principal) -> Response<Body>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::fmt::Display,
    {
        let requested = session_id(req.headers()).map(str::to_string);
        // Another principal's session does not exist, as far as this caller can tell.
        if let Some(id) = &requested
            && !self.owns_session(id, principal)
        {
            crate::audit::Record::refusal(
                principal,
                crate::audit::Decision::DeniedSession,
                "streamable_http",
                "404",
                "a Streamable HTTP session used by another principal",
            )
            .emit();
            return router::unknown_session();
        }
        if let Some(id) = &requested {
            self.forwarded(id);
        }
        let creates_session =
            req.method() == http::Method::POST && !req.headers().contains_key("mcp-session-id");
        // Held until rmcp has registered the new session (or refused to create it).
        let _slot = if creates_session {
            match self.reserve_session().await {
                Some(slot) => Some(slot),
                None => return limits::too_many_sessions(),
            }
        } else {
            None
        };
        // A session stays with the manager that created it; a new one goes by its version.
        let primed = match &requested {
            Some(id) => !rmcp_compat::has_session(&self.sessions_unprimed, id).await,
            None => rmcp_compat::wants_priming(&req),
        };
        let mut svc = if primed {
            self.stateful.clone()
        } else {
            self.stateful_unprimed.clone()
        };
        let resp = match tower_service::Service::call(&mut svc, req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
        if creates_session && let Some(id) = session_id(resp.headers()) {
            self.record_owner(id, principal).await;
        }
        resp
    }

    /// DELETE of a session: 204, or 404 for a session neither manager knows (rmcp says 202
    /// either way).
    async fn delete_session<B>(&self, req: Request<B>, principal: &Principal) -> Response<Body>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::fmt::Display,
    {
        let id = session_id(req.headers()).unwrap_or("");
        if !rmcp_compat::has_session(&self.sessions, id).await
            && !rmcp_compat::has_session(&self.sessions_unprimed, id).await
        {
            return router::unknown_session();
        }
        rmcp_compat::session_deleted(self.stateful(req, principal).await)
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

    async fn open_legacy(
        self: &Arc<Self>,
        peer: Option<SocketAddr>,
        principal: &Principal,
    ) -> Response<Body> {
        let Some(_slot) = self.reserve_session().await else {
            return limits::too_many_sessions();
        };
        let config = self.config.load();
        self.legacy.open(
            self.server.for_client(peer),
            principal.id(),
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
            "tokens": self.auth.load().tokens.len(),
            "oauth": self.config.load().auth.oauth.is_some(),
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
}
