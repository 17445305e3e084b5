//! The SSE parser of `sysom-mcp proxy` (the remote's legacy SSE stream): the bounded event
//! reader over `sse-stream`, then the message endpoint check. See `fuzz_check` in
//! src/proxy/legacy_sse.rs for what must hold (tests/fuzz_replay.rs runs the same checks).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sysom_mcp::fuzzing::proxy_sse(data));
