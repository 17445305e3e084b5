"""Limits (sessions, connections per client IP, session idle timeout) and graceful shutdown."""

from __future__ import annotations

import json
import re
import signal
import socket
import time

import pytest

import support
from support import (INITIALIZE, INSTANCE, MCP_PATH, TOOLS_LIST, UID, Background, NotifySocket, RawSse, mcp_session,
                     payload, post_json_headers, read_until_closed, tcp_listening, tools_from_jsonrpc, wait_until)

JSON = {"Content-Type": "application/json"}
SSE = {"Accept": "text/event-stream"}
DIAG_ARGS = {"uid": UID, "region": "cn-hangzhou", "channel": "ecs", "instance": INSTANCE}
MEMGRAPH_CALL = {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                 "params": {"name": "memgraph", "arguments": DIAG_ARGS}}


# --- sessions -----------------------------------------------------------------------------------

def test_max_sessions_503_with_retry_after(start, mock):
    srv = start(env=support.server_env(mock, SYSOM_MCP_MAX_SESSIONS="2"))
    first, second = RawSse(srv), RawSse(srv)
    try:
        endpoint = first.endpoint()
        second.endpoint()
        status, headers, body = srv.request("GET", MCP_PATH, headers=SSE)
        assert status == 503
        assert int(headers["retry-after"]) > 0
        assert json.loads(body)["error"] == "overloaded"
        # Creating a Streamable HTTP session is refused the same way.
        status, headers, _ = srv.request("POST", MCP_PATH, body=INITIALIZE, headers=post_json_headers())
        assert status == 503 and "retry-after" in headers
        # Everyone else is still served: open sessions, sessionless requests, health.
        assert srv.request("POST", endpoint, body=INITIALIZE, headers=JSON)[0] == 202
        assert json.loads(first.next_event()["data"])["result"]["serverInfo"]
        status, _, body = srv.request("POST", MCP_PATH, body=TOOLS_LIST, headers=JSON)
        assert status == 200 and len(tools_from_jsonrpc(body)) == 21
        assert srv.request("GET", "/healthz")[0] == 200
    finally:
        first.close()
    try:
        # A closed stream frees its slot.
        wait_until(lambda: srv.request("GET", "/metrics")[0] == 200 and _can_open(srv), 5, interval=0.1,
                   what="the session slot freed after the client went away")
    finally:
        second.close()


def _can_open(srv) -> bool:
    with RawSse(srv) as sse:
        return sse.status == 200


# --- connections per IP -------------------------------------------------------------------------

def raw_get(sock: socket.socket, path: str = "/healthz") -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_connections_per_ip_429_with_retry_after(start, mock):
    srv = start(env=support.server_env(mock, SYSOM_MCP_MAX_CONNECTIONS_PER_IP="2"))
    time.sleep(0.3)  # let the readiness probe's connection end
    held = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(2)]
    try:
        for s in held:
            assert raw_get(s).startswith(b"HTTP/1.1 200"), "the first two connections are served"
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as third:
            head = raw_get(third).decode(errors="replace")
        status_line, *header_lines = head.split("\r\n")
        assert " 429 " in status_line, head
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
        assert int(headers["retry-after"]) > 0
        # Another client address (127.0.0.2 is loopback too) is unaffected.
        other = socket.socket()
        other.bind(("127.0.0.2", 0))
        other.settimeout(5)
        other.connect(("127.0.0.1", srv.port))
        with other:
            assert raw_get(other).startswith(b"HTTP/1.1 200")
    finally:
        for s in held:
            s.close()
    # Once the held connections close, this client is served again.
    wait_until(lambda: srv.request("GET", "/healthz")[0] == 200, 5, interval=0.1,
               what="the client served again once the held connections closed")


# --- idle sessions ------------------------------------------------------------------------------

def test_idle_legacy_sse_session_is_closed(start, mock):
    srv = start(["--sse-keep-alive", "1"], env=support.server_env(mock, SYSOM_MCP_SESSION_IDLE_TIMEOUT="2"))
    with RawSse(srv) as sse:
        endpoint = sse.endpoint()
        opened = time.monotonic()
        assert read_until_closed(sse, 8) == "eof", "idle SSE stream not ended within 8 s (timeout 2 s)"
        elapsed = time.monotonic() - opened
    assert elapsed >= 1.5, f"closed after {elapsed:.1f}s, before the idle timeout"
    status, _, _ = srv.request("POST", endpoint, body=INITIALIZE, headers=JSON)
    assert status == 404, "the idle session should be gone"


def test_active_legacy_sse_session_is_not_closed(start, mock):
    srv = start(["--sse-keep-alive", "1"], env=support.server_env(mock, SYSOM_MCP_SESSION_IDLE_TIMEOUT="2"))
    with RawSse(srv) as sse:
        endpoint = sse.endpoint()
        assert srv.request("POST", endpoint, body=INITIALIZE, headers=JSON)[0] == 202
        for i in range(4):  # 4 requests 1 s apart: 4 s in total, never 2 s idle
            time.sleep(1)
            assert srv.request("POST", endpoint, body={**TOOLS_LIST, "id": 10 + i}, headers=JSON)[0] == 202


