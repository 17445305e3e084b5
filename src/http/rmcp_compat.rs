//! Everything that copies or adjusts rmcp's wire behaviour lives here, next to the tests that
//! compare it with rmcp's own answers, so an rmcp upgrade that changes them fails here first:
//! the prepared `tools/list`/`ping` bodies (with `resultType` stripped as rmcp does for
//! pre-2026-07-28 clients, with caching hints for 2026-07-28 ones), the protocol versions and
//! request shapes they serve, the Host and body rmcp refuses before answering, the DELETE status, the session
//! count read from rmcp's session manager, which sessions get SSE priming events, how rmcp
//! frames an answer on a session's request stream and which `Accept` it takes there, and the
//! `initialize` requests rmcp would refuse with a misleading or non-JSON answer.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use rmcp::{
    model::{
        ClientJsonRpcMessage, ClientRequest, GetMeta, JsonRpcMessage, ListToolsResult,
        ProtocolVersion, ServerResult, Tool,
    },
    transport::streamable_http_server::session::local::LocalSessionManager,
};
use serde_json::Value;

use super::{Body, router};

/// The protocol versions whose sessionless `tools/list`/`ping` we answer from a prepared body:
/// the session-era ones. Anything else (2026-07-28, or a version rmcp refuses with 400) is left
/// to rmcp.
const PREPARED_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// The `tools/list` result as rmcp serialises it for pre-2026-07-28 clients: without the newer
/// `resultType` field.
///
/// Serialised straight to bytes, `resultType` left out by clearing it (it is skipped when
/// None): going through a `Value` first cost the cold start's first answer a third of its CPU.
pub(crate) fn tools_list_json(tools: Vec<Tool>) -> Bytes {
    let mut result = ListToolsResult::with_all_items(tools);
    result.result_type = None;
    Bytes::from(serde_json::to_vec(&result).expect("the tool list serialises"))
}

/// The `tools/list` result as rmcp serialises it for 2026-07-28 clients: `resultType` and the
/// caching hints the handler left out filled in with rmcp's defaults (`ttlMs: 0`,
/// `cacheScope: "private"`), as its server handler does before answering them.
pub(crate) fn tools_list_json_2026(tools: Vec<Tool>) -> Bytes {
    let mut result = ServerResult::ListToolsResult(ListToolsResult::with_all_items(tools));
    result.fill_missing_cache_hints();
    Bytes::from(serde_json::to_vec(&result).expect("the tool list serialises"))
}

/// The `_meta` keys a plain 2026-07-28 `tools/list` carries; any other goes to rmcp.
const PLAIN_META_KEYS: [&str; 3] = [
    "io.modelcontextprotocol/protocolVersion",
    "io.modelcontextprotocol/clientCapabilities",
    "io.modelcontextprotocol/clientInfo",
];

/// The one value of header `name`, as text; None when absent, repeated or not text.
fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()
}

/// The request id (serialised as rmcp echoes it) of a sessionless 2026-07-28 `tools/list`
/// that rmcp answers with the whole list, or None (rmcp answers) for anything else. Taken
/// here is only the plain shape, which passes every check rmcp makes on it
/// (`is_legacy_request`, `validate_protocol_version_header`, `validate_standard_headers`,
/// `validate_request_protocol_version_meta`, and its handler's version and `_meta` checks):
///
/// * one `MCP-Protocol-Version: 2026-07-28` and one `Mcp-Method: tools/list` header;
/// * params holding only `_meta` (no cursor), whose keys are among [`PLAIN_META_KEYS`], with
///   protocol version 2026-07-28 and client capabilities (and client info, if given) that
///   rmcp decodes.
///
/// `typed` is `message` as rmcp parses it.
pub(crate) fn prepared_2026_request_id(
    typed: &ClientJsonRpcMessage,
    message: &Value,
    headers: &HeaderMap,
) -> Option<String> {
    let version = ProtocolVersion::V_2026_07_28;
    if single_header(headers, "mcp-protocol-version")? != version.as_str()
        || single_header(headers, "mcp-method")? != "tools/list"
    {
        return None;
    }
    let JsonRpcMessage::Request(request) = typed else {
        return None;
    };
    let ClientRequest::ListToolsRequest(list) = &request.request else {
        return None;
    };
    if list.params.as_ref().is_none_or(|p| p.cursor.is_some()) {
        return None;
    }
    let params = message.get("params")?.as_object()?;
    let meta = params.get("_meta")?.as_object()?;
    if params.len() != 1 || !meta.keys().all(|k| PLAIN_META_KEYS.contains(&k.as_str())) {
        return None;
    }
    let typed_meta = request.request.get_meta();
    if typed_meta.protocol_version() != Some(version.clone())
        || !typed_meta.missing_required_keys(&version).is_empty()
        || (meta.contains_key(PLAIN_META_KEYS[2]) && typed_meta.client_info().is_none())
    {
        return None;
    }
    serde_json::to_string(&request.id).ok()
}

