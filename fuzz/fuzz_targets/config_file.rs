//! config.toml and token-file parsing: arbitrary text never panics, and a parse error never
//! quotes the file (the input carries a marker the error must not contain).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = sysom_mcp::config::file::parse(text) {
        // Values in the message are elided; only keys (which the fuzzer may also spell as the
        // marker) can show, so check with a marker that cannot be a bare key.
        let marker = "\"SECRET-\u{1F511}\"";
        if text.contains(marker) {
            assert!(!e.contains("SECRET-\u{1F511}"), "{e}");
        }
    }
    let dir = std::env::temp_dir().join(format!("sysom-fuzz-tokens-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("tokens");
    if std::fs::write(&path, data).is_ok() {
        let _ = sysom_mcp::fuzzing::Tokens::load(&[path], None);
    }
});
