//! The request path, as one readable sequence: client IP check → health/metrics/metadata
//! routes → Host/Origin → credential (a [`Principal`]) → scope check of `tools/call` → MCP
//! dispatch (legacy SSE, Streamable HTTP stateful or stateless), the principal riding along in
//! the request's extensions. Every refusal is a proper status code with a JSON body saying why.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use rmcp::model::ClientJsonRpcMessage;

use super::{Body, State, access, rmcp_compat, session_load};
use crate::{
    audit,
    auth::{Principal, Scope, authenticate::AuthFailure},
    config::OAuthSettings,
    json_limits, metrics,
    tools::ClientAddr,
};

/// RFC 9728 protected-resource metadata lives here (and with the resource's path appended).
const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

pub(crate) fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(
            Full::new(body.into())
                .map_err(|e: Infallible| match e {})
                .boxed(),
        )
        .expect("static response parts are valid")
}

/// A JSON error body `{"error": code, "message": text}`.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    full(
        status,
        "application/json",
        json!({"error": code, "message": message}).to_string(),
    )
}

fn jsonrpc_error(status: StatusCode, code: i64, message: &str) -> Response<Body> {
    jsonrpc_error_for(status, &Value::Null, code, message)
}

/// A JSON-RPC error answering the request `id`.
pub(crate) fn jsonrpc_error_for(
    status: StatusCode,
    id: &Value,
    code: i64,
    message: &str,
) -> Response<Body> {
    full(
        status,
        "application/json",
        json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
            .to_string(),
    )
}

/// 400 for a body that is not one JSON-RPC message: -32700 if it is not even JSON, else -32600.
fn invalid_message(body: &[u8], error: &str) -> Response<Body> {
    if serde_json::from_slice::<Value>(body).is_err() {
        jsonrpc_error(
            StatusCode::BAD_REQUEST,
            -32700,
            &format!("Parse error: {error}"),
        )
    } else {
        jsonrpc_error(
            StatusCode::BAD_REQUEST,
            -32600,
            &format!("Invalid Request: not a single JSON-RPC message ({error})"),
        )
    }
}

fn with_header(mut resp: Response<Body>, name: header::HeaderName, value: &str) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
    resp
}

/// The metadata URL of `resource` (RFC 9728 section 3.1: the well-known path inserted between
/// the host and the resource's path).
fn metadata_url(resource: &str) -> Option<String> {
    let url = url::Url::parse(resource).ok()?;
    let path = url.path().trim_end_matches('/');
    Some(format!(
        "{}{METADATA_PATH}{path}",
        url.origin().ascii_serialization()
    ))
}

/// The `WWW-Authenticate` challenge: realm, the metadata URL when OAuth is configured, and
/// the error (RFC 6750) when a credential was presented.
fn challenge(
    oauth: Option<&OAuthSettings>,
    error: Option<(&str, &str)>,
    scope: Option<&str>,
) -> String {
    let mut c = "Bearer realm=\"sysom-mcp\"".to_string();
    if let Some(url) = oauth.and_then(|o| metadata_url(&o.resource)) {
        c.push_str(&format!(", resource_metadata=\"{url}\""));
    }
    if let Some((code, description)) = error {
        let description = description.replace(['"', '\\'], "'");
        c.push_str(&format!(
            ", error=\"{code}\", error_description=\"{description}\""
        ));
    }
    if let Some(scope) = scope {
        c.push_str(&format!(", scope=\"{scope}\""));
    }
    c
}

fn unauthorized(failure: &AuthFailure, oauth: Option<&OAuthSettings>) -> Response<Body> {
    let (code, message) = failure.describe();
    let error = match failure {
        AuthFailure::Missing => None,
        _ => Some(("invalid_token", message.as_str())),
    };
    with_header(
        json_error(StatusCode::UNAUTHORIZED, code, &message),
        header::WWW_AUTHENTICATE,
        &challenge(oauth, error, None),
    )
}

/// 403 for a `tools/call` outside the principal's scopes: a step-up challenge naming the scope
/// the tool needs, and the JSON-RPC error in the body for clients that read it.
fn insufficient_scope(
    id: Option<&Value>,
    tool: &str,
    scope: Scope,
    oauth: Option<&OAuthSettings>,
) -> Response<Body> {
    let message = format!("tool {tool} needs scope {scope}, which this credential does not hold");
    let body = json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": {
            "code": crate::tools::FORBIDDEN,
            "message": message,
            "data": {"required_scope": scope.as_str()},
        },
    });
    with_header(
        full(StatusCode::FORBIDDEN, "application/json", body.to_string()),
        header::WWW_AUTHENTICATE,
        &challenge(
            oauth,
            Some(("insufficient_scope", &message)),
            Some(scope.as_str()),
        ),
    )
}

