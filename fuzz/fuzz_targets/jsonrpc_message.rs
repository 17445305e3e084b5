//! The JSON-RPC message path of the HTTP transports: the counting pass every body goes through,
//! then (only for bodies it lets through) the typed parse. A body that passes the limits must
//! parse without a stack overflow or a huge allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sysom_mcp::json_limits::{MESSAGE_LIMITS, check};

fuzz_target!(|data: &[u8]| {
    if check(data, &MESSAGE_LIMITS).is_ok() {
        let value: serde_json::Value = serde_json::from_slice(data).expect("check accepted it");
        let _ = serde_json::from_value::<rmcp::model::ClientJsonRpcMessage>(value);
    }
});
