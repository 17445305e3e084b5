//! `sysom-mcp proxy URL`: a stdio MCP server that forwards every tool listing and call to a
//! remote sysom-mcp, for MCP clients that only speak stdio (the guide's 问题 4). It connects with
//! Streamable HTTP and falls back to the legacy HTTP+SSE transport if that fails. Progress
//! notifications and cancellation travel through.

pub(crate) mod legacy_sse;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use rmcp::{
    ClientHandler, ErrorData, RoleClient, RoleServer, ServerHandler, ServiceExt,
    model::{
        CallToolRequest, CallToolRequestParams, CallToolResponse, CancelledNotificationParam,
        ClientRequest, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
        ProgressToken, ServerConfig, ServerResult,
    },
    service::{NotificationContext, Peer, PeerRequestOptions, RequestContext, RunningService},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use tokio::sync::OnceCell;

use crate::exit::StartError;

/// Remote progress token → the local client's token for the same call.
type TokenMap = Arc<Mutex<HashMap<ProgressToken, ProgressToken>>>;

/// Forwards the remote's progress notifications to the local (stdio) client. rmcp gives every
/// outgoing request a progress token of its own, so tokens are translated back.
#[derive(Clone, Default)]
pub(super) struct ProgressRelay {
    local: Arc<OnceCell<Peer<RoleServer>>>,
    tokens: TokenMap,
}

impl ClientHandler for ProgressRelay {
    async fn on_progress(
        &self,
        mut params: ProgressNotificationParam,
        _ctx: NotificationContext<RoleClient>,
    ) {
        let local_token = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&params.progress_token)
            .cloned();
        if let (Some(token), Some(peer)) = (local_token, self.local.get()) {
            params.progress_token = token;
            let _ = peer.notify_progress(params).await;
        }
    }
}

/// The stdio side: answers with whatever the remote answers.
#[derive(Clone)]
struct Forwarder {
    remote: Peer<RoleClient>,
    info: ServerConfig,
    local: Arc<OnceCell<Peer<RoleServer>>>,
    tokens: TokenMap,
}

fn remote_error(e: impl std::fmt::Display) -> ErrorData {
    ErrorData::internal_error(format!("remote sysom-mcp: {e}"), None)
}

impl ServerHandler for Forwarder {
    fn get_info(&self) -> ServerConfig {
        self.info.clone()
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let _ = self.local.set(ctx.peer.clone());
        self.remote.list_tools(request).await.map_err(remote_error)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let _ = self.local.set(ctx.peer.clone());
        let handle = self
            .remote
            .send_request_with_option(
                ClientRequest::CallToolRequest(CallToolRequest::new(request)),
                PeerRequestOptions::no_options(),
            )
            .await
            .map_err(remote_error)?;
        let remote_token = handle.progress_token.clone();
        let remote_id = handle.id.clone();
        if let Some(local_token) = ctx.meta.get_progress_token() {
            self.tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(remote_token.clone(), local_token);
        }
        let outcome = tokio::select! {
            r = handle.await_response() => Some(r),
            _ = ctx.ct.cancelled() => None,
        };
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&remote_token);
        match outcome {
            Some(Ok(ServerResult::CallToolResult(result))) => Ok(result.into()),
            Some(Ok(_)) => Err(remote_error("unexpected answer to tools/call")),
            Some(Err(e)) => Err(remote_error(e)),
            None => {
                // The local client gave up: tell the remote, so it stops polling SysOM.
                let param = CancelledNotificationParam::new(
                    Some(remote_id),
                    Some("cancelled by the stdio client".into()),
                );
                let _ = self.remote.notify_cancelled(param).await;
                Err(ErrorData::internal_error("cancelled by the client", None))
            }
        }
    }
}

fn read_token(path: &PathBuf) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .ok_or_else(|| format!("{} holds no token", path.display()))
}

pub(super) type Remote = RunningService<RoleClient, ProgressRelay>;

async fn connect_streamable(
    url: &str,
    token: Option<&str>,
    handler: ProgressRelay,
) -> Result<Remote, String> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_string());
    if let Some(t) = token {
        config = config.auth_header(t.to_string());
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    handler.serve(transport).await.map_err(|e| e.to_string())
}

async fn proxy(url: String, token: Option<String>) -> Result<(), StartError> {
    let handler = ProgressRelay::default();
    let local = handler.local.clone();
    let tokens = handler.tokens.clone();
    let remote = match connect_streamable(&url, token.as_deref(), handler.clone()).await {
        Ok(r) => r,
        Err(first) => {
            tracing::info!(error = %first, "Streamable HTTP failed; trying legacy SSE");
            match legacy_sse::connect(&url, token.as_deref(), handler).await {
                Ok(r) => r,
                Err(second) => {
                    return Err(StartError::ProxyConnect {
                        url,
                        streamable: first,
                        sse: second,
                    });
                }
            }
        }
    };
    // Present the remote's capabilities, name and instructions as our own.
    let mut info = ServerConfig::new(
        rmcp::model::ServerCapabilities::builder()
            .enable_tools()
            .build(),
    );
    if let Some(peer) = remote.peer_info() {
        info.capabilities = peer.capabilities.clone();
        if let Some(server) = &peer.server_info {
            info.server_info = server.clone();
        }
        info.instructions = peer.instructions.clone();
    }
    let forwarder = Forwarder {
        remote: remote.peer().clone(),
        info,
        local,
        tokens,
    };
    // As in `sysom-mcp --stdio` (app::serve_stdio): pipes on the event loop.
    let served = forwarder
        .serve(rmcp::transport::stdio_pipes())
        .await
        .map_err(|e| StartError::StdioHandshake(e.to_string()))?;
    let _ = served.waiting().await;
    let _ = remote.cancel().await;
    Ok(())
}

/// Entry point of `sysom-mcp proxy`.
pub(crate) fn run(url: String, token_file: Option<PathBuf>) -> Result<(), StartError> {
    let token = token_file
        .as_ref()
        .map(read_token)
        .transpose()
        .map_err(StartError::ProxyTokenFile)?;
    if url::Url::parse(&url).is_err() {
        return Err(StartError::ProxyUrl(url));
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?
        .block_on(proxy(url, token))
}