/// 429 for a principal over its limits: `Retry-After`, and the JSON-RPC error in the body.
pub(crate) fn rate_limited(
    id: Option<&Value>,
    refusal: crate::auth::limits::Refusal,
) -> Response<Body> {
    let retry = refusal.retry_after().as_secs().max(1);
    let body = json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": {
            "code": crate::tools::RATE_LIMITED,
            "message": refusal.message(),
            "data": {"retry_after": retry},
        },
    });
    with_header(
        full(
            StatusCode::TOO_MANY_REQUESTS,
            "application/json",
            body.to_string(),
        ),
        header::RETRY_AFTER,
        &retry.to_string(),
    )
}

/// A request its session does not admit: a duplicate id is an invalid request (400), a session
/// at its bounds is told to come back once its answers are read (429).
pub(crate) fn session_refusal(
    id: Option<&Value>,
    refusal: &session_load::Refusal,
) -> Response<Body> {
    let id = id.unwrap_or(&Value::Null);
    match refusal {
        session_load::Refusal::DuplicateId => {
            jsonrpc_error_for(StatusCode::BAD_REQUEST, id, -32600, &refusal.message())
        }
        _ => with_header(
            jsonrpc_error_for(
                StatusCode::TOO_MANY_REQUESTS,
                id,
                i64::from(crate::tools::RATE_LIMITED),
                &refusal.message(),
            ),
            header::RETRY_AFTER,
            "1",
        ),
    }
}

/// RFC 9728 metadata: this resource, its authorization server, the scopes it knows.
fn protected_resource_metadata(oauth: &OAuthSettings) -> Response<Body> {
    let scopes: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    let body = json!({
        "resource": oauth.resource,
        "authorization_servers": [oauth.issuer],
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
        "resource_name": "sysom-mcp",
    });
    let resp = full(StatusCode::OK, "application/json", body.to_string());
    with_header(resp, header::CACHE_CONTROL, "max-age=300")
}

/// What a session id of another principal gets: the very answer rmcp gives an unknown one.
pub(crate) fn unknown_session() -> Response<Body> {
    full(
        StatusCode::NOT_FOUND,
        "text/plain",
        "Not Found: Session not found",
    )
}

/// An audit record for a request refused before it reached a tool.
fn audit_refusal(
    principal: Option<&Principal>,
    decision: audit::Decision,
    transport: &'static str,
    client: Option<std::net::IpAddr>,
    status: StatusCode,
    tool: &str,
    message: &str,
) {
    let mut r = match principal {
        Some(p) => audit::Record::refusal(p, decision, transport, status.as_str(), message),
        None => audit::Record {
            transport,
            decision: Some(decision),
            outcome: status.as_str().to_string(),
            message: message.to_string(),
            ..audit::Record::default()
        },
    };
    r.client = client.map(|c| c.to_string()).unwrap_or_default();
    r.tool = tool.to_string();
    r.emit();
}

fn method_not_allowed(allow: &str) -> Response<Body> {
    with_header(
        json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("allowed methods: {allow}"),
        ),
        header::ALLOW,
        allow,
    )
}

/// Too many sessions or connections: the client should come back later.
pub fn overloaded(status: StatusCode, message: &str) -> Response<Body> {
    with_header(
        json_error(status, "overloaded", message),
        header::RETRY_AFTER,
        "5",
    )
}

pub(crate) fn accepts(headers: &HeaderMap, media: &str) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let major = media.split('/').next().unwrap_or("");
    accept.split(',').any(|part| {
        let m = part.split(';').next().unwrap_or("").trim();
        m == media || m == "*/*" || m == format!("{major}/*")
    })
}

fn is_json_content(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false)
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name || (name == "sessionId" && *k == "session_id"))
        .map(|(_, v)| v)
}

