//! Prepared answers to sessionless `tools/list` (and, before 2026-07-28, `ping`) requests
//! (issue 16).
//!
//! A sessionless request through rmcp costs a service spawned for it, a clone of the tool list
//! and its serialisation (34 KB and more) every time. The result never changes while the
//! process runs, so it is serialised once per scope set at start ([`State::tools_list_json`],
//! [`State::tools_list_json_2026`]) and answered from there, framed as rmcp frames it, where
//! rmcp's answer is known to be exactly that:
//!
//! * the request's Host is one rmcp takes ([`rmcp_compat::host_parses`]);
//! * session-era requests: [`rmcp_compat::prepared_answer`];
//! * 2026-07-28 requests: the plain `tools/list` of [`rmcp_compat::prepared_2026_request_id`],
//!   answered `200 application/json` with the result rmcp's handler gives a 2026-07-28 client
//!   (`resultType`, `ttlMs: 0`, `cacheScope: "private"`).
//!
//! Everything else (a cursor, other `_meta` keys, missing or contradicting protocol headers,
//! `ping`, which 2026-07-28 removed) goes to rmcp, so every error stays rmcp's. The router calls
//! this where rmcp would be called, after its own checks (client address, Host/Origin,
//! credential, Content-Type, Accept, body limits): a principal sees only the tools its scopes
//! may call, as on rmcp's path.

use http::{Response, StatusCode, request::Parts};
use rmcp::model::ClientJsonRpcMessage;
use serde_json::Value;

use super::{Body, State, rmcp_compat};
use crate::auth::Principal;

impl State {
    /// The answer to a sessionless `message` from a prepared body, or None when rmcp must
    /// answer. `rmcp_typed` is the request body as rmcp parses it from the bytes
    /// ([`rmcp_compat::rmcp_message`]; None when rmcp refuses them).
    pub(crate) fn sessionless_answer(
        &self,
        message: &Value,
        rmcp_typed: Option<&ClientJsonRpcMessage>,
        parts: &Parts,
        principal: &Principal,
    ) -> Option<Response<Body>> {
        if !matches!(
            message.get("method").and_then(Value::as_str),
            Some("tools/list" | "ping")
        ) || !rmcp_compat::host_parses(parts)
        {
            return None;
        }
        let typed = rmcp_typed?;
        if let Some(resp) = rmcp_compat::prepared_answer(
            self.tools_list_json(principal.scopes),
            message,
            &parts.headers,
        ) {
            return Some(resp);
        }
        let id = rmcp_compat::prepared_2026_request_id(typed, message, &parts.headers)?;
        let result = self.tools_list_json_2026(principal.scopes).clone();
        Some(rmcp_compat::pieces_response(
            StatusCode::OK,
            "application/json",
            rmcp_compat::jsonrpc_result(id, result),
        ))
    }
}

#[cfg(test)]
mod tests {
    //! The prepared answers against rmcp's own, byte for byte: every request variant goes both
    //! to [`State::sessionless_answer`] and to rmcp's stateless service (as the router would
    //! send it), and where the prepared path answers, rmcp's answer must be the same.
    use std::sync::Arc;

    use bytes::Bytes;
    use http::{HeaderValue, Request, header};
    use http_body_util::{BodyExt, Full};
    use serde_json::json;

    use super::*;
    use crate::auth::{Scope, Scopes, authenticate::Authenticator};