/// `body` as rmcp parses it (from the bytes, where the router parses a JSON tree first): a
/// body with a repeated key, which the tree keeps the last of, is no message to rmcp (415).
pub(crate) fn rmcp_message(body: &[u8]) -> Option<ClientJsonRpcMessage> {
    serde_json::from_slice(body).ok()
}

/// Whether rmcp's Streamable HTTP service takes the request's Host (it answers 400 for a Host
/// header that is not text or not an authority, and for no Host and no `:authority`), which
/// our own Host check may let through (`--allowed-hosts '*'`).
pub(crate) fn host_parses(parts: &http::request::Parts) -> bool {
    match parts.headers.get(header::HOST) {
        Some(host) => host
            .to_str()
            .is_ok_and(|h| http::uri::Authority::try_from(h).is_ok()),
        None => parts.uri.authority().is_some(),
    }
}

/// The prepared result answering `message`, a `tools/list` or `ping`, and the id to echo: the
/// tool list never changes while the process runs, and building and serialising its 34 KB for
/// every request cost most of the time of a `tools/list` (see bench/README.md). None (rmcp
/// answers) for other methods, list requests with a cursor, requests carrying `_meta` (rmcp
/// checks per-request protocol metadata in it), and protocol versions other than the
/// session-era ones.
pub(crate) fn prepared_result<'a>(
    tools_list_json: &Bytes,
    message: &'a Value,
    headers: &HeaderMap,
) -> Option<(&'a Value, Bytes)> {
    if let Some(v) = headers.get("mcp-protocol-version") {
        let v = v.to_str().ok()?;
        if !PREPARED_VERSIONS.contains(&v) {
            return None;
        }
    }
    let id = message
        .get("id")
        .filter(|id| id.is_string() || id.is_number())?;
    if let Some(params) = message.get("params")
        && (params.get("cursor").is_some() || params.get("_meta").is_some())
    {
        return None;
    }
    let result = match message.get("method").and_then(Value::as_str)? {
        "tools/list" => tools_list_json.clone(),
        "ping" => Bytes::from_static(b"{}"),
        _ => return None,
    };
    Some((id, result))
}

/// The JSON-RPC answer `{"jsonrpc":"2.0","id":…,"result":…}` as rmcp serialises it, in three
/// pieces: the prepared `result` is shared, not copied (it is 34 KB and more).
pub(crate) fn jsonrpc_result(id: impl std::fmt::Display, result: Bytes) -> [Bytes; 3] {
    [
        Bytes::from(format!(r#"{{"jsonrpc":"2.0","id":{id},"result":"#)),
        result,
        Bytes::from_static(b"}"),
    ]
}

/// A response body sent as the pieces it is made of, with its exact length (so hyper sends a
/// `Content-Length`, as for rmcp's one-piece bodies, and writes the pieces without joining them).
struct Pieces(std::collections::VecDeque<Bytes>);

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.iter().map(|b| b.len() as u64).sum())
    }
}

/// A `status` response of `content_type` whose body is `pieces`, one after the other.
pub(crate) fn pieces_response(
    status: StatusCode,
    content_type: &'static str,
    pieces: impl IntoIterator<Item = Bytes>,
) -> Response<Body> {
    let pieces = pieces.into_iter().filter(|b| !b.is_empty()).collect();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Pieces(pieces).boxed())
        .expect("static response parts are valid")
}

/// Answers a sessionless `tools/list` or `ping` from a prepared body (see [`prepared_result`]).
/// Requests of the 2026-07-28 protocol are [`prepared_2026_request_id`]'s.
pub(crate) fn prepared_answer(
    tools_list_json: &Bytes,
    message: &Value,
    headers: &HeaderMap,
) -> Option<Response<Body>> {
    let (id, result) = prepared_result(tools_list_json, message, headers)?;
    Some(pieces_response(
        StatusCode::OK,
        "application/json",
        jsonrpc_result(id, result),
    ))
}

/// rmcp answers a session DELETE with 202; clients expect 200 or 204 for a terminated session.
pub(crate) fn session_deleted(mut resp: Response<Body>) -> Response<Body> {
    if resp.status() == StatusCode::ACCEPTED {
        *resp.status_mut() = StatusCode::NO_CONTENT;
        *resp.body_mut() = Full::new(Bytes::new())
            .map_err(|e: Infallible| match e {})
            .boxed();
    }
    resp
}