/// How much of a refused HTTP/2 request's body is read, at most, and for how long.
const REFUSED_BODY_DRAIN_BYTES: usize = 1 << 20;
const REFUSED_BODY_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// `resp`, a refusal sent before the request's body was read, once a bounded amount of that
/// body has been read and dropped. Over HTTP/2, hyper ends a stream whose request is still
/// uploading with RST_STREAM right after the answer, and curl (and other clients) then report a
/// framing error instead of the 403/401. HTTP/1 needs none of this: hyper drains or closes the
/// connection itself. A body beyond the bound, or slower than the deadline, still gets the reset.
async fn drained(req: Request<Incoming>, resp: Response<Body>) -> Response<Body> {
    use hyper::body::Body as _;
    if req.version() != http::Version::HTTP_2 || req.body().is_end_stream() {
        return resp;
    }
    let mut body = req.into_body();
    let drain = async {
        let mut read = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, Bytes::len);
            if read > REFUSED_BODY_DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(REFUSED_BODY_DRAIN_TIME, drain).await;
    resp
}

/// Handles one request; `peer` is None for Unix-socket clients.
pub async fn handle(
    state: Arc<State>,
    peer: Option<SocketAddr>,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let (route, resp) = route(&state, peer, req).await;
    let route = route.unwrap_or(if path.len() > 64 { "other" } else { "unknown" });
    metrics::record_http(route, resp.status().as_u16());
    resp
}

async fn route(
    state: &Arc<State>,
    peer: Option<SocketAddr>,
    req: Request<Incoming>,
) -> (Option<&'static str>, Response<Body>) {
    let config = state.config.load();
    let client = access::client_ip(&config.access, peer, req.headers());
    if !access::client_allowed(&config.access, client) {
        return (
            None,
            drained(
                req,
                json_error(
                    StatusCode::FORBIDDEN,
                    "client_not_allowed",
                    "your address is not in the allowed client networks",
                ),
            )
            .await,
        );
    }
    let path = req.uri().path();
    match path {
        "/healthz" => {
            return (
                Some("/healthz"),
                full(StatusCode::OK, "application/json", r#"{"status":"ok"}"#),
            );
        }
        "/readyz" => return (Some("/readyz"), state.readiness()),
        "/metrics" => {
            if config.auth.metrics_require_token {
                // Any valid credential, even when the server could serve openly.
                let auth = state.auth.load_full();
                if let Err(f) = auth.authenticate(req.headers()).await {
                    return (
                        Some("/metrics"),
                        drained(req, unauthorized(&f, config.auth.oauth.as_ref())).await,
                    );
                }
            }
            metrics::set_sessions("streamable_http", state.streamable_sessions().await);
            return (
                Some("/metrics"),
                full(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    metrics::render(),
                ),
            );
        }
        _ => {}
    }
    let mcp_path = config.server.path.as_str();
    if let Some(oauth) = &config.auth.oauth
        && (path == METADATA_PATH
            || path.strip_prefix(METADATA_PATH) == Some(mcp_path)
            || path.strip_suffix(METADATA_PATH) == Some(mcp_path))
    {
        return (Some("oauth_metadata"), protected_resource_metadata(oauth));
    }
    let messages_path = format!("{mcp_path}/messages");
    let route = if path == mcp_path {
        "mcp"
    } else if path == messages_path || path == format!("{messages_path}/") {
        "mcp_messages"
    } else {
        return (
            None,
            drained(
                req,
                json_error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    &format!("no such path; the MCP endpoint is {mcp_path}"),
                ),
            )
            .await,
        );
    };
    let authority = req.uri().authority().map(|a| a.as_str());
    if !access::host_allowed(
        &config.access,
        &config.server.host,
        req.headers(),
        authority,
    ) {
        return (
            Some(route),
            drained(
                req,
                json_error(
                    StatusCode::FORBIDDEN,
                    "host_not_allowed",
                    "the Host header is not a name this server accepts (see --allowed-hosts)",
                ),
            )
            .await,
        );
    }
    if !access::origin_allowed(&config.access, req.headers(), authority) {
        return (
            Some(route),
            drained(
                req,
                json_error(
                    StatusCode::FORBIDDEN,
                    "origin_not_allowed",
                    "the Origin header is neither same-origin nor in the allowed origins",
                ),
            )
            .await,
        );
    }
    let transport = if route == "mcp_messages" {
        "sse"
    } else {
        "streamable_http"
    };
    let principal = match state.authenticate(req.headers()).await {
        Ok(p) => p,
        Err(f) => {
            let (_, message) = f.describe();
            audit_refusal(
                None,
                audit::Decision::DeniedAuth,
                transport,
                client,
                StatusCode::UNAUTHORIZED,
                "",
                &message,
            );
            return (
                Some(route),
                drained(req, unauthorized(&f, config.auth.oauth.as_ref())).await,
            );
        }
    };
    // The client as the audit trail and logs name it: the address behind trusted proxies.
    let peer = peer.map(|p| SocketAddr::new(client.unwrap_or(p.ip()), p.port()));
    let resp = if route == "mcp_messages" {
        legacy_post(state, req, config.server.max_body_bytes, &principal, client).await
    } else {
        mcp(state, peer, req, config.server.max_body_bytes, principal).await
    };
    (Some(route), resp)
}