    fn state() -> Arc<State> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let args = crate::config::ServerArgs {
            config: Some("/dev/null".into()),
            tools: Some("all".into()),
            ..Default::default()
        };
        let config = crate::config::load(&args, &|_| None).expect("defaults are valid");
        let services =
            crate::tools::Services::from_config(&config, None).expect("no task key file");
        let server = crate::tools::SysomServer::new(services);
        State::new(config, Authenticator::default(), None, server, true)
    }

    /// The session-era body is rmcp's result for a pre-2026-07-28 peer (`resultType` stripped
    /// by rmcp's own method), byte for byte, for every scope set.
    #[test]
    fn the_session_era_body_is_rmcps_legacy_result() {
        let state = state();
        for scopes in Scopes::every() {
            let tools = state.server.tool_list_for(scopes);
            let mut rmcp = rmcp::model::ServerResult::ListToolsResult(
                rmcp::model::ListToolsResult::with_all_items(tools.clone()),
            );
            rmcp.strip_result_type_for_legacy_peer();
            let rmcp = serde_json::to_value(&rmcp).unwrap().to_string();
            let prepared = rmcp_compat::tools_list_json(tools);
            assert_eq!(std::str::from_utf8(&prepared).unwrap(), rmcp);
            assert!(!rmcp.contains("\"resultType\""), "{scopes:?}");
        }
    }

    fn meta() -> Value {
        json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"},
        })
    }

    fn tools_list(id: Value, params: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params})
    }

    const MODERN: [(&str, &str); 2] = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/list"),
    ];

    /// The request as the router hands it on: its principal in the extensions, and (on the
    /// stateless path) the Accept header rmcp insists on.
    fn parts(headers: &[(&str, &str)], principal: &Principal) -> Parts {
        let mut req = Request::post("/mcp/unified")
            .header(header::HOST, "127.0.0.1:7140")
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let mut req = req.body(()).unwrap();
        req.extensions_mut().insert(principal.clone());
        req.headers_mut().insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        req.into_parts().0
    }

    async fn read(resp: Response<Body>) -> (StatusCode, Option<String>, Bytes) {
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, ctype, body)
    }

    type Answer = (StatusCode, Option<String>, Bytes);

    /// (prepared answer if any, rmcp's answer) for `message` with `headers`.
    async fn both(
        state: &State,
        message: &Value,
        headers: &[(&str, &str)],
        principal: &Principal,
    ) -> (Option<Answer>, Answer) {
        both_raw(
            state,
            serde_json::to_vec(message).unwrap(),
            headers,
            principal,
        )
        .await
    }

    /// The same for a request body given as bytes.
    async fn both_raw(
        state: &State,
        body: Vec<u8>,
        headers: &[(&str, &str)],
        principal: &Principal,
    ) -> (Option<Answer>, Answer) {
        // As the router parses it.
        let value: Value = serde_json::from_slice(&body).unwrap();
        let parts = parts(headers, principal);
        let rmcp_typed = rmcp_compat::rmcp_message(&body);
        let prepared =
            match state.sessionless_answer(&value, rmcp_typed.as_ref(), &parts, principal) {
                Some(resp) => Some(read(resp).await),
                None => None,
            };
        let rmcp = state
            .stateless(Request::from_parts(parts, Full::new(Bytes::from(body))))
            .await;
        (prepared, read(rmcp).await)
    }

    #[tokio::test]
    async fn plain_2026_tools_lists_are_answered_as_rmcp_answers_them() {
        let state = state();
        let anyone = Principal::anonymous();
        let reader = Principal::token("reader", Scopes::NONE.with(Scope::Read));
        let no_info = {
            let mut m = meta();
            m.as_object_mut()
                .unwrap()
                .remove("io.modelcontextprotocol/clientInfo");
            m
        };
        let caps = {
            let mut m = meta();
            m["io.modelcontextprotocol/clientCapabilities"] = json!({"sampling": {}});
            m
        };
        let variants = [
            (tools_list(json!(1), json!({"_meta": meta()})), &anyone),
            (
                tools_list(json!("req-\"7\"\u{e9}"), json!({"_meta": meta()})),
                &anyone,
            ),
            (tools_list(json!(-3), json!({"_meta": no_info})), &anyone),
            (
                tools_list(json!(9007199254740993_i64), json!({"_meta": caps})),
                &anyone,
            ),
            (tools_list(json!(2), json!({"_meta": meta()})), &reader),
        ];
        for (message, principal) in &variants {
            let (prepared, rmcp) = both(&state, message, &MODERN, principal).await;
            let prepared = prepared.unwrap_or_else(|| panic!("not prepared: {message}"));
            assert_eq!(prepared, rmcp, "{message}");
            assert_eq!(rmcp.0, StatusCode::OK);
            let answer: Value = serde_json::from_slice(&rmcp.2).unwrap();
            assert_eq!(answer["result"]["cacheScope"], "private", "{answer}");
        }
        // The reader's list holds the read tools alone.
        let (prepared, _) = both(&state, &variants[4].0, &MODERN, &reader).await;
        let answer: Value = serde_json::from_slice(&prepared.unwrap().2).unwrap();
        let tools = answer["result"]["tools"].as_array().unwrap();
        let all = state.server().tool_list_for(Scopes::ALL).len();
        assert!(
            !tools.is_empty() && tools.len() < all,
            "{} of {all}",
            tools.len()
        );
        for tool in tools {
            let name = tool["name"].as_str().unwrap();
            assert_eq!(state.server().tool_scope(name), Some(Scope::Read), "{name}");
        }
    }

    #[tokio::test]
    async fn everything_else_is_left_to_rmcp() {
        let state = state();
        let anyone = Principal::anonymous();
        let with_meta = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
            let mut m = meta();
            f(m.as_object_mut().unwrap());
            tools_list(json!(1), json!({"_meta": m}))
        };
        let plain = tools_list(json!(1), json!({"_meta": meta()}));
        let header_variants: [&[(&str, &str)]; 7] = [
            &[("mcp-protocol-version", "2026-07-28")],
            &[("mcp-method", "tools/list")],
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "ping"),
            ],
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/list"),
                ("mcp-method", "tools/list"),
            ],
            &[
                ("mcp-protocol-version", "2025-11-25"),
                ("mcp-method", "tools/list"),
            ],
            &[
                ("mcp-protocol-version", "2099-01-01"),
                ("mcp-method", "tools/list"),
            ],
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/list"),
            ],
        ];
        for headers in header_variants {
            let (prepared, rmcp) = both(&state, &plain, headers, &anyone).await;
            assert!(prepared.is_none(), "{headers:?}: {rmcp:?}");
        }
        let body_variants = [
            tools_list(json!(1), json!({"_meta": meta(), "cursor": "x"})),
            tools_list(json!(1), json!({"_meta": meta(), "cursor": null})),
            tools_list(json!(1), json!({})),
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
            with_meta(&|m| {
                m.remove("io.modelcontextprotocol/protocolVersion");
            }),
            with_meta(&|m| {
                m.remove("io.modelcontextprotocol/clientCapabilities");
            }),
            with_meta(&|m| {
                m["io.modelcontextprotocol/protocolVersion"] = json!("2025-11-25");
            }),
            with_meta(&|m| {
                m["io.modelcontextprotocol/clientCapabilities"] = json!("none");
            }),
            with_meta(&|m| {
                m["io.modelcontextprotocol/clientInfo"] = json!(7);
            }),
            with_meta(&|m| {
                m.insert("progressToken".into(), json!(1));
            }),
            json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"_meta": meta()}}),
        ];
        for message in &body_variants {
            let headers: &[(&str, &str)] = if message["method"] == "ping" {
                &[
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "ping"),
                ]
            } else {
                &MODERN
            };
            let (prepared, rmcp) = both(&state, message, headers, &anyone).await;
            assert!(prepared.is_none(), "{message}: {rmcp:?}");
        }
        // Two of them that rmcp answers with the whole list: the same list as prepared.
        let (prepared, _) = both(&state, &plain, &MODERN, &anyone).await;
        for message in &body_variants[1..2] {
            let (_, rmcp) = both(&state, message, &MODERN, &anyone).await;
            assert_eq!(Some(&rmcp), prepared.as_ref(), "{message}");
        }
        let (_, rmcp) = both(
            &state,
            &with_meta(&|m| {
                m.insert("progressToken".into(), json!(1));
            }),
            &MODERN,
            &anyone,
        )
        .await;
        assert_eq!(Some(&rmcp), prepared.as_ref());
    }

    #[tokio::test]
    async fn a_host_rmcp_refuses_is_left_to_it() {
        let state = state();
        let anyone = Principal::anonymous();
        let plain = tools_list(json!(1), json!({"_meta": meta()}));
        let old = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
        for (message, headers) in [(&plain, &MODERN[..]), (&old, &[][..])] {
            let body = serde_json::to_vec(message).unwrap();
            let typed = rmcp_compat::rmcp_message(&body);
            let mut parts = parts(headers, &anyone);
            assert!(
                state
                    .sessionless_answer(message, typed.as_ref(), &parts, &anyone)
                    .is_some()
            );
            for host in [Some("a b"), Some("[::1"), None] {
                match host {
                    Some(host) => parts
                        .headers
                        .insert(header::HOST, HeaderValue::from_static(host)),
                    None => parts.headers.remove(header::HOST),
                };
                assert!(
                    state
                        .sessionless_answer(message, typed.as_ref(), &parts, &anyone)
                        .is_none(),
                    "{host:?}"
                );
                let rmcp = state
                    .stateless(Request::from_parts(
                        parts.clone(),
                        Full::new(Bytes::from(body.clone())),
                    ))
                    .await;
                assert_eq!(rmcp.status(), StatusCode::BAD_REQUEST, "{host:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_repeated_key_is_no_message_to_rmcp() {
        let state = state();
        let anyone = Principal::anonymous();
        let meta = meta().to_string();
        let bodies = [
            (
                format!(
                    r#"{{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/list","params":{{"_meta":{meta}}}}}"#
                ),
                &MODERN[..],
            ),
            (
                format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"_meta":{meta},"_meta":{meta}}}}}"#
                ),
                &MODERN[..],
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/list"}"#.to_string(),
                &[][..],
            ),
        ];
        for (body, headers) in bodies {
            let (prepared, rmcp) =
                both_raw(&state, body.clone().into_bytes(), headers, &anyone).await;
            assert_eq!(prepared, None, "{body}");
            assert_eq!(rmcp.0, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
        }
    }
}