/// Open stateful Streamable HTTP sessions, read from rmcp's session manager (it has no count
/// of its own).
pub(crate) async fn open_sessions(manager: &LocalSessionManager) -> usize {
    manager.sessions.read().await.len()
}

/// Whether `id` is a session of `manager`.
pub(crate) async fn has_session(manager: &LocalSessionManager, id: &str) -> bool {
    manager.sessions.read().await.contains_key(id)
}

/// The `retry:` of SSE priming events (rmcp's default).
pub(crate) const SSE_RETRY: std::time::Duration = std::time::Duration::from_secs(3);

/// The first protocol version whose clients expect SSE priming events (an event with an id and
/// `retry:` but no data); older clients parse the empty data as JSON and fail.
const PRIMING_SINCE: &str = "2025-11-25";

/// The protocol version an `initialize` request asks for, put in the request's extensions by
/// the router (the session has no `MCP-Protocol-Version` header yet).
#[derive(Debug, Clone)]
pub(crate) struct InitializeVersion(pub(crate) String);

/// Whether a new session gets priming events: by the `MCP-Protocol-Version` header, or the
/// version its `initialize` asks for. Neither: a 2025-03-26 client (no header): no priming.
pub(crate) fn wants_priming<B>(req: &Request<B>) -> bool {
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

/// rmcp 3.11 resumes a stream at the event Last-Event-ID names, so the client gets that event
/// twice; the spec resumes after it. rmcp's ids are `<index>` or `<index>/<request id>`:
/// asking for the next index makes its replay start after the last event the client saw.
pub(crate) fn resume_after_last_event<B>(req: &mut Request<B>) {
    let Some(id) = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
    else {
        return;
    };
    let (index, request) = match id.split_once('/') {
        Some((index, request)) => (index, Some(request)),
        None => (id, None),
    };
    let Some(next) = index.parse::<usize>().ok().and_then(|i| i.checked_add(1)) else {
        return; // not one of rmcp's ids: rmcp answers it as it would
    };
    let next = match request {
        Some(request) => format!("{next}/{request}"),
        None => next.to_string(),
    };
    if let Ok(value) = http::HeaderValue::from_str(&next) {
        req.headers_mut().insert("last-event-id", value);
    }
}

/// A request of an MCP method that is not even a JSON-RPC message to rmcp (its `params` are
/// not an object): 400 with -32602 for its id, instead of -32600 for no id.
pub(crate) fn unparsable_request(message: &Value) -> Option<Response<Body>> {
    let id = message
        .get("id")
        .filter(|id| id.is_string() || id.is_number())?;
    let method = message.get("method")?.as_str()?;
    let error = crate::tools::malformed::invalid_params(method, message.get("params"))?;
    Some(router::jsonrpc_error_for(
        StatusCode::BAD_REQUEST,
        id,
        i64::from(error.code.0),
        &error.message,
    ))
}

/// What rmcp would get wrong about a sessionless `initialize` (`message`, parsed as `typed`):
///
/// * params that do not fit make it a custom request, which rmcp refuses with "Session ID is
///   required"; the answer is 400 with -32602 saying what did not fit;
/// * when it opens a session (`opens_session`), rmcp wants an Accept header naming both
///   `application/json` and `text/event-stream` (as the Streamable HTTP spec requires of
///   clients) and answers 406 in plain text otherwise; the answer is a JSON-RPC 406 naming
///   both. An Accept that covers both with wildcards (`*/*`) is rewritten to name them.
pub(crate) fn check_initialize(
    message: &Value,
    typed: &ClientJsonRpcMessage,
    headers: &mut HeaderMap,
    opens_session: bool,
) -> Option<Response<Body>> {
    let id = message.get("id").unwrap_or(&Value::Null);
    let fits = matches!(typed, JsonRpcMessage::Request(r)
        if matches!(r.request, ClientRequest::InitializeRequest(_)));
    if !fits {
        // None: a 2026-07-28 request, for which initialize does not exist (rmcp says so).
        let error = crate::tools::malformed::invalid_params("initialize", message.get("params"))?;
        return Some(router::jsonrpc_error_for(
            StatusCode::BAD_REQUEST,
            id,
            i64::from(error.code.0),
            &error.message,
        ));
    }
    if !opens_session {
        return None;
    }
    let present = headers.contains_key(header::ACCEPT);
    if present
        && router::accepts(headers, "application/json")
        && router::accepts(headers, "text/event-stream")
    {
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        return None;
    }
    let mut resp = router::jsonrpc_error_for(
        StatusCode::NOT_ACCEPTABLE,
        id,
        -32600,
        "Not Acceptable: initialize opens a session whose answers come as JSON or as an SSE \
         stream; send Accept: application/json, text/event-stream",
    );
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    Some(resp)
}

/// Whether `Accept` names both media types rmcp insists on in a session, plainly.
pub(crate) fn accepts_json_and_sse(headers: &HeaderMap) -> bool {
    let (mut json, mut sse) = (false, false);
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        if value.contains([';', '"', '*']) {
            return false;
        }
        for media in value.split(',') {
            let media = media.trim();
            json |= media.eq_ignore_ascii_case("application/json");
            sse |= media.eq_ignore_ascii_case("text/event-stream");
        }
    }
    json && sse
}