/// Bodies above this size wait for one of [`LARGE_BODY_PERMITS`] before they are read, so that
/// only a few multi-megabyte bodies (and their parses) are in memory at once.
const LARGE_BODY_BYTES: u64 = 64 * 1024;
static LARGE_BODY_PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(8);

/// A request body, read whole and checked against [`json_limits::MESSAGE_LIMITS`] before
/// anything builds a JSON tree from it. The permit (for large bodies) is held by the caller
/// until the request is answered.
struct ReadBody {
    parts: http::request::Parts,
    bytes: Bytes,
    _permit: Option<tokio::sync::SemaphorePermit<'static>>,
}

async fn read_body(
    state: &State,
    req: Request<Incoming>,
    limit: usize,
) -> Result<ReadBody, Response<Body>> {
    // The body has as long to arrive as the headers had: a slow upload holds no permit for ever.
    let deadline = state.config.load().limits.header_read_timeout;
    let (parts, body) = req.into_parts();
    let declared = http_body::Body::size_hint(&body).exact();
    let permit = if declared.is_none_or(|n| n > LARGE_BODY_BYTES) {
        Some(
            LARGE_BODY_PERMITS
                .acquire()
                .await
                .expect("the semaphore is never closed"),
        )
    } else {
        None
    };
    let Ok(collected) = tokio::time::timeout(deadline, Limited::new(body, limit).collect()).await
    else {
        return Err(json_error(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            &format!("the request body did not arrive within {deadline:?}"),
        ));
    };
    match collected {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            match json_limits::check(&bytes, &json_limits::MESSAGE_LIMITS) {
                Ok(()) => Ok(ReadBody {
                    parts,
                    bytes,
                    _permit: permit,
                }),
                Err(json_limits::LimitError::Syntax(e)) => Err(jsonrpc_error(
                    StatusCode::BAD_REQUEST,
                    -32700,
                    &format!("Parse error: {e}"),
                )),
                Err(e) => Err(jsonrpc_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    -32600,
                    &format!("Invalid Request: {e}"),
                )),
            }
        }
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &format!("request bodies are limited to {limit} bytes"),
            ))
        }
        Err(e) => Err(json_error(
            StatusCode::BAD_REQUEST,
            "bad_body",
            &e.to_string(),
        )),
    }
}

async fn legacy_post(
    state: &Arc<State>,
    req: Request<Incoming>,
    limit: usize,
    principal: &Principal,
    client: Option<std::net::IpAddr>,
) -> Response<Body> {
    if req.method() != Method::POST {
        return method_not_allowed("POST");
    }
    let Some(session) = query_param(req.uri().query(), "sessionId").map(str::to_string) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "missing_session",
            "sessionId query parameter is required",
        );
    };
    let read = match read_body(state, req, limit).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let body = &read.bytes;
    use super::legacy_sse::PostError;
    let budget = session_load::byte_budget(limit);
    match state.legacy.post(&session, principal, body, budget).await {
        Ok(()) => full(StatusCode::ACCEPTED, "text/plain", "Accepted"),
        Err(PostError::UnknownSession) => {
            audit_refusal(
                Some(principal),
                audit::Decision::DeniedSession,
                "sse",
                client,
                StatusCode::NOT_FOUND,
                "",
                "a legacy SSE session that does not exist or belongs to another principal",
            );
            json_error(
                StatusCode::NOT_FOUND,
                "unknown_session",
                "no such SSE session; open a new one with GET",
            )
        }
        Err(PostError::Malformed(e)) => invalid_message(body, &e),
        Err(PostError::Closed) => json_error(
            StatusCode::GONE,
            "session_closed",
            "the SSE session has ended",
        ),
        Err(PostError::Refused(refusal)) => {
            let message = serde_json::from_slice::<Value>(body).ok();
            session_refusal(message.as_ref().and_then(|m| m.get("id")), &refusal)
        }
    }
}

