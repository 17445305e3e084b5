//! Requests of a method MCP defines whose `params` do not fit it (`tools/call` with array
//! `arguments`, a numeric tool `name`, no `params`). rmcp parses such a request as a custom
//! request and answers -32601 "method not found"; the JSON-RPC answer is -32602 "invalid
//! params", naming the method and what did not fit.

use rmcp::{
    ErrorData,
    model::{CallToolRequestParams, InitializeRequestParams},
};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The client request methods of the MCP specification (2025-11-25), each of which rmcp parses
/// into a typed request when its params fit.
const MCP_METHODS: [&str; 13] = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
];

/// The methods the 2026-07-28 revision removed (SEP-2575).
const REMOVED_IN_2026_07_28: [&str; 5] = [
    "initialize",
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
];

/// Whether the 2026-07-28 revision removed `method` (a request of that revision for it is
/// "method not found", whatever its params).
pub(crate) fn removed_in_stateless_revision(method: &str) -> bool {
    REMOVED_IN_2026_07_28.contains(&method)
}

/// The -32602 answer for a request of an MCP `method` that rmcp could not parse as that method
/// (so its params are wrong), or `None` for a method MCP does not define.
pub(crate) fn invalid_params(method: &str, params: Option<&Value>) -> Option<ErrorData> {
    if !MCP_METHODS.contains(&method) {
        return None;
    }
    // A request of the 2026-07-28 (stateless) revision names its version in `_meta`; that
    // revision removed these methods, so it gets "method not found" (404), not "invalid params".
    let stateless_era = params
        .and_then(|p| p.pointer("/_meta/io.modelcontextprotocol~1protocolVersion"))
        .is_some();
    if stateless_era && removed_in_stateless_revision(method) {
        return None;
    }
    let why = match (method, params) {
        (_, Some(p)) if !p.is_object() => Some("params must be an object".to_string()),
        ("tools/call", Some(p)) => mismatch::<CallToolRequestParams>(p),
        ("initialize", Some(p)) => mismatch::<InitializeRequestParams>(p),
        (_, None) => Some("params are required".to_string()),
        _ => None,
    }
    .unwrap_or_else(|| "params do not match the request".to_string());
    Some(ErrorData::invalid_params(
        format!("Invalid params for {method}: {why}"),
        None,
    ))
}

/// What serde says about `params` as a `T`, if they do not fit.
fn mismatch<T: DeserializeOwned>(params: &Value) -> Option<String> {
    match T::deserialize(params) {
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use rmcp::model::ErrorCode;
    use serde_json::json;

    use super::*;

    #[test]
    fn methods_the_stateless_revision_removed_are_not_found_there() {
        let meta = json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}});
        for method in REMOVED_IN_2026_07_28 {
            assert!(invalid_params(method, Some(&meta)).is_none(), "{method}");
            assert!(
                invalid_params(method, Some(&json!({}))).is_some(),
                "{method}"
            );
        }
        assert!(invalid_params("tools/call", Some(&meta)).is_some());
    }

    #[test]
    fn known_methods_with_bad_params_are_invalid_params() {
        for params in [
            Some(json!({"name": "x", "arguments": []})),
            Some(json!({"name": 1})),
            None,
        ] {
            let e = invalid_params("tools/call", params.as_ref()).expect("a known method");
            assert_eq!(e.code, ErrorCode::INVALID_PARAMS);
            assert!(e.message.starts_with("Invalid params for tools/call: "));
        }
        let e = invalid_params("tools/call", None).unwrap();
        assert!(e.message.ends_with("params are required"), "{}", e.message);
    }

    #[test]
    fn unknown_methods_are_left_alone() {
        assert!(invalid_params("sysom/custom", Some(&json!({}))).is_none());
    }

    /// The premise: rmcp parses a `tools/call` with array arguments as a custom request.
    #[test]
    fn rmcp_parses_bad_tools_call_as_custom() {
        let msg: rmcp::model::ClientJsonRpcMessage = serde_json::from_value(json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "x", "arguments": []}
        }))
        .unwrap();
        let rmcp::model::JsonRpcMessage::Request(req) = msg else {
            panic!("a request")
        };
        assert!(matches!(
            req.request,
            rmcp::model::ClientRequest::CustomRequest(_)
        ));
    }
}