/// The SSE body rmcp sends for a request answered by `answer` (one JSON-RPC message, in
/// pieces), on the request stream numbered `stream`, with a priming event first when `retry`
/// is set.
pub(crate) fn sse_answer(
    answer: [Bytes; 3],
    stream: u64,
    retry: Option<std::time::Duration>,
) -> [Bytes; 5] {
    let (head, tail) = match retry {
        Some(retry) => (
            format!(
                "data: \nid: 0/{stream}\nretry: {}\n\ndata: ",
                retry.as_millis()
            ),
            format!("\nid: 1/{stream}\n\n"),
        ),
        None => ("data: ".to_string(), format!("\nid: 0/{stream}\n\n")),
    };
    let [a, b, c] = answer;
    [Bytes::from(head), a, b, c, Bytes::from(tail)]
}

/// An SSE response with rmcp's headers.
pub(crate) fn sse_response(pieces: impl IntoIterator<Item = Bytes>) -> Response<Body> {
    let mut resp = pieces_response(StatusCode::OK, "text/event-stream", pieces);
    let headers = resp.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    headers.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    resp
}

#[cfg(test)]
mod resume_tests {
    use super::*;

    fn resumed(id: &str) -> String {
        let mut req = Request::builder()
            .header("last-event-id", id)
            .body(())
            .unwrap();
        resume_after_last_event(&mut req);
        req.headers()["last-event-id"].to_str().unwrap().to_string()
    }

    #[test]
    fn the_replay_starts_after_the_last_event_seen() {
        assert_eq!(resumed("4/0"), "5/0");
        assert_eq!(resumed("0"), "1");
        assert_eq!(resumed("x/1"), "x/1", "foreign ids pass unchanged");
    }
}

#[cfg(test)]
mod session_framing_tests {
    use super::*;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_a_plain_accept_of_both_types_is_answered_here() {
        assert!(accepts_json_and_sse(&accept(&[
            "application/json, text/event-stream"
        ])));
        assert!(accepts_json_and_sse(&accept(&[
            "text/event-stream",
            "application/json"
        ])));
        assert!(!accepts_json_and_sse(&accept(&["application/json"])));
        assert!(!accepts_json_and_sse(&accept(&[])));
        // rmcp weighs q=0 as refusal and does not match wildcards: those go to rmcp.
        assert!(!accepts_json_and_sse(&accept(&[
            "application/json, text/event-stream;q=0"
        ])));
        assert!(!accepts_json_and_sse(&accept(&["*/*"])));
    }

    fn joined(pieces: &[Bytes]) -> String {
        pieces
            .iter()
            .map(|b| std::str::from_utf8(b).unwrap())
            .collect()
    }

    #[test]
    fn the_framing_is_rmcps_with_and_without_priming() {
        let a = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        let answer = || jsonrpc_result(1, Bytes::from_static(b"{}"));
        assert_eq!(joined(&answer()), a);
        assert_eq!(
            joined(&sse_answer(
                answer(),
                7,
                Some(std::time::Duration::from_secs(3))
            )),
            format!("data: \nid: 0/7\nretry: 3000\n\ndata: {a}\nid: 1/7\n\n")
        );
        assert_eq!(
            joined(&sse_answer(answer(), 7, None)),
            format!("data: {a}\nid: 0/7\n\n")
        );
    }

    #[tokio::test]
    async fn a_body_in_pieces_has_its_exact_length() {
        let resp = sse_response(sse_answer(answer_of_len(40_000), 3, None));
        let hint = http_body::Body::size_hint(resp.body()).exact();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(hint, Some(body.len() as u64));
        assert!(body.starts_with(b"data: {") && body.ends_with(b"}\nid: 0/3\n\n"));
    }

    fn answer_of_len(n: usize) -> [Bytes; 3] {
        jsonrpc_result("\"x\"", Bytes::from(format!("\"{}\"", "a".repeat(n))))
    }
}