async fn mcp(
    state: &Arc<State>,
    peer: Option<SocketAddr>,
    mut req: Request<Incoming>,
    limit: usize,
    principal: Principal,
) -> Response<Body> {
    if let Some(addr) = peer {
        req.extensions_mut().insert(ClientAddr(addr));
    }
    req.extensions_mut().insert(principal.clone());
    let has_session = req.headers().contains_key("mcp-session-id");
    match *req.method() {
        Method::GET if has_session => {
            rmcp_compat::resume_after_last_event(&mut req);
            state.stateful(req, &principal).await
        }
        Method::GET => {
            if !accepts(req.headers(), "text/event-stream") {
                return json_error(
                    StatusCode::NOT_ACCEPTABLE,
                    "not_acceptable",
                    "GET opens an SSE stream: accept text/event-stream",
                );
            }
            if state.config.load().server.stateless {
                // --stateless never creates sessions, and a legacy SSE stream is one.
                return with_header(
                    json_error(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "stateless",
                        "this server is stateless: it opens no SSE sessions; POST messages",
                    ),
                    header::ALLOW,
                    "POST",
                );
            }
            state.open_legacy(peer, &principal).await
        }
        Method::DELETE if has_session => state.delete_session(req, &principal).await,
        Method::POST => {
            let _in_flight = state.counters.post_started();
            if !is_json_content(req.headers()) {
                return json_error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "POST bodies must be Content-Type: application/json",
                );
            }
            if !accepts(req.headers(), "application/json")
                && !accepts(req.headers(), "text/event-stream")
            {
                return json_error(
                    StatusCode::NOT_ACCEPTABLE,
                    "not_acceptable",
                    "accept application/json or text/event-stream",
                );
            }
            // Read and parse here for every POST, so that malformed JSON is a 400 with a
            // JSON-RPC parse error (rmcp answers a bad body in a session with 415).
            let ReadBody {
                mut parts,
                bytes: body,
                _permit,
            } = match read_body(state, req, limit).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let message: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => {
                    return jsonrpc_error(
                        StatusCode::BAD_REQUEST,
                        -32700,
                        &format!("Parse error: {e}"),
                    );
                }
            };
            // The message as rmcp reads it, parsed once from the bytes and handed to the
            // prepared paths (a typed parse from the tree is twice the cost of this one).
            // Bytes rmcp refuses although the tree parses (a repeated key: the tree keeps the
            // last) leave `rmcp_typed` None, so those paths decline and rmcp answers (415);
            // our own checks still read the tree's message.
            let rmcp_typed = rmcp_compat::rmcp_message(&body);
            // Valid JSON that is not one JSON-RPC message (a batch, `{}`): rmcp would say 415.
            let from_tree;
            let typed = match &rmcp_typed {
                Some(typed) => typed,
                None => match serde_json::from_value::<ClientJsonRpcMessage>(message.clone()) {
                    Ok(typed) => {
                        from_tree = typed;
                        &from_tree
                    }
                    Err(e) => {
                        return rmcp_compat::unparsable_request(&message)
                            .unwrap_or_else(|| invalid_message(&body, &e.to_string()));
                    }
                },
            };
            if let Some(resp) = check_scope(state, &message, &principal, peer) {
                return resp;
            }
            // Task status notifications: a stream rmcp cannot produce (see task_listen).
            if let Some(resp) = state
                .task_listen(&message, &parts.headers, &principal, peer.map(|p| p.ip()))
                .await
            {
                return resp;
            }
            if has_session {
                let admitted = match typed {
                    ClientJsonRpcMessage::Request(r) => {
                        let session = super::session_id(&parts.headers).unwrap_or("");
                        let budget = session_load::byte_budget(limit);
                        match state.in_flight.admit(session, &r.id, body.len(), budget) {
                            Ok(admitted) => Some(admitted),
                            Err(refusal) => return session_refusal(message.get("id"), &refusal),
                        }
                    }
                    _ => None,
                };
                // Admitted first: an id still in flight is refused here as on rmcp's path.
                if let Some(resp) = state
                    .in_session_answer(&message, rmcp_typed.as_ref(), &parts, &principal)
                    .await
                {
                    return resp;
                }
                let resp = state
                    .stateful(Request::from_parts(parts, Full::new(body)), &principal)
                    .await;
                return match admitted {
                    Some(admitted) => session_load::hold_until_answered(resp, admitted),
                    None => resp,
                };
            }
            if let Some(resp) =
                state.sessionless_answer(&message, rmcp_typed.as_ref(), &parts, &principal)
            {
                return resp;
            }
            let is_initialize = message.get("method").and_then(Value::as_str) == Some("initialize");
            let stateless = state.config.load().server.stateless || !is_initialize;
            if is_initialize
                && let Some(resp) =
                    rmcp_compat::check_initialize(&message, typed, &mut parts.headers, !stateless)
            {
                return resp;
            }
            if stateless {
                // Plain clients (curl) send no Accept header; rmcp insists on both types.
                parts.headers.insert(
                    header::ACCEPT,
                    HeaderValue::from_static("application/json, text/event-stream"),
                );
            }
            if is_initialize
                && let Some(v) = message
                    .pointer("/params/protocolVersion")
                    .and_then(Value::as_str)
            {
                parts
                    .extensions
                    .insert(rmcp_compat::InitializeVersion(v.to_string()));
            }
            let req = Request::from_parts(parts, Full::new(body));
            if stateless {
                state.stateless(req).await
            } else {
                state.stateful(req, &principal).await
            }
        }
        _ => method_not_allowed("GET, POST, DELETE"),
    }
}

