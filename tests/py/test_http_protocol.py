"""Raw HTTP behaviour of /mcp/unified: status codes, headers, SSE framing and keep-alives, the
legacy HTTP+SSE message endpoint, stateless serving (two instances, one client), health routes."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.parse

import pytest

import support
from support import (INITIALIZE, MCP_PATH, TOOLS_LIST, UID, RawSse, jsonrpc_answer, mcp_session, payload,
                     post_json_headers, sse_json_messages, tools_from_jsonrpc)

JSON = {"Content-Type": "application/json"}


# --- status codes -------------------------------------------------------------------------------

def test_unknown_path_is_404(start):
    srv = start()
    for path in ("/", "/mcp", "/mcp/unified/other", "/sse"):
        status, headers, body = srv.request("GET", path, headers={"Accept": "text/event-stream"})
        assert status == 404, path
        assert headers["content-type"].startswith("application/json")
        assert json.loads(body)["error"] == "not_found"


def test_put_is_405_with_allow(start):
    srv = start()
    status, headers, _ = srv.request("PUT", MCP_PATH, body=TOOLS_LIST, headers=JSON)
    assert status == 405
    allowed = {m.strip() for m in headers["allow"].split(",")}
    assert {"GET", "POST"} <= allowed and "PUT" not in allowed
    # The message endpoint only takes POST.
    status, headers, _ = srv.request("GET", MCP_PATH + "/messages?sessionId=x")
    assert status == 405
    assert headers["allow"] == "POST"


def test_get_accepting_only_json_is_406(start):
    srv = start()
    status, _, body = srv.request("GET", MCP_PATH, headers={"Accept": "application/json"})
    assert status == 406
    assert "text/event-stream" in json.loads(body)["message"]


def test_post_with_accept_of_neither_type_is_406(start):
    srv = start()
    status, _, _ = srv.request("POST", MCP_PATH, body=TOOLS_LIST, headers={**JSON, "Accept": "text/html"})
    assert status == 406


def test_post_text_plain_is_415(start):
    srv = start()
    status, _, body = srv.request("POST", MCP_PATH, body=json.dumps(TOOLS_LIST),
                                  headers={"Content-Type": "text/plain"})
    assert status == 415
    assert json.loads(body)["error"] == "unsupported_media_type"


def test_body_over_limit_is_413(start):
    srv = start(["--max-body-bytes", "2048"])
    big = {**TOOLS_LIST, "params": {"pad": "x" * 4096}}
    status, _, _ = srv.request("POST", MCP_PATH, body=big, headers=JSON)
    assert status == 413
    # Under the limit the same request is served.
    status, _, body = srv.request("POST", MCP_PATH, body=TOOLS_LIST, headers=JSON)
    assert status == 200 and len(tools_from_jsonrpc(body)) == 21


def test_body_over_limit_is_413_on_every_post_route(start):
    srv = start(["--max-body-bytes", "2048"])
    big = {**TOOLS_LIST, "params": {"pad": "x" * 4096}}
    # Legacy message endpoint.
    with RawSse(srv) as sse:
        endpoint = sse.endpoint()
        status, _, _ = srv.request("POST", endpoint, body=big, headers=JSON)
        assert status == 413
    # Streamable HTTP with a session.
    status, headers, _ = srv.request("POST", MCP_PATH, body=INITIALIZE, headers=post_json_headers())
    assert status == 200
    sid = headers["mcp-session-id"]
    status, _, _ = srv.request("POST", MCP_PATH, body=big,
                               headers=post_json_headers({"Mcp-Session-Id": sid}))
    assert status == 413


def test_malformed_json_is_400_with_jsonrpc_parse_error(start):
    srv = start()
    status, headers, body = srv.request("POST", MCP_PATH, body=b'{"jsonrpc": "2.0", "id": 1,', headers=JSON)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    msg = json.loads(body)
    assert msg["jsonrpc"] == "2.0" and msg["error"]["code"] == -32700
    # Same inside a Streamable HTTP session (rmcp alone would answer 415)...
    status, headers, _ = srv.request("POST", MCP_PATH, body=INITIALIZE, headers=post_json_headers())
    sid = headers["mcp-session-id"]
    status, _, body = srv.request("POST", MCP_PATH, body=b"{bad",
                                  headers=post_json_headers({"Mcp-Session-Id": sid}))
    assert status == 400
    assert json.loads(body)["error"]["code"] == -32700
    # ... and on the legacy message endpoint.
    with RawSse(srv) as sse:
        status, _, body = srv.request("POST", sse.endpoint(), body=b"{not json", headers=JSON)
        assert status == 400
        assert json.loads(body)["error"]["code"] == -32700


# --- SSE framing ---------------------------------------------------------------------------------

def test_legacy_sse_headers_and_endpoint_event(start):
    srv = start()
    with RawSse(srv) as sse:
        assert sse.status == 200
        assert sse.headers["content-type"].startswith("text/event-stream")
        assert sse.headers.get("cache-control") == "no-cache"
        assert sse.headers.get("x-accel-buffering") == "no"
        endpoint = sse.endpoint()
        parsed = urllib.parse.urlsplit(endpoint)
        assert parsed.path == MCP_PATH + "/messages"
        sid = urllib.parse.parse_qs(parsed.query)["sessionId"][0]
        assert len(sid) >= 16


def test_legacy_sse_message_round_trip(start):
    srv = start()
    with RawSse(srv) as sse:
        endpoint = sse.endpoint()
        status, _, _ = srv.request("POST", endpoint, body=INITIALIZE, headers=JSON)
        assert status == 202
        ev = sse.next_event()
        assert ev["event"] == "message"
        assert json.loads(ev["data"])["result"]["serverInfo"]
        status, _, _ = srv.request("POST", endpoint, headers=JSON,
                                   body={"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert status == 202
        status, _, _ = srv.request("POST", endpoint, body={**TOOLS_LIST, "id": 2}, headers=JSON)
        assert status == 202
        ev = sse.next_event()
        msg = json.loads(ev["data"])
        assert msg["id"] == 2 and len(msg["result"]["tools"]) == 21


def test_legacy_unknown_session_is_404(start):
    srv = start()
    status, _, body = srv.request("POST", MCP_PATH + "/messages?sessionId=0123456789abcdef", body=TOOLS_LIST,
                                  headers=JSON)
    assert status == 404
    assert json.loads(body)["error"] == "unknown_session"
    status, _, _ = srv.request("POST", MCP_PATH + "/messages", body=TOOLS_LIST, headers=JSON)
    assert status == 400


def keep_alive_times(sse: RawSse, duration: float) -> list[float]:
    sse.set_timeout(duration + 2)
    end = time.monotonic() + duration
    times = []
    while time.monotonic() < end:
        line = sse.readline()
        if line is None:
            break
        if line.startswith(":"):  # an SSE comment (ours say "keep-alive", rmcp's are empty)
            times.append(time.monotonic())
    return times


def test_legacy_sse_keep_alive_interval(start):
    srv = start(["--sse-keep-alive", "1"])
    with RawSse(srv) as sse:
        sse.endpoint()
        opened = time.monotonic()
        times = keep_alive_times(sse, 3.6)
    assert all(line == ": keep-alive" for _, line in sse.lines if line.startswith(":"))
    assert len(times) >= 3, f"expected a keep-alive comment per second, got {len(times)}"
    assert times[0] - opened < 1.8
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(0.5 < g < 2.0 for g in gaps), gaps


def test_default_keep_alive_is_not_one_second(start):
    """Without the flag the interval is 15 s: no comment within the first 2.5 s."""
    srv = start()
    with RawSse(srv) as sse:
        sse.endpoint()
        sse.set_timeout(2.5)
        with pytest.raises((TimeoutError, OSError)):
            while True:
                line = sse.readline()
                assert not (line or "").startswith(":"), "keep-alive sent before 15 s"


def test_streamable_sse_headers_and_keep_alive(start):
    """Streamable HTTP: the POST answer as SSE and the standalone GET stream carry the same headers."""
    srv = start(["--sse-keep-alive", "1"])
    status, headers, body = srv.request("POST", MCP_PATH, body=INITIALIZE, headers=post_json_headers())
    assert status == 200
    sid = headers["mcp-session-id"]
    assert jsonrpc_answer(headers, body)["result"]["serverInfo"]
    if headers["content-type"].startswith("text/event-stream"):
        assert headers.get("cache-control", "").startswith("no-cache"), headers
        assert headers.get("x-accel-buffering") == "no", headers
    status, _, _ = srv.request("POST", MCP_PATH, headers=post_json_headers({"Mcp-Session-Id": sid}),
                               body={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert status == 202
    with RawSse(srv, headers={"Mcp-Session-Id": sid}) as sse:
        assert sse.status == 200
        assert sse.headers["content-type"].startswith("text/event-stream")
        assert sse.headers.get("cache-control", "").startswith("no-cache"), sse.headers
        assert sse.headers.get("x-accel-buffering") == "no", sse.headers
        times = keep_alive_times(sse, 3.6)
    assert len(times) >= 2, f"no keep-alive comments on the standalone stream: {sse.lines}"


# --- Streamable HTTP sessions and stateless serving ----------------------------------------------

def test_initialize_issues_session_and_delete_ends_it(start):
    srv = start()
    status, headers, _ = srv.request("POST", MCP_PATH, body=INITIALIZE, headers=post_json_headers())
    assert status == 200
    sid = headers["mcp-session-id"]
    status, headers, body = srv.request("POST", MCP_PATH, body={**TOOLS_LIST, "id": 2},
                                        headers=post_json_headers({"Mcp-Session-Id": sid}))
    assert status == 200
    assert len(jsonrpc_answer(headers, body)["result"]["tools"]) == 21
    status, _, _ = srv.request("DELETE", MCP_PATH, headers={"Mcp-Session-Id": sid})
    assert status in (200, 202, 204)
    status, _, _ = srv.request("POST", MCP_PATH, body={**TOOLS_LIST, "id": 3},
                               headers=post_json_headers({"Mcp-Session-Id": sid}))
    assert status == 404, "a deleted session must answer 404 so the client re-initialises"


def test_prepared_tools_list_equals_the_session_answer(start):
    """Sessionless tools/list and ping are answered from a prepared body; they must be identical
    to what rmcp answers inside a session, ids of any JSON type included."""
    srv = start()
    status, headers, _ = srv.request("POST", MCP_PATH, body=INITIALIZE, headers=post_json_headers())
    sid = headers["mcp-session-id"]
    status, headers, body = srv.request("POST", MCP_PATH, body={**TOOLS_LIST, "id": 2},
                                        headers=post_json_headers({"Mcp-Session-Id": sid}))
    in_session = jsonrpc_answer(headers, body)["result"]
    for request_id in (5, "req-5"):
        status, headers, body = srv.request("POST", MCP_PATH, body={**TOOLS_LIST, "id": request_id},
                                            headers=JSON)
        assert status == 200 and headers["content-type"].startswith("application/json")
        answer = json.loads(body)
        assert answer["id"] == request_id and answer["jsonrpc"] == "2.0"
        assert answer["result"] == in_session
    status, _, body = srv.request("POST", MCP_PATH, body={"jsonrpc": "2.0", "id": 9, "method": "ping"},
                                  headers=JSON)
    assert status == 200 and json.loads(body) == {"jsonrpc": "2.0", "id": 9, "result": {}}
    # A protocol version rmcp refuses is refused on the prepared path too.
    status, _, _ = srv.request("POST", MCP_PATH, body=TOOLS_LIST,
                               headers={**JSON, "MCP-Protocol-Version": "1999-01-01"})
    assert status == 400


def test_plain_post_without_session_is_stateless(start):
    srv = start()
    status, headers, body = srv.request("POST", MCP_PATH, body=TOOLS_LIST, headers=JSON)
    assert status == 200
    assert "mcp-session-id" not in headers
    assert headers["content-type"].startswith("application/json")
    assert len(tools_from_jsonrpc(body)) == 21
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "list_all_instances", "arguments": {"uid": UID}}}
    status, headers, body = srv.request("POST", MCP_PATH, body=call, headers=JSON)
    assert status == 200 and "mcp-session-id" not in headers
    msg = json.loads(body)
    assert msg["id"] == 7 and payload(msg["result"])["code"] == "Success"


def test_stateless_flag_issues_no_session(start):
    srv = start(["--stateless"])
    status, headers, body = srv.request("POST", MCP_PATH, body=INITIALIZE, headers=post_json_headers())
    assert status == 200
    assert "mcp-session-id" not in headers
    assert jsonrpc_answer(headers, body)["result"]["serverInfo"]


class RoundRobin:
    """A tiny HTTP forwarder sending each request to the next backend in turn."""

    def __init__(self, backends: list[str]):
        self.backends = backends
        self.hits = [0] * len(backends)
        self.session_ids: list[str] = []
        self.statuses: list[int] = []
        self._next = 0
        self._lock = threading.Lock()
        rr = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with rr._lock:
                    i = rr._next
                    rr._next = (i + 1) % len(rr.backends)
                    rr.hits[i] += 1
                import http.client
                host, port = rr.backends[i].split(":")
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "content-length")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                if resp.getheader("content-type", "").startswith("text/event-stream") and self.command == "GET":
                    data = b""  # a standalone stream: not expected in stateless mode
                    conn.close()
                else:
                    data = resp.read()
                    conn.close()
                rr.statuses.append(resp.status)
                if resp.getheader("mcp-session-id"):
                    rr.session_ids.append(resp.getheader("mcp-session-id"))
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _forward

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{MCP_PATH}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.anyio
async def test_two_stateless_instances_answer_one_client_alternately(start):
    a = start(["--stateless"])
    b = start(["--stateless"])
    rr = RoundRobin([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"])
    try:
        async with mcp_session("http", rr.url) as client:
            for _ in range(3):
                assert len(await client.list_tools()) == 21
                out = payload(await client.call("list_all_instances", {"uid": UID}))
                assert out["code"] == "Success"
    finally:
        rr.close()
    assert rr.session_ids == [], f"--stateless issued Mcp-Session-Id: {rr.session_ids}"
    assert all(h >= 3 for h in rr.hits), f"requests per instance: {rr.hits}"
    assert all(s < 300 for s in rr.statuses), rr.statuses


# --- health -------------------------------------------------------------------------------------

def test_healthz_and_readyz(start, mock):
    srv = start()
    status, headers, body = srv.request("GET", "/healthz")
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert json.loads(body) == {"status": "ok"}
    status, headers, body = srv.request("GET", "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"

    bare = start(env=support.server_env(mock, credentials=False))
    status, _, body = bare.request("GET", "/healthz")
    assert status == 200
    status, headers, body = bare.request("GET", "/readyz")
    assert status == 503
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["status"] != "ready"


def test_cleartext_http2_prior_knowledge(start):
    """h2c (HTTP/2 without TLS, as some proxies speak to backends), also through a Host allow-list."""
    import shutil
    import subprocess
    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    srv = start(["--allowed-hosts", "localhost"])
    proc = subprocess.run(["curl", "-sS", "-m", "10", "--http2-prior-knowledge", "-w", "\n%{http_version}",
                           "--resolve", f"localhost:{srv.port}:127.0.0.1", "-X", "POST",
                           f"http://localhost:{srv.port}{MCP_PATH}", "-H", "Content-Type: application/json",
                           "-d", json.dumps(TOOLS_LIST)], capture_output=True, text=True, timeout=15)
    assert proc.returncode == 0, proc.stderr
    body, _, version = proc.stdout.rpartition("\n")
    assert version == "2"
    assert len(tools_from_jsonrpc(body.encode())) == 21


@pytest.mark.parametrize("body", [json.dumps([TOOLS_LIST]), "{}", '{"jsonrpc": "2.0", "id": 1}', "42"])
def test_json_that_is_not_a_jsonrpc_message_is_400_invalid_request(start, body):
    srv = start()
    status, headers, _ = srv.request("POST", MCP_PATH, body=INITIALIZE, headers=post_json_headers())
    sid = headers["mcp-session-id"]
    with RawSse(srv) as sse:
        targets = {"stateless": (MCP_PATH, JSON), "session": (MCP_PATH, post_json_headers({"Mcp-Session-Id": sid})),
                   "legacy": (sse.endpoint(), JSON)}
        for name, (path, headers) in targets.items():
            status, resp_headers, raw = srv.request("POST", path, body=body, headers=headers)
            assert status == 400, (name, status, raw)
            assert resp_headers["content-type"].startswith("application/json"), name
            assert json.loads(raw)["error"]["code"] == -32600, (name, raw)
