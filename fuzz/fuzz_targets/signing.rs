//! The ACS3 signing canonicaliser: any query pairs, path and headers sign without panicking,
//! and the canonical query is deterministic and order-independent.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sysom_mcp::signing;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\n');
    let path = parts.next().unwrap_or("/").to_string();
    let pairs: Vec<(String, String)> = parts
        .clone()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect();
    let canonical = signing::canonical_query(&pairs);
    let mut reversed = pairs.clone();
    reversed.reverse();
    assert_eq!(canonical, signing::canonical_query(&reversed));
    let headers: Vec<(String, String)> = parts
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap_or((l, ""));
            (k.to_ascii_lowercase(), v.to_string())
        })
        .collect();
    let hashed = signing::sha256_hex(data);
    let sig = signing::sign(
        &signing::SignInput {
            method: "GET",
            path: &path,
            query: &pairs,
            headers: &headers,
            hashed_payload: &hashed,
        },
        "secret",
    );
    let _ = signing::authorization("AKID", &sig);
});