/// A `tools/call` of a tool whose scope the principal lacks is refused here, as HTTP 403 with
/// a step-up challenge, and one over the principal's limits as 429 with `Retry-After` (the
/// tool layer refuses both too, for transports without a status of their own).
fn check_scope(
    state: &State,
    message: &Value,
    principal: &Principal,
    peer: Option<SocketAddr>,
) -> Option<Response<Body>> {
    if message.get("method").and_then(Value::as_str) != Some("tools/call") {
        return None;
    }
    let tool = message.pointer("/params/name").and_then(Value::as_str)?;
    let scope = state.server().tool_scope(tool)?;
    if principal.may(scope) {
        let refusal = state
            .server()
            .limits()
            .peek(&principal.id(), scope == Scope::Diagnose)
            .err()?;
        let mut r = audit::Record::refusal(
            principal,
            audit::Decision::RateLimited,
            "streamable_http",
            "429",
            &format!("tool call {tool} refused: {}", refusal.message()),
        );
        r.client = peer.map(|p| p.ip().to_string()).unwrap_or_default();
        r.tool = tool.to_string();
        r.scope = scope.as_str();
        r.emit();
        return Some(rate_limited(message.get("id"), refusal));
    }
    let mut r = audit::Record::refusal(
        principal,
        audit::Decision::DeniedScope,
        "streamable_http",
        "403",
        &format!("tool call {tool} refused: needs {scope}"),
    );
    r.client = peer.map(|p| p.ip().to_string()).unwrap_or_default();
    r.tool = tool.to_string();
    r.scope = scope.as_str();
    r.emit();
    Some(insufficient_scope(
        message.get("id"),
        tool,
        scope,
        state.oauth().as_ref(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_matching() {
        let mut h = HeaderMap::new();
        assert!(accepts(&h, "text/event-stream"));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!accepts(&h, "text/event-stream"));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/*;q=0.9"));
        assert!(accepts(&h, "text/event-stream"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        assert!(accepts(&h, "application/json"));
    }

    #[test]
    fn challenges_name_the_metadata_and_the_missing_scope() {
        let oauth = OAuthSettings {
            issuer: "https://idp.example.com".into(),
            resource: "https://mcp.example.com/mcp/unified".into(),
            jwks_uri: None,
            leeway: std::time::Duration::ZERO,
        };
        assert_eq!(
            metadata_url(&oauth.resource).unwrap(),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp/unified"
        );
        let c = challenge(Some(&oauth), None, None);
        assert!(
            c.contains("resource_metadata=\"https://mcp.example.com/.well-known/"),
            "{c}"
        );
        assert!(!c.contains("error="), "{c}");
        let c = challenge(
            None,
            Some(("insufficient_scope", "say \"x\"")),
            Some("sysom:admin"),
        );
        assert_eq!(
            c,
            "Bearer realm=\"sysom-mcp\", error=\"insufficient_scope\", \
             error_description=\"say 'x'\", scope=\"sysom:admin\""
        );
        let resp = unauthorized(&AuthFailure::Invalid, Some(&oauth));
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let h = resp.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(
            h.contains("error=\"invalid_token\"") && h.contains("resource_metadata="),
            "{h}"
        );
    }

    #[test]
    fn session_id_query_in_both_spellings() {
        assert_eq!(query_param(Some("a=1&sessionId=x"), "sessionId"), Some("x"));
        assert_eq!(query_param(Some("session_id=y"), "sessionId"), Some("y"));
        assert_eq!(query_param(None, "sessionId"), None);
    }
}
