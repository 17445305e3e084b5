//! Replays the saved fuzz corpora (fuzz/corpus/<target>/*) on stable, with the same checks as
//! the cargo-fuzz targets, so a machine without nightly still runs every input found so far.

use std::{fs, path::Path};

use sysom_mcp::{config, fuzzing, json_limits, signing};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<Vec<u8>> = fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| fs::read(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    assert!(!out.is_empty(), "no corpus in {}", dir.display());
    out
}

#[test]
fn jsonrpc_message_corpus() {
    for data in corpus("jsonrpc_message") {
        if json_limits::check(&data, &json_limits::MESSAGE_LIMITS).is_ok() {
            let value: serde_json::Value = serde_json::from_slice(&data).unwrap();
            let _ = serde_json::from_value::<rmcp::model::ClientJsonRpcMessage>(value);
        }
    }
}

#[test]
fn proxy_sse_corpus() {
    for data in corpus("proxy_sse") {
        fuzzing::proxy_sse(&data);
    }
}

#[test]
fn config_file_corpus() {
    for data in corpus("config_file") {
        if let Ok(text) = std::str::from_utf8(&data)
            && let Err(e) = config::file::parse(text)
            && text.contains("\"SECRET-\u{1F511}\"")
        {
            assert!(!e.contains("SECRET-\u{1F511}"), "{e}");
        }
    }
}

#[test]
fn signing_corpus() {
    for data in corpus("signing") {
        let text = String::from_utf8_lossy(&data);
        let pairs: Vec<(String, String)> = text
            .split('\n')
            .skip(1)
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (l.to_string(), String::new()),
            })
            .collect();
        let mut reversed = pairs.clone();
        reversed.reverse();
        assert_eq!(
            signing::canonical_query(&pairs),
            signing::canonical_query(&reversed)
        );
    }
}
