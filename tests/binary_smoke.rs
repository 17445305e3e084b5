//! The paths a Rust contributor touches first, through the real binary: the tool table over
//! stdio and the HTTP router, so `cargo test` alone catches a broken one. The full behaviour is
//! tested with real MCP clients under tests/py and tests/ts.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_sysom-mcp");

/// The binary with no cloud credentials and an empty config file (the default path may
/// exist on a developer's host): what a fresh host runs.
fn command(args: &[&str], config: &tempfile::NamedTempFile) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SYSOM_MCP_CONFIG", config.path())
        .env("SYSOM_MCP_LOG", "stderr")
        .stderr(Stdio::null());
    cmd
}

/// Kills the child when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn initialize(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "binary-smoke", "version": "0"}}})
}

#[test]
fn stdio_lists_the_local_tools_without_credentials_and_runs_one() {
    let config = tempfile::NamedTempFile::new().unwrap();
    let child = command(&["--stdio"], &config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut child = Running(child);
    let mut stdin = child.0.stdin.take().unwrap();
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut send = |v: Value| writeln!(stdin, "{v}").unwrap();
    let mut answer = |id: u64| -> Value {
        loop {
            let line = lines.next().expect("an answer").unwrap();
            let v: Value = serde_json::from_str(&line).expect("stdout holds only JSON-RPC");
            if v["id"] == id {
                return v;
            }
        }
    };
    send(initialize(1));
    assert_eq!(answer(1)["result"]["serverInfo"]["name"], "sysom-mcp");
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let tools = answer(2)["result"]["tools"].as_array().unwrap().clone();
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.iter().all(|n| n.starts_with("local_")), "{names:?}");
    assert!(names.len() >= 11, "{names:?}");
    send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                "params": {"name": "local_triage", "arguments": {}}}));
    let result = answer(3);
    let envelope = &result["result"]["structuredContent"];
    assert_eq!(envelope["code"], "Success", "{result}");
    // A cloud tool still answers, with what to configure, not a crash.
    send(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                "params": {"name": "list_all_instances", "arguments": {"uid": "1234567890"}}}));
    let result = answer(4);
    let code = result["result"]["structuredContent"]["code"]
        .as_str()
        .unwrap_or("");
    assert_ne!(code, "Success", "{result}");
    assert!(!code.is_empty(), "{result}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 exchange on a fresh connection: (status, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[test]
fn http_router_serves_health_and_a_sessionless_tools_list() {
    let port = free_port();
    let config = tempfile::NamedTempFile::new().unwrap();
    let child = command(&["--streamable-http", "--port", &port.to_string()], &config)
        .stdout(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let _child = Running(child);
    let started = Instant::now();
    while http(port, "GET", "/healthz", None).map(|(s, _)| s).ok() != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(30), "no /healthz");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = http(
        port,
        "POST",
        "/mcp/unified",
        Some(&json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"})),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("a JSON answer");
    assert_eq!(answer["id"], 7);
    assert!(
        !answer["result"]["tools"].as_array().unwrap().is_empty(),
        "{answer}"
    );
    // Malformed JSON is a JSON-RPC parse error, an unknown path a 404.
    let (status, _) = http(port, "POST", "/mcp/unified", None).unwrap();
    assert_eq!(status, 400);
    assert_eq!(http(port, "GET", "/nope", None).unwrap().0, 404);
}
