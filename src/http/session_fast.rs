//! Prepared `tools/list` and `ping` answers inside a stateful Streamable HTTP session (issue 16).
//!
//! What every real client does after `initialize` is list the tools in its session. Through
//! rmcp that costs a trip through the session worker, a clone of the tool list and a 34 KB
//! serialisation per request; here the answer is the body serialised once at start (per scope
//! set, see [`super::State::tools_list_json`]), framed as the SSE stream rmcp would send. It is
//! only taken where rmcp's answer is known to be the same; everything else goes to rmcp:
//!
//! * the session exists in one of rmcp's managers, and this server recorded the caller's
//!   principal as its owner (another principal's session, or an unknown one, goes to rmcp and
//!   the ownership check, which answer 404);
//! * the message is a `tools/list` without a cursor or a `ping`, with no `_meta`, and the
//!   `MCP-Protocol-Version` header is absent or a session-era version ([`rmcp_compat::prepared_result`]);
//! * the Accept header names `application/json` and `text/event-stream` plainly (rmcp answers
//!   406 otherwise; any parameter, quoting or wildcard goes to rmcp);
//! * rmcp has seen a request of this session recently ([`REFRESH_FRACTION`] of the idle
//!   timeout): a request rmcp never sees does not reset its idle timer, so a session used only
//!   through this path still gets a request through now and then and expires no earlier than
//!   15/16 of the idle timeout after its last request.
//!
//! The framing is rmcp's (`session::local`): a request's stream is a priming event
//! (`data:` empty, `id: 0/N`, `retry:`) in sessions on 2025-11-25 or later, then the answer as
//! `data: …` with `id: <index>/N`, where N numbers the session's HTTP requests. Our N counts
//! down from `u64::MAX` (rmcp's count up from 0 and never meet them), so a `Last-Event-ID`
//! naming one of these events is a stream rmcp does not hold: it answers the resume with an
//! empty stream, as it does for its own streams once their replay cache has expired.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use http::{HeaderMap, Response, StatusCode, header};
use serde_json::Value;

use super::{Body, State, rmcp_compat, router, session_id};
use crate::auth::Principal;

/// How much of the session idle timeout may pass without a request reaching rmcp before the
/// next in-session `tools/list`/`ping` is sent through rmcp instead (1/16).
pub(crate) const REFRESH_FRACTION: u32 = 16;

/// The next `N` of a prepared answer's event ids (counting down; see the module docs).
static NEXT_STREAM: AtomicU64 = AtomicU64::new(u64::MAX);

/// Whether `Accept` names both media types rmcp insists on in a session, plainly.
fn accepts_json_and_sse(headers: &HeaderMap) -> bool {
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

/// The SSE body rmcp sends for a request answered by `answer` (one JSON-RPC message), on the
/// request stream numbered `stream`, with a priming event first when `retry` is set.
pub(crate) fn sse_answer(answer: &str, stream: u64, retry: Option<Duration>) -> String {
    match retry {
        Some(retry) => format!(
            "data: \nid: 0/{stream}\nretry: {}\n\ndata: {answer}\nid: 1/{stream}\n\n",
            retry.as_millis()
        ),
        None => format!("data: {answer}\nid: 0/{stream}\n\n"),
    }
}

/// An SSE response with rmcp's headers.
fn sse_response(body: String) -> Response<Body> {
    let mut resp = router::full(StatusCode::OK, "text/event-stream", body);
    let headers = resp.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    headers.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    resp
}

impl State {
    /// The answer to an in-session `tools/list` or `ping` from the prepared body, or None when
    /// rmcp must answer (see the module docs for when).
    pub(crate) async fn in_session_answer(
        &self,
        message: &Value,
        headers: &HeaderMap,
        principal: &Principal,
    ) -> Option<Response<Body>> {
        let id = session_id(headers)?;
        let (request_id, result) =
            rmcp_compat::prepared_result(self.tools_list_json(principal.scopes), message, headers)?;
        if !accepts_json_and_sse(headers) {
            return None;
        }
        let refresh = self.config.load().limits.session_idle_timeout / REFRESH_FRACTION;
        if !self.owned_and_fresh(id, principal, refresh) {
            return None;
        }
        let retry = if rmcp_compat::has_session(&self.sessions, id).await {
            Some(rmcp_compat::SSE_RETRY)
        } else if rmcp_compat::has_session(&self.sessions_unprimed, id).await {
            None
        } else {
            return None;
        };
        let stream = NEXT_STREAM.fetch_sub(1, Ordering::Relaxed);
        let answer = rmcp_compat::jsonrpc_result(request_id, result);
        Some(sse_response(sse_answer(&answer, stream, retry)))
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn the_framing_is_rmcps_with_and_without_priming() {
        let a = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        assert_eq!(
            sse_answer(a, 7, Some(Duration::from_secs(3))),
            format!("data: \nid: 0/7\nretry: 3000\n\ndata: {a}\nid: 1/7\n\n")
        );
        assert_eq!(sse_answer(a, 7, None), format!("data: {a}\nid: 0/7\n\n"));
    }
}
