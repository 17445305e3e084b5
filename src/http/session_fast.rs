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
//! * rmcp takes the Host ([`rmcp_compat::host_parses`]) and the body as one message (a
//!   repeated key is none to rmcp, [`rmcp_compat::rmcp_message`]);
//! * rmcp has seen a request of this session recently ([`REFRESH_FRACTION`] of the idle
//!   timeout): a request rmcp never sees does not reset its idle timer, so a session used only
//!   through this path still gets a request through now and then and expires no earlier than
//!   15/16 of the idle timeout after its last request.
//!
//! The framing is rmcp's (`session::local`, copied in [`rmcp_compat::sse_answer`]): a request's stream is a priming event
//! (`data:` empty, `id: 0/N`, `retry:`) in sessions on 2025-11-25 or later, then the answer as
//! `data: …` with `id: <index>/N`, where N numbers the session's HTTP requests. Our N counts
//! down from `u64::MAX` (rmcp's count up from 0 and never meet them), so a `Last-Event-ID`
//! naming one of these events is a stream rmcp does not hold: it answers the resume with an
//! empty stream, as it does for its own streams once their replay cache has expired.

use std::sync::atomic::{AtomicU64, Ordering};

use http::{Response, request::Parts};
use rmcp::model::ClientJsonRpcMessage;
use serde_json::Value;

use super::{Body, State, rmcp_compat, session_id};
use crate::auth::Principal;

/// How much of the session idle timeout may pass without a request reaching rmcp before the
/// next in-session `tools/list`/`ping` is sent through rmcp instead (1/16).
pub(crate) const REFRESH_FRACTION: u32 = 16;

/// The next `N` of a prepared answer's event ids (counting down; see the module docs).
static NEXT_STREAM: AtomicU64 = AtomicU64::new(u64::MAX);

impl State {
    /// The answer to an in-session `tools/list` or `ping` from the prepared body, or None when
    /// rmcp must answer (see the module docs for when). `rmcp_typed` is the body as rmcp
    /// parses it from the bytes (None when rmcp refuses them).
    pub(crate) async fn in_session_answer(
        &self,
        message: &Value,
        rmcp_typed: Option<&ClientJsonRpcMessage>,
        parts: &Parts,
        principal: &Principal,
    ) -> Option<Response<Body>> {
        let headers = &parts.headers;
        let id = session_id(headers)?;
        let (request_id, result) =
            rmcp_compat::prepared_result(self.tools_list_json(principal.scopes), message, headers)?;
        if !rmcp_compat::accepts_json_and_sse(headers)
            || !rmcp_compat::host_parses(parts)
            || rmcp_typed.is_none()
        {
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
        Some(rmcp_compat::sse_response(rmcp_compat::sse_answer(
            answer, stream, retry,
        )))
    }
}