def test_idle_streamable_session_expires(start, mock):
    srv = start(env=support.server_env(mock, SYSOM_MCP_SESSION_IDLE_TIMEOUT="2"))
    status, headers, _ = srv.request("POST", MCP_PATH, body=INITIALIZE, headers=post_json_headers())
    sid = headers["mcp-session-id"]
    time.sleep(3.5)
    status, _, _ = srv.request("POST", MCP_PATH, body={**TOOLS_LIST, "id": 2},
                               headers=post_json_headers({"Mcp-Session-Id": sid}))
    assert status == 404


# --- graceful shutdown --------------------------------------------------------------------------

def test_sigterm_lets_running_call_finish_and_exits_0(start, mock):
    mock.scenario(diagnosis={"polls_before_done": 12})  # 12 polls x 200 ms: about 2.5 s
    with NotifySocket() as notify:
        env = support.server_env(mock, SYSOM_MCP_POLL_INTERVAL_MS="200", SYSOM_MCP_DIAGNOSIS_TIMEOUT="30",
                                 NOTIFY_SOCKET=notify.path)
        srv = start(["--shutdown-grace", "5"], env=env)
        stream = RawSse(srv)
        stream.endpoint()
        worker = Background(srv.request, "POST", MCP_PATH, body=MEMGRAPH_CALL, headers=JSON, timeout=20)
        try:
            mock.wait_for(lambda reqs: sum(r["action"] == "GetDiagnosisResult" for r in reqs) >= 2, timeout=10)
            mark = notify.mark()
            sent = time.monotonic()
            srv.signal(signal.SIGTERM)
            # systemd hears STOPPING=1, and new connections are no longer accepted while draining.
            notify.wait_for(lambda d: d.startswith(b"STOPPING=1"), since=mark, timeout=5)
            wait_until(lambda: not tcp_listening(srv.port), 3, what="the listener closed while draining")
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
            status, _, body = worker.join(15)  # the running call got an answer
            assert status == 200
            msg = json.loads(body)
            assert payload(msg["result"])["code"] == "Success", msg
            rc = srv.proc.wait(timeout=5 + 4)
            assert rc == 0, srv.stderr()
            assert time.monotonic() - sent < 5 + 4
            assert read_until_closed(stream, 3) == "eof", "the open SSE stream was not ended cleanly at shutdown"
        finally:
            stream.close()


def test_sigterm_answers_calls_running_at_the_end_of_the_grace(start, mock):
    mock.scenario(diagnosis={"final": "never"})
    with NotifySocket() as notify:
        env = support.server_env(mock, SYSOM_MCP_POLL_INTERVAL_MS="200", SYSOM_MCP_DIAGNOSIS_TIMEOUT="60",
                                 NOTIFY_SOCKET=notify.path)
        srv = start(["--shutdown-grace", "1"], env=env)
        worker = Background(srv.request, "POST", MCP_PATH, body=MEMGRAPH_CALL, headers=JSON, timeout=20)
        mock.wait_for(lambda reqs: sum(r["action"] == "GetDiagnosisResult" for r in reqs) >= 1, timeout=10)
        mark = notify.mark()
        sent = time.monotonic()
        srv.signal(signal.SIGTERM)
        # systemd is told how long the stop may take, and the stop takes no longer.
        _, stopping = notify.wait_for(lambda d: d.startswith(b"STOPPING=1"), since=mark, timeout=5)
        usec = int(re.search(rb"EXTEND_TIMEOUT_USEC=(\d+)", stopping).group(1))
        rc = srv.proc.wait(timeout=1 + 5)
        elapsed = time.monotonic() - sent
        assert rc == 0, srv.stderr()
        assert elapsed < 1 + 5
        assert elapsed * 1e6 < usec, f"took {elapsed:.1f}s, longer than the EXTEND_TIMEOUT_USEC it announced"
    assert "grace period over" in srv.stderr_path.read_text(errors="replace")
    # The call still running when the grace ended got a JSON-RPC error, not a dropped answer.
    status, headers, body = worker.join(5)
    answer = support.jsonrpc_answer(headers, body)
    assert answer.get("id") == 9, (status, body)
    assert answer["error"]["code"] == -32000, answer
    assert "shutting down" in answer["error"]["message"], answer


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_sigterm_with_open_client_sessions_exits_promptly(start, transport):
    srv = start(["--shutdown-grace", "5"])
    async with mcp_session(transport, srv.url) as client:
        assert len(await client.list_tools()) == 21
        sent = time.monotonic()
        srv.signal(signal.SIGTERM)
        # Nothing is running: no need to wait for the grace period (an open stream does not hold it up).
        for _ in range(40):
            if srv.proc.poll() is not None:
                break
            time.sleep(0.1)
        assert srv.proc.poll() == 0, srv.stderr()
        assert time.monotonic() - sent < 4
